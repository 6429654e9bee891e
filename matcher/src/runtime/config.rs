//! What the matcher is started with: `main`'s flags, handed to [`super::run`] and read by each
//! thread for its part (the consumer its topic and group, the book thread its core and capacity,
//! the I/O thread Redis and the output topics, the front its address).

use crate::book::Capacity;

/// Everything the matcher is started with.
#[derive(Clone, Debug)]
pub struct Config {
    /// HTTP front address.
    pub listen: String,
    /// Instance name.
    pub instance: String,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// Consumer group (its committed offsets mark what was persisted).
    pub group: String,
    /// Commands topic.
    pub orders_topic: String,
    /// One message per fill.
    pub trades_topic: String,
    /// Every event.
    pub events_topic: String,
    /// Redis URL.
    pub redis: String,
    /// Core to pin the book thread to (`None`: not pinned).
    pub pin_core: Option<usize>,
    /// Empty polls the book and I/O threads spin before they park.
    pub spin: u32,
    /// Ring capacity (commands and events).
    pub ring: usize,
    /// Book capacity.
    pub capacity: Capacity,
}

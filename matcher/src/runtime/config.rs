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
    /// The orders consumer's `fetch.wait.max.ms`.
    pub fetch_wait_ms: u32,
    /// At most one offset commit per this many milliseconds (what was persisted meanwhile is
    /// committed together; a drain commits at once).
    pub commit_interval_ms: u64,
    /// The output producer's `linger.ms`.
    pub linger_ms: f64,
    /// Where the writers' wake-ups arrive (UDP `host:port`): with it, the consumer stops fetching
    /// while nothing flows (`common::wake`); without it, it fetches all the time.
    pub wake_listen: Option<String>,
    /// Whom the I/O thread wakes once the events are written (`host:port` each: the gateways).
    pub wake: Vec<String>,
    /// Seconds an ended order's Redis keys are kept (0: for ever). The topics are the history.
    pub retention_secs: u64,
    /// Where book snapshots are written and read (`None`: none; a start replays the whole log).
    pub snapshot_dir: Option<std::path::PathBuf>,
    /// Commands between two snapshots.
    pub snapshot_every: u64,
    /// Share the `orders` partitions with the other instances of the group (subscribe; a
    /// rebalance moves them) instead of owning them all (assign).
    pub share_partitions: bool,
    /// How long a partition lease lasts unless renewed (shared partitions): how soon a dead
    /// instance's partitions move.
    pub lease_ms: u32,
}

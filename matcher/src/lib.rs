//! Trading Lab's matching engine (DESIGN.md §3): a price-time priority book as a pure,
//! synchronous state machine — `apply(command) -> events` — with no I/O, no clock, no floats and
//! no allocation on the hot path once warmed up. Threads, rings and Kafka live around it.
//!
//! The same command stream always produces byte-identical events, which is what makes recovery
//! by replaying the `orders` log possible.
//!
//! # Layout
//! - [`engine`]: [`Engine`], every book of one matcher, and the order-id index.
//! - [`book`]: one symbol's [`Book`]: the matching rules.
//! - [`ladder`]: one side's price levels, in a ring indexed by tick near the best.
//! - [`slab`]: resting orders with intrusive FIFO links.
//! - [`table`]: the fixed-capacity hash table behind the order index.
//! - [`clients`]: duplicate client order id protection, in chunks of 16-bit tags.
//! - [`accounts`]: per-book account interning for exact one-word owner checks.
//! - [`emit`]: event ids and per-symbol sequence numbers.
//! - [`snapshot`]: logical book images, their versioned and checksummed file format, and the
//!   snapshot files recovery starts from.
//! - `runtime` (feature `runtime`, default): the service around the book — consumer thread, rings,
//!   pinned book thread, I/O thread to Redis and Kafka, HTTP front.
//! - `prefault`: touching pre-sized memory at start-up so the hot path takes no page faults.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod book;
pub mod clients;
pub mod emit;
pub mod engine;
pub mod ladder;
mod prefault;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod slab;
pub mod snapshot;
pub mod table;

pub use book::{Book, Capacity, Depth, RestingOrder, MAX_ORDER_QTY};
pub use engine::Engine;
pub use snapshot::{BookImage, Snapshot, SnapshotError};

//! The matcher service around the book (DESIGN.md §3): a Kafka consumer thread decodes commands
//! into an `rtrb` ring; the book thread, pinned to a core, applies them and pushes events into a
//! second ring; an I/O thread writes Redis (pipelined) and produces to `trades` and
//! `order-events`, then has the consumer commit the offsets whose outputs are persisted. An
//! actix-web front serves reads from Redis.
//!
//! Recovery: on start the matcher loads the newest good snapshot, if it has a directory for them
//! ([`snapshots`]), and the consumer replays every owned partition from the snapshot's offset (or
//! the beginning); commands below the group's committed offset rebuild the book and the I/O
//! thread's state but write nothing, later ones are emitted. Outputs are idempotent (keys, `SET NX`, stream ids = sequence
//! numbers), so a command emitted again after a crash counts no trade twice.
//!
//! Full rings: the consumer waits (it stops reading Kafka) and the book thread waits for the I/O
//! thread; nothing is dropped.
//!
//! Shutdown ([`run`]'s handle fires: SIGTERM/Ctrl-C in `main`) drains in pipeline order: the
//! consumer stops reading and drops its ring; the book thread finishes that ring and drops its
//! own; the I/O thread persists the last batch and drops the commit channel; the consumer then
//! commits, synchronously, everything that was persisted. A clean restart so re-emits nothing.
//! The HTTP front stops at the same time (requests in flight finish). If the drain cannot finish
//! within [`DRAIN_TIMEOUT`] (Redis or the broker down), every thread stops where it is: what was
//! not committed is replayed on the next start, as after a crash. A thread that fails (or
//! panics) stops the others and the front at once, the same way, and `run` returns the failure.
//!
//! # Layout
//! - [`config`]: what the matcher is started with.
//! - [`ring`]: the ring messages and plumbing: full-ring and idle policies, the stop flag.
//! - [`consumer`], [`book_thread`], [`io`]: the three threads, in pipeline order; [`io`] is the
//!   sink (batches, retries, delivery to Redis and Kafka).
//! - [`projection`]: the I/O thread's picture of orders and depth, from events alone (pure).
//! - [`keys`]: the Redis key layout, shared by the sink and the front.
//! - [`http`]: the read front; [`metrics`]: the metrics every part records.

pub mod book_thread;
pub mod config;
pub mod consumer;
pub mod http;
pub mod io;
pub mod keys;
pub mod leases;
pub mod metrics;
pub mod ownership;
pub mod projection;
pub mod ring;
pub mod snapshots;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::shutdown::Shutdown;
use common::SymbolTable;

pub use config::Config;
use metrics::Metrics;
use ownership::Ownership;
use projection::Projection;

use crate::engine::Engine;
use ring::{Input, Output, Stop, StopOnPanic};

/// How the matcher's Redis connections behave while Redis is away: one quick reconnect attempt
/// per call, then an error — a read answers `503` at once, and the I/O thread's own retry loop
/// (`io::Retry`) keeps trying — instead of the default retries that hold a call for ~9 s.
pub fn redis_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_secs(2)))
}

/// How long a shutdown may take to finish what was read and commit it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the matcher until `shutdown` fires (then drains, see the module doc) or a thread fails.
/// Blocks: the HTTP front runs on the calling thread, in an actix system of its own.
pub fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let table = SymbolTable::default();
    let stop = Stop::default();
    let (to_book, from_consumer) = rtrb::RingBuffer::<Input>::new(config.ring);
    let (to_io, from_book) = rtrb::RingBuffer::<Output>::new(config.ring);
    let (commit_tx, commit_rx) = std::sync::mpsc::channel::<(i32, i64)>();
    let metrics = Arc::new(Metrics::new()?);
    // Alone, the matcher owns every partition and restores them all at once; sharing them, it
    // rebuilds each partition when the group assigns it (`ownership`).
    let owner = Arc::new(if config.share_partitions { Ownership::shared() } else { Ownership::all() });
    let restored = if owner.is_shared() { None } else { snapshots::restore(&config, &table) };
    metrics.snapshot_restored.set(i64::from(restored.is_some()));
    let (taker, writer) = snapshots::pair(&config, table.len(), restored.as_ref(), owner.clone());
    let start_at = snapshots::offsets(restored.as_ref());
    let (engine, projection) = match restored {
        Some(r) => (r.engine, r.projection),
        None => (Engine::new(&table, config.capacity), Projection::new(config.capacity.client_window)),
    };

    let io = {
        let (config, table, stop, metrics, owner) =
            (config.clone(), table.clone(), stop.clone(), metrics.clone(), owner.clone());
        thread::Builder::new().name("io".into()).spawn(move || {
            let _guard = StopOnPanic(stop.clone());
            io::run(&config, &table, projection, writer, &owner, from_book, commit_tx, &stop, &metrics)
        })?
    };
    let book = {
        let (config, table, stop, metrics) = (config.clone(), table.clone(), stop.clone(), metrics.clone());
        let io_thread = io.thread().clone();
        thread::Builder::new().name("book".into()).spawn(move || {
            let _guard = StopOnPanic(stop.clone());
            book_thread::run(&config, &table, engine, taker, from_consumer, to_io, io_thread, &stop, &metrics)
        })?
    };
    let consumer = {
        let (config, table, stop, metrics) = (config.clone(), table.clone(), stop.clone(), metrics.clone());
        let threads = consumer::Threads { book: book.thread().clone(), io: io.thread().clone() };
        thread::Builder::new().name("consumer".into()).spawn(move || {
            let _guard = StopOnPanic(stop.clone());
            consumer::run(&config, &table, &start_at, owner, to_book, threads, commit_rx, &stop, &metrics)
        })?
    };

    let served = actix_web::rt::System::new().block_on(async {
        let front = Shutdown::new();
        let watcher = actix_web::rt::spawn(watch(shutdown, stop.clone(), front.clone()));
        let served = http::serve(&config, table, metrics, front).await;
        watcher.abort();
        served
    });
    stop.drain();
    let threads = [("consumer", consumer), ("book", book), ("io", io)];
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    while threads.iter().any(|(_, h)| !h.is_finished()) {
        if std::time::Instant::now() > deadline {
            tracing::warn!(
                "the drain did not finish in time; stopping now (the rest is replayed on the next start)"
            );
            stop.stop();
            break;
        }
        threads.iter().for_each(|(_, h)| h.thread().unpark());
        thread::sleep(Duration::from_millis(10));
    }
    let mut failed = Vec::new();
    for (name, handle) in threads {
        handle.thread().unpark();
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(thread = name, error = %e, "thread failed");
                failed.push(name);
            }
            Err(_) => {
                tracing::error!(thread = name, "thread panicked");
                failed.push(name);
            }
        }
    }
    tracing::info!("matcher stopped");
    served?;
    match failed.is_empty() {
        true => Ok(()),
        false => Err(anyhow::anyhow!("the matcher's {} thread(s) failed", failed.join(", "))),
    }
}

/// Starts the drain when `shutdown` fires, then stops the front; a failed thread (`stop`) stops the
/// front too.
async fn watch(shutdown: Shutdown, stop: Stop, front: Shutdown) {
    loop {
        if shutdown.is_triggered() {
            tracing::info!("draining: finishing what was read, then committing it");
            stop.drain();
            break;
        }
        if stop.stopped() {
            break;
        }
        tokio::select! {
            () = shutdown.wait() => {}
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    front.trigger();
}

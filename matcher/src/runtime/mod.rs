//! The matcher service around the book (DESIGN.md §3): a Kafka consumer thread decodes commands
//! into an `rtrb` ring; the book thread, pinned to a core, applies them and pushes events into a
//! second ring; an I/O thread writes Redis (pipelined) and produces to `trades` and
//! `order-events`, then has the consumer commit the offsets whose outputs are persisted. An
//! actix-web front serves reads from Redis.
//!
//! Recovery: on start the consumer replays every owned partition from the beginning; commands
//! below the group's committed offset rebuild the book and the I/O thread's state but write
//! nothing, later ones are emitted. Outputs are idempotent (keys, `SET NX`, stream ids = sequence
//! numbers), so a command emitted again after a crash counts no trade twice.
//!
//! Full rings: the consumer waits (it stops reading Kafka) and the book thread waits for the I/O
//! thread; nothing is dropped.
//!
//! Shutdown (SIGTERM/Ctrl-C) drains in pipeline order: the consumer stops reading and drops its
//! ring; the book thread finishes that ring and drops its own; the I/O thread persists the last
//! batch and drops the commit channel; the consumer then commits, synchronously, everything that
//! was persisted. A clean restart so re-emits nothing. If the drain cannot finish within
//! [`DRAIN_TIMEOUT`] (Redis or the broker down), every thread stops where it is: what was not
//! committed is replayed on the next start, as after a crash.

pub mod book_thread;
pub mod consumer;
pub mod http;
pub mod io;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{Command, Event, OrderId, RejectReason, SymbolTable};

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

/// Wall-clock nanoseconds (hop timestamps; never read by the book).
pub fn now_ns() -> u64 {
    common::Timestamp::now().0
}

/// When a command passed each hop on its way (wall-clock ns since the epoch; 0: it did not pass
/// that one, e.g. no gateway when order entry was called directly).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hops {
    /// The gateway received the request (from the command's trace).
    pub gateway: u64,
    /// Order entry published it (the command's time).
    pub published: u64,
    /// The consumer read it.
    pub consumed: u64,
    /// The book finished it.
    pub matched: u64,
}

/// Consumer → book thread.
#[derive(Clone, Copy, Debug)]
pub enum Input {
    /// A decoded command.
    Cmd {
        /// The command.
        cmd: Command,
        /// Below the committed offset: rebuild state, emit nothing.
        replay: bool,
        /// Its hops so far (up to `consumed`).
        hops: Hops,
    },
    /// Every command below the committed offsets has been pushed: once this marker reaches the
    /// I/O thread, the book and its state are current and the matcher is ready.
    CaughtUp,
    /// A message that could not be decoded: rejected without reaching the book.
    Bad {
        /// Its log position.
        id: OrderId,
        /// Why.
        reason: RejectReason,
        /// Replay flag, as above.
        replay: bool,
    },
}

/// Book thread → I/O thread.
#[derive(Clone, Copy, Debug)]
pub enum Output {
    /// One event.
    Event {
        /// The event.
        event: Event,
        /// Replayed: update state only.
        replay: bool,
    },
    /// [`Input::CaughtUp`], passed on in order.
    CaughtUp,
    /// The command at `id` is fully applied; its offset can be committed once persisted.
    Done {
        /// Its log position.
        id: OrderId,
        /// Replayed.
        replay: bool,
        /// Its hops, up to `matched`.
        hops: Hops,
    },
}

/// How long a shutdown may take to finish what was read and commit it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A cooperative stop flag shared by the threads, in two steps: drain (stop taking input, finish
/// what is in the pipeline), then stop (leave now).
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicU8>);

/// [`Stop`]'s states.
const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const STOPPED: u8 = 2;

impl Stop {
    /// Asks the consumer to stop reading; the other threads finish what they have.
    pub fn drain(&self) {
        let _ = self.0.compare_exchange(RUNNING, DRAINING, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Asks every thread to stop now.
    pub fn stop(&self) {
        self.0.store(STOPPED, Ordering::Relaxed);
    }

    /// True once a drain or a stop was asked: take no more input.
    pub fn draining(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= DRAINING
    }

    /// True once a stop was asked.
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed) == STOPPED
    }
}

/// Pushes into a ring, waiting while it is full — never a drop: each wait wakes the reader,
/// counts in `matcher_ring_full_total` and pauses with `pause`. False if told to stop while waiting.
#[inline]
pub fn push_wait<T>(
    ring: &mut rtrb::Producer<T>,
    mut item: T,
    reader: &thread::Thread,
    pause: fn(),
    stop: &Stop,
    metrics: &http::Metrics,
) -> bool {
    loop {
        match ring.push(item) {
            Ok(()) => return true,
            Err(rtrb::PushError::Full(back)) => {
                item = back;
                metrics.ring_full.inc();
                reader.unpark();
                pause();
                if stop.stopped() {
                    return false;
                }
            }
        }
    }
}

/// Waits for more work: spins `spin` polls, then parks briefly (woken by `unpark`).
pub struct Idle {
    spins: u32,
    limit: u32,
}

impl Idle {
    /// Spin `limit` times before parking.
    pub fn new(limit: u32) -> Idle {
        Idle { spins: 0, limit }
    }

    /// Work arrived.
    #[inline]
    pub fn reset(&mut self) {
        self.spins = 0;
    }

    /// Nothing to do.
    #[inline]
    pub fn wait(&mut self) {
        if self.spins < self.limit {
            self.spins += 1;
            std::hint::spin_loop();
        } else {
            thread::park_timeout(Duration::from_millis(1));
        }
    }
}

/// Runs the matcher until SIGINT/SIGTERM.
pub fn run(config: Config) -> anyhow::Result<()> {
    let table = SymbolTable::default();
    let stop = Stop::default();
    let (to_book, from_consumer) = rtrb::RingBuffer::<Input>::new(config.ring);
    let (to_io, from_book) = rtrb::RingBuffer::<Output>::new(config.ring);
    let (commit_tx, commit_rx) = std::sync::mpsc::channel::<(i32, i64)>();
    let metrics = Arc::new(http::Metrics::new()?);

    let io = {
        let (config, table, stop, metrics) = (config.clone(), table.clone(), stop.clone(), metrics.clone());
        thread::Builder::new()
            .name("io".into())
            .spawn(move || io::run(&config, &table, from_book, commit_tx, &stop, &metrics))?
    };
    let book = {
        let (config, table, stop, metrics) = (config.clone(), table.clone(), stop.clone(), metrics.clone());
        let io_thread = io.thread().clone();
        thread::Builder::new().name("book".into()).spawn(move || {
            book_thread::run(&config, &table, from_consumer, to_io, io_thread, &stop, &metrics)
        })?
    };
    let consumer = {
        let (config, table, stop, metrics) = (config.clone(), table.clone(), stop.clone(), metrics.clone());
        let book_thread = book.thread().clone();
        thread::Builder::new()
            .name("consumer".into())
            .spawn(move || consumer::run(&config, &table, to_book, book_thread, commit_rx, &stop, &metrics))?
    };

    let served = http::serve(&config, table, metrics, stop.clone());
    tracing::info!("draining: finishing what was read, then committing it");
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
    for (name, handle) in threads {
        handle.thread().unpark();
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(thread = name, error = %e, "thread failed"),
            Err(_) => tracing::error!(thread = name, "thread panicked"),
        }
    }
    tracing::info!("matcher stopped");
    served
}

//! The pipeline's plumbing: what travels on the two `rtrb` rings ([`Input`]: consumer → book
//! thread; [`Output`]: book thread → I/O thread, both small and `Copy`), the hop timestamps
//! they carry, and how the threads share them — the full-ring policy ([`push_wait`]: wait, never
//! drop), the idle policy ([`Idle`]: spin, then park), and the two-step stop flag ([`Stop`]: drain,
//! then stop) that [`super::run`] uses for the drain order of the module doc.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::{Command, Event, OrderId, RejectReason};
use prometheus::IntCounter;

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
    /// Partition `partition` was taken over (a rebalance): rebuild its books from the reset filed
    /// under `token` ([`super::ownership`]) before its commands, which follow.
    Reset {
        /// The partition.
        partition: i32,
        /// Its reset's token.
        token: u64,
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
    /// [`Input::Reset`], passed on in order once the books are rebuilt: the I/O thread rebuilds
    /// its projection of the partition and reads the output topics' ends for it.
    Reset {
        /// The partition.
        partition: i32,
        /// Its reset's token.
        token: u64,
    },
    /// The book thread took a snapshot here (its images are on the snapshot channel): once
    /// everything before this is persisted, it can be written (`super::snapshots`).
    Snapshot,
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
/// counts in `full` (`matcher_ring_full_total`) and pauses with `pause`. False if told to stop
/// while waiting.
#[inline]
pub fn push_wait<T>(
    ring: &mut rtrb::Producer<T>,
    mut item: T,
    reader: &thread::Thread,
    pause: fn(),
    stop: &Stop,
    full: &IntCounter,
) -> bool {
    loop {
        match ring.push(item) {
            Ok(()) => return true,
            Err(rtrb::PushError::Full(back)) => {
                item = back;
                full.inc();
                reader.unpark();
                pause();
                if stop.stopped() {
                    return false;
                }
            }
        }
    }
}

/// The longest park. Every writer unparks its reader after a push, and a stop unparks every
/// thread, so the timeout is only a safety net: short enough to notice a missed wake-up, long
/// enough that an idle matcher does not wake a thousand times a second (it did at 1 ms: 1.7 % of
/// a core per thread at rest).
const PARK: Duration = Duration::from_millis(50);

/// Waits for more work: spins `spin` polls, then parks (woken by `unpark`).
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
            thread::park_timeout(PARK);
        }
    }
}

/// Held by each pipeline thread: if the thread panics, the others stop too (a panic skips the
/// thread's own error path, which calls [`Stop::stop`]).
pub struct StopOnPanic(pub Stop);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.stop();
        }
    }
}

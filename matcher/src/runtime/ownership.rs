//! Which `orders` partitions this matcher owns, shared by its threads — and the hand-over when
//! that changes (DESIGN.md §3, "Scale-out and failover").
//!
//! Alone (the default) a matcher owns every partition from start to end. With
//! `--share-partitions`, matchers in one consumer group split them, and a rebalance moves them:
//!
//! - **Revoked** (another instance takes it): the consumer clears the partition's bit and waits
//!   until the I/O thread has begun a new batch ([`Ownership::await_io`]): from then on it writes
//!   nothing of that partition (events still in the rings are dropped), so the new owner, which
//!   reads the output topics' ends when it takes the partition, cannot be overtaken by a late
//!   write of ours. What was persisted is committed before the partition goes.
//! - **Assigned**: the consumer loads the partition's newest snapshot, starts reading it at the
//!   snapshot's offset (or the beginning) and sends a [`Reset`] through the pipeline, in order:
//!   the book thread replaces the partition's books with the snapshot's (or empty ones), the I/O
//!   thread its projection of them, and reads the output topics' last events of that partition.
//!
//! Partitions are bits of a `u64`: at most 64 (the stack runs 2).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::snapshot::BookImage;

/// The most partitions a matcher can own.
pub const MAX_PARTITIONS: i32 = 64;

/// A partition taken over: what the book and I/O threads rebuild it from.
#[derive(Debug, Default)]
pub struct Reset {
    /// The partition's books from its newest snapshot (none: it starts from the log's start).
    pub books: Vec<BookImage>,
    /// The snapshot's projection bytes (the I/O thread keeps the partition's part).
    pub projection: Option<Vec<u8>>,
    /// The books' windows of ended client ids (kept for the I/O thread when the book thread
    /// takes the books).
    pub windows: Vec<(common::SymbolId, Vec<(common::Account, common::ClientOrderId)>)>,
    /// The partition's generation when it was granted: its books and projection are current
    /// while the generation is unchanged ([`Ownership::generation`]).
    pub generation: u64,
    /// The snapshot's offset for the partition: where reading starts (`None`: the beginning).
    pub start: Option<i64>,
    /// The partition's symbols (indexes), as the book thread knows them: the I/O thread resets
    /// their levels and windows.
    pub symbols: Vec<u32>,
}

/// The shared state.
#[derive(Debug)]
pub struct Ownership {
    /// Bit *p*: partition *p* is ours.
    mask: AtomicU64,
    /// Bumped on every revocation.
    epoch: AtomicU64,
    /// The epoch the I/O thread saw when it last began a batch.
    io_seen: AtomicU64,
    /// Partitions are shared with other instances (else every one is ours, always).
    shared: bool,
    /// Pending resets by token: the book thread takes the books, the I/O thread the rest.
    resets: Mutex<HashMap<u64, Reset>>,
    /// The next reset's token.
    next_token: AtomicU64,
    /// Per partition, bumped whenever it is granted or revoked: state built under one generation
    /// is stale under the next (it was given up, maybe taken by another, and taken back).
    generations: Vec<AtomicU64>,
    /// Shared partitions: the writes of owned partitions are fenced after this (ms since the
    /// Unix epoch; 0: no deadline), set on every lease renewal — a matcher whose renewals stall
    /// stops before another could take its partitions over.
    deadline_ms: AtomicU64,
}

impl Ownership {
    /// Every partition, for good (a matcher alone).
    pub fn all() -> Ownership {
        Ownership::new(u64::MAX, false)
    }

    /// None yet: the group's rebalances will say.
    pub fn shared() -> Ownership {
        Ownership::new(0, true)
    }

    fn new(mask: u64, shared: bool) -> Ownership {
        Ownership {
            mask: AtomicU64::new(mask),
            epoch: AtomicU64::new(0),
            io_seen: AtomicU64::new(0),
            shared,
            resets: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(1),
            generations: (0..MAX_PARTITIONS).map(|_| AtomicU64::new(0)).collect(),
            deadline_ms: AtomicU64::new(0),
        }
    }

    /// Partition `p`'s generation (bumped by every grant and revocation).
    #[inline]
    pub fn generation(&self, p: i32) -> u64 {
        usize::try_from(p).ok().and_then(|i| self.generations.get(i)).map_or(0, |g| g.load(Ordering::Acquire))
    }

    fn bump(&self, p: i32) {
        if let Some(g) = usize::try_from(p).ok().and_then(|i| self.generations.get(i)) {
            g.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The leases are good until `ms` (Unix ms).
    pub fn renewed_until(&self, ms: u64) {
        self.deadline_ms.store(ms, Ordering::Release);
    }

    /// True if the leases' deadline has passed (never when partitions are not shared).
    pub fn expired(&self, now_ms: u64) -> bool {
        let deadline = self.deadline_ms.load(Ordering::Acquire);
        self.shared && deadline != 0 && now_ms > deadline
    }

    /// True if partitions are shared with other instances.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// True if partition `p` is ours.
    #[inline]
    pub fn owns(&self, p: i32) -> bool {
        (0..MAX_PARTITIONS).contains(&p) && self.mask.load(Ordering::Acquire) & (1 << p) != 0
    }

    /// The partitions we own, ascending.
    pub fn owned(&self) -> Vec<i32> {
        (0..MAX_PARTITIONS).filter(|&p| self.owns(p)).collect()
    }

    /// Partition `p` is ours now.
    pub fn grant(&self, p: i32) {
        if (0..MAX_PARTITIONS).contains(&p) {
            self.bump(p);
            self.mask.fetch_or(1 << p, Ordering::AcqRel);
        }
    }

    /// Partitions `ps` are not ours any more; returns the epoch to [await](Ownership::await_io).
    pub fn revoke(&self, ps: &[i32]) -> u64 {
        for &p in ps.iter().filter(|p| (0..MAX_PARTITIONS).contains(*p)) {
            self.mask.fetch_and(!(1 << p), Ordering::AcqRel);
            self.bump(p);
        }
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The I/O thread begins a batch: what it writes from now on follows the current mask.
    #[inline]
    pub fn io_tick(&self) {
        self.io_seen.store(self.epoch.load(Ordering::Acquire), Ordering::Release);
    }

    /// Waits until the I/O thread has begun a batch after `epoch` (unparking it), at most
    /// `timeout`; false if it did not (it is stuck writing: Redis or the broker away).
    pub fn await_io(&self, epoch: u64, io: &Thread, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.io_seen.load(Ordering::Acquire) < epoch {
            if Instant::now() > deadline {
                return false;
            }
            io.unpark();
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Files a reset; returns its token.
    pub fn file(&self, reset: Reset) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        self.resets.lock().unwrap_or_else(|p| p.into_inner()).insert(token, reset);
        token
    }

    /// The book thread's part of reset `token`: its books, where the partition starts, and its
    /// generation.
    pub fn take_books(&self, token: u64) -> (Vec<BookImage>, Option<i64>, u64) {
        let mut resets = self.resets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(r) = resets.get_mut(&token) else { return (Vec::new(), None, u64::MAX) };
        r.windows = r.books.iter().map(|b| (b.symbol, b.window.clone())).collect();
        (std::mem::take(&mut r.books), r.start, r.generation)
    }

    /// The book thread says which symbols the partition holds.
    pub fn set_symbols(&self, token: u64, symbols: Vec<u32>) {
        if let Some(r) = self.resets.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&token) {
            r.symbols = symbols;
        }
    }

    /// The I/O thread's part (the rest): the reset is done with.
    pub fn take(&self, token: u64) -> Reset {
        self.resets.lock().unwrap_or_else(|p| p.into_inner()).remove(&token).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_come_and_go_and_a_revocation_waits_for_the_io_thread() {
        let alone = Ownership::all();
        assert!(alone.owns(0) && alone.owns(63) && !alone.is_shared());
        assert!(!alone.owns(64) && !alone.owns(-1), "out of range is never ours");

        let o = Ownership::shared();
        assert!(o.owned().is_empty());
        o.grant(0);
        o.grant(1);
        o.grant(99);
        assert_eq!(o.owned(), [0, 1]);
        let before = o.generation(1);
        let epoch = o.revoke(&[1]);
        assert_eq!(o.owned(), [0]);
        assert!(o.generation(1) > before, "a revocation makes state built before it stale");
        assert!(!o.expired(1), "no deadline yet");
        o.renewed_until(100);
        assert!(!o.expired(100) && o.expired(101));
        assert!(!Ownership::all().expired(u64::MAX), "a matcher alone has no deadline");
        let me = std::thread::current();
        assert!(!o.await_io(epoch, &me, Duration::from_millis(20)), "the I/O thread has not begun a batch");
        o.io_tick();
        assert!(o.await_io(epoch, &me, Duration::from_millis(20)));

        let token = o.file(Reset { projection: Some(vec![1, 2]), ..Reset::default() });
        assert!(o.take_books(token).0.is_empty());
        assert_eq!(o.take(token).projection, Some(vec![1, 2]));
        assert_eq!(o.take(token).projection, None, "taken once");
    }
}

//! One symbol's book as the gateway keeps it for the `book:<SYM>` channel, and the rules that
//! keep it equal to the matcher's: pure, synchronous, no I/O (the [`super::feed`] actor drives
//! it).
//!
//! **Why the gateway keeps a book.** A subscriber gets its snapshot from here, taken between two
//! updates of the one feed actor that also sends the updates, so snapshot and stream can never
//! race per session, and a thousand subscriptions cost no read of the matcher. The race moves to
//! one place, the bootstrap of this book, handled once:
//!
//! 1. [`Book::begin_sync`]: from now on `level` events are buffered (the Kafka consumer already
//!    sits at a fixed offset, so everything produced from here on reaches the buffer).
//! 2. The feed reads the matcher's snapshot (`GET /api/v1/book/{sym}`, Redis's `book:<sym>`) at
//!    its sequence `S`. The matcher writes Redis *before* Kafka for each batch, so every event
//!    with a sequence above `S` is produced after the read, and is in the buffer or still to come.
//! 3. [`Book::synced`]: the levels become the snapshot's, buffered events at or below `S` are
//!    dropped (the snapshot has them), the rest applied (level events carry absolute totals, so
//!    applying one the snapshot already had would be harmless too).
//!
//! **Updates.** Consecutive `level` events of one command that arrive together become one
//! [`Update`]: its `sequence` is the last event's, its `prev_sequence` the sequence of the
//! previous update (or of the snapshot), so a client holding sequence `p` applies an update only
//! if its `prev_sequence == p`, and anything else is a gap. Sequences are per symbol and shared
//! with every other event of the symbol, so book updates skip numbers; `prev_sequence` is what
//! makes a missing update visible.
//!
//! A gap in the gateway's own stream (the feed sees event sequence `n + 2` after `n`) restarts
//! the bootstrap, and every subscriber gets a fresh snapshot when it is done.

use std::collections::BTreeMap;

use common::{OrderId, Price, Qty, Side, Timestamp};

/// One `level` event: a price level's new totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// The symbol's sequence number of the event.
    pub seq: u64,
    /// The command that caused it (events of one command form one update).
    pub cmd: OrderId,
    /// The command's time.
    pub ts: Timestamp,
    /// Bid or ask side.
    pub side: Side,
    /// The level's price.
    pub price: Price,
    /// Its new total (0: the level is gone).
    pub qty: Qty,
}

/// What subscribers get after a batch of level events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// The last level event's sequence.
    pub sequence: u64,
    /// The sequence of the update before (or of the snapshot).
    pub prev_sequence: u64,
    /// The causing command's time.
    pub ts: Timestamp,
    /// `(side, price, new total)`, in event order.
    pub changes: Vec<(Side, Price, Qty)>,
}

/// A depth snapshot: its sequence and levels, best first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The sequence of the last level event it includes.
    pub sequence: u64,
    /// Bids, best (highest) first.
    pub bids: Vec<(Price, Qty)>,
    /// Asks, best (lowest) first.
    pub asks: Vec<(Price, Qty)>,
}

/// Where the book stands.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a snapshot; level events are kept until it comes.
    Syncing {
        /// Which bootstrap this is (a late answer to an older one is ignored).
        attempt: u64,
        /// Level events since the bootstrap began.
        buffer: Vec<Level>,
    },
    /// Current: updates flow.
    Live,
}

/// What [`Book::level`] did with an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Took {
    /// Applied (part of the update [`Book::flush`] will return).
    Applied,
    /// Kept until the snapshot comes.
    Buffered,
    /// The buffer is full: the bootstrap must start over.
    BufferFull,
}

/// One symbol's levels, their sequence, and the bootstrap state.
#[derive(Debug)]
pub struct Book {
    /// Bid price (ticks) → open quantity (lots).
    bids: BTreeMap<i64, u64>,
    /// Ask price (ticks) → open quantity (lots).
    asks: BTreeMap<i64, u64>,
    /// The sequence of the last update (what a snapshot taken now carries).
    sequence: u64,
    /// Syncing or live.
    state: State,
    /// The update being built from the current batch of events.
    pending: Option<Update>,
    /// The command of the pending update's events.
    pending_cmd: Option<OrderId>,
    /// Most level events kept while syncing.
    buffer_cap: usize,
}

impl Book {
    /// A book that waits for its first snapshot (attempt 0).
    pub fn new(buffer_cap: usize) -> Book {
        Book {
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            sequence: 0,
            state: State::Syncing { attempt: 0, buffer: Vec::new() },
            pending: None,
            pending_cmd: None,
            buffer_cap,
        }
    }

    /// True once synced.
    pub fn live(&self) -> bool {
        self.state == State::Live
    }

    /// The current bootstrap attempt, if syncing.
    pub fn attempt(&self) -> Option<u64> {
        match self.state {
            State::Syncing { attempt, .. } => Some(attempt),
            State::Live => None,
        }
    }

    /// Starts (or restarts) a bootstrap: level events are buffered from now on; a pending
    /// update is dropped (its subscribers get a snapshot instead).
    pub fn begin_sync(&mut self, attempt: u64) {
        self.state = State::Syncing { attempt, buffer: Vec::new() };
        self.pending = None;
        self.pending_cmd = None;
    }

    /// Takes one level event. While live, an event of another command than the pending update's
    /// closes that update first (returned).
    pub fn level(&mut self, e: Level) -> (Took, Option<Update>) {
        match &mut self.state {
            State::Syncing { buffer, .. } => {
                if buffer.len() >= self.buffer_cap {
                    return (Took::BufferFull, None);
                }
                buffer.push(e);
                (Took::Buffered, None)
            }
            State::Live => {
                let closed = if self.pending_cmd.is_some_and(|c| c != e.cmd) { self.flush() } else { None };
                self.set(e.side, e.price, e.qty);
                let prev = self.sequence;
                let u = self.pending.get_or_insert_with(|| Update {
                    sequence: e.seq,
                    prev_sequence: prev,
                    ts: e.ts,
                    changes: Vec::new(),
                });
                u.sequence = e.seq;
                u.ts = e.ts;
                u.changes.push((e.side, e.price, e.qty));
                self.pending_cmd = Some(e.cmd);
                (Took::Applied, closed)
            }
        }
    }

    /// Closes the pending update: the book's sequence becomes its sequence.
    pub fn flush(&mut self) -> Option<Update> {
        self.pending_cmd = None;
        let u = self.pending.take()?;
        self.sequence = u.sequence;
        Some(u)
    }

    /// The snapshot of bootstrap `attempt` came: the book becomes it plus the buffered events
    /// after it. False (and nothing changes) if it answers an older attempt or the book is live.
    pub fn synced(&mut self, attempt: u64, snap: &Snapshot) -> bool {
        let buffer = match &mut self.state {
            State::Syncing { attempt: a, buffer } if *a == attempt => std::mem::take(buffer),
            _ => return false,
        };
        self.bids = snap.bids.iter().map(|&(p, q)| (p.0, q.0)).collect();
        self.asks = snap.asks.iter().map(|&(p, q)| (p.0, q.0)).collect();
        self.sequence = snap.sequence;
        for e in buffer.into_iter().filter(|e| e.seq > snap.sequence) {
            self.set(e.side, e.price, e.qty);
            self.sequence = e.seq;
        }
        self.state = State::Live;
        true
    }

    /// The book now, best first, at its sequence (the pending update included only once
    /// flushed: take snapshots between batches).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            sequence: self.sequence,
            bids: self.bids.iter().rev().map(|(&p, &q)| (Price(p), Qty(q))).collect(),
            asks: self.asks.iter().map(|(&p, &q)| (Price(p), Qty(q))).collect(),
        }
    }

    /// The sequence of the last update.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    fn set(&mut self, side: Side, price: Price, qty: Qty) {
        let levels = if side == Side::Buy { &mut self.bids } else { &mut self.asks };
        if qty.is_zero() {
            levels.remove(&price.0);
        } else {
            levels.insert(price.0, qty.0);
        }
    }
}

/// What a client does with the channel (the rules of gateway/WEBSOCKET.md), as code: the
/// oracle the tests compare against, and the example client's logic.
#[derive(Debug, Default)]
pub struct Replica {
    /// The book, by side and price.
    bids: BTreeMap<i64, u64>,
    asks: BTreeMap<i64, u64>,
    /// The sequence of the last snapshot or update applied; `None` before a snapshot.
    pub sequence: Option<u64>,
}

/// What [`Replica::update`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Applied.
    Yes,
    /// Older than the book (at or below its sequence): ignored.
    Stale,
    /// `prev_sequence` is not the book's sequence: something is missing; resubscribe.
    Gap,
}

impl Replica {
    /// A snapshot replaces everything.
    pub fn snapshot(&mut self, s: &Snapshot) {
        self.bids = s.bids.iter().map(|&(p, q)| (p.0, q.0)).collect();
        self.asks = s.asks.iter().map(|&(p, q)| (p.0, q.0)).collect();
        self.sequence = Some(s.sequence);
    }

    /// Applies an update if it follows on.
    pub fn update(&mut self, u: &Update) -> Applied {
        let Some(seq) = self.sequence else { return Applied::Gap };
        if u.sequence <= seq {
            return Applied::Stale;
        }
        if u.prev_sequence != seq {
            return Applied::Gap;
        }
        for &(side, price, qty) in &u.changes {
            let levels = if side == Side::Buy { &mut self.bids } else { &mut self.asks };
            if qty.is_zero() {
                levels.remove(&price.0);
            } else {
                levels.insert(price.0, qty.0);
            }
        }
        self.sequence = Some(u.sequence);
        Applied::Yes
    }

    /// The book, best first.
    pub fn levels(&self) -> Snapshot {
        Snapshot {
            sequence: self.sequence.unwrap_or(0),
            bids: self.bids.iter().rev().map(|(&p, &q)| (Price(p), Qty(q))).collect(),
            asks: self.asks.iter().map(|(&p, &q)| (Price(p), Qty(q))).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(seq: u64, cmd: u64, side: Side, price: i64, qty: u64) -> Level {
        Level { seq, cmd: OrderId(cmd), ts: Timestamp(seq), side, price: Price(price), qty: Qty(qty) }
    }

    fn live_at(seq: u64) -> Book {
        let mut b = Book::new(100);
        assert!(b.synced(0, &Snapshot { sequence: seq, ..Snapshot::default() }));
        b
    }

    #[test]
    fn events_of_one_command_make_one_update_chained_to_the_last() {
        let mut b = live_at(10);
        assert_eq!(b.level(lv(12, 1, Side::Buy, 100, 5)), (Took::Applied, None));
        assert_eq!(b.level(lv(13, 1, Side::Sell, 101, 3)).1, None);
        let (_, closed) = b.level(lv(16, 2, Side::Buy, 100, 0));
        let first = closed.expect("another command closes the update");
        assert_eq!((first.sequence, first.prev_sequence, first.changes.len()), (13, 10, 2));
        let second = b.flush().unwrap();
        assert_eq!((second.sequence, second.prev_sequence), (16, 13));
        assert_eq!(b.flush(), None);
        assert_eq!(b.snapshot(), Snapshot { sequence: 16, bids: vec![], asks: vec![(Price(101), Qty(3))] });
    }

    #[test]
    fn the_snapshot_covers_what_it_covers_and_the_buffer_the_rest() {
        let mut b = Book::new(100);
        // Events seen while the snapshot is being read: some before it, some after.
        for e in [lv(5, 1, Side::Buy, 99, 1), lv(7, 2, Side::Buy, 98, 2), lv(9, 3, Side::Sell, 102, 4)] {
            assert_eq!(b.level(e).0, Took::Buffered);
        }
        let snap =
            Snapshot { sequence: 7, bids: vec![(Price(99), Qty(1)), (Price(98), Qty(2))], asks: vec![] };
        assert!(!b.synced(1, &snap), "an answer to another attempt is ignored");
        assert!(b.synced(0, &snap));
        assert!(b.live());
        let s = b.snapshot();
        assert_eq!(s.sequence, 9);
        assert_eq!(s.asks, vec![(Price(102), Qty(4))]);
        assert_eq!(s.bids, vec![(Price(99), Qty(1)), (Price(98), Qty(2))]);
        // The first live update chains to what a subscriber's snapshot said.
        b.level(lv(11, 4, Side::Sell, 102, 0));
        assert_eq!(b.flush().unwrap().prev_sequence, 9);
    }

    #[test]
    fn a_resync_drops_the_pending_update_and_a_full_buffer_says_so() {
        let mut b = live_at(1);
        b.level(lv(2, 1, Side::Buy, 100, 1));
        b.begin_sync(1);
        assert_eq!(b.flush(), None, "subscribers get a snapshot instead");
        assert_eq!(b.attempt(), Some(1));
        let mut small = Book::new(1);
        assert_eq!(small.level(lv(2, 1, Side::Buy, 1, 1)).0, Took::Buffered);
        assert_eq!(small.level(lv(3, 1, Side::Buy, 1, 1)).0, Took::BufferFull);
    }

    #[test]
    fn a_replica_applies_in_order_and_finds_gaps() {
        let mut r = Replica::default();
        let u = |sequence, prev_sequence, qty| Update {
            sequence,
            prev_sequence,
            ts: Timestamp(0),
            changes: vec![(Side::Buy, Price(100), Qty(qty))],
        };
        assert_eq!(r.update(&u(3, 1, 5)), Applied::Gap, "nothing before a snapshot");
        r.snapshot(&Snapshot { sequence: 4, ..Snapshot::default() });
        assert_eq!(r.update(&u(3, 1, 5)), Applied::Stale);
        assert_eq!(r.update(&u(6, 4, 5)), Applied::Yes);
        assert_eq!(r.update(&u(9, 7, 1)), Applied::Gap, "the update after 6 is missing");
        assert_eq!(r.update(&u(8, 6, 0)), Applied::Yes);
        assert_eq!(r.levels(), Snapshot { sequence: 8, ..Snapshot::default() });
    }

    /// The whole loop: a random stream, a bootstrap in the middle, a replica fed the updates
    /// always equals the book.
    #[test]
    fn a_replica_of_the_updates_equals_the_book() {
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut truth = Replica::default();
        truth.snapshot(&Snapshot::default());
        let mut b = Book::new(10_000);
        let mut replica = Replica::default();
        let mut seq = 0;
        let mut snap_at = None;
        for cmd in 0..2_000u64 {
            for _ in 0..(next() % 3) {
                seq += 1 + next() % 2; // other events take numbers too
                let side = if next() % 2 == 0 { Side::Buy } else { Side::Sell };
                let e = lv(seq, cmd, side, (next() % 20) as i64, next() % 4);
                // The matcher's own book (what Redis snapshots).
                truth.update(&Update {
                    sequence: seq,
                    prev_sequence: truth.sequence.unwrap(),
                    ts: e.ts,
                    changes: vec![(e.side, e.price, e.qty)],
                });
                if let (_, Some(u)) = b.level(e) {
                    assert_eq!(replica.update(&u), Applied::Yes);
                }
            }
            if cmd == 300 {
                snap_at = Some(truth.levels()); // read from Redis, while events keep coming
            }
            if cmd == 310 {
                assert!(b.synced(0, snap_at.as_ref().unwrap()));
                replica.snapshot(&b.snapshot());
            }
            if let Some(u) = b.flush() {
                assert_eq!(replica.update(&u), Applied::Yes);
            }
            if b.live() {
                assert_eq!(replica.levels(), b.snapshot());
                assert_eq!(b.snapshot().bids, truth.levels().bids);
                assert_eq!(b.snapshot().asks, truth.levels().asks);
            }
        }
    }
}

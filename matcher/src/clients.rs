//! Duplicate protection for client order ids, per (account, symbol): the ids of open orders plus
//! a bounded window of the most recently ended ones.
//!
//! A client that resubmits after an unknown outcome (a 503 from order entry) reuses its id; the
//! book rejects the second copy as long as the first is open or among the last `window` ended
//! orders.
//!
//! Layout, for the cache: every new order asks "is this id taken?", so the question is answered
//! from 16-bit tags alone, two bytes per id, small enough to stay in the core's cache beside the
//! book (~76 KiB for the default window and a few thousand open orders; the keys take 8 times
//! that). Tags sit in chunks of one cache line, 31 tags plus an overflow count; a key's
//! fingerprint picks its home chunk and its tag, and the key sits at the same position in `keys`,
//! read to confirm a tag match (a duplicate, or about one lookup in 3,500) and for the events that
//! name it. A key never
//! moves once placed, so an order keeps its key's position in a [`Handle`], and ending it, or
//! evicting the oldest id from the window, clears one tag: no probe, no hashing, no cold read. A
//! chunk that was full when a key passed it counts that key in `overflow` (as in Folly's F14), so
//! lookups stop at the first chunk nothing passed. Chunks of 31 rarely overflow at the load they
//! are sized for; chunks of 15, half a line, had one lookup in five walk on to the next chunk, and
//! the book was 9–13 % slower in the same process (README, Speed, *Chunks of a cache line*).
//!
//! A key is kept in 16 bytes: the account and an id's first 12 bytes, which is all of most ids.
//! A longer id keeps the rest of its bytes at the same position in `tails`, made at the first such
//! id. Every new order writes its key into a position untouched for ~16,000 orders, so the store's
//! size decides how often that write misses the core's L2: 16 bytes a key instead of 40 took
//! static from 1.36–1.70× lobster to 1.76–2.01× (medians of interleaved sets, the larger gains on a
//! busy host; README, Speed, *Keys in 16 bytes*).
//!
//! The chunks are sized for the book's capacity (open orders + window + 1) at most 2/3 full and
//! written at construction: steady state allocates nothing. Past capacity, ids spill into an
//! ordinary hash map: slower, still exact.

use std::hash::{Hash, Hasher};

use common::ids::MAX_ID_LEN;
use common::ClientOrderId;

use crate::accounts::AccountId;
use rustc_hash::{FxHashMap, FxHasher};

/// Whose id: ids are unique per account (the symbol is the book's). The account is the book's
/// interned id ([`crate::accounts`]), which keeps a key at 40 bytes instead of 66 (and lets the
/// table store it in 16).
pub type ClientKey = (AccountId, ClientOrderId);

/// A taken key's position and fingerprint: what an order keeps to release its id later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle {
    /// Where the key sits: a position in the chunks, or (top bit set) its index in the spill.
    pub slot: u32,
    /// The key's fingerprint.
    pub fingerprint: u32,
}

/// Set in a handle's slot when the key is in the spill (the book past its capacity).
const SPILL: u32 = 1 << 31;
/// Tags per chunk.
const WIDTH: usize = 31;
/// Positions per chunk in `keys` and in handles: one more than [`WIDTH`] (a position that is never
/// used), so a position's chunk and lane are a shift and a mask, not a division by 31.
const STRIDE: usize = 32;
/// The bits of a chunk's [`ClientIds::used`] word that stand for lanes.
const ALL_LANES: u32 = (1 << WIDTH) - 1;
/// A free position's tag: real tags are never 0.
const FREE: u16 = 0;

/// 31 tags and how many keys passed this chunk, full, on their way to a later one: 32 lanes of 16
/// bits (one cache line), the count in lane 31. "Is this tag here?", asked by every new order, is
/// a fold over the 32 lanes that the compiler makes four vector compares (the crate has no
/// `unsafe`, which SSE intrinsics need). Finding lanes is done four at a time inside a word
/// ([`Chunk::word`]: lanes `4w` to `4w + 3`, lane `i` at bits `16 × (i % 4)`), SIMD within a
/// register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
struct Chunk {
    lanes: [u16; 32],
}

/// 1 in each lane.
const LANES: u64 = 0x0001_0001_0001_0001;
/// Each lane's top bit.
const HIGH: u64 = 0x8000_8000_8000_8000;
/// The top bits of the lanes that hold tags, per word (lane 31 holds the overflow count).
const TAGGED: [u64; 8] = [HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH, HIGH >> 16];
/// Multiplies the top bits of a word's lanes, shifted to bits 0, 16, 32, 48, into bits 60–63
/// (no two partial products share a bit, so nothing carries).
const GATHER: u64 = 1 << 60 | 1 << 45 | 1 << 30 | 1 << 15;

impl Chunk {
    const EMPTY: Chunk = Chunk { lanes: [0; 32] };

    /// Lanes `4w` to `4w + 3` as one word (the compiler reads it with one load).
    #[inline]
    fn word(&self, w: usize) -> u64 {
        let l = &self.lanes[4 * w..4 * w + 4];
        u64::from(l[0]) | u64::from(l[1]) << 16 | u64::from(l[2]) << 32 | u64::from(l[3]) << 48
    }

    /// The eight words, in lane order.
    #[inline]
    fn words(&self) -> impl Iterator<Item = u64> + '_ {
        (0..8).map(|w| self.word(w))
    }

    /// True if a tag lane holds `tag`, or if the overflow count equals it (rare, and
    /// [`Chunk::matches`] then finds no lane): every lane compared at once, without branching.
    #[inline]
    fn any(&self, tag: u16) -> bool {
        self.lanes.iter().fold(false, |any, &lane| any | (lane == tag))
    }

    /// A bit per tag lane that holds `tag`. Exact per lane: the low 15 bits of a lane plus 0x7fff
    /// reach its top bit, without carrying out, iff they are not all 0.
    #[inline]
    fn matches(&self, tag: u16) -> u32 {
        let pattern = LANES * u64::from(tag);
        let mut bits = 0;
        for (w, (word, tagged)) in self.words().zip(TAGGED).enumerate() {
            let x = word ^ pattern;
            let zeros = !(((x & !HIGH).wrapping_add(!HIGH)) | x) & tagged;
            bits |= (((zeros >> 15).wrapping_mul(GATHER)) >> 60) << (4 * w);
        }
        bits as u32
    }

    /// What lane `i` holds: a tag, or for lane 31 the overflow count.
    #[inline]
    fn lane(&self, i: usize) -> u16 {
        self.lanes[i]
    }

    /// Puts `value` in lane `i`.
    #[inline]
    fn set_lane(&mut self, i: usize, value: u16) {
        self.lanes[i] = value;
    }

    /// How many keys passed this chunk (saturates: once at `u16::MAX` lookups always look on).
    #[inline]
    fn overflow(&self) -> u16 {
        self.lane(WIDTH)
    }

    #[inline]
    fn set_overflow(&mut self, count: u16) {
        self.set_lane(WIDTH, count);
    }
}

/// A fingerprint's tag: its low 16 bits (its home chunk comes from the high ones), never [`FREE`].
#[inline]
fn tag(fingerprint: u32) -> u16 {
    (fingerprint as u16).max(1)
}

/// The ids in use by one book.
#[derive(Debug)]
pub struct ClientIds {
    /// The tags, in chunks of [`WIDTH`].
    chunks: Vec<Chunk>,
    /// Per chunk, a bit per lane that holds a tag (bit `i`: lane `i`), kept beside the chunks: a
    /// new order takes the lowest free lane with one `trailing_zeros`, where a walk over the
    /// chunk's words stopped at a word that depends on the data, a branch the CPU mispredicted.
    used: Vec<u32>,
    /// The keys, by position (chunk × [`STRIDE`] + lane), [`Stored`] in 16 bytes: read to confirm
    /// a tag match, and for events.
    keys: Vec<Stored>,
    /// The rest of each long id (past [`INLINE`] bytes), by position; empty until the first long
    /// id, then as long as `keys`.
    tails: Vec<Tail>,
    /// Keys in the chunks.
    placed: usize,
    /// The most keys the chunks take (open orders + window + 1); the rest spill.
    room: usize,
    /// Keys past `room`: key → its index in `spilled`.
    spill: FxHashMap<ClientKey, u32>,
    /// Spilled keys by index (a handle's slot without [`SPILL`]).
    spilled: Vec<ClientKey>,
    /// Free indices in `spilled`.
    spill_free: Vec<u32>,
    /// Ended ids, oldest at `head` once full; a ring of `capacity` entries.
    recent: Vec<Handle>,
    /// Where the oldest ended id sits once the ring is full.
    head: usize,
    /// How many ended ids are remembered.
    capacity: usize,
}

/// Bytes of a client order id kept inline with its account: ids up to this long (most are) take
/// 16 bytes in all, so the key store is 480 KB rather than 1.2 MB for the regime benchmarks'
/// ~30,000 positions, and a new order's key write falls out of the L2 less often.
const INLINE: usize = 12;
/// The bytes of a long id past [`INLINE`].
const TAIL: usize = MAX_ID_LEN - INLINE;
/// The rest of a long id, zero-padded.
type Tail = [u8; TAIL];

/// A key as `keys` holds it: the account in the low 32 bits, the id's first [`INLINE`] bytes
/// (zero-padded: no id character is 0) above them, and [`LONG`] set when the id is longer, its
/// rest then in `tails`. Two keys are equal iff their stored forms are, and for long ones their
/// tails too.
type Stored = u128;
/// Marks a [`Stored`] key whose id is longer than [`INLINE`] bytes: the account's top bit (a book
/// interns far fewer than 2^31 accounts).
const LONG: Stored = 1 << 31;

/// A key's [`Stored`] form.
#[inline]
fn store(&(account, id): &ClientKey) -> Stored {
    debug_assert!(Stored::from(account) < LONG, "account ids stay below the LONG bit");
    let mut bytes = [0; 16];
    bytes[..4].copy_from_slice(&account.to_le_bytes());
    bytes[4..].copy_from_slice(&id.padded()[..INLINE]);
    let long = if id.padded()[INLINE] != 0 { LONG } else { 0 };
    Stored::from_le_bytes(bytes) | long
}

/// A key's id past its first [`INLINE`] bytes.
#[inline]
fn tail((_, id): &ClientKey) -> Tail {
    let mut rest = [0; TAIL];
    rest.copy_from_slice(&id.padded()[INLINE..]);
    rest
}

/// 32 bits of the key's hash: a match is confirmed against the key, so collisions cost a key
/// comparison, never a wrong answer.
#[inline(always)] // Every new order: README, Speed, *Calls that cost*.
pub fn fingerprint(key: &ClientKey) -> u32 {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    // FxHasher's state is weak in some bits for some inputs (written word by word, ids that differ
    // only in their last bytes collided by the thousand): mix every bit in before taking 32.
    (crate::table::mix64(h.finish()) >> 32) as u32
}

impl ClientIds {
    /// Room for `open` open orders and a window of `window` ended ones, faulted in now.
    pub fn new(open: usize, window: usize) -> ClientIds {
        // One more than open orders and window: an order's id is taken before it is matched, so
        // a book at capacity still takes a new order's id without spilling.
        // At most 2^30 keys: their positions (half as many more) stay below the SPILL bit.
        let room = (open + window + 1).min(1 << 30);
        // At most 2/3 full, so chunks rarely overflow (3/4 was as fast, 5/6 as slow as chunks of
        // 15 in the same process: README, Speed, *Chunks of a cache line*).
        let chunks = (room * 3 / 2).div_ceil(WIDTH) + 1;
        let mut recent = Vec::with_capacity(window);
        crate::prefault::vec(&mut recent, Handle { slot: 0, fingerprint: 0 });
        ClientIds {
            chunks: vec![Chunk::EMPTY; chunks],
            used: vec![0; chunks],
            keys: vec![0; chunks * STRIDE],
            tails: Vec::new(),
            placed: 0,
            room,
            spill: FxHashMap::default(),
            spilled: Vec::new(),
            spill_free: Vec::new(),
            recent,
            head: 0,
            capacity: window,
        }
    }

    /// The chunk a fingerprint starts from: its high bits, scaled to the number of chunks.
    #[inline]
    fn home(&self, fingerprint: u32) -> usize {
        ((u64::from(fingerprint) * self.chunks.len() as u64) >> 32) as usize
    }

    /// The chunk after `c`, wrapping.
    #[inline]
    fn after(&self, c: usize) -> usize {
        if c + 1 == self.chunks.len() {
            0
        } else {
            c + 1
        }
    }

    /// True if the id is open or recent.
    #[inline]
    pub fn contains(&self, key: &ClientKey) -> bool {
        self.contains_as(key, fingerprint(key))
    }

    /// [`ClientIds::contains`] with the key's [`fingerprint`] already worked out.
    #[inline]
    pub fn contains_as(&self, key: &ClientKey, fingerprint: u32) -> bool {
        let tag = tag(fingerprint);
        let stored = store(key);
        let mut c = self.home(fingerprint);
        // Bounded: a key passes each chunk at most once.
        for _ in 0..self.chunks.len() {
            let chunk = &self.chunks[c];
            let mut hits = if chunk.any(tag) { chunk.matches(tag) } else { 0 };
            while hits != 0 {
                let at = c * STRIDE + hits.trailing_zeros() as usize;
                if self.keys[at] == stored && (stored & LONG == 0 || self.tails[at] == tail(key)) {
                    return true;
                }
                hits &= hits - 1;
            }
            if chunk.overflow() == 0 {
                break;
            }
            c = self.after(c);
        }
        !self.spill.is_empty() && self.spill.contains_key(key)
    }

    /// Marks an id as open (the caller checked it was free); returns its handle.
    #[inline]
    pub fn open(&mut self, key: ClientKey) -> Handle {
        self.open_as(key, fingerprint(&key))
    }

    /// [`ClientIds::open`] with the key's [`fingerprint`] already worked out. Always inlined, as
    /// are [`ClientIds::close`] and `release`: called, each cost a prologue and an
    /// epilogue of register saves per order, and inlined the book ran about 3 % faster in the
    /// same process (README, Speed, *Calls that cost*).
    #[inline(always)]
    pub fn open_as(&mut self, key: ClientKey, fingerprint: u32) -> Handle {
        if self.placed == self.room {
            return self.spill(key, fingerprint);
        }
        // Fewer keys than 2/3 of the positions: a free one is found before the walk wraps.
        let mut c = self.home(fingerprint);
        loop {
            let chunk = &mut self.chunks[c];
            let used = &mut self.used[c];
            let free = !*used & ALL_LANES;
            if free != 0 {
                let i = free.trailing_zeros() as usize;
                *used |= 1 << i;
                chunk.set_lane(i, tag(fingerprint));
                let slot = c * STRIDE + i;
                let stored = store(&key);
                self.keys[slot] = stored;
                if stored & LONG != 0 {
                    self.keep_tail(slot, &key);
                }
                self.placed += 1;
                return Handle { slot: slot as u32, fingerprint };
            }
            chunk.set_overflow(chunk.overflow().saturating_add(1));
            c = self.after(c);
        }
    }

    /// Keeps the rest of a long id at its position. The first long id makes `tails`, written
    /// through once (20 bytes a position: ~2 MB at the default capacity) so that no later one
    /// meets a page the kernel has not mapped yet ([`crate::prefault`]); `vec!` of zeros would
    /// leave the pages unmapped.
    #[cold]
    fn keep_tail(&mut self, slot: usize, key: &ClientKey) {
        if self.tails.is_empty() {
            self.tails.reserve_exact(self.keys.len());
            self.tails.resize(self.keys.len(), [0; TAIL]);
        }
        self.tails[slot] = tail(key);
    }

    /// Takes a key past the chunks' room.
    #[cold]
    fn spill(&mut self, key: ClientKey, fingerprint: u32) -> Handle {
        let index = match self.spill_free.pop() {
            Some(index) => {
                self.spilled[index as usize] = key;
                index
            }
            None => {
                self.spilled.push(key);
                (self.spilled.len() - 1) as u32
            }
        };
        self.spill.insert(key, index);
        Handle { slot: SPILL | index, fingerprint }
    }

    /// Moves an open id to the recent window, forgetting the oldest one if the window is full.
    #[inline(always)]
    pub fn close(&mut self, handle: Handle) {
        if self.capacity == 0 {
            self.release(handle);
        } else if self.recent.len() < self.capacity {
            self.recent.push(handle);
        } else {
            let oldest = std::mem::replace(&mut self.recent[self.head], handle);
            // Not `% capacity`: a division on every order's end, and `head` waits for it.
            self.head = if self.head + 1 == self.capacity { 0 } else { self.head + 1 };
            self.release(oldest);
        }
    }

    /// Frees a key's position: clears its tag, and uncounts it from the chunks it passed.
    #[inline(always)]
    fn release(&mut self, Handle { slot, fingerprint }: Handle) {
        if slot & SPILL != 0 {
            return self.unspill(slot & !SPILL);
        }
        let slot = slot as usize;
        let (at, lane) = (slot / STRIDE, slot % STRIDE);
        debug_assert_eq!(self.chunks[at].lane(lane), tag(fingerprint), "a taken key's tag");
        self.chunks[at].set_lane(lane, FREE);
        self.used[at] &= !(1 << lane);
        self.placed -= 1;
        let mut c = self.home(fingerprint);
        while c != at {
            let chunk = &mut self.chunks[c];
            let overflow = chunk.overflow();
            if overflow != u16::MAX {
                chunk.set_overflow(overflow - 1);
            }
            c = self.after(c);
        }
    }

    /// Frees a spilled key.
    #[cold]
    fn unspill(&mut self, index: u32) {
        let removed = self.spill.remove(&self.spilled[index as usize]);
        debug_assert_eq!(removed, Some(index), "a spilled key is in the spill");
        self.spill_free.push(index);
    }

    /// The key behind a handle.
    #[inline]
    pub fn key(&self, handle: Handle) -> ClientKey {
        if handle.slot & SPILL != 0 {
            return self.spilled[(handle.slot & !SPILL) as usize];
        }
        let at = handle.slot as usize;
        let stored = self.keys[at];
        let mut id = [0; MAX_ID_LEN];
        id[..INLINE].copy_from_slice(&stored.to_le_bytes()[4..]);
        if stored & LONG != 0 {
            id[INLINE..].copy_from_slice(&self.tails[at]);
        }
        // Written by `store` and `tail` from a valid id: reading it back cannot fail.
        let id = ClientOrderId::from_padded(&id).unwrap_or_else(|e| unreachable!("a stored id: {e}"));
        (stored as u32 & !(LONG as u32), id)
    }

    /// The ended ids the window remembers, oldest first: the order in which they will leave it.
    /// With [`ClientIds::close`] in this order into an empty table, they come back in the same
    /// ring order (what a snapshot relies on, [`crate::snapshot`]).
    pub fn recent(&self) -> impl Iterator<Item = ClientKey> + '_ {
        // `head` is 0 until the ring is full; from then on the oldest id sits at `head`.
        let (newer, older) = self.recent.split_at(self.head);
        older.iter().chain(newer).map(|&handle| self.key(handle))
    }

    /// How many ended ids the window holds at most.
    pub fn window(&self) -> usize {
        self.capacity
    }

    /// How many ids are taken (open + recent).
    pub fn len(&self) -> usize {
        self.placed + self.spill.len()
    }

    /// True if no id is taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> ClientKey {
        (0, ClientOrderId::new(s).unwrap())
    }

    #[test]
    fn ended_ids_stay_taken_for_the_window_then_free() {
        let mut ids = ClientIds::new(4, 2);
        let [a, b, c] = ["a", "b", "c"].map(|s| ids.open(key(s)));
        ids.close(a);
        ids.close(b);
        assert!(ids.contains(&key("a")) && ids.contains(&key("b")) && ids.contains(&key("c")));
        ids.close(c); // window of 2: "a" falls out
        assert!(!ids.contains(&key("a")));
        assert!(ids.contains(&key("b")) && ids.contains(&key("c")));
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn recent_lists_the_window_oldest_first_and_refills_in_that_order() {
        let mut ids = ClientIds::new(8, 3);
        for s in ["a", "b", "c", "d", "e"] {
            let h = ids.open(key(s));
            ids.close(h);
        }
        let names = |ids: &ClientIds| ids.recent().map(|k| k.1.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&ids), ["c", "d", "e"], "the ring has wrapped: head is not 0");
        let mut copy = ClientIds::new(8, 3);
        for k in ids.recent() {
            let h = copy.open(k);
            copy.close(h);
        }
        assert_eq!(names(&copy), names(&ids));
        for (a, b) in [(&mut ids, "f"), (&mut copy, "f")] {
            let h = a.open(key(b));
            a.close(h);
        }
        assert_eq!(names(&copy), ["d", "e", "f"]);
        assert_eq!(names(&ids), names(&copy), "the same id leaves next");
        assert_eq!(ids.window(), 3);
    }

    #[test]
    fn a_full_book_takes_a_new_orders_id_without_growing() {
        // Room for 2 open orders and 1 ended id: 2 resting, the window full, and a third order's
        // id taken before it is matched (it may trade and never rest).
        let mut ids = ClientIds::new(2, 1);
        let a = ids.open(key("a"));
        ids.close(a);
        let [_b, _c, _d] = ["b", "c", "d"].map(|s| ids.open(key(s)));
        assert!(ids.spilled.is_empty() && ids.spill.is_empty(), "an id spilled");
        assert_eq!(ids.len(), 4);
        let e = ids.open(key("e"));
        assert_eq!(e.slot, SPILL, "past capacity, the next id spills");
    }

    #[test]
    fn a_zero_window_frees_ids_as_orders_end() {
        let mut ids = ClientIds::new(1, 0);
        let a = ids.open(key("a"));
        assert!(ids.contains(&key("a")));
        ids.close(a);
        assert!(ids.is_empty() && !ids.contains(&key("a")));
    }

    #[test]
    fn keys_that_share_a_fingerprint_stay_exact() {
        let all = ["a", "b", "c", "d"];
        // Release in every order: head, middle and tail of the chain.
        for order in [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]] {
            let mut ids = ClientIds::new(8, 0);
            let handles = all.map(|s| ids.open_as(key(s), 7));
            assert!(all.iter().all(|s| ids.contains_as(&key(s), 7)));
            assert!(!ids.contains_as(&key("e"), 7));
            for (n, &i) in order.iter().enumerate() {
                ids.close(handles[i]);
                for (j, s) in all.iter().enumerate() {
                    let gone = order[..=n].contains(&j);
                    assert_eq!(ids.contains_as(&key(s), 7), !gone, "{order:?} after {n}: {s}");
                }
            }
            assert!(ids.is_empty() && ids.chunks.iter().all(|&c| c == Chunk::EMPTY));
            assert!(ids.used.iter().all(|&u| u == 0), "no lane marked used");
        }
    }

    impl ClientIds {
        /// True if each chunk's `used` bits are exactly its lanes that hold a tag.
        fn used_matches_tags(&self) -> bool {
            self.chunks.iter().zip(&self.used).all(|(chunk, &used)| {
                let tagged: u32 = (0..WIDTH).map(|i| u32::from(chunk.lane(i) != FREE) << i).sum();
                tagged == used
            })
        }
    }

    /// The model's key `n`: two accounts, and ids of every stored shape (short; exactly
    /// [`INLINE`] bytes; long ones that share their first [`INLINE`] bytes, and differ only in
    /// their tail; the longest).
    fn model_key(n: u8) -> ClientKey {
        let id = match n % 4 {
            0 => format!("k{n}"),
            1 => format!("k{n:011}"),
            2 => format!("shared-start-{n}"),
            _ => format!("{n:0>32}"),
        };
        (u32::from(n % 2), ClientOrderId::new(&id).unwrap())
    }

    /// Replays `ops` (0: end the order of key `n`, else: open key `n` if free) against a model (a
    /// set of open ids and a queue of ended ones), checking every answer.
    fn check_against_model(
        ops: &[(u8, u8)],
        open_room: usize,
        window: usize,
        fp: impl Fn(u8) -> u32,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        use std::collections::{HashMap, VecDeque};
        let mut ids = ClientIds::new(open_room, window);
        let mut open: HashMap<u8, Handle> = HashMap::new();
        let mut ended: VecDeque<u8> = VecDeque::new();
        let name = model_key;
        for &(op, n) in ops {
            let taken = open.contains_key(&n) || ended.contains(&n);
            proptest::prop_assert_eq!(ids.contains_as(&name(n), fp(n)), taken, "k{}", n);
            if op == 0 {
                if let Some(h) = open.remove(&n) {
                    proptest::prop_assert_eq!(ids.key(h), name(n));
                    ids.close(h);
                    ended.push_back(n);
                    if ended.len() > window {
                        ended.pop_front();
                    }
                }
            } else if !taken {
                open.insert(n, ids.open_as(name(n), fp(n)));
            }
            proptest::prop_assert_eq!(ids.len(), open.len() + ended.len());
            proptest::prop_assert!(ids.used_matches_tags(), "used bits and tags disagree");
        }
        Ok(())
    }

    proptest::proptest! {
        /// The word-wise lane arithmetic and the fold against one lane at a time, with tags drawn so that
        /// matches, zeros, top bits and the overflow lane all occur.
        #[test]
        fn chunk_lanes_match_a_lane_by_lane_reading(
            lanes in proptest::collection::vec(proptest::sample::select(vec![0u16, 1, 2, 0x7fff, 0x8000, 0xffff]), WIDTH + 1),
            tag in proptest::sample::select(vec![1u16, 2, 0x7fff, 0x8000, 0xffff]),
        ) {
            let mut chunk = Chunk::EMPTY;
            for (i, &lane) in lanes.iter().enumerate() {
                chunk.set_lane(i, lane);
            }
            let tags = &lanes[..WIDTH];
            for (i, &lane) in tags.iter().enumerate() {
                proptest::prop_assert_eq!(chunk.lane(i), lane);
            }
            proptest::prop_assert_eq!(chunk.overflow(), lanes[WIDTH]);
            let expect: u32 = tags.iter().enumerate().map(|(i, &t)| u32::from(t == tag) << i).sum();
            proptest::prop_assert_eq!(chunk.matches(tag), expect);
            // The overflow lane takes part in `any` (a false alarm `matches` clears).
            proptest::prop_assert_eq!(chunk.any(tag), expect != 0 || lanes[WIDTH] == tag);
        }

        /// Fingerprints from a tiny range: every key shares a tag with others and is confirmed by
        /// its key; past the small capacity, keys spill and come back.
        #[test]
        fn matches_a_model_when_fingerprints_collide(
            ops in proptest::collection::vec((0u8..3, 0u8..12), 1..400),
            window in 0usize..4,
        ) {
            check_against_model(&ops, 2, window, |n| u32::from(n) % 3)?;
        }

        /// Every key's home is the first chunk, so keys overflow into the next ones, and ending
        /// them in any order must leave lookups exact (overflow counts up and down).
        #[test]
        fn matches_a_model_when_chunks_overflow(
            ops in proptest::collection::vec((0u8..3, 0u8..90), 1..800),
            window in 0usize..24,
        ) {
            check_against_model(&ops, 40, window, |n| u32::from(n) % 7)?;
        }
    }

    #[test]
    fn ids_that_share_a_prefix_get_distinct_fingerprints() {
        let n = 200_000;
        let prints: std::collections::HashSet<u32> =
            (0..n).map(|i| fingerprint(&(0, ClientOrderId::new(&format!("g{i}")).unwrap()))).collect();
        // 200,000 keys in 2^32 values: about five collisions expected.
        assert!(prints.len() > n - 50, "{} distinct fingerprints of {n}", prints.len());
    }

    #[test]
    fn long_ids_are_kept_whole_and_told_apart_by_their_tails() {
        let mut ids = ClientIds::new(8, 2);
        assert!(ids.tails.is_empty(), "no tails until a long id");
        let [short, long, other] =
            ["twelve-bytes", "twelve-bytes-and-more", "twelve-bytes-and-mord"].map(key);
        let handles = [short, long].map(|k| ids.open(k));
        assert_eq!(ids.tails.len(), ids.keys.len(), "the first long id sizes the tails");
        assert_eq!(ids.key(handles[0]), short);
        assert_eq!(ids.key(handles[1]), long);
        assert!(ids.contains(&short) && ids.contains(&long));
        assert!(!ids.contains(&other), "a long id differing only in its tail");
        // The same fingerprint, so the tag matches and only the tail tells them apart.
        assert!(!ids.contains_as(&other, fingerprint(&long)));
        assert!(!ids.contains(&(1, long.1)), "another account's id");
        ids.close(handles[1]);
        assert!(ids.contains(&long) && ids.recent().eq([long]));
    }

    #[test]
    fn grows_past_its_capacity() {
        let mut ids = ClientIds::new(1, 1);
        let handles: Vec<_> = (0..10).map(|i| ids.open(key(&format!("k{i}")))).collect();
        assert!((0..10).all(|i| ids.contains(&key(&format!("k{i}")))));
        for h in handles {
            ids.close(h);
        }
        assert_eq!(ids.len(), 1, "only the window's one id remains");
        assert!(ids.contains(&key("k9")));
    }
}

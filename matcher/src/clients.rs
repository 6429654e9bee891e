//! Duplicate protection for client order ids, per (account, symbol): the ids of open orders plus
//! a bounded window of the most recently ended ones.
//!
//! A client that resubmits after an unknown outcome (a 503 from order entry) reuses its id; the
//! book rejects the second copy as long as the first is open or among the last `window` ended
//! orders (exactly: an id that ended is taken until `window` more of the book's orders have ended).
//!
//! Layout, for the cache: one open-addressing table of 8-byte entries, a 32-bit fingerprint of the
//! key and the slot that holds the key (several keys may share a fingerprint: each has its own
//! entry). The 40-byte keys are read only to confirm a fingerprint match (a duplicate, or a
//! collision). So a new order touches one table line where the old design touched three: its
//! probe, and the insert lands in the line the probe just read.
//!
//! Ending an order touches nothing in the table: it clears the slot's open bit and stamps the slot
//! with the end count. Entries whose id has left the window are removed by a sweep that walks the
//! table in order, a few entries per new order (memory read in sequence, which the hardware
//! prefetches), instead of a probe of a cold entry per ended order. An entry the sweep has not
//! reached yet is still judged by its stamp, so what is taken does not depend on the sweep: the
//! guarantee is exact. Keys' slots are handed out in ring order, so new orders write their keys
//! into consecutive memory. Everything is pre-sized: steady state allocates nothing.

use std::hash::{Hash, Hasher};

use common::{Account, ClientOrderId};

use crate::accounts::AccountId;
use rustc_hash::FxHasher;

/// Whose id: ids are unique per account (the symbol is the book's). The account is the book's
/// interned id ([`crate::accounts`]), which keeps a key at 40 bytes instead of 66.
pub type ClientKey = (AccountId, ClientOrderId);

/// A taken key's slot and fingerprint: what an order keeps to release its id later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle {
    /// Where the key sits.
    pub slot: u32,
    /// The key's fingerprint.
    pub fingerprint: u32,
}

/// A free table entry.
const EMPTY: u64 = u64::MAX;

/// Table entries the sweep looks at per new order. A pass over the table takes `size / SWEEP`
/// new orders, so an id that left the window holds its entry and slot for at most that long:
/// with the table made for twice the open orders and window, it stays under about 55 % full.
const SWEEP: usize = 8;

/// The ids in use by one book.
#[derive(Debug)]
pub struct ClientIds {
    /// `(fingerprint << 32) | slot`, or [`EMPTY`]. Length is a power of two.
    entries: Vec<u64>,
    /// `64 - log2(entries.len())`: an entry's home is its fingerprint's top bits.
    shift: u32,
    /// Entries in use.
    len: usize,
    /// The keys, by slot; read only to confirm a fingerprint match.
    keys: Vec<ClientKey>,
    /// Per slot: the end count when its order ended (meaningful once its open bit is clear).
    ended: Vec<u32>,
    /// One bit per slot: its order is open.
    open_bits: Vec<u64>,
    /// One bit per slot: the slot holds a key (open, in the window, or not yet swept).
    used_bits: Vec<u64>,
    /// Where the search for the next free slot starts: slots are handed out in ring order.
    cursor: usize,
    /// Slots holding a key.
    used: usize,
    /// Where the sweep goes on.
    sweep: usize,
    /// Orders ended so far (wrapping: only differences are used).
    ends: u32,
    /// Orders ended so far, not wrapping, for [`ClientIds::len`].
    ended_total: u64,
    /// Open orders.
    open: usize,
    /// How many ended ids are remembered.
    capacity: usize,
}

/// `n` copies of `value`, every page written now (`vec![0; n]` would leave zero pages to be
/// mapped on the hot path, [`crate::prefault`]).
fn written<T: Clone>(n: usize, value: T) -> Vec<T> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, value);
    v
}

/// 32 bits of the key's hash: a match is confirmed against the key, so collisions cost a key
/// comparison, never a wrong answer.
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
        assert!(window < 1 << 30, "a window of {window} ended ids");
        // One more than open orders and window: an order's id is taken before it is matched, so
        // a book at capacity still takes a new order's id without growing.
        let needed = open + window + 1;
        let size = (needed.max(4) * 2).next_power_of_two();
        // Slots for the ids that count, those the sweep has not reached yet (at most a pass of
        // new orders and every open order ending in it), and room to hand them out in order.
        let slots = (2 * needed + size / SWEEP).min(u32::MAX as usize - 1);
        let blank = (0, Account::anonymous());
        ClientIds {
            entries: vec![EMPTY; size],
            shift: 64 - size.trailing_zeros(),
            len: 0,
            keys: vec![blank; slots],
            ended: written(slots, 0),
            open_bits: written(slots.div_ceil(64), 0),
            used_bits: written(slots.div_ceil(64), 0),
            cursor: 0,
            used: 0,
            sweep: 0,
            ends: 0,
            ended_total: 0,
            open: 0,
            capacity: window,
        }
    }

    #[inline]
    fn home(&self, fingerprint: u32) -> usize {
        // A table has at least 8 entries: the shift is < 64.
        ((u64::from(fingerprint) << 32) >> self.shift) as usize
    }

    #[inline]
    fn is_open(&self, slot: usize) -> bool {
        self.open_bits[slot / 64] & (1 << (slot % 64)) != 0
    }

    /// True if the key in `slot` is taken: its order is open, or ended no more than `window`
    /// ends ago.
    #[inline]
    fn taken(&self, slot: usize) -> bool {
        self.is_open(slot) || self.ends.wrapping_sub(self.ended[slot]) as usize <= self.capacity
    }

    /// True if the id is open or recent.
    #[inline]
    pub fn contains(&self, key: &ClientKey) -> bool {
        self.contains_as(key, fingerprint(key))
    }

    /// [`ClientIds::contains`] with the key's [`fingerprint`] already worked out.
    #[inline]
    pub fn contains_as(&self, key: &ClientKey, fingerprint: u32) -> bool {
        let mask = self.entries.len() - 1;
        let mut i = self.home(fingerprint);
        loop {
            let entry = self.entries[i];
            if entry == EMPTY {
                return false;
            }
            if (entry >> 32) as u32 == fingerprint {
                let slot = entry as u32 as usize;
                if self.keys[slot] == *key && self.taken(slot) {
                    return true;
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Marks an id as open (the caller checked it was free); returns its handle.
    #[inline]
    pub fn open(&mut self, key: ClientKey) -> Handle {
        self.open_as(key, fingerprint(&key))
    }

    /// [`ClientIds::open`] with the key's [`fingerprint`] already worked out.
    #[inline]
    pub fn open_as(&mut self, key: ClientKey, fingerprint: u32) -> Handle {
        self.sweep();
        let slot = match self.next_free() {
            Some(slot) => slot,
            None => self.grow_slots(),
        };
        self.keys[slot as usize] = key;
        self.used_bits[slot as usize / 64] |= 1 << (slot % 64);
        self.open_bits[slot as usize / 64] |= 1 << (slot % 64);
        self.used += 1;
        self.open += 1;
        self.insert((u64::from(fingerprint) << 32) | u64::from(slot));
        Handle { slot, fingerprint }
    }

    /// Moves an open id to the recent window; the oldest one leaves it (its memory is reclaimed
    /// when the sweep gets to its entry).
    #[inline]
    pub fn close(&mut self, handle: Handle) {
        let slot = handle.slot as usize;
        debug_assert!(self.is_open(slot), "closing an id that is not open");
        self.open_bits[slot / 64] &= !(1 << (slot % 64));
        self.ended[slot] = self.ends;
        self.ends = self.ends.wrapping_add(1);
        self.ended_total += 1;
        self.open -= 1;
    }

    /// Puts an entry at the end of its probe run.
    #[inline]
    fn insert(&mut self, entry: u64) {
        let mask = self.entries.len() - 1;
        let mut i = self.home((entry >> 32) as u32);
        while self.entries[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.entries[i] = entry;
        self.len += 1;
        if self.len * 8 > self.entries.len() * 7 {
            self.grow_table();
        }
    }

    /// Looks at the next [`SWEEP`] table entries and removes those whose id is no longer taken.
    #[inline]
    fn sweep(&mut self) {
        let mask = self.entries.len() - 1;
        let mut i = self.sweep;
        let mut looked = 0;
        while looked < SWEEP {
            let entry = self.entries[i];
            looked += 1;
            if entry != EMPTY {
                let slot = entry as u32 as usize;
                if !self.taken(slot) {
                    self.remove_at(i);
                    self.used_bits[slot / 64] &= !(1 << (slot % 64));
                    self.used -= 1;
                    // Entry `i` may now hold a later one, shifted back: look at it again.
                    continue;
                }
            }
            i = (i + 1) & mask;
        }
        self.sweep = i;
    }

    /// Removes entry `i`, pulling later entries of its probe run back (no tombstones).
    fn remove_at(&mut self, mut i: usize) {
        let mask = self.entries.len() - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let entry = self.entries[j];
            if entry == EMPTY {
                break;
            }
            let home = self.home((entry >> 32) as u32);
            // Entry j may move to i if its home is not cyclically inside (i, j].
            let stays = if i <= j { i < home && home <= j } else { i < home || home <= j };
            if !stays {
                self.entries[i] = entry;
                i = j;
            }
        }
        self.entries[i] = EMPTY;
        self.len -= 1;
    }

    /// The first free slot at or after the cursor, in ring order (`None`: every slot is used).
    #[inline]
    fn next_free(&mut self) -> Option<u32> {
        let slots = self.keys.len();
        if self.used == slots {
            return None;
        }
        let mut i = self.cursor;
        loop {
            if i >= slots {
                i = 0;
            }
            let word = i / 64;
            // Bits below `i` in this word count as used.
            let free = !(self.used_bits[word] | ((1u64 << (i % 64)) - 1));
            if free != 0 {
                let slot = word * 64 + free.trailing_zeros() as usize;
                if slot < slots {
                    self.cursor = slot + 1;
                    return Some(slot as u32);
                }
            }
            i = (word + 1) * 64;
        }
    }

    /// One more slot (allocates: only past the capacity the ids were made with).
    #[cold]
    fn grow_slots(&mut self) -> u32 {
        assert!(self.keys.len() < u32::MAX as usize - 1, "client id table full");
        self.keys.push((0, Account::anonymous()));
        self.ended.push(0);
        if self.used_bits.len() * 64 < self.keys.len() {
            self.used_bits.push(0);
            self.open_bits.push(0);
        }
        (self.keys.len() - 1) as u32
    }

    /// Doubles the table (allocates: only past the capacity the ids were made with).
    #[cold]
    fn grow_table(&mut self) {
        let size = self.entries.len() * 2;
        let old = std::mem::replace(&mut self.entries, vec![EMPTY; size]);
        self.shift = 64 - size.trailing_zeros();
        self.len = 0;
        self.sweep = 0;
        for entry in old.into_iter().filter(|&e| e != EMPTY) {
            self.insert(entry);
        }
    }

    /// The key behind a handle.
    #[inline]
    pub fn key(&self, handle: Handle) -> &ClientKey {
        &self.keys[handle.slot as usize]
    }

    /// The ended ids the window remembers, oldest first: the order in which they will leave it.
    /// With [`ClientIds::close`] in this order into an empty table, they come back in the same
    /// order (what a snapshot relies on, [`crate::snapshot`]).
    pub fn recent(&self) -> impl Iterator<Item = &ClientKey> + '_ {
        let mut window: Vec<(u32, usize)> = (0..self.keys.len())
            .filter(|&slot| self.used_bits[slot / 64] & (1 << (slot % 64)) != 0)
            .filter(|&slot| !self.is_open(slot) && self.taken(slot))
            .map(|slot| (self.ends.wrapping_sub(self.ended[slot]), slot))
            .collect();
        // Largest age first.
        window.sort_unstable_by_key(|w| std::cmp::Reverse(w.0));
        window.into_iter().map(|(_, slot)| &self.keys[slot])
    }

    /// How many ended ids the window holds at most.
    pub fn window(&self) -> usize {
        self.capacity
    }

    /// How many ids are taken (open + recent).
    pub fn len(&self) -> usize {
        self.open + self.ended_total.min(self.capacity as u64) as usize
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
            let h = copy.open(*k);
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
        let room = ids.keys.capacity();
        let a = ids.open(key("a"));
        ids.close(a);
        let [_b, _c, _d] = ["b", "c", "d"].map(|s| ids.open(key(s)));
        assert_eq!(ids.keys.capacity(), room, "the slots grew");
        assert_eq!(ids.len(), 4);
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
            assert!(ids.is_empty());
        }
    }

    proptest::proptest! {
        /// Against a model (a set of open ids and a queue of ended ones), with fingerprints from a
        /// tiny range so chains form, shrink and reuse slots whose `next` is stale.
        #[test]
        fn matches_a_model_when_fingerprints_collide(
            ops in proptest::collection::vec((0u8..3, 0u8..12), 1..400),
            window in 0usize..4,
        ) {
            use std::collections::{HashMap, VecDeque};
            let mut ids = ClientIds::new(2, window);
            let mut open: HashMap<String, Handle> = HashMap::new();
            let mut ended: VecDeque<String> = VecDeque::new();
            let fp = |s: &str| u32::from(s.as_bytes()[1]) % 3;
            for (op, n) in ops {
                let name = format!("k{n}");
                let taken = open.contains_key(&name) || ended.contains(&name);
                proptest::prop_assert_eq!(ids.contains_as(&key(&name), fp(&name)), taken, "{}", name);
                if op == 0 {
                    if let Some(h) = open.remove(&name) {
                        ids.close(h);
                        ended.push_back(name);
                        if ended.len() > window {
                            ended.pop_front();
                        }
                    }
                } else if !taken {
                    open.insert(name.clone(), ids.open_as(key(&name), fp(&name)));
                }
                proptest::prop_assert_eq!(ids.len(), open.len() + ended.len());
            }
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

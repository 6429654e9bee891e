//! Duplicate protection for client order ids, per (account, symbol): the ids of open orders plus
//! a bounded window of recently ended ones.
//!
//! A client that resubmits after an unknown outcome (a 503 from order entry) reuses its id; the
//! book rejects the second copy as long as the first is open or in the window.
//!
//! The window (`window` = W): ended ids are kept in generations of W, in the order they ended.
//! The generation being filled and the one before it are remembered; when the filling one is full
//! and another id ends, the one before it is forgotten whole. So an ended id is remembered for at
//! least the next W ids that end after it (the last W ended ids are always in the window), and at
//! most 2W ids are remembered. Forgetting a whole generation at once is what makes the window
//! cheap: no id is looked up to evict it (a per-id eviction was a random probe into a table as
//! large as the window), and a forgotten generation's table is cleared a little at each later
//! end, sequentially, so no command pays for all of it.
//!
//! Layout, for the cache:
//! - Open ids: a hash table maps a 32-bit fingerprint of the key to the slot that holds the key
//!   (plus a flag when several keys share the fingerprint, chained through `next`). It holds only
//!   open orders, so it is small and warm; slots are reused last-freed first.
//! - Each generation: the keys in the order they ended (appended, never moved); a table from
//!   fingerprint to key, insert only (a fingerprint shared by two keys just has two entries), of
//!   4-byte entries (the key's index and a tag of the fingerprint), at most half full; and a Bloom
//!   filter of one 64-bit word per fingerprint (8 bits per id), so a lookup of an id that is not
//!   there (nearly every new order) reads one word per generation, not a table entry.
//! - The answer stays exact: a fingerprint match is confirmed against the 40-byte key.
//!
//! Everything is pre-sized: steady state allocates nothing.

use std::hash::{Hash, Hasher};

use common::{Account, ClientOrderId};

use crate::accounts::AccountId;
use rustc_hash::FxHasher;

use crate::table::Table;

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

/// End of a fingerprint chain.
const END: u32 = u32::MAX;
/// Set in a table value when more than one key has that fingerprint.
const CHAINED: u32 = 1 << 31;

/// The ids in use by one book.
#[derive(Debug)]
pub struct ClientIds {
    /// Open ids: fingerprint → first slot holding a key with it (| [`CHAINED`] if there are more).
    taken: Table<u32, u32>,
    /// The open keys, by slot.
    keys: Vec<ClientKey>,
    /// Per slot: the next slot with the same fingerprint, or [`END`].
    next: Vec<u32>,
    /// Free slots.
    free: Vec<u32>,
    /// Ended ids, three generations: the one being filled (`filling`), the one before it
    /// (`filling + 2`, mod 3) and a forgotten one (`filling + 1`), cleared 64 bytes at each end
    /// and clear by the time it is filled again.
    generations: [Generation; 3],
    /// Which generation is being filled.
    filling: usize,
    /// Ended ids per generation (W).
    capacity: usize,
}

/// One generation of ended ids.
#[derive(Debug)]
struct Generation {
    /// The keys, in the order they ended.
    keys: Vec<ClientKey>,
    /// Entries `tag << index_bits | index` (index into `keys`, tag from the fingerprint's low
    /// bits); [`FREE`] is a free entry. Insert only, at most half full, 4 bytes an entry.
    table: Vec<u32>,
    /// `32 - log2(table.len())`: an entry's home is its fingerprint's top bits.
    shift: u32,
    /// Bits of an entry that hold the index (all ones is never an index: [`FREE`]).
    index_bits: u32,
    /// The Bloom filter: one word per fingerprint, three bits in it.
    bloom: Vec<u64>,
    /// `64 - log2(bloom.len())`.
    bloom_shift: u32,
    /// How far clearing has got, in 64-byte chunks of `table` and of `bloom`, after the
    /// generation was forgotten.
    cleared: (usize, usize),
}

/// A free [`Generation`] table entry.
const FREE: u32 = u32::MAX;
/// Entries and filter words cleared at a time: 64 bytes of each.
const CHUNK: (usize, usize) = (16, 8);

impl Generation {
    /// Room for `n` ids; every entry written now.
    fn new(n: usize) -> Generation {
        // An entry holds an index of `index_bits` and at least two bits of tag.
        assert!(n < 1 << 30, "a client-id window of {n} is more than a generation holds");
        let size = (n * 2).next_power_of_two().max(CHUNK.0);
        let words = (n / 8).next_power_of_two().max(CHUNK.1);
        let mut keys = Vec::with_capacity(n);
        crate::prefault::vec(&mut keys, (0, Account::anonymous()));
        // Written, not just allocated zeroed (calloc'd pages would fault in on the hot path).
        let mut bloom = Vec::with_capacity(words);
        crate::prefault::vec(&mut bloom, u64::MAX);
        bloom.resize(words, 0);
        Generation {
            keys,
            table: vec![FREE; size],
            shift: 32 - size.trailing_zeros(),
            index_bits: usize::BITS - n.leading_zeros(),
            bloom,
            bloom_shift: 64 - words.trailing_zeros(),
            cleared: (size / CHUNK.0, words / CHUNK.1),
        }
    }

    /// The Bloom filter's word and bits for a fingerprint: one multiply spreads it, the word from
    /// the top bits, the bits from the bottom ones.
    #[inline]
    fn bloom_of(&self, fingerprint: u32) -> (usize, u64) {
        let h = u64::from(fingerprint).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let bits = (1 << (h & 63)) | (1 << ((h >> 6) & 63)) | (1 << ((h >> 12) & 63));
        ((h >> self.bloom_shift) as usize, bits)
    }

    /// The table entry of `index` with `fingerprint`'s tag.
    #[inline]
    fn entry(&self, fingerprint: u32, index: u32) -> u32 {
        (fingerprint << self.index_bits) | index
    }

    /// True if `key` ended in this generation.
    #[inline]
    fn contains(&self, key: &ClientKey, fingerprint: u32) -> bool {
        let (word, bits) = self.bloom_of(fingerprint);
        if self.bloom[word] & bits != bits {
            return false;
        }
        let tag = self.entry(fingerprint, 0);
        let index_mask = (1 << self.index_bits) - 1;
        let mask = self.table.len() - 1;
        let mut i = (fingerprint >> self.shift) as usize;
        loop {
            let entry = self.table[i];
            if entry == FREE {
                return false;
            }
            if entry & !index_mask == tag && self.keys[(entry & index_mask) as usize] == *key {
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds an ended id (there is room: the caller starts a new generation when this one is full).
    #[inline]
    fn push(&mut self, key: ClientKey, fingerprint: u32) {
        debug_assert!(self.keys.len() < self.keys.capacity() && self.is_clear());
        let entry = self.entry(fingerprint, self.keys.len() as u32);
        self.keys.push(key);
        let (word, bits) = self.bloom_of(fingerprint);
        self.bloom[word] |= bits;
        let mask = self.table.len() - 1;
        let mut i = (fingerprint >> self.shift) as usize;
        while self.table[i] != FREE {
            i = (i + 1) & mask;
        }
        self.table[i] = entry;
    }

    /// Forgets every id: the keys at once, the table and the filter by [`Generation::clear_some`].
    fn forget(&mut self) {
        self.keys.clear();
        self.cleared = (0, 0);
    }

    /// Clears the next 64 bytes of the table and of the filter of a forgotten generation.
    #[inline]
    fn clear_some(&mut self) {
        let (t, b) = self.cleared;
        if let Some(chunk) = self.table.get_mut(t * CHUNK.0..(t + 1) * CHUNK.0) {
            chunk.fill(FREE);
            self.cleared.0 += 1;
        }
        if let Some(chunk) = self.bloom.get_mut(b * CHUNK.1..(b + 1) * CHUNK.1) {
            chunk.fill(0);
            self.cleared.1 += 1;
        }
    }

    /// Clears what is left of a forgotten generation.
    fn clear_all(&mut self) {
        while !self.is_clear() {
            self.clear_some();
        }
    }

    /// True once a forgotten generation is all clear (and for one never filled).
    fn is_clear(&self) -> bool {
        self.cleared == (self.table.len() / CHUNK.0, self.bloom.len() / CHUNK.1)
    }
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
    /// Room for `open` open orders and a window of `window` ended ones (see the module doc),
    /// faulted in now.
    pub fn new(open: usize, window: usize) -> ClientIds {
        // One more than the open orders: an order's id is taken before it is matched, so a book
        // at capacity still takes a new order's id without growing.
        let slots = (open + 1).min(CHAINED as usize - 1);
        let taken = Table::with_capacity(slots, 0);
        let blank = (0, Account::anonymous());
        ClientIds {
            taken,
            keys: vec![blank; slots],
            next: vec![END; slots],
            free: (0..slots as u32).rev().collect(),
            generations: [(); 3].map(|()| Generation::new(window)),
            filling: 0,
            capacity: window,
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
        let [filling, previous, _] = self.ages();
        self.is_open(key, fingerprint)
            || self.generations[filling].contains(key, fingerprint)
            || self.generations[previous].contains(key, fingerprint)
    }

    /// True if the id is open.
    #[inline]
    fn is_open(&self, key: &ClientKey, fingerprint: u32) -> bool {
        let Some(value) = self.taken.get(fingerprint) else { return false };
        let mut slot = value & !CHAINED;
        if self.keys[slot as usize] == *key {
            return true;
        }
        if value & CHAINED == 0 {
            return false;
        }
        loop {
            slot = self.next[slot as usize];
            if slot == END {
                return false;
            }
            if self.keys[slot as usize] == *key {
                return true;
            }
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
        let slot = match self.free.pop() {
            Some(slot) => {
                self.keys[slot as usize] = key;
                slot
            }
            None => {
                assert!(self.keys.len() < (CHAINED - 1) as usize, "client id table full");
                self.keys.push(key);
                self.next.push(END);
                (self.keys.len() - 1) as u32
            }
        };
        // One probe: the new key heads its fingerprint's chain.
        let head = self.taken.upsert(fingerprint, |head| match head {
            Some(_) => slot | CHAINED,
            None => slot,
        });
        self.next[slot as usize] = head.map_or(END, |head| head & !CHAINED);
        Handle { slot, fingerprint }
    }

    /// Moves an open id to the window; if the filling generation is full, a new one starts and
    /// the one before it is forgotten.
    #[inline]
    pub fn close(&mut self, handle: Handle) {
        let key = self.keys[handle.slot as usize];
        self.release(handle);
        if self.capacity == 0 {
            return;
        }
        let [filling, previous, forgotten] = self.ages();
        if self.generations[filling].keys.len() == self.capacity {
            // The forgotten one becomes the filling one (cleared a chunk at each of the last W
            // ends, which is enough: at most W/4 chunks of each), and the previous one is
            // forgotten.
            self.generations[forgotten].clear_all();
            self.generations[previous].forget();
            self.filling = forgotten;
        }
        let [filling, _, forgotten] = self.ages();
        self.generations[filling].push(key, handle.fingerprint);
        self.generations[forgotten].clear_some();
    }

    /// The generations' places: `[filling, previous, forgotten]`.
    #[inline]
    fn ages(&self) -> [usize; 3] {
        let f = self.filling;
        [f, (f + 2) % 3, (f + 1) % 3]
    }

    /// Frees a slot: takes it out of its fingerprint's chain.
    fn release(&mut self, Handle { slot, fingerprint }: Handle) {
        // One probe in the common case: take the entry out, put it back only if others share it.
        let value = self.taken.remove(fingerprint);
        debug_assert!(value.is_some(), "a taken id's fingerprint is in the table");
        let value = value.unwrap_or(slot);
        let first = value & !CHAINED;
        if value & CHAINED == 0 {
            // The common case: this key alone has its fingerprint.
            if first != slot {
                // Another key's entry (never, while the table is consistent): leave it.
                self.taken.insert(fingerprint, value);
            }
        } else {
            let head = if first == slot {
                self.next[slot as usize]
            } else {
                let mut prev = first;
                while self.next[prev as usize] != slot && self.next[prev as usize] != END {
                    prev = self.next[prev as usize];
                }
                self.next[prev as usize] = self.next[slot as usize];
                first
            };
            let more = if self.next[head as usize] == END { 0 } else { CHAINED };
            self.taken.insert(fingerprint, head | more);
        }
        self.free.push(slot);
    }

    /// The key behind a handle.
    #[inline]
    pub fn key(&self, handle: Handle) -> &ClientKey {
        &self.keys[handle.slot as usize]
    }

    /// The ended ids the window remembers, oldest first: the order in which they will leave it.
    /// With [`ClientIds::close`] in this order into an empty table, they come back in the same
    /// generations (what a snapshot relies on, [`crate::snapshot`]): the previous generation is
    /// full (W) whenever there is one, so the count says where the filling one starts.
    pub fn recent(&self) -> impl Iterator<Item = &ClientKey> + '_ {
        let [filling, previous, _] = self.ages();
        self.generations[previous].keys.iter().chain(&self.generations[filling].keys)
    }

    /// The window's W: the last W ended ids are always remembered, and at most 2W are.
    pub fn window(&self) -> usize {
        self.capacity
    }

    /// How many ids are taken (open + remembered).
    pub fn len(&self) -> usize {
        let [filling, previous, _] = self.ages();
        let ended = self.generations[filling].keys.len() + self.generations[previous].keys.len();
        self.keys.len() - self.free.len() + ended
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
    fn ended_ids_stay_taken_for_at_least_the_window_then_leave_a_generation_at_a_time() {
        let mut ids = ClientIds::new(8, 2);
        let [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map(|s| ids.open(key(s)));
        ids.close(a);
        ids.close(b);
        assert!(["a", "b", "c", "d", "e"].iter().all(|s| ids.contains(&key(s))));
        ids.close(c); // a new generation: [a, b] is the previous one, still remembered
        assert!(ids.contains(&key("a")) && ids.contains(&key("b")));
        ids.close(d);
        assert_eq!(ids.len(), 5, "a, b, c and d remembered, e open: 2W ended ids at most");
        ids.close(e); // [c, d] becomes the previous generation: a and b are forgotten together
        assert!(!ids.contains(&key("a")) && !ids.contains(&key("b")));
        assert!(["c", "d", "e"].iter().all(|s| ids.contains(&key(s))));
        assert_eq!(ids.len(), 3);
        let a = ids.open(key("a")); // free again
        assert!(ids.contains(&key("a")));
        ids.close(a);
    }

    #[test]
    fn recent_lists_the_window_oldest_first_and_refills_in_that_order() {
        let mut ids = ClientIds::new(8, 3);
        for s in ["a", "b", "c", "d", "e"] {
            let h = ids.open(key(s));
            ids.close(h);
        }
        let names = |ids: &ClientIds| ids.recent().map(|k| k.1.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(names(&ids), ["a", "b", "c", "d", "e"], "two generations: [a, b, c] and [d, e]");
        let mut copy = ClientIds::new(8, 3);
        for k in ids.recent() {
            let h = copy.open(*k);
            copy.close(h);
        }
        assert_eq!(names(&copy), names(&ids));
        for s in ["f", "g"] {
            for ids in [&mut ids, &mut copy] {
                let h = ids.open(key(s));
                ids.close(h);
            }
        }
        assert_eq!(names(&copy), ["d", "e", "f", "g"], "the copy's generations are the same");
        assert_eq!(names(&ids), names(&copy));
        assert_eq!(ids.window(), 3);
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
            assert!(ids.is_empty() && ids.taken.is_empty());
        }
    }

    proptest::proptest! {
        /// Against a model (a set of open ids, and ended ones in generations of `window`: the
        /// one being filled and the one before it), with fingerprints from a tiny range so open
        /// ids' chains form, shrink and reuse slots whose `next` is stale, and generations hold
        /// many keys with one fingerprint. Many generations pass, so each is reused after it was
        /// forgotten and cleared.
        #[test]
        fn matches_a_model_when_fingerprints_collide(
            ops in proptest::collection::vec((0u8..3, 0u8..12), 1..400),
            window in 0usize..5,
        ) {
            use std::collections::HashMap;
            let mut ids = ClientIds::new(2, window);
            let mut open: HashMap<String, Handle> = HashMap::new();
            let (mut previous, mut filling): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
            let fp = |s: &str| u32::from(s.as_bytes()[1]) % 3;
            for (op, n) in ops {
                let name = format!("k{n}");
                let taken = open.contains_key(&name) || previous.contains(&name) || filling.contains(&name);
                proptest::prop_assert_eq!(ids.contains_as(&key(&name), fp(&name)), taken, "{}", name);
                if op == 0 {
                    if let Some(h) = open.remove(&name) {
                        ids.close(h);
                        if window > 0 {
                            if filling.len() == window {
                                previous = std::mem::take(&mut filling);
                            }
                            filling.push(name);
                        }
                    }
                } else if !taken {
                    open.insert(name.clone(), ids.open_as(key(&name), fp(&name)));
                }
                proptest::prop_assert_eq!(ids.len(), open.len() + previous.len() + filling.len());
                let recent: Vec<String> = ids.recent().map(|k| k.1.as_str().to_owned()).collect();
                proptest::prop_assert_eq!(recent, [previous.clone(), filling.clone()].concat());
            }
        }
    }

    #[test]
    fn a_forgotten_generation_is_cleared_a_chunk_at_a_time_and_reused_clean() {
        // W = 100: a generation's table has 256 entries (16 chunks) and its filter 16 words (2),
        // so clearing takes 16 ends after each rotation; 1,000 ends make ten rotations.
        let w = 100;
        let mut ids = ClientIds::new(4, w);
        let name = |i: usize| key(&format!("id{i}"));
        for i in 0..1_000 {
            let h = ids.open(name(i));
            ids.close(h);
            // Ended ids i - j for j < W are always remembered; generations hold [start, i].
            let start = if i < w { 0 } else { (i / w - 1) * w };
            for j in (0..=i).step_by(7) {
                assert_eq!(ids.contains(&name(j)), j >= start, "after {i}: id{j}");
            }
            assert!(ids.contains(&name(i.saturating_sub(w - 1))));
            assert_eq!(ids.len(), i + 1 - start);
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
        assert_eq!(ids.len(), 2, "only the window's two generations of one id remain");
        assert!(ids.contains(&key("k8")) && ids.contains(&key("k9")) && !ids.contains(&key("k7")));
    }
}

//! Duplicate protection for client order ids, per (account, symbol): the ids of open orders plus
//! a bounded window of the most recently ended ones.
//!
//! A client that resubmits after an unknown outcome (a 503 from order entry) reuses its id; the
//! book rejects the second copy as long as the first is open or among the last `window` ended
//! orders.
//!
//! Layout, for the cache: the hash table maps a 32-bit fingerprint of the key to the slot that
//! holds the key (plus a flag when several keys share the fingerprint, chained through `next`), so
//! the answer stays exact while the common paths touch one table entry. The 40-byte keys are read
//! only to confirm a fingerprint match (a duplicate, or a collision). Orders keep their key's slot
//! and fingerprint, and the window ring stores both, so ending an order and evicting the oldest id
//! never hash a key or read a cold key. Everything is pre-sized: steady state allocates nothing.

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
    /// Fingerprint → first slot holding a key with it (| [`CHAINED`] if there are more).
    taken: Table<u32, u32>,
    /// The keys, by slot; read only to confirm a fingerprint match.
    keys: Vec<ClientKey>,
    /// Per slot: the next slot with the same fingerprint, or [`END`].
    next: Vec<u32>,
    /// Free slots.
    free: Vec<u32>,
    /// Ended ids, oldest at `head` once full; a ring of `capacity` entries.
    recent: Vec<Handle>,
    /// Where the oldest ended id sits once the ring is full.
    head: usize,
    /// How many ended ids are remembered.
    capacity: usize,
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
        // One more than open orders and window: an order's id is taken before it is matched, so
        // a book at capacity still takes a new order's id without growing.
        let slots = (open + window + 1).min(CHAINED as usize - 1);
        let taken = Table::with_capacity(slots, 0);
        let mut recent = Vec::with_capacity(window);
        crate::prefault::vec(&mut recent, Handle { slot: 0, fingerprint: 0 });
        let blank = (0, Account::anonymous());
        ClientIds {
            taken,
            keys: vec![blank; slots],
            next: vec![END; slots],
            free: (0..slots as u32).rev().collect(),
            recent,
            head: 0,
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

    /// Moves an open id to the recent window, forgetting the oldest one if the window is full.
    #[inline]
    pub fn close(&mut self, handle: Handle) {
        if self.capacity == 0 {
            self.release(handle);
        } else if self.recent.len() < self.capacity {
            self.recent.push(handle);
        } else {
            let oldest = std::mem::replace(&mut self.recent[self.head], handle);
            self.head = (self.head + 1) % self.capacity;
            self.release(oldest);
        }
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
    /// ring order (what a snapshot relies on, [`crate::snapshot`]).
    pub fn recent(&self) -> impl Iterator<Item = &ClientKey> + '_ {
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
        self.keys.len() - self.free.len()
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
            assert!(ids.is_empty() && ids.taken.is_empty());
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

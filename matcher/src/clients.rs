//! Duplicate protection for client order ids, per (account, symbol): the ids of open orders plus
//! a bounded window of the most recently ended ones.
//!
//! A client that resubmits after an unknown outcome (a 503 from order entry) reuses its id; the
//! book rejects the second copy as long as the first is open or among the last `window` ended
//! orders.
//!
//! Layout, for the cache: the 66-byte keys sit in a slab that is read only to confirm a
//! fingerprint match (a duplicate, or a fingerprint collision); the hash table holds 64-bit
//! fingerprints → slab slot, with keys of equal fingerprint chained through a compact link array,
//! so the answer stays exact. Each order carries its key's slot as a handle, so ending an order
//! and evicting from the window never hash a key. Everything is pre-sized: steady state
//! allocates nothing.

use std::hash::{Hash, Hasher};

use common::{Account, ClientOrderId};
use rustc_hash::{FxHashMap, FxHasher};

/// Whose id: ids are unique per account (the symbol is the book's).
pub type ClientKey = (Account, ClientOrderId);

/// A taken key's slot: what an order keeps to release its id later.
pub type Handle = u32;

/// End of a fingerprint chain.
const END: u32 = u32::MAX;

/// Bookkeeping of one slot: its key's fingerprint and the next slot with the same one.
#[derive(Clone, Copy, Debug)]
struct Link {
    fingerprint: u64,
    next: u32,
}

/// The ids in use by one book.
#[derive(Debug)]
pub struct ClientIds {
    /// Fingerprint → first slot holding a key with it.
    taken: FxHashMap<u64, u32>,
    /// The keys, by slot; read only to confirm a fingerprint match.
    keys: Vec<ClientKey>,
    /// Per slot: fingerprint and chain link.
    links: Vec<Link>,
    /// Free slots.
    free: Vec<u32>,
    /// Slots of ended ids, oldest at `head` once full; a ring of `capacity` entries.
    recent: Vec<u32>,
    /// Where the oldest ended id sits once the ring is full.
    head: usize,
    /// How many ended ids are remembered.
    capacity: usize,
}

fn fingerprint(key: &ClientKey) -> u64 {
    let mut h = FxHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// A 64-bit fingerprint of an account: resting orders keep it so self-trade and ownership checks
/// compare one word and read the full account only on a match.
#[inline]
pub fn owner(account: &Account) -> u64 {
    let mut h = FxHasher::default();
    account.hash(&mut h);
    h.finish()
}

impl ClientIds {
    /// Room for `open` open orders and a window of `window` ended ones, faulted in now.
    pub fn new(open: usize, window: usize) -> ClientIds {
        let slots = open + window;
        // More than twice the most keys it holds: hashbrown then clears tombstones in place
        // instead of reallocating.
        let mut taken = FxHashMap::with_capacity_and_hasher(slots * 2 + 1, Default::default());
        crate::prefault::map(&mut taken, |i| (i as u64, 0));
        let mut recent = Vec::with_capacity(window);
        crate::prefault::vec(&mut recent, 0);
        let blank = (Account::anonymous(), Account::anonymous());
        ClientIds {
            taken,
            keys: vec![blank; slots],
            links: vec![Link { fingerprint: 0, next: END }; slots],
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

    #[inline]
    fn contains_as(&self, key: &ClientKey, fingerprint: u64) -> bool {
        let Some(&first) = self.taken.get(&fingerprint) else { return false };
        let mut slot = first;
        while slot != END {
            if self.keys[slot as usize] == *key {
                return true;
            }
            slot = self.links[slot as usize].next;
        }
        false
    }

    /// Marks an id as open (the caller checked it was free); returns its handle.
    #[inline]
    pub fn open(&mut self, key: ClientKey) -> Handle {
        self.open_as(key, fingerprint(&key))
    }

    #[inline]
    fn open_as(&mut self, key: ClientKey, fingerprint: u64) -> Handle {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.keys[slot as usize] = key;
                slot
            }
            None => {
                self.keys.push(key);
                self.links.push(Link { fingerprint, next: END });
                (self.keys.len() - 1) as u32
            }
        };
        let next = self.taken.insert(fingerprint, slot).unwrap_or(END);
        self.links[slot as usize] = Link { fingerprint, next };
        slot
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

    /// Frees a slot: unchains it from its fingerprint.
    fn release(&mut self, slot: u32) {
        let Link { fingerprint, next } = self.links[slot as usize];
        let first = self.taken.get(&fingerprint).copied().unwrap_or(END);
        if first == slot {
            if next == END {
                self.taken.remove(&fingerprint);
            } else {
                self.taken.insert(fingerprint, next);
            }
        } else {
            // A fingerprint shared by several keys: unlink from the middle of the chain.
            let mut prev = first;
            while prev != END && self.links[prev as usize].next != slot {
                prev = self.links[prev as usize].next;
            }
            if prev != END {
                self.links[prev as usize].next = next;
            }
        }
        self.free.push(slot);
    }

    /// The key behind a handle.
    #[inline]
    pub fn key(&self, handle: Handle) -> &ClientKey {
        &self.keys[handle as usize]
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
        (Account::anonymous(), ClientOrderId::new(s).unwrap())
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
    fn a_zero_window_frees_ids_as_orders_end() {
        let mut ids = ClientIds::new(1, 0);
        let a = ids.open(key("a"));
        assert!(ids.contains(&key("a")));
        ids.close(a);
        assert!(ids.is_empty() && !ids.contains(&key("a")));
    }

    #[test]
    fn keys_that_share_a_fingerprint_stay_exact() {
        let mut ids = ClientIds::new(4, 0);
        let [a, b, c] = ["a", "b", "c"].map(|s| ids.open_as(key(s), 7));
        assert!(["a", "b", "c"].iter().all(|s| ids.contains_as(&key(s), 7)));
        assert!(!ids.contains_as(&key("d"), 7));
        ids.close(b); // from the middle of the chain
        assert!(
            ids.contains_as(&key("a"), 7) && !ids.contains_as(&key("b"), 7) && ids.contains_as(&key("c"), 7)
        );
        ids.close(c); // the chain's head
        assert!(ids.contains_as(&key("a"), 7) && !ids.contains_as(&key("c"), 7));
        ids.close(a);
        assert!(ids.is_empty() && ids.taken.is_empty());
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

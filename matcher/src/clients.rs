//! Duplicate protection for client order ids, per (account, symbol): the ids of open orders plus
//! a bounded window of the most recently ended ones.
//!
//! A client that resubmits after an unknown outcome (a 503 from order entry) reuses its id; the
//! book rejects the second copy as long as the first is open or among the last `window` ended
//! orders. The window is a pre-sized ring, so steady state allocates nothing.

use common::{Account, ClientOrderId};
use rustc_hash::FxHashSet;

/// Whose id: ids are unique per account (the symbol is the book's).
pub type ClientKey = (Account, ClientOrderId);

/// The ids in use by one book.
#[derive(Debug)]
pub struct ClientIds {
    /// Every id that is open or in the recent window.
    taken: FxHashSet<ClientKey>,
    /// Ended ids, oldest at `head`; a ring of `capacity` entries.
    recent: Vec<ClientKey>,
    /// Where the oldest ended id sits once the ring is full.
    head: usize,
    /// How many ended ids are remembered.
    capacity: usize,
}

impl ClientIds {
    /// Room for `open` open orders and a window of `window` ended ones.
    pub fn new(open: usize, window: usize) -> ClientIds {
        let mut taken = FxHashSet::with_capacity_and_hasher((open + window) * 2, Default::default());
        crate::prefault::set(&mut taken, |i| {
            let id = ClientOrderId::new(&format!("{i:x}")).unwrap_or_else(|_| unreachable!("hex digits are valid"));
            (Account::anonymous(), id)
        });
        let mut recent = Vec::with_capacity(window);
        crate::prefault::vec(&mut recent, (Account::anonymous(), Account::anonymous()));
        ClientIds { taken, recent, head: 0, capacity: window }
    }

    /// True if the id is open or recent.
    #[inline]
    pub fn contains(&self, key: &ClientKey) -> bool {
        self.taken.contains(key)
    }

    /// Marks an id as open.
    #[inline]
    pub fn open(&mut self, key: ClientKey) {
        self.taken.insert(key);
    }

    /// Moves an open id to the recent window, forgetting the oldest one if the window is full.
    #[inline]
    pub fn close(&mut self, key: ClientKey) {
        if self.capacity == 0 {
            self.taken.remove(&key);
        } else if self.recent.len() < self.capacity {
            self.recent.push(key);
        } else {
            let oldest = std::mem::replace(&mut self.recent[self.head], key);
            self.head = (self.head + 1) % self.capacity;
            self.taken.remove(&oldest);
        }
    }

    /// How many ids are taken (open + recent).
    pub fn len(&self) -> usize {
        self.taken.len()
    }

    /// True if no id is taken.
    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
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
        for s in ["a", "b", "c"] {
            ids.open(key(s));
        }
        ids.close(key("a"));
        ids.close(key("b"));
        assert!(ids.contains(&key("a")) && ids.contains(&key("b")) && ids.contains(&key("c")));
        ids.close(key("c")); // window of 2: "a" falls out
        assert!(!ids.contains(&key("a")));
        assert!(ids.contains(&key("b")) && ids.contains(&key("c")));
        assert_eq!(ids.len(), 2);
    }

    #[test]
    fn a_zero_window_frees_ids_as_orders_end() {
        let mut ids = ClientIds::new(1, 0);
        ids.open(key("a"));
        assert!(ids.contains(&key("a")));
        ids.close(key("a"));
        assert!(ids.is_empty());
    }
}

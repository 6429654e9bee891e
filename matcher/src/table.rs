//! A fixed-capacity, open-addressing hash table for the hot path: integer keys, small `Copy`
//! values, linear probing, backward-shift deletion.
//!
//! Why not `HashMap`: deleting from hashbrown leaves tombstones that force a rehash, which
//! reallocates unless the table is kept under half full, and its 16-byte-aligned groups waste
//! room. Backward-shift deletion leaves no tombstones, so this table never rehashes in place and
//! allocates only if it outgrows the capacity it was made with.
//!
//! Load: a table is made at most half full at its capacity (it grows only past 7/8). Every probe
//! and every removal walks the run of occupied entries around the key's home, and runs lengthen
//! fast with the load: sized for 7/8 at capacity, the book's two tables ran ~2/3 full and sizing
//! them for 1/2 made the regime benchmarks 25 % faster (README "Speed"), for twice the memory.

/// A key: an integer spread over 64 bits by [`Key::spread`].
pub trait Key: Copy + Eq {
    /// A 64-bit hash of the key whose top bits are well mixed: a key's home entry is its top
    /// `log2(size)` bits.
    fn spread(self) -> u64;
}

/// A multiply-xorshift finaliser (from SplitMix64): every input bit reaches every output bit.
#[inline]
pub fn mix64(x: u64) -> u64 {
    let z = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value type with one value reserved to mark an empty entry.
pub trait Value: Copy + Eq {
    /// Never stored: marks a free entry.
    const EMPTY: Self;
}

/// `u64` keys are order ids: log offsets, consecutive within a partition. Fibonacci hashing (one
/// multiply by 2^64/φ, top bits) spreads consecutive keys evenly over the table, in one
/// instruction instead of the finaliser's six, on every probe and on every entry a removal shifts.
impl Key for u64 {
    #[inline]
    fn spread(self) -> u64 {
        self.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// `u32` keys are used as they are (their bits become the top of the spread): for keys that are
/// already well mixed, and for tests that place keys at chosen homes.
impl Key for u32 {
    #[inline]
    fn spread(self) -> u64 {
        u64::from(self) << 32
    }
}

impl Value for u32 {
    const EMPTY: u32 = u32::MAX;
}

impl Value for u64 {
    const EMPTY: u64 = u64::MAX;
}

/// The table.
#[derive(Debug)]
pub struct Table<K, V> {
    /// Entries; `value == V::EMPTY` marks a free one. Length is a power of two.
    entries: Vec<(K, V)>,
    /// `entries.len() - 1`.
    mask: usize,
    /// `64 - log2(entries.len())`: a key's home is its spread's top bits.
    shift: u32,
    /// Live entries.
    len: usize,
    /// A key to fill free entries with (never looked at).
    blank: K,
}

impl<K: Key, V: Value> Table<K, V> {
    /// A table that holds `capacity` entries at most half full; its memory is written now.
    pub fn with_capacity(capacity: usize, blank: K) -> Table<K, V> {
        let size = (capacity.max(4) * 2).next_power_of_two();
        Table {
            entries: vec![(blank, V::EMPTY); size],
            mask: size - 1,
            shift: 64 - size.trailing_zeros(),
            len: 0,
            blank,
        }
    }

    #[inline]
    fn home(&self, key: K) -> usize {
        // The top bits are the best mixed (a table has at least 8 entries: the shift is < 64).
        (key.spread() >> self.shift) as usize
    }

    /// Walks `key`'s probe run: `Ok(index)` where the key sits, or `Err(index)` of the free entry
    /// that ends the run (where it would go).
    #[inline]
    fn probe(&self, key: K) -> Result<usize, usize> {
        let mut i = self.home(key);
        loop {
            let (k, v) = self.entries[i];
            if v == V::EMPTY {
                return Err(i);
            }
            if k == key {
                return Ok(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: K) -> Option<V> {
        self.probe(key).ok().map(|i| self.entries[i].1)
    }

    /// True if `key` is present.
    #[inline]
    pub fn contains_key(&self, key: K) -> bool {
        self.probe(key).is_ok()
    }

    /// Sets `key` to `value` (which must not be `V::EMPTY`); returns the old value.
    #[inline]
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.upsert(key, |_| value)
    }

    /// Sets `key`'s value to `f(old value)` (`None`: absent) with one probe; returns the old value.
    #[inline]
    pub fn upsert(&mut self, key: K, f: impl FnOnce(Option<V>) -> V) -> Option<V> {
        match self.probe(key) {
            Ok(i) => {
                let old = self.entries[i].1;
                self.entries[i].1 = f(Some(old));
                debug_assert!(self.entries[i].1 != V::EMPTY, "the empty marker is not a value");
                Some(old)
            }
            Err(i) => {
                let value = f(None);
                debug_assert!(value != V::EMPTY, "the empty marker is not a value");
                self.entries[i] = (key, value);
                self.len += 1;
                if self.len * 8 > self.entries.len() * 7 {
                    self.grow();
                }
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    #[inline]
    pub fn remove(&mut self, key: K) -> Option<V> {
        let mut i = self.probe(key).ok()?;
        let removed = self.entries[i].1;
        // Backward shift: pull later entries of the probe run into the hole when their home
        // allows, so no tombstone is needed.
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            let (k, v) = self.entries[j];
            if v == V::EMPTY {
                break;
            }
            let home = self.home(k);
            // Entry j may move to i if its home is not cyclically inside (i, j].
            let stays = if i <= j { i < home && home <= j } else { i < home || home <= j };
            if !stays {
                self.entries[i] = (k, v);
                i = j;
            }
        }
        self.entries[i] = (self.blank, V::EMPTY);
        self.len -= 1;
        Some(removed)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Doubles the table (allocates: only when it outgrows the capacity it was made with).
    #[cold]
    fn grow(&mut self) {
        let size = self.entries.len() * 2;
        let old = std::mem::replace(&mut self.entries, vec![(self.blank, V::EMPTY); size]);
        self.mask = size - 1;
        self.shift = 64 - size.trailing_zeros();
        self.len = 0;
        for (k, v) in old {
            if v != V::EMPTY {
                self.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn agrees_with_a_hashmap_under_churn() {
        // Small key range and a tiny start: many collisions, wrap-around and growth.
        let mut t: Table<u64, u32> = Table::with_capacity(4, 0);
        let mut m: HashMap<u64, u32> = HashMap::new();
        let mut x = 12345u64;
        for step in 0..200_000u32 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let key = (x >> 33) % 97;
            match (x >> 20) % 3 {
                0 | 1 => assert_eq!(t.insert(key, step), m.insert(key, step)),
                _ => assert_eq!(t.remove(key), m.remove(&key)),
            }
            assert_eq!(t.len(), m.len());
            if step % 1_000 == 0 {
                for k in 0..97 {
                    assert_eq!(t.get(k), m.get(&k).copied(), "key {k} at step {step}");
                }
            }
        }
    }

    /// Order ids are consecutive offsets on a few partitions: Fibonacci hashing must spread them
    /// so that probe runs stay short (the table ~3/8 full; hashing them as they are would put
    /// them all at one home).
    #[test]
    fn consecutive_order_ids_make_short_runs() {
        for partitions in [1u64, 2, 3] {
            let mut t: Table<u64, u64> = Table::with_capacity(6_000, 0);
            let per = 6_000 / partitions;
            for p in 0..partitions {
                for offset in 1_000_000..1_000_000 + per {
                    t.insert((p << 48) | offset, 1);
                }
            }
            // The longest run of occupied entries.
            let (mut run, mut longest) = (0, 0);
            for &(_, v) in t.entries.iter().chain(&t.entries) {
                run = if v == u64::EMPTY { 0 } else { run + 1 };
                longest = longest.max(run);
            }
            assert!(longest <= 24, "{partitions} partitions: a run of {longest} entries");
        }
    }

    #[test]
    fn keys_with_the_same_home_survive_removals_in_any_order() {
        // u32 keys are used as they are: keys with the same top bits share a home; from near the
        // end, their run wraps around to the start.
        let size = Table::<u32, u32>::with_capacity(64, 0).entries.len() as u32;
        let bits = size.trailing_zeros();
        for home in [0, size - 3] {
            let mut t: Table<u32, u32> = Table::with_capacity(64, 0);
            let keys: Vec<u32> = (0..40).map(|k| (home << (32 - bits)) | k).collect();
            assert!(keys.iter().all(|&k| t.home(k) == home as usize));
            for &k in &keys {
                t.insert(k, k + 1);
            }
            for (n, &k) in keys.iter().rev().step_by(3).enumerate() {
                assert_eq!(t.remove(k), Some(k + 1), "{n}");
                assert_eq!(t.remove(k), None);
            }
            for (n, &k) in keys.iter().enumerate() {
                // rev().step_by(3) from the 40th took the 40th, 37th, … 1st (n = 39, 36, … 0).
                let removed = n.is_multiple_of(3);
                assert_eq!(t.get(k), (!removed).then_some(k + 1), "home {home}, key {k}");
            }
        }
    }
}

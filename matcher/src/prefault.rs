//! Touching pre-sized memory at start-up. A `Vec` or hash table made `with_capacity` is only
//! reserved: the kernel maps and zeroes each page on first write, which on the hot path shows up
//! as multi-microsecond stalls. Writing every entry once at construction moves that cost to
//! start-up. Each helper leaves its container empty, with its capacity.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// Fills a map to its capacity with distinct entries from `entry`, then empties it.
pub fn map<K: Hash + Eq, V, S: BuildHasher>(map: &mut HashMap<K, V, S>, entry: impl Fn(usize) -> (K, V)) {
    for i in 0..map.capacity() {
        let (k, v) = entry(i);
        map.insert(k, v);
    }
    map.clear();
}

/// Fills a vector to its capacity with `value`, then empties it.
pub fn vec<T: Clone>(v: &mut Vec<T>, value: T) {
    v.resize(v.capacity(), value);
    v.clear();
}

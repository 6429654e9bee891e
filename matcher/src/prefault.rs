//! Touching pre-sized memory at start-up. A `Vec` or hash table made `with_capacity` is only
//! reserved: the kernel maps and zeroes each page on first write, which on the hot path shows up
//! as multi-microsecond stalls. Writing every entry once at construction moves that cost to
//! start-up. Each helper leaves its container empty, with its capacity.

/// Fills a vector to its capacity with `value`, then empties it.
pub fn vec<T: Clone>(v: &mut Vec<T>, value: T) {
    v.resize(v.capacity(), value);
    v.clear();
}

//! One side of a book: its price levels, indexed by price.
//!
//! Prices live on a tick grid and nearly all activity is within a few hundred ticks of the best
//! price, so the levels fewer than `window` ticks from the best sit in a direct-mapped ring: the
//! level of key `k` (the price for bids, its negation for asks) is `slots[k mod window]`, found,
//! created and removed in O(1) with no search and no shifting, and an occupancy bitmap finds the
//! next level when the best empties (a scan of 64 ticks per word). Levels further from the best
//! — a book spread wider than the window — sit in a sorted `Vec`, worst first (a binary search to
//! find one, a shift of the further ones to make or remove one); they move into the ring as the
//! best comes towards them and out of it as the best moves away, each move O(1) (they are always
//! the far end's best). (This
//! replaced one sorted `Vec` of all levels: a binary search per lookup, and a memmove of every
//! better level per level created or emptied, which cost most when the price ran across
//! hundreds of levels — README "Speed".)
//!
//! A level's total is the sum of its orders' open quantities (`Book::validate` checks it after
//! every command in the tests). [`Level::add`] and [`Level::remove`] keep it, checked: a broken
//! invariant stops a debug build (where `cargo test` runs) at the first wrong step, and a release
//! build clamps rather than wraps, so it can never publish a level of ~2^64 lots.

use common::{Price, Qty, Side};

use crate::slab::NIL;

/// The orders resting at one price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// The price.
    pub price: Price,
    /// Total open quantity of its orders.
    pub qty: Qty,
    /// How many orders rest here.
    pub count: u32,
    /// Oldest order: matched first.
    pub head: u32,
    /// Newest order: new arrivals queue behind it.
    pub tail: u32,
}

impl Level {
    /// Adds an order's open quantity to the total. Cannot overflow: an order holds at most
    /// `MAX_ORDER_QTY` (2^32) lots and a level counts its orders in a `u32`, so the total stays
    /// below 2^32 × 2^32 = 2^64.
    #[inline]
    pub fn add(&mut self, qty: Qty) {
        let total = self.qty.checked_add(qty);
        debug_assert!(total.is_some(), "a level's total overflowed");
        self.qty = total.unwrap_or(Qty(u64::MAX));
    }

    /// Takes open quantity that rests here (all or part of one order's) off the total. Cannot
    /// underflow: the total is the sum of its orders' open quantities, and `qty` is at most one.
    #[inline]
    pub fn remove(&mut self, qty: Qty) {
        let total = self.qty.checked_sub(qty);
        debug_assert!(total.is_some(), "a level's total fell below one of its orders");
        self.qty = total.unwrap_or(Qty::ZERO);
    }
}

/// An empty ring slot.
const VACANT: Level = Level { price: Price(0), qty: Qty::ZERO, count: 0, head: NIL, tail: NIL };

/// The levels of one side.
///
/// Keys: a price's key is larger the better the price (the price for bids, its negation for
/// asks), so one code path serves both sides. Invariant: with `best` the best level's key, a
/// level with `best - key < window` is in the ring (its bit set), any other is in `far`.
#[derive(Debug)]
pub struct Ladder {
    /// Bids (highest price is best) or asks (lowest is best).
    pub side: Side,
    /// The ring: the level of key `k` (within the window) at `k & mask`.
    slots: Vec<Level>,
    /// Which ring slots hold a level: bit `i % 64` of word `i / 64`.
    bits: Vec<u64>,
    /// `window - 1`; the window is a power of two.
    mask: usize,
    /// Levels in the ring.
    near: usize,
    /// Levels `window` or more ticks worse than the best, worst first (ascending key).
    far: Vec<Level>,
    /// The best level's key (meaningless while the side is empty).
    best: i64,
}

impl Ladder {
    /// An empty side whose ring covers the `window` ticks nearest the best (clamped to 1..=2^24,
    /// rounded up to a power of two), with room for as many levels further out before the
    /// overflow grows. Memory (2 × `window` × 32 bytes) is written now.
    pub fn new(side: Side, window: usize) -> Ladder {
        let window = window.clamp(1, 1 << 24).next_power_of_two();
        let mut far = Vec::with_capacity(window);
        crate::prefault::vec(&mut far, VACANT);
        Ladder {
            side,
            slots: vec![VACANT; window],
            bits: vec![0; window.div_ceil(64)],
            mask: window - 1,
            near: 0,
            far,
            best: 0,
        }
    }

    /// The sort key: larger is better on both sides.
    #[inline]
    fn key(&self, price: Price) -> i64 {
        match self.side {
            Side::Buy => price.0,
            Side::Sell => price.0.wrapping_neg(),
        }
    }

    /// The ring slot of a key.
    #[inline]
    fn pos(&self, key: i64) -> usize {
        key as usize & self.mask
    }

    /// How many ticks `key` is worse than the best (the caller knows it is not better).
    #[inline]
    fn below_best(&self, key: i64) -> u64 {
        self.best.wrapping_sub(key) as u64
    }

    /// True if a level at `key` (not better than the best) belongs in the ring.
    #[inline]
    fn in_ring(&self, key: i64) -> bool {
        self.below_best(key) <= self.mask as u64
    }

    #[inline]
    fn occupied(&self, i: usize) -> bool {
        self.bits[i >> 6] & (1 << (i & 63)) != 0
    }

    #[inline]
    fn set(&mut self, i: usize) {
        self.bits[i >> 6] |= 1 << (i & 63);
    }

    #[inline]
    fn unset(&mut self, i: usize) {
        self.bits[i >> 6] &= !(1 << (i & 63));
    }

    /// True if `a` is a strictly better price than `b` for this side.
    #[inline]
    pub fn better(&self, a: Price, b: Price) -> bool {
        self.key(a) > self.key(b)
    }

    /// Number of levels.
    #[inline]
    pub fn len(&self) -> usize {
        self.near + self.far.len()
    }

    /// True if the side has no level.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.near == 0
    }

    /// The best level.
    #[inline]
    pub fn best(&self) -> Option<&Level> {
        (!self.is_empty()).then(|| &self.slots[self.pos(self.best)])
    }

    /// The best level, to change.
    #[inline]
    pub fn best_mut(&mut self) -> Option<&mut Level> {
        let i = self.pos(self.best);
        (!self.is_empty()).then(|| &mut self.slots[i])
    }

    /// Where the level at `key` is: `Ok(Some(i))` in the ring at `i`, `Ok(None)` not there (and
    /// not in `far`), `Err(r)` far from the best (`r` as `binary_search` gives it).
    #[inline]
    fn locate(&self, key: i64) -> Result<Option<usize>, Result<usize, usize>> {
        if self.is_empty() || key > self.best {
            return Ok(None);
        }
        if self.in_ring(key) {
            let i = self.pos(key);
            return Ok(self.occupied(i).then_some(i));
        }
        Err(self.far.binary_search_by_key(&key, |l| self.key(l.price)))
    }

    /// The level at `price`, if there is one.
    #[inline]
    pub fn get(&self, price: Price) -> Option<&Level> {
        match self.locate(self.key(price)) {
            Ok(i) => i.map(|i| &self.slots[i]),
            Err(r) => r.ok().map(|i| &self.far[i]),
        }
    }

    /// The level of a resting order at `price`. A linked order's level exists (it is removed
    /// only with its last order), so a missing one means the book is corrupt: this stops the
    /// book thread — in release builds too — rather than go on matching on a broken book (a
    /// `debug_assert!` and an early return here once left the order linked in a freed slot).
    /// The matcher stops and replays what was not committed on the next start.
    #[inline(always)] // Every cancel: README, Speed, *Calls that cost*.
    pub fn level_of(&mut self, price: Price) -> &mut Level {
        match self.locate(self.key(price)) {
            Ok(Some(i)) => &mut self.slots[i],
            Err(Ok(i)) => &mut self.far[i],
            Ok(None) | Err(Err(_)) => corrupt(),
        }
    }

    /// The level at `price`, created empty if missing.
    #[inline]
    pub fn level_at(&mut self, price: Price) -> &mut Level {
        let key = self.key(price);
        let fresh = Level { price, ..VACANT };
        if self.is_empty() {
            self.best = key;
        } else if key > self.best {
            self.raise_best(key);
        } else if let Err(far) = self.locate(key) {
            return match far {
                Ok(i) => &mut self.far[i],
                Err(i) => {
                    self.far.insert(i, fresh);
                    &mut self.far[i]
                }
            };
        }
        let i = self.pos(key);
        if !self.occupied(i) {
            self.slots[i] = fresh;
            self.set(i);
            self.near += 1;
        }
        &mut self.slots[i]
    }

    /// Removes the (emptied) level at `price`, which must exist.
    #[inline]
    pub fn remove(&mut self, price: Price) {
        let key = self.key(price);
        match self.locate(key) {
            Ok(Some(i)) => self.remove_near(i, key),
            Err(Ok(i)) => {
                self.far.remove(i);
            }
            Ok(None) | Err(Err(_)) => corrupt(),
        }
    }

    /// Removes the best level (emptied by a take).
    #[inline]
    pub fn pop_best(&mut self) {
        if !self.is_empty() {
            self.remove_near(self.pos(self.best), self.best);
        }
    }

    /// Takes the ring's level at slot `i` (key `key`) out; a new best if it was the best.
    #[inline]
    fn remove_near(&mut self, i: usize, key: i64) {
        self.unset(i);
        self.near -= 1;
        if key == self.best {
            self.lower_best();
        }
    }

    /// A new best at `key`, better than the current one: the levels that fall `window` or more
    /// ticks behind it leave the ring for `far`, in ascending key order (all better than what
    /// `far` holds).
    fn raise_best(&mut self, key: i64) {
        let window = self.mask as u64 + 1;
        // Keys best - window + 1 ..= min(key - window, best) leave: `gone` of them, lowest first.
        let gone = (key.wrapping_sub(self.best) as u64).min(window);
        let mut k = self.best.wrapping_sub(self.mask as i64);
        let mut left = gone;
        while left > 0 && self.near > 0 {
            let i = self.pos(k);
            let word = self.bits[i >> 6] >> (i & 63);
            if word == 0 {
                // Nothing set from here to the end of this word (or of the ring): skip it.
                let skip = ((64 - (i & 63)).min(self.mask + 1 - i) as u64).min(left);
                k = k.wrapping_add(skip as i64);
                left -= skip;
                continue;
            }
            let step = u64::from(word.trailing_zeros());
            if step >= left {
                break;
            }
            k = k.wrapping_add(step as i64);
            let i = self.pos(k);
            self.far.push(self.slots[i]);
            self.unset(i);
            self.near -= 1;
            k = k.wrapping_add(1);
            left -= step + 1;
        }
        self.best = key;
    }

    /// The best level is gone: the next one in the ring becomes the best, or (ring empty) the
    /// best of `far`; then `far`'s levels now within the window move into the ring.
    fn lower_best(&mut self) {
        if self.near > 0 {
            let gap = self.prev_set(self.pos(self.best.wrapping_sub(1)));
            self.best = self.best.wrapping_sub(1 + gap as i64);
        } else if let Some(level) = self.far.last() {
            self.best = self.key(level.price);
        } else {
            return;
        }
        while let Some(&level) = self.far.last() {
            let key = self.key(level.price);
            if !self.in_ring(key) {
                break;
            }
            self.far.pop();
            let i = self.pos(key);
            self.slots[i] = level;
            self.set(i);
            self.near += 1;
        }
    }

    /// Steps from ring slot `from` down (wrapping) to the first occupied slot: 0 if `from` is.
    /// The ring must hold a level.
    fn prev_set(&self, from: usize) -> usize {
        let (mut i, mut steps) = (from, 0);
        loop {
            let b = i & 63;
            let word = self.bits[i >> 6] & (u64::MAX >> (63 - b));
            if word != 0 {
                return steps + b - (63 - word.leading_zeros() as usize);
            }
            steps += b + 1;
            i = if i >> 6 == 0 { self.mask } else { (i & !63) - 1 };
        }
    }

    /// The price of the best level strictly worse than `price` (which need not have a level).
    pub fn next_worse(&self, price: Price) -> Option<Price> {
        if self.is_empty() {
            return None;
        }
        let key = self.key(price);
        if key > self.best {
            return Some(self.slots[self.pos(self.best)].price);
        }
        // The ring holds keys best - mask ..= best: look below `key` down to its bottom.
        let below = self.below_best(key);
        if below < self.mask as u64 {
            let from = key.wrapping_sub(1);
            let gap = self.prev_set(self.pos(from));
            if (gap as u64) < self.mask as u64 - below {
                return Some(self.slots[self.pos(from.wrapping_sub(gap as i64))].price);
            }
        }
        let n = self.far.partition_point(|l| self.key(l.price) < key);
        n.checked_sub(1).map(|i| self.far[i].price)
    }

    /// The levels, best first.
    pub fn iter(&self) -> Iter<'_> {
        Iter { ladder: self, key: self.best, near: self.near, far: self.far.len() }
    }

    /// Total open quantity and order count on this side.
    pub fn totals(&self) -> (u64, u64) {
        self.iter().fold((0, 0), |(q, c), l| (q + l.qty.0, c + u64::from(l.count)))
    }

    /// Checks the layout's invariants (levels sorted, each where its distance from the best puts
    /// it). For tests.
    pub fn validate(&self) -> Result<(), String> {
        let set: usize = self.bits.iter().map(|w| w.count_ones() as usize).sum();
        if set != self.near || (self.near == 0 && !self.far.is_empty()) {
            return Err(format!(
                "{:?}: {set} ring bits, {} ring levels, {} far",
                self.side,
                self.near,
                self.far.len()
            ));
        }
        if self.near > 0 && self.key(self.slots[self.pos(self.best)].price) != self.best {
            return Err(format!("{:?}: the best slot holds another price", self.side));
        }
        let mut prev: Option<i64> = None;
        for (n, level) in self.iter().enumerate() {
            let key = self.key(level.price);
            if prev.is_some_and(|p| p <= key) {
                return Err(format!("{:?}: levels out of order at {level:?}", self.side));
            }
            let in_ring = n < self.near;
            if in_ring != self.in_ring(key) {
                return Err(format!("{:?}: {level:?} on the wrong side of the window", self.side));
            }
            prev = Some(key);
        }
        Ok(())
    }

    /// Drops every level (a corrupt book, in tests).
    #[cfg(test)]
    pub fn clear(&mut self) {
        self.bits.fill(0);
        self.near = 0;
        self.far.clear();
    }
}

/// The levels of a side, best first: the ring's from the best down, then `far`'s.
pub struct Iter<'a> {
    ladder: &'a Ladder,
    /// The key to search down from in the ring.
    key: i64,
    /// Ring levels not yet given.
    near: usize,
    /// `far` levels not yet given (the next is `far[far - 1]`).
    far: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a Level;

    #[inline]
    fn next(&mut self) -> Option<&'a Level> {
        let l = self.ladder;
        if self.near > 0 {
            let gap = l.prev_set(l.pos(self.key));
            let key = self.key.wrapping_sub(gap as i64);
            self.key = key.wrapping_sub(1);
            self.near -= 1;
            return Some(&l.slots[l.pos(key)]);
        }
        self.far = self.far.checked_sub(1)?;
        Some(&l.far[self.far])
    }
}

/// A resting order's level is missing. Cold and out of line: the hot path only branches here.
#[cold]
#[inline(never)]
fn corrupt() -> ! {
    panic!("a resting order's price level is missing: the book is corrupt")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn prices(l: &Ladder) -> Vec<i64> {
        l.iter().map(|l| l.price.0).collect()
    }

    #[test]
    fn best_comes_first_on_both_sides() {
        for (side, want) in [(Side::Buy, vec![20, 10, 9, 5, 1]), (Side::Sell, vec![1, 5, 9, 10, 20])] {
            for window in [1, 4, 64, 4096] {
                let mut l = Ladder::new(side, window);
                for p in [10, 5, 20, 1, 9, 10, 5] {
                    l.level_at(Price(p));
                }
                assert_eq!(prices(&l), want, "{side:?}, window {window}");
                assert_eq!(l.best().unwrap().price.0, want[0]);
                assert_eq!(l.len(), 5);
                l.validate().unwrap();
            }
        }
        assert!(Ladder::new(Side::Buy, 4).better(Price(5), Price(4)));
        assert!(Ladder::new(Side::Sell, 4).better(Price(4), Price(5)));
    }

    /// Random creates and removes, prices moving in runs, against a sorted map: every lookup, the
    /// order of the levels and the ring/far split agree after every step, for windows from one
    /// tick (everything but the best is far) to wider than the prices spread.
    #[test]
    fn agrees_with_a_sorted_map_as_the_price_runs() {
        for side in [Side::Buy, Side::Sell] {
            for window in [1, 2, 4, 64, 128, 1024] {
                let mut l = Ladder::new(side, window);
                let mut model: BTreeMap<i64, ()> = BTreeMap::new();
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ window as u64;
                let mut centre: i64 = 10_000;
                for step in 0..20_000u32 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    if step % 500 == 0 {
                        // A run: the centre jumps, sometimes past the window.
                        centre += ((x >> 40) % 601) as i64 - 300;
                    }
                    let p = Price(centre + ((x >> 20) % 301) as i64 - 150);
                    if (x >> 50).is_multiple_of(3) && !model.is_empty() {
                        // Remove a present level: the best half the time.
                        let p = if (x >> 55).is_multiple_of(2) {
                            l.best().unwrap().price
                        } else {
                            let n = (x >> 8) as usize % model.len();
                            Price(*model.keys().nth(n).unwrap())
                        };
                        l.remove(p);
                        model.remove(&p.0);
                    } else {
                        assert_eq!(l.level_at(p).price, p);
                        model.insert(p.0, ());
                    }
                    let want: Vec<i64> = match side {
                        Side::Buy => model.keys().rev().copied().collect(),
                        Side::Sell => model.keys().copied().collect(),
                    };
                    if step % 97 == 0 || model.len() < 3 {
                        assert_eq!(prices(&l), want, "{side:?}, window {window}, step {step}");
                        l.validate().unwrap();
                        for q in p.0 - 3..p.0 + 3 {
                            assert_eq!(l.get(Price(q)).is_some(), model.contains_key(&q), "{q}");
                            let worse = match side {
                                Side::Buy => model.range(..q).next_back(),
                                Side::Sell => model.range(q + 1..).next(),
                            };
                            assert_eq!(l.next_worse(Price(q)).map(|p| p.0), worse.map(|(&k, _)| k), "{q}");
                        }
                        // From every level, the walk mass cancel makes.
                        let mut walk = Vec::new();
                        let mut at = l.best().map(|b| b.price);
                        while let Some(p) = at {
                            walk.push(p.0);
                            at = l.next_worse(p);
                        }
                        assert_eq!(walk, want);
                    }
                    assert_eq!(l.len(), model.len());
                    assert_eq!(l.best().map(|b| b.price.0), want.first().copied());
                }
            }
        }
    }

    #[test]
    fn a_level_is_changed_in_place() {
        let mut l = Ladder::new(Side::Sell, 4);
        l.level_at(Price(10)).add(Qty(3));
        l.level_at(Price(30)).add(Qty(4));
        l.level_at(Price(10)).add(Qty(1));
        l.level_of(Price(30)).add(Qty(1));
        assert_eq!(l.get(Price(10)).map(|l| l.qty), Some(Qty(4)));
        assert_eq!(l.get(Price(30)).map(|l| l.qty), Some(Qty(5)));
        assert_eq!(l.get(Price(20)), None);
        l.best_mut().unwrap().remove(Qty(4));
        l.pop_best();
        assert_eq!(l.best().map(|l| (l.price, l.qty)), Some((Price(30), Qty(5))));
        l.validate().unwrap();
    }

    #[test]
    fn level_totals_add_and_remove() {
        let mut level = Level { price: Price(1), qty: Qty(5), count: 1, head: NIL, tail: NIL };
        level.add(Qty(7));
        level.remove(Qty(12));
        assert_eq!(level.qty, Qty::ZERO);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "fell below")]
    fn a_level_total_below_its_orders_stops_a_debug_build() {
        let mut level = Level { price: Price(1), qty: Qty(5), count: 1, head: NIL, tail: NIL };
        level.remove(Qty(6));
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn a_level_total_below_its_orders_clamps_in_a_release_build() {
        let mut level = Level { price: Price(1), qty: Qty(5), count: 1, head: NIL, tail: NIL };
        level.remove(Qty(6));
        assert_eq!(level.qty, Qty::ZERO, "not ~2^64 lots");
        level.qty = Qty(u64::MAX - 1);
        level.add(Qty(2));
        assert_eq!(level.qty, Qty(u64::MAX));
    }

    #[test]
    #[should_panic(expected = "book is corrupt")]
    fn a_missing_level_stops_the_book() {
        let mut l = Ladder::new(Side::Buy, 4);
        l.level_at(Price(10));
        l.level_of(Price(11));
    }

    #[test]
    #[should_panic(expected = "book is corrupt")]
    fn removing_a_missing_far_level_stops_the_book() {
        let mut l = Ladder::new(Side::Buy, 4);
        l.level_at(Price(100));
        l.level_at(Price(10));
        l.remove(Price(11));
    }
}

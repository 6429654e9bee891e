//! One side of a book: its price levels, sorted so the best price is last.
//!
//! Most activity is at or near the top of the book, so keeping the best level at the end of a
//! `Vec` makes the common cases — trade against the best, add near the best, remove an emptied
//! best — cheap pushes and pops, with no allocation once the `Vec` has its capacity.
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

/// The levels of one side, worst first, best last.
#[derive(Debug)]
pub struct Ladder {
    /// Bids (highest price is best) or asks (lowest is best).
    pub side: Side,
    /// Sorted worst to best (ascending price for bids, descending for asks): the best level is
    /// `levels.last()`.
    pub levels: Vec<Level>,
}

/// How many levels from the top a lookup scans before falling back to binary search.
const LINEAR_SCAN: usize = 8;

impl Ladder {
    /// An empty side with room for `capacity` levels.
    pub fn with_capacity(side: Side, capacity: usize) -> Ladder {
        Ladder { side, levels: Vec::with_capacity(capacity) }
    }

    /// The sort key: larger is better on both sides.
    #[inline]
    fn key(&self, price: Price) -> i64 {
        match self.side {
            Side::Buy => price.0,
            Side::Sell => -price.0,
        }
    }

    /// True if `a` is a strictly better price than `b` for this side.
    #[inline]
    pub fn better(&self, a: Price, b: Price) -> bool {
        self.key(a) > self.key(b)
    }

    /// The best level.
    #[inline]
    pub fn best(&self) -> Option<&Level> {
        self.levels.last()
    }

    /// `Ok(index)` of the level at `price`, or `Err(index)` where it would be inserted.
    #[inline]
    pub fn find(&self, price: Price) -> Result<usize, usize> {
        let key = self.key(price);
        let len = self.levels.len();
        // Near the top first: where most adds and cancels land.
        let scan = len.min(LINEAR_SCAN);
        for i in (len - scan..len).rev() {
            let k = self.key(self.levels[i].price);
            if k == key {
                return Ok(i);
            }
            if k < key {
                return Err(i + 1);
            }
        }
        self.levels[..len - scan].binary_search_by_key(&key, |l| self.key(l.price))
    }

    /// The index of the level of a resting order at `price`. A linked order's level exists (it
    /// is removed only with its last order), so a missing one means the book is corrupt: this
    /// stops the book thread — in release builds too — rather than go on matching on a broken
    /// book (a `debug_assert!` and an early return here once left the order linked in a freed
    /// slot). The matcher stops and replays what was not committed on the next start.
    #[inline]
    pub fn level_of(&self, price: Price) -> usize {
        match self.find(price) {
            Ok(i) => i,
            Err(_) => corrupt(),
        }
    }

    /// The level at `price`, created empty if missing; returns its index.
    #[inline]
    pub fn level_at(&mut self, price: Price) -> usize {
        match self.find(price) {
            Ok(i) => i,
            Err(i) => {
                let level = Level { price, qty: Qty::ZERO, count: 0, head: NIL, tail: NIL };
                self.levels.insert(i, level);
                i
            }
        }
    }

    /// Total open quantity and order count on this side.
    pub fn totals(&self) -> (u64, u64) {
        self.levels.iter().fold((0, 0), |(q, c), l| (q + l.qty.0, c + u64::from(l.count)))
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
    use super::*;

    fn prices(l: &Ladder) -> Vec<i64> {
        l.levels.iter().map(|l| l.price.0).collect()
    }

    #[test]
    fn best_is_last_on_both_sides() {
        for (side, want) in [(Side::Buy, vec![1, 5, 9, 10, 20]), (Side::Sell, vec![20, 10, 9, 5, 1])] {
            let mut l = Ladder::with_capacity(side, 4);
            for p in [10, 5, 20, 1, 9, 10, 5] {
                l.level_at(Price(p));
            }
            assert_eq!(prices(&l), want, "{side:?}");
            assert_eq!(l.best().unwrap().price.0, *want.last().unwrap());
        }
    }

    #[test]
    fn find_agrees_with_a_plain_search_past_the_linear_window() {
        let mut l = Ladder::with_capacity(Side::Buy, 64);
        for p in (0..40).map(|i| i * 3) {
            l.level_at(Price(p));
        }
        for p in -2..125 {
            let plain = l.levels.iter().position(|x| x.price.0 >= p);
            match l.find(Price(p)) {
                Ok(i) => assert_eq!(l.levels[i].price.0, p),
                Err(i) => assert_eq!(Some(i).filter(|&i| i < l.levels.len()), plain, "{p}"),
            }
        }
        assert!(l.better(Price(5), Price(4)));
        let asks = Ladder::with_capacity(Side::Sell, 1);
        assert!(asks.better(Price(4), Price(5)));
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
        let mut l = Ladder::with_capacity(Side::Buy, 4);
        l.level_at(Price(10));
        l.level_of(Price(11));
    }
}

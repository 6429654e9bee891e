//! The quoting core: pure, no I/O, no clock. Given a symbol's increments and band, a mid price
//! and a seeded random source, it says where the quotes should be, how the mid walks, which one
//! step (place or amend) brings the resting quotes closer to that, and what a crossing order
//! looks like. Every price here is an `i64` count of ticks and every quantity a `u64` count of
//! lots; decimals appear only in [`Market::new`] (parsed exactly, never through `f64`) and in
//! [`Market::price_text`] / [`Market::qty_text`] on the way out. (Probabilities are `f64`: they
//! choose, they are never sent.)
//!
//! The quotes of one symbol are `levels` bids and `levels` asks at `mid ∓ (half_spread + k·step)`
//! ticks ([`Shape::targets`]), held in slots that keep their side but not their level: when the
//! mid moves, only the quotes that sit at no wanted price move, each to a wanted price no quote
//! holds ([`next_step`]). The mid moves as a random walk on the tick grid with a pull back
//! towards the band's centre (the last trade, or the reference before one), clamped so the
//! outermost quote stays within half the band: well inside what the book accepts, so a quote is
//! never refused for the band.

use common::{Decimal, DecimalError, Side};

/// Most quote levels a side may have.
pub const MAX_LEVELS: usize = 20;
/// Lots of a quote: a uniform pick from 1 to this (capped by the symbol's maximum).
pub const MAX_QUOTE_LOTS: u64 = 10;
/// Lots a crossing order takes at most.
pub const MAX_CROSS_LOTS: u64 = 3;
/// Chance that the mid moves at all on a step of its symbol.
pub const MOVE_PROB: f64 = 0.5;

/// A small, seedable random source (xorshift64*, seeded through splitmix64): the same seed gives
/// the same quotes, walk and crosses. Not for anything secret.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A source for `seed` (any value, zero too).
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p` (0 never, 1 always).
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// Why a symbol cannot be quoted: what the API said of it does not parse, or the quotes asked for
/// do not fit in its band.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// A decimal that does not parse or does not sit on its grid.
    #[error("{symbol}: {field} {value:?} {error}")]
    Decimal {
        /// The symbol.
        symbol: String,
        /// `tick`, `lot`, `reference`, `max_qty`, `price`.
        field: &'static str,
        /// The text as given.
        value: String,
        /// What is wrong with it.
        error: DecimalError,
    },
    /// Zero or negative where only a positive value makes sense.
    #[error("{symbol}: {field} must be positive, not {value:?}")]
    NotPositive {
        /// The symbol.
        symbol: String,
        /// `tick`, `lot`, `reference`, `max_qty`.
        field: &'static str,
        /// The text as given.
        value: String,
    },
    /// Too few or too many levels.
    #[error("levels must be 1 to {MAX_LEVELS}, not {0}")]
    Levels(usize),
    /// The quotes would not stay well inside the band.
    #[error(
        "{symbol}: the band (±{band_bps} bp, ±{band_ticks} ticks around {reference_ticks}) is too narrow for \
         quotes spanning ±{span_ticks} ticks with room to move; lower --levels or --spread-bps"
    )]
    BandTooNarrow {
        /// The symbol.
        symbol: String,
        /// Its band, in basis points.
        band_bps: u32,
        /// The band's half-width around the reference, in ticks.
        band_ticks: i64,
        /// The reference, in ticks.
        reference_ticks: i64,
        /// How far from the mid the outermost quote sits, in ticks.
        span_ticks: i64,
    },
}

/// One symbol as the simulator needs it: its increments, band and limits, parsed exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Market {
    /// The symbol's name (`ABC`).
    pub symbol: String,
    /// The price increment: every price sent is a whole number of it.
    pub tick: Decimal,
    /// The quantity increment.
    pub lot: Decimal,
    /// Half-width of the book's price band in basis points of its centre (0: no band).
    pub band_bps: u32,
    /// The configured reference price, in ticks (the band's centre before the first trade).
    pub reference: i64,
    /// The largest quantity one order may have, in lots.
    pub max_lots: u64,
}

impl Market {
    /// A market from the decimals `GET /api/v1/symbols` gives (`max_qty` may be missing: no cap).
    pub fn new(
        symbol: &str,
        tick: &str,
        lot: &str,
        band_bps: u32,
        reference: &str,
        max_qty: Option<&str>,
    ) -> Result<Market, SetupError> {
        let decimal = |field: &'static str, value: &str| {
            let d = Decimal::parse(value.trim()).map_err(|error| SetupError::Decimal {
                symbol: symbol.to_owned(),
                field,
                value: value.to_owned(),
                error,
            })?;
            if d.is_positive() {
                Ok(d)
            } else {
                Err(SetupError::NotPositive { symbol: symbol.to_owned(), field, value: value.to_owned() })
            }
        };
        let tick = decimal("tick", tick)?;
        let lot = decimal("lot", lot)?;
        let mut market =
            Market { symbol: symbol.to_owned(), tick, lot, band_bps, reference: 0, max_lots: u64::MAX };
        market.reference = market.ticks("reference", reference)?;
        if let Some(max) = max_qty {
            decimal("max_qty", max)?;
            market.max_lots = market.lots("max_qty", max)?;
        }
        Ok(market)
    }

    /// A price's text as a positive number of ticks; off the tick grid is an error, never rounded.
    pub fn ticks(&self, field: &'static str, text: &str) -> Result<i64, SetupError> {
        let bad =
            |error| SetupError::Decimal { symbol: self.symbol.clone(), field, value: text.to_owned(), error };
        let units = Decimal::parse(text.trim()).and_then(|d| d.units_of(self.tick)).map_err(bad)?;
        match i64::try_from(units) {
            Ok(t) if t > 0 => Ok(t),
            Ok(_) => {
                Err(SetupError::NotPositive { symbol: self.symbol.clone(), field, value: text.to_owned() })
            }
            Err(_) => Err(bad(DecimalError::OutOfRange)),
        }
    }

    /// A quantity's text as a number of lots (zero allowed: a filled order's open quantity).
    pub fn lots(&self, field: &'static str, text: &str) -> Result<u64, SetupError> {
        let bad =
            |error| SetupError::Decimal { symbol: self.symbol.clone(), field, value: text.to_owned(), error };
        let units = Decimal::parse(text.trim()).and_then(|d| d.units_of(self.lot)).map_err(bad)?;
        u64::try_from(units).map_err(|_| bad(DecimalError::OutOfRange))
    }

    /// `ticks` as the exact decimal the API takes (`10005` at tick `0.01`: `"100.05"`).
    pub fn price_text(&self, ticks: i64) -> String {
        Decimal::from_units(i128::from(ticks), self.tick).map_or_else(String::new, |d| d.to_string())
    }

    /// `lots` as the exact decimal the API takes (`3` at lot `10`: `"30"`).
    pub fn qty_text(&self, lots: u64) -> String {
        Decimal::from_units(i128::from(lots), self.lot).map_or_else(String::new, |d| d.to_string())
    }

    /// The band's half-width in ticks around `center` (the book's own arithmetic).
    pub fn band_ticks(&self, center: i64) -> i64 {
        (i128::from(center) * i128::from(self.band_bps) / 10_000) as i64
    }

    /// `bps` of `price` in whole ticks (rounded down).
    fn bps_ticks(price: i64, bps: u32) -> i64 {
        (i128::from(price) * i128::from(bps) / 10_000) as i64
    }

    /// A random quote size: 1 to [`MAX_QUOTE_LOTS`] lots, at most the symbol's maximum.
    pub fn random_lots(&self, rng: &mut Rng) -> u64 {
        rng.range(1, MAX_QUOTE_LOTS).min(self.max_lots).max(1)
    }
}

/// Where a symbol's quotes go relative to the mid, in ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Quotes per side.
    pub levels: usize,
    /// The best bid and ask sit this far from the mid.
    pub half_spread: i64,
    /// Each further level is this much further out.
    pub step: i64,
    /// How far the mid moves in one step of the walk.
    pub walk: i64,
}

/// One quote the simulator wants resting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// Bid or ask.
    pub side: Side,
    /// 0 nearest the mid.
    pub level: usize,
    /// Where, in ticks.
    pub price: i64,
}

impl Shape {
    /// The shape for `market`: a spread of `spread_bps` of the reference (at least two ticks),
    /// levels half a spread apart, a walk of `walk_bps` (at least a tick). Refused when the
    /// quotes, with room for the mid to move, do not fit in half the band.
    pub fn new(market: &Market, levels: usize, spread_bps: u32, walk_bps: u32) -> Result<Shape, SetupError> {
        if !(1..=MAX_LEVELS).contains(&levels) {
            return Err(SetupError::Levels(levels));
        }
        let spread = Market::bps_ticks(market.reference, spread_bps).max(2);
        let half_spread = (spread + 1) / 2;
        let shape = Shape {
            levels,
            half_spread,
            step: half_spread,
            walk: Market::bps_ticks(market.reference, walk_bps).max(1),
        };
        if shape.room(market, market.reference) < shape.walk {
            return Err(SetupError::BandTooNarrow {
                symbol: market.symbol.clone(),
                band_bps: market.band_bps,
                band_ticks: market.band_ticks(market.reference),
                reference_ticks: market.reference,
                span_ticks: shape.span(),
            });
        }
        Ok(shape)
    }

    /// How far from the mid the outermost quote sits.
    pub fn span(&self) -> i64 {
        self.half_spread + (self.levels as i64 - 1) * self.step
    }

    /// How far the mid may stray from the band's `center`: the outermost quote stays within half
    /// the band (a quarter of the centre without a band). Negative when even a mid at the centre
    /// puts quotes outside.
    pub fn room(&self, market: &Market, center: i64) -> i64 {
        let half = if market.band_bps == 0 { center / 4 } else { market.band_ticks(center) / 2 };
        half - self.span()
    }

    /// `mid` brought inside the room around `center`, and high enough that every bid is positive.
    pub fn clamp_mid(&self, market: &Market, mid: i64, center: i64) -> i64 {
        let room = self.room(market, center).max(0);
        mid.clamp(center - room, center + room).max(self.span() + 1)
    }

    /// One step of the walk: with chance [`MOVE_PROB`] the mid moves `walk` ticks, up or down,
    /// more likely back towards `center` the further it is from it; then clamped.
    pub fn walk(&self, market: &Market, mid: i64, center: i64, rng: &mut Rng) -> i64 {
        let room = self.room(market, center).max(1);
        let off = ((mid - center) as f64 / room as f64).clamp(-1.0, 1.0);
        let p_up = (0.5 - 0.4 * off).clamp(0.05, 0.95);
        let moved = if !rng.chance(MOVE_PROB) {
            mid
        } else if rng.chance(p_up) {
            mid + self.walk
        } else {
            mid - self.walk
        };
        self.clamp_mid(market, moved, center)
    }

    /// The quotes wanted around `mid`, in slot order: bid 0, ask 0, bid 1, ask 1, …
    pub fn targets(&self, mid: i64) -> Vec<Target> {
        (0..self.levels)
            .flat_map(|level| {
                let off = self.half_spread + level as i64 * self.step;
                [
                    Target { side: Side::Buy, level, price: mid - off },
                    Target { side: Side::Sell, level, price: mid + off },
                ]
            })
            .collect()
    }
}

/// A quote resting (as far as the simulator knows) on the exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    /// The exchange order id.
    pub order_id: String,
    /// Its price, in ticks.
    pub price: i64,
    /// Its open quantity, in lots.
    pub lots: u64,
}

/// The one thing to do next for a symbol's quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Place a new quote in an empty slot at this price.
    Place {
        /// The slot ([`Shape::targets`] order).
        slot: usize,
        /// Where, in ticks.
        price: i64,
    },
    /// Move a resting quote to this price (cancel-replace).
    Amend {
        /// The slot.
        slot: usize,
        /// Where, in ticks.
        price: i64,
    },
    /// Every quote is where it should be (or cannot move yet).
    Idle,
}

/// True if a quote at `price` on `side` would not meet one of our own resting quotes on the
/// other side (the book would refuse a post-only one, or cancel it as a self-trade).
fn clear_of_own(slots: &[Option<Live>], targets: &[Target], side: Side, price: i64) -> bool {
    slots.iter().zip(targets).all(|(live, t)| match live {
        Some(l) if t.side != side => match side {
            Side::Buy => price < l.price,
            Side::Sell => price > l.price,
        },
        _ => true,
    })
}

/// What to do next. A slot keeps its side but not its level: the quotes of a side should sit at
/// that side's target prices, whichever slot holds which. A target price no quote holds is
/// *missing*; a quote at no target price (or a second one at the same price) is *stray*. Fill an
/// empty slot with the missing price nearest the mid; else move the most aggressive stray (the
/// highest bid, the lowest ask) there; skip any move that would meet our own opposite quotes;
/// nothing to do (or nothing clear): [`Step::Idle`]. So when the mid moves one level, one quote
/// a side moves (the far one comes in), not every quote. `slots` and `targets` are in the same
/// order (slot `i` has side `targets[i].side`).
pub fn next_step(targets: &[Target], slots: &[Option<Live>]) -> Step {
    debug_assert_eq!(targets.len(), slots.len());
    let mut moves: Vec<(bool, usize, i64)> = Vec::new();
    for side in [Side::Buy, Side::Sell] {
        let on_side = |i: &usize| targets[*i].side == side;
        // This side's target prices, nearest the mid first (targets are in level order).
        let wanted: Vec<i64> = targets.iter().filter(|t| t.side == side).map(|t| t.price).collect();
        let mut held = vec![false; wanted.len()];
        let mut strays = Vec::new();
        for i in (0..slots.len()).filter(on_side) {
            let Some(live) = &slots[i] else { continue };
            match wanted.iter().zip(&mut held).find(|(&p, h)| p == live.price && !**h) {
                Some((_, h)) => *h = true,
                None => strays.push((i, live.price)),
            }
        }
        // The most aggressive stray first: it is the one most likely to be hit, or in the way.
        strays.sort_by_key(|&(i, p)| (if side == Side::Buy { -p } else { p }, i));
        let mut strays = strays.into_iter();
        let mut empty = (0..slots.len()).filter(on_side).filter(|&i| slots[i].is_none());
        for (price, _) in wanted.iter().zip(&held).filter(|(_, h)| !**h) {
            if !clear_of_own(slots, targets, side, *price) {
                continue;
            }
            if let Some(slot) = empty.next() {
                moves.push((true, slot, *price));
            } else if let Some((slot, _)) = strays.next() {
                moves.push((false, slot, *price));
            }
        }
    }
    // Places before amends; among each, the lower slot first.
    moves.sort_by_key(|&(place, slot, _)| (!place, slot));
    match moves.first() {
        Some(&(true, slot, price)) => Step::Place { slot, price },
        Some(&(false, slot, price)) => Step::Amend { slot, price },
        None => Step::Idle,
    }
}

/// A crossing order for the taker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cross {
    /// The taker's side.
    pub side: Side,
    /// Its limit: the price of the quote it hits, in ticks.
    pub price: i64,
    /// How much, in lots.
    pub lots: u64,
    /// The slot of the quote it hits.
    pub slot: usize,
}

/// An IOC that hits our best resting quote on a random side (the other side if that one is
/// empty) for 1 to [`MAX_CROSS_LOTS`] lots, no more than the quote holds; `None` with no quotes.
pub fn cross(targets: &[Target], slots: &[Option<Live>], rng: &mut Rng) -> Option<Cross> {
    let first = if rng.chance(0.5) { Side::Buy } else { Side::Sell };
    for side in [first, first.opposite()] {
        // A buyer hits the lowest ask; a seller the highest bid.
        let best = slots
            .iter()
            .zip(targets)
            .enumerate()
            .filter_map(|(i, (live, t))| {
                live.as_ref().filter(|l| t.side != side && l.lots > 0).map(|l| (i, l))
            })
            .min_by_key(|(_, l)| if side == Side::Buy { l.price } else { -l.price });
        if let Some((slot, live)) = best {
            let lots = rng.range(1, MAX_CROSS_LOTS.min(live.lots));
            return Some(Cross { side, price: live.price, lots, slot });
        }
    }
    None
}

/// Capped exponential backoff: 0.5 s, 1 s, 2 s, … 10 s; back to 0.5 s after a success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    next: std::time::Duration,
}

impl Backoff {
    /// The first wait.
    pub const FIRST: std::time::Duration = std::time::Duration::from_millis(500);
    /// The longest wait.
    pub const MAX: std::time::Duration = std::time::Duration::from_secs(10);

    /// A backoff at its first wait.
    pub fn new() -> Backoff {
        Backoff { next: Backoff::FIRST }
    }

    /// How long to wait after this failure (the next one waits twice as long, up to the cap).
    pub fn fail(&mut self) -> std::time::Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        wait
    }

    /// A success: the next failure waits the first wait again.
    pub fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn abc() -> Market {
        Market::new("ABC", "0.01", "1", 1_000, "100.00", Some("1000000")).unwrap()
    }

    fn live(id: &str, price: i64) -> Option<Live> {
        Some(Live { order_id: id.into(), price, lots: 5 })
    }

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        assert_eq!(xs, (0..100).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(xs[0], Rng::new(8).next_u64());
        let mut r = Rng::new(0);
        for _ in 0..10_000 {
            assert!((3..=9).contains(&r.range(3, 9)));
        }
        assert_eq!(r.range(5, 5), 5);
        assert_eq!(r.range(5, 1), 5);
        assert!(!(0..1000).any(|_| r.chance(0.0)));
        assert!((0..1000).all(|_| r.chance(1.0)));
        let hits = (0..100_000).filter(|_| r.chance(0.15)).count();
        assert!((14_000..16_000).contains(&hits), "{hits}");
    }

    #[test]
    fn markets_parse_their_decimals_exactly() {
        let m = abc();
        assert_eq!((m.reference, m.max_lots), (10_000, 1_000_000));
        assert_eq!(m.price_text(10_005), "100.05");
        assert_eq!(m.ticks("price", "100.05"), Ok(10_005));
        let def = Market::new("DEF", "0.05", "10", 1_000, "50.00", None).unwrap();
        assert_eq!((def.reference, def.max_lots), (1_000, u64::MAX));
        assert_eq!(def.price_text(1_001), "50.05");
        assert_eq!(def.qty_text(3), "30");
        assert_eq!(def.lots("qty", "30"), Ok(3));
        assert_eq!(def.lots("qty", "0"), Ok(0));
        let xyz = Market::new("XYZ", "0.5", "1", 1_000, "2500", None).unwrap();
        assert_eq!((xyz.reference, xyz.price_text(5_001)), (5_000, "2500.5".to_owned()));
        // A tick written with a trailing zero is the same grid.
        let m2 = Market::new("ABC", "0.010", "1", 1_000, "100", None).unwrap();
        assert_eq!(m2.reference, 10_000);
        assert_eq!(m2.ticks("price", "99.99"), Ok(9_999));
    }

    #[test]
    fn bad_decimals_are_refused_with_the_field_named() {
        let e = Market::new("ABC", "0", "1", 1_000, "100", None).unwrap_err();
        assert!(matches!(e, SetupError::NotPositive { field: "tick", .. }), "{e:?}");
        assert_eq!(e.to_string(), "ABC: tick must be positive, not \"0\"");
        let e = Market::new("ABC", "-0.01", "1", 1_000, "100", None).unwrap_err();
        assert!(matches!(e, SetupError::NotPositive { field: "tick", .. }), "{e:?}");
        let e = Market::new("ABC", "abc", "1", 1_000, "100", None).unwrap_err();
        assert!(matches!(e, SetupError::Decimal { field: "tick", error: DecimalError::Syntax, .. }), "{e:?}");
        let e = Market::new("ABC", "", "1", 1_000, "100", None).unwrap_err();
        assert!(matches!(e, SetupError::Decimal { field: "tick", .. }), "{e:?}");
        let e = Market::new("ABC", "0.01", "0", 1_000, "100", None).unwrap_err();
        assert!(matches!(e, SetupError::NotPositive { field: "lot", .. }), "{e:?}");
        let e = Market::new("ABC", "0.01", "1", 1_000, "100.005", None).unwrap_err();
        assert!(
            matches!(e, SetupError::Decimal { field: "reference", error: DecimalError::NotMultiple(_), .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("not a multiple of 0.01"), "{e}");
        let e = Market::new("ABC", "0.01", "1", 1_000, "0", None).unwrap_err();
        assert!(matches!(e, SetupError::NotPositive { field: "reference", .. }), "{e:?}");
        let e = Market::new("ABC", "0.01", "1", 1_000, "100", Some("1.5")).unwrap_err();
        assert!(matches!(e, SetupError::Decimal { field: "max_qty", .. }), "{e:?}");
        let e = Market::new("ABC", "0.01", "1", 1_000, "100", Some("NaN")).unwrap_err();
        assert!(matches!(e, SetupError::Decimal { field: "max_qty", .. }), "{e:?}");
        let m = abc();
        assert!(m.ticks("price", "100.001").is_err());
        assert!(m.ticks("price", "1e40").is_err());
        assert!(m.ticks("price", "-1").is_err());
    }

    #[test]
    fn shapes_scale_with_the_price_and_fit_the_band() {
        let s = Shape::new(&abc(), 3, 10, 2).unwrap();
        assert_eq!(s, Shape { levels: 3, half_spread: 5, step: 5, walk: 2 });
        assert_eq!(s.span(), 15);
        let bids: Vec<i64> =
            s.targets(10_000).iter().filter(|t| t.side == Side::Buy).map(|t| t.price).collect();
        let asks: Vec<i64> =
            s.targets(10_000).iter().filter(|t| t.side == Side::Sell).map(|t| t.price).collect();
        assert_eq!((bids, asks), (vec![9_995, 9_990, 9_985], vec![10_005, 10_010, 10_015]));
        assert_eq!(s.targets(10_000)[1], Target { side: Side::Sell, level: 0, price: 10_005 });
        // A coarse tick: the spread is at least two ticks, the walk at least one.
        let def = Market::new("DEF", "0.05", "10", 1_000, "50.00", None).unwrap();
        assert_eq!(
            Shape::new(&def, 3, 10, 2).unwrap(),
            Shape { levels: 3, half_spread: 1, step: 1, walk: 1 }
        );
        // No band: fine.
        let free = Market::new("FREE", "0.01", "1", 0, "100.00", None).unwrap();
        assert!(Shape::new(&free, 3, 10, 2).is_ok());
    }

    #[test]
    fn a_band_too_narrow_or_bad_levels_are_refused() {
        let narrow = Market::new("ABC", "0.01", "1", 10, "100.00", None).unwrap();
        let e = Shape::new(&narrow, 3, 10, 2).unwrap_err();
        assert!(matches!(e, SetupError::BandTooNarrow { band_ticks: 10, span_ticks: 15, .. }), "{e:?}");
        assert!(e.to_string().contains("too narrow"), "{e}");
        // One level with a tight spread fits a band of 30 bp (±30 ticks: room 15 - 1).
        let m = Market::new("ABC", "0.01", "1", 30, "100.00", None).unwrap();
        assert!(Shape::new(&m, 1, 2, 1).is_ok());
        assert_eq!(Shape::new(&abc(), 0, 10, 2), Err(SetupError::Levels(0)));
        assert_eq!(Shape::new(&abc(), MAX_LEVELS + 1, 10, 2), Err(SetupError::Levels(MAX_LEVELS + 1)));
        // A tick so coarse that two ticks of spread outgrow the band.
        let coarse = Market::new("C", "1", "1", 1_000, "10", None).unwrap();
        assert!(matches!(Shape::new(&coarse, 3, 10, 2), Err(SetupError::BandTooNarrow { .. })));
    }

    #[test]
    fn the_walk_stays_on_the_grid_inside_the_band_and_comes_back() {
        let m = abc();
        let s = Shape::new(&m, 3, 10, 2).unwrap();
        let room = s.room(&m, m.reference);
        assert_eq!(room, 500 - 15);
        let mut rng = Rng::new(42);
        let mut mid = m.reference;
        let (mut lo, mut hi, mut moves) = (mid, mid, 0);
        for _ in 0..100_000 {
            let next = s.walk(&m, mid, m.reference, &mut rng);
            assert!((next - mid).abs() == s.walk || next == mid || (next - m.reference).abs() == room);
            moves += usize::from(next != mid);
            mid = next;
            lo = lo.min(mid);
            hi = hi.max(mid);
            for t in s.targets(mid) {
                assert!((t.price - m.reference).abs() <= m.band_ticks(m.reference) / 2, "{t:?}");
                assert!(t.price > 0);
            }
        }
        assert!((40_000..60_000).contains(&moves), "{moves}");
        assert!(hi > lo, "it moves");
        // Far from the centre, it drifts back.
        let mut mid = m.reference + room;
        for _ in 0..2_000 {
            mid = s.walk(&m, mid, m.reference, &mut rng);
        }
        assert!((mid - m.reference).abs() < room / 2, "{mid}");
        // The same seed walks the same way.
        let path = |seed| {
            let mut rng = Rng::new(seed);
            let mut mid = m.reference;
            (0..50)
                .map(|_| {
                    mid = s.walk(&m, mid, m.reference, &mut rng);
                    mid
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(path(9), path(9));
    }

    #[test]
    fn the_mid_is_clamped_to_the_band_and_above_zero() {
        let m = abc();
        let s = Shape::new(&m, 3, 10, 2).unwrap();
        assert_eq!(s.clamp_mid(&m, 20_000, 10_000), 10_485);
        assert_eq!(s.clamp_mid(&m, 1, 10_000), 9_515);
        assert_eq!(s.clamp_mid(&m, 10_100, 10_000), 10_100);
        // A centre that moved: the room moves with it.
        assert_eq!(s.clamp_mid(&m, 10_000, 12_000), 12_000 - (600 - 15));
        // A centre so low that even the centre puts bids at or below zero.
        assert_eq!(s.clamp_mid(&m, 3, 4), 16);
    }

    #[test]
    fn empty_slots_are_filled_first_in_order() {
        let s = Shape::new(&abc(), 2, 10, 2).unwrap();
        let t = s.targets(10_000);
        let mut slots = vec![None; t.len()];
        assert_eq!(next_step(&t, &slots), Step::Place { slot: 0, price: 9_995 });
        slots[0] = live("a", 9_995);
        assert_eq!(next_step(&t, &slots), Step::Place { slot: 1, price: 10_005 });
        slots[1] = live("b", 10_005);
        assert_eq!(next_step(&t, &slots), Step::Place { slot: 2, price: 9_990 });
        slots[2] = live("c", 9_990);
        slots[3] = live("d", 10_010);
        assert_eq!(next_step(&t, &slots), Step::Idle);
        // A slot holds whichever level is missing.
        slots[0] = None;
        slots[2] = live("c", 9_995);
        assert_eq!(next_step(&t, &slots), Step::Place { slot: 0, price: 9_990 });
    }

    #[test]
    fn a_move_of_one_level_moves_one_quote_a_side() {
        let s = Shape::new(&abc(), 3, 10, 2).unwrap();
        let at = |mid| -> Vec<Option<Live>> { s.targets(mid).iter().map(|t| live("x", t.price)).collect() };
        // Bids 9_995 / 9_990 / 9_985, asks 10_005 / 10_010 / 10_015. Up one level (5 ticks): the
        // near ask goes out to 10_020 and the far bid comes in to 10_000; the others stay.
        let t = s.targets(10_005);
        let mut slots = at(10_000);
        assert_eq!(next_step(&t, &slots), Step::Amend { slot: 1, price: 10_020 }, "the near ask goes out");
        slots[1] = live("x", 10_020);
        assert_eq!(next_step(&t, &slots), Step::Amend { slot: 4, price: 10_000 }, "the far bid comes in");
        slots[4] = live("x", 10_000);
        assert_eq!(next_step(&t, &slots), Step::Idle);
        // A move off the level grid (2 ticks): every quote is stray; the most aggressive first.
        let t = s.targets(10_002);
        let slots = at(10_000);
        assert_eq!(next_step(&t, &slots), Step::Amend { slot: 0, price: 9_997 });
    }

    #[test]
    fn no_quote_moves_into_our_own_opposite_quotes() {
        let s = Shape::new(&abc(), 2, 10, 2).unwrap();
        // The mid jumped 12 ticks up: a bid at 10_007 would meet our ask at 10_005, so the bid
        // goes to 10_002 (clear) first; 10_007 waits until the asks have moved out of the way.
        let t = s.targets(10_012);
        let mut slots: Vec<Option<Live>> = s.targets(10_000).iter().map(|t| live("x", t.price)).collect();
        assert_eq!(next_step(&t, &slots), Step::Amend { slot: 0, price: 10_002 });
        slots[0] = live("x", 10_002);
        assert_eq!(next_step(&t, &slots), Step::Amend { slot: 1, price: 10_017 });
        slots[1] = live("x", 10_017);
        // Now clear of both asks (10_010, 10_017).
        assert_eq!(next_step(&t, &slots), Step::Amend { slot: 2, price: 10_007 });
        slots[2] = live("x", 10_007);
        assert_eq!(next_step(&t, &slots), Step::Amend { slot: 3, price: 10_022 });
        slots[3] = live("x", 10_022);
        assert_eq!(next_step(&t, &slots), Step::Idle);
        // An empty bid slot takes the bid price that is clear.
        slots = s.targets(10_000).iter().map(|t| live("x", t.price)).collect();
        slots[0] = None;
        assert_eq!(next_step(&t, &slots), Step::Place { slot: 0, price: 10_002 });
        // An empty ask slot blocked by our own (stale) bid is passed over for a bid that is clear.
        let t = s.targets(10_000);
        let stale = vec![live("a", 10_010), None, None, live("d", 10_020)];
        assert_eq!(next_step(&t, &stale), Step::Place { slot: 2, price: 9_995 });
        // Two quotes at one price: one of them is stray.
        let twice = vec![live("a", 9_995), live("b", 10_005), live("c", 9_995), live("d", 10_010)];
        assert_eq!(next_step(&t, &twice), Step::Amend { slot: 2, price: 9_990 });
    }

    #[test]
    fn crosses_hit_our_best_quote_for_a_little() {
        let s = Shape::new(&abc(), 2, 10, 2).unwrap();
        let t = s.targets(10_000);
        let mut rng = Rng::new(3);
        assert_eq!(cross(&t, &[None, None, None, None], &mut rng), None);
        let slots = vec![live("a", 9_995), live("b", 10_005), live("c", 9_990), live("d", 10_010)];
        let (mut buys, mut sells) = (0, 0);
        for _ in 0..1_000 {
            let c = cross(&t, &slots, &mut rng).unwrap();
            assert!((1..=MAX_CROSS_LOTS).contains(&c.lots));
            match c.side {
                Side::Buy => {
                    buys += 1;
                    assert_eq!((c.price, c.slot), (10_005, 1));
                }
                Side::Sell => {
                    sells += 1;
                    assert_eq!((c.price, c.slot), (9_995, 0));
                }
            }
        }
        assert!(buys > 400 && sells > 400);
        // Only bids: every cross sells; a one-lot quote is hit for one lot.
        let bids = vec![Some(Live { order_id: "a".into(), price: 9_995, lots: 1 }), None, None, None];
        for _ in 0..100 {
            assert_eq!(
                cross(&t, &bids, &mut rng),
                Some(Cross { side: Side::Sell, price: 9_995, lots: 1, slot: 0 })
            );
        }
    }

    #[test]
    fn quote_sizes_respect_the_maximum() {
        let mut rng = Rng::new(1);
        let m = abc();
        assert!((0..1_000).all(|_| (1..=MAX_QUOTE_LOTS).contains(&m.random_lots(&mut rng))));
        let small = Market::new("S", "0.01", "1", 1_000, "100", Some("2")).unwrap();
        assert!((0..1_000).all(|_| (1..=2).contains(&small.random_lots(&mut rng))));
    }

    #[test]
    fn backoff_doubles_to_ten_seconds_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..7).map(|_| b.fail()).collect();
        let ms: Vec<u128> = waits.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [500, 1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
        b.reset();
        assert_eq!(b.fail(), Duration::from_millis(500));
    }
}

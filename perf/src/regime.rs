//! Regime streams: the shape of a real equity order flow under named market conditions, one
//! symbol, the same every time for a given seed (issue 12).
//!
//! # The model
//! - **Fair price.** A geometric Brownian motion times a deterministic regime shape, on the tick
//!   grid: `F = round(G · m(t))` ticks. `G` starts at the symbol's reference (100.00, 10,000
//!   ticks) and takes one Euler step of `dG = G·σ·dW` per message, in fixed point (`G` in
//!   2⁻³² ticks, `i128` arithmetic, no floating point), with `dW` the sum of four uniform 16-bit
//!   draws (Irwin–Hall, scaled to unit variance): bit for bit the same on every machine. `σ` is
//!   3·10⁻⁶ per message (≈ 42 ticks of standard deviation over 2,000,000 messages). `m(t)`, in
//!   parts per million, is the regime: flat, a triangle wave, or a crash and recovery.
//! - **Placement.** A passive order rests `d ≥ 1` ticks from the fair price on its own side, with
//!   `P(d) ∝ (d + 2)^-1.5` up to 500 ticks — a power law like the one Bouchaud, Mézard & Potters
//!   (2002) measured (exponent ≈ 1.6) — from an integer table (`isqrt`, no `powf`). Orders are
//!   canceled at random, so resting depth follows placement: it falls off as a power law away
//!   from the touch, over hundreds of levels per side, and thousands of orders in all.
//! - **Lifecycle.** Each message is a modify of a random resting order (10 %: half reprice it to a
//!   fresh placement, half size it up — both lose priority), an IOC limit (7.5 %, 1–8 lots; 90 %
//!   at the opposite best or a tick through it, the rest a tick behind their own best, which
//!   miss), or else a cancel of a random resting order or a new GTC limit (1–30 lots), cancels
//!   the likelier the deeper the book (`live / 2·depth`), which holds it near `depth` orders. A
//!   new limit the fair price has put through the other side's best is, 95 times in 100, a cancel
//!   of an order at that best instead: its owner pulls the stale quote before it is picked off.
//!   That makes ~50 % new orders of which ~15 % IOC, ~20 modifies per 100 new orders, ~40 %
//!   cancels, and of resting orders that end, ~95 % canceled (at 2,000,000 messages: 95.5 %
//!   static, 93.8 % normal, 93.5 % flash crash, 89 % swing, where the trend trades more); the
//!   rest trade. Prices stay inside the symbol's band around the last trade: no reject.
//! - **Regimes.** `static`: σ = 0, the fair price never moves. `normal`: the GBM alone. `swing`:
//!   three cycles of a ±3 % (±300 ticks) triangle over the stream. `flash-crash`: the GBM, and
//!   from 40 % of the stream the fair price falls 4 % (400 ticks, most of one side's depth) within
//!   1 % of the stream, holds for 1 %, and climbs back by 45 %. The timetables are fractions of
//!   the stream, so a shorter stream moves faster. A moving fair price puts new orders of one
//!   side through resting orders of the other: they are pulled or swept.
//!
//! # Two forms
//! Our engine replays the **native** stream (GTC limits, IOC limits, cancels, replaces). The peer
//! books' adapters know only GTC limits and cancels (the [`Mix::Common`] subset), so each regime
//! also comes in the **common** form, the same flow in those commands: an IOC is a GTC limit
//! followed by a cancel of what rests of it (only when something does), a modify is a cancel and
//! a new limit at the new price and size (which loses priority, as the native replace does). The
//! two forms leave the same book after every message (a test replays both and compares); the
//! common one is ~15 % longer. Throughput is counted in regime messages for both.
//!
//! [`Mix::Common`]: crate::stream::Mix::Common

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use common::{
    Account, Cancel, CancelReason, ClientOrderId, Command, CommandKind, Event, EventKind, NewOrder, OrderId,
    OrderType, Price, Qty, Replace, Side, SymbolId, TimeInForce, Timestamp,
};
use matcher::{Capacity, Engine};

use crate::stream::{self, Rng};

/// A named market condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regime {
    /// No drift, no noise: the fair price stays at the reference.
    Static,
    /// Geometric Brownian motion, no drift.
    Normal,
    /// Large drifts back and forth across many levels.
    Swing,
    /// A fast one-way move through the book and back.
    FlashCrash,
}

/// A regime name that is none of [`Regime::ALL`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownRegime(pub String);

impl fmt::Display for UnknownRegime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known: Vec<_> = Regime::ALL.iter().map(|r| r.name()).collect();
        write!(f, "unknown regime `{}`: the known ones are {} (or `all`)", self.0, known.join(", "))
    }
}

impl std::error::Error for UnknownRegime {}

impl FromStr for Regime {
    type Err = UnknownRegime;

    fn from_str(s: &str) -> Result<Regime, UnknownRegime> {
        Regime::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| UnknownRegime(s.to_owned()))
    }
}

/// Parts per million: the unit of the regime shape `m(t)`.
const PPM: i128 = 1_000_000;
/// The GBM's volatility per message, in units of 10⁻⁸ (3·10⁻⁶).
const SIGMA_E8: i128 = 300;
/// Standard deviation of the sum of four uniform 16-bit draws: 65,536 / √3.
const IRWIN_HALL_SD: i128 = 37_837;
/// The swing's amplitude (±3 %) and its number of cycles over the stream.
const SWING_PPM: i128 = 30_000;
const SWING_CYCLES: usize = 3;
/// The flash crash's depth (4 %) and its timetable, in percent of the stream: the fall starts,
/// reaches the bottom, leaves it, and is recovered.
const CRASH_PPM: i128 = 40_000;
const CRASH_AT: [usize; 4] = [40, 41, 42, 45];

impl Regime {
    /// Every regime, in the order reports list them.
    pub const ALL: [Regime; 4] = [Regime::Static, Regime::Normal, Regime::Swing, Regime::FlashCrash];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Regime::Static => "static",
            Regime::Normal => "normal",
            Regime::Swing => "swing",
            Regime::FlashCrash => "flash-crash",
        }
    }

    /// One line on what the fair price does.
    pub fn describe(self) -> &'static str {
        match self {
            Regime::Static => "fair price fixed at the reference",
            Regime::Normal => "fair price a GBM, σ 3e-6 per message",
            Regime::Swing => "GBM × 3 cycles of a ±3 % triangle (±300 ticks)",
            Regime::FlashCrash => "GBM; −4 % (400 ticks) within 1 % of the stream from 40 %, back by 45 %",
        }
    }

    /// `all`, or regime names separated by commas.
    pub fn parse_list(s: &str) -> Result<Vec<Regime>, UnknownRegime> {
        if s == "all" {
            return Ok(Regime::ALL.to_vec());
        }
        s.split(',').map(str::parse).collect()
    }

    /// The GBM's volatility, in 10⁻⁸ per message.
    fn sigma_e8(self) -> i128 {
        if self == Regime::Static {
            0
        } else {
            SIGMA_E8
        }
    }

    /// The regime shape `m(t)` at message `i` of `n`, in parts per million.
    fn shape_ppm(self, i: usize, n: usize) -> i128 {
        match self {
            Regime::Static | Regime::Normal => PPM,
            Regime::Swing => {
                // A triangle wave: up to +A at a quarter period, down to −A at three quarters.
                let period = (n / SWING_CYCLES).max(4) as i128;
                let quarter = period / 4;
                let x = (i as i128) % period;
                let tri = if x < quarter {
                    x
                } else if x < 3 * quarter {
                    2 * quarter - x
                } else {
                    x - 4 * quarter
                };
                PPM + SWING_PPM * tri / quarter
            }
            Regime::FlashCrash => {
                let [start, bottom, leave, back] = CRASH_AT.map(|p| (n * p / 100) as i128);
                let i = i as i128;
                let down = if i < start || i >= back {
                    0
                } else if i < bottom {
                    CRASH_PPM * (i - start) / (bottom - start).max(1)
                } else if i < leave {
                    CRASH_PPM
                } else {
                    CRASH_PPM * (back - i) / (back - leave).max(1)
                };
                PPM - down
            }
        }
    }
}

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct RegimeSpec {
    /// Which regime.
    pub regime: Regime,
    /// How many messages (native commands).
    pub commands: usize,
    /// Resting orders (both sides) above which cancels outnumber new orders.
    pub depth: usize,
    /// The random seed.
    pub seed: u64,
}

/// Mean and maximum of a quantity sampled after every message past the warm-up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spread {
    /// The mean.
    pub mean: f64,
    /// The largest value seen.
    pub max: usize,
}

/// Distances from the touch (ticks) over which the depth profile is averaged: `[from, to)`.
pub const PROFILE_BUCKETS: [(i64, i64); 5] = [(0, 1), (1, 5), (5, 20), (20, 100), (100, 500)];

/// The book's shape over the stream, past the warm-up (bids first, then asks).
#[derive(Clone, Debug, Default)]
pub struct Shape {
    /// Resting orders per side.
    pub orders: [Spread; 2],
    /// Price levels per side.
    pub levels: [Spread; 2],
    /// Resting lots per price tick in each of [`PROFILE_BUCKETS`] (distance from the same side's
    /// best price, both sides averaged), sampled every 1,024 messages.
    pub profile: [f64; PROFILE_BUCKETS.len()],
}

/// The book's mid price (ticks) over the stream, past the warm-up.
#[derive(Clone, Copy, Debug, Default)]
pub struct MidPath {
    /// At the end of the warm-up.
    pub start: i64,
    /// The lowest, and the message where it was.
    pub low: (i64, usize),
    /// The highest, and the message where it was.
    pub high: (i64, usize),
    /// After the last message.
    pub end: i64,
}

/// What a regime stream holds: printed beside the results.
#[derive(Clone, Debug, Default)]
pub struct RegimeStats {
    /// New GTC limits.
    pub limits: usize,
    /// New IOC limits.
    pub iocs: usize,
    /// Cancels.
    pub cancels: usize,
    /// Modifies (replaces that lose priority: reprice or size up).
    pub modifies: usize,
    /// Fills.
    pub fills: usize,
    /// Orders that rested (new GTC limits not filled at once).
    pub rested: usize,
    /// Resting orders that ended canceled.
    pub ended_canceled: usize,
    /// Resting orders that ended filled.
    pub ended_filled: usize,
    /// The most orders resting at once.
    pub max_live: usize,
    /// Messages before the book has filled (excluded from shape and mid).
    pub warm_up: usize,
    /// The book's shape.
    pub shape: Shape,
    /// The book's mid.
    pub mid: MidPath,
}

impl RegimeStats {
    /// New orders, GTC and IOC.
    pub fn new_orders(&self) -> usize {
        self.limits + self.iocs
    }

    /// Of resting orders that ended, the share canceled.
    pub fn canceled_share(&self) -> f64 {
        self.ended_canceled as f64 / (self.ended_canceled + self.ended_filled).max(1) as f64
    }

    /// Of new orders, the share IOC.
    pub fn ioc_share(&self) -> f64 {
        self.iocs as f64 / self.new_orders().max(1) as f64
    }

    /// Modifies per new order.
    pub fn modify_share(&self) -> f64 {
        self.modifies as f64 / self.new_orders().max(1) as f64
    }
}

/// A regime's stream in both forms.
pub struct RegimeStream {
    /// What it was generated from.
    pub spec: RegimeSpec,
    /// For our engine: GTC limits, IOC limits, cancels and replaces.
    pub native: Vec<Command>,
    /// The same flow in GTC limits and cancels only, for the peers (see the module docs).
    pub common: Vec<Command>,
    /// What it holds.
    pub stats: RegimeStats,
}

/// Engine capacity that holds a regime stream without growing: a quarter above the most orders
/// that rested at once.
pub fn capacity(stream: &RegimeStream) -> Capacity {
    let most = stream.stats.max_live.max(stream.spec.depth);
    Capacity { orders: most + most / 4 + 64, ..Capacity::default() }
}

/// The furthest a passive order rests from the fair price, in ticks.
const MAX_DISTANCE: i64 = 500;
/// The power law's offset: `P(d) ∝ (d + OFFSET)^-1.5`.
const OFFSET: u64 = 2;

/// Power-law placement distances, drawn from a cumulative integer table.
struct Placement {
    /// `cum[k]`: total weight of distances `1..=k + 1`.
    cum: Vec<u64>,
}

impl Placement {
    fn new() -> Placement {
        let mut total = 0u64;
        let cum = (1..=MAX_DISTANCE as u64)
            .map(|d| {
                let x = d + OFFSET;
                // 2⁶² / x^1.5, with x^1.5 = x · √x and √x = isqrt(x · 2⁴⁰) / 2²⁰.
                let w = (1u128 << 82) / (u128::from(x) * u128::from((x << 40).isqrt()));
                total += w as u64;
                total
            })
            .collect();
        Placement { cum }
    }

    /// A distance in ticks, `1..=MAX_DISTANCE`.
    fn sample(&self, rng: &mut Rng) -> i64 {
        let total = *self.cum.last().expect("non-empty table");
        let u = rng.below(total);
        self.cum.partition_point(|&c| c <= u) as i64 + 1
    }
}

/// The fair price: `G` (a GBM) times the regime shape.
struct Fair {
    regime: Regime,
    /// `G` in 2⁻³² ticks.
    g: i128,
    /// `σ` scaled so that `g · sigma · z >> 56` is one step, `z` the Irwin–Hall draw.
    sigma: i128,
}

impl Fair {
    fn new(regime: Regime, reference: Price) -> Fair {
        let sigma = regime.sigma_e8() * (1i128 << 56) / (IRWIN_HALL_SD * 100_000_000);
        Fair { regime, g: i128::from(reference.0) << 32, sigma }
    }

    /// The fair price at message `i` of `n`, in ticks: one GBM step, then the shape.
    fn step(&mut self, i: usize, n: usize, rng: &mut Rng) -> i64 {
        if self.sigma != 0 {
            let r = rng.next_u64();
            let z = (0..4).map(|k| i128::from((r >> (16 * k)) as u16)).sum::<i128>() - 2 * 65_535;
            self.g += (self.g * self.sigma * z) >> 56;
        }
        let scaled = self.g * self.regime.shape_ppm(i, n) / PPM;
        ((scaled + (1 << 31)) >> 32) as i64
    }
}

/// Resting orders by id (O(1) removal and random choice) and by price level (a quote the fair
/// price ran through can be pulled), with counts per side.
#[derive(Default)]
struct Live {
    ids: Vec<OrderId>,
    /// Each order's place in `ids`, side and price.
    at: HashMap<OrderId, (usize, Side, i64)>,
    /// Bids then asks: price → the orders resting there.
    levels: [BTreeMap<i64, Vec<OrderId>>; 2],
    /// Resting orders on each side.
    per_side: [usize; 2],
}

fn side_index(side: Side) -> usize {
    usize::from(side == Side::Sell)
}

impl Live {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn add(&mut self, id: OrderId, side: Side, price: Price) {
        self.at.insert(id, (self.ids.len(), side, price.0));
        self.ids.push(id);
        self.levels[side_index(side)].entry(price.0).or_default().push(id);
        self.per_side[side_index(side)] += 1;
    }

    /// Removes `id`; false if it was not resting.
    fn remove(&mut self, id: OrderId) -> bool {
        let Some((i, side, price)) = self.at.remove(&id) else { return false };
        self.ids.swap_remove(i);
        if let Some(moved) = self.ids.get(i) {
            self.at.get_mut(moved).expect("indexed").0 = i;
        }
        self.per_side[side_index(side)] -= 1;
        let levels = &mut self.levels[side_index(side)];
        let level = levels.get_mut(&price).expect("a resting order has its level");
        level.retain(|o| *o != id);
        if level.is_empty() {
            levels.remove(&price);
        }
        true
    }

    /// Moves `id` to a new price (a replace that left it resting).
    fn reprice(&mut self, id: OrderId, price: Price) {
        if let Some(&(_, side, _)) = self.at.get(&id) {
            self.remove(id);
            self.add(id, side, price);
        }
    }

    fn pick(&self, rng: &mut Rng) -> OrderId {
        self.ids[rng.below(self.ids.len() as u64) as usize]
    }

    /// A random order at the best price of `side`.
    fn at_best(&self, side: Side, rng: &mut Rng) -> Option<OrderId> {
        let levels = &self.levels[side_index(side)];
        let level = if side == Side::Buy { levels.last_key_value() } else { levels.first_key_value() }?.1;
        Some(level[rng.below(level.len() as u64) as usize])
    }
}

/// Running sums for a [`Spread`].
#[derive(Default)]
struct Sum {
    total: u128,
    max: usize,
}

impl Sum {
    fn add(&mut self, v: usize) {
        self.total += v as u128;
        self.max = self.max.max(v);
    }

    fn spread(&self, samples: usize) -> Spread {
        Spread { mean: self.total as f64 / samples.max(1) as f64, max: self.max }
    }
}

/// Percent of the IOCs that are marketable (at the opposite touch or one tick through it); the
/// rest are priced one tick behind their own best and miss.
const IOC_MARKETABLE: u64 = 90;
/// Percent of new passive orders priced through the other side's best that become a cancel of
/// an order there instead (its owner pulls the quote the fair price ran through).
const PULL: u64 = 95;
/// Lots: GTC limits 1..=30, IOC limits 1..=8, a size-up adds 1..=10.
const LIMIT_LOTS: u64 = 30;
const IOC_LOTS: u64 = 8;
const SIZE_UP_LOTS: u64 = 10;
/// The profile is read every this many messages.
const PROFILE_EVERY: usize = 1024;

/// The id the next command of the common form gets (its position), and that position.
fn next_common(common: &[Command]) -> (OrderId, usize) {
    let j = common.len();
    (OrderId::new(0, j as u64).unwrap_or(OrderId(j as u64)), j)
}

/// What one message is.
enum Step {
    Limit(Side, Price),
    Ioc,
    Cancel(OrderId),
    Modify(OrderId),
}

/// Generates a regime's stream in both forms; returns them with what they hold.
pub fn generate(spec: &RegimeSpec) -> RegimeStream {
    let table = stream::table(1);
    let sym = SymbolId(0);
    let symbol = table.get(sym).expect("one symbol");
    let band_bps = i64::from(symbol.band_bps);
    // Room enough that the generator's own engine never grows (it is not timed anyway).
    let mut engine = Engine::new(&table, Capacity { orders: 2 * spec.depth + 1024, ..Capacity::default() });
    let mut rng = Rng::new(spec.seed);
    let mut fair = Fair::new(spec.regime, symbol.reference);
    let placement = Placement::new();
    let mut live = Live::default();
    // Native order id → the id the same order has in the common form now.
    let mut common_id: HashMap<OrderId, OrderId> = HashMap::new();
    let mut stats = RegimeStats::default();
    let mut native = Vec::with_capacity(spec.commands);
    let mut common = Vec::with_capacity(spec.commands + spec.commands / 5);
    let mut events: Vec<Event> = Vec::with_capacity(1024);
    let depth = spec.depth.max(2) as u64;
    // Long enough to fill the book; over before the flash crash starts (40 %).
    let warm_up = (spec.commands / 20).max(4 * spec.depth).min(spec.commands * 35 / 100);
    stats.warm_up = warm_up;
    let (mut orders, mut levels) = ([Sum::default(), Sum::default()], [Sum::default(), Sum::default()]);
    let mut profile = [0u128; PROFILE_BUCKETS.len()];
    let (mut samples, mut profiles) = (0usize, 0usize);
    let anonymous = Account::anonymous();
    let client = |prefix: char, n: usize| {
        ClientOrderId::new(&format!("{prefix}{n}")).unwrap_or_else(|_| unreachable!("short ascii id"))
    };
    let limit = |client_order_id, side, price, qty| NewOrder {
        symbol: sym,
        account: anonymous,
        client_order_id,
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        post_only: false,
        price: Some(price),
        qty,
    };
    for i in 0..spec.commands {
        let f = fair.step(i, spec.commands, &mut rng);
        let book = engine.book(sym).expect("symbol exists");
        // Every price inside the band around the last trade: the engine rejects nothing.
        let reference = book.reference().0;
        let band = reference * band_bps / 10_000;
        let in_band = |p: i64| Price(p.clamp((reference - band).max(1), reference + band));
        let passive = |side: Side, rng: &mut Rng| {
            let d = placement.sample(rng);
            in_band(if side == Side::Buy { f - d } else { f + d })
        };
        let roll = rng.below(1000);
        let step = if roll < 100 && !live.is_empty() {
            Step::Modify(live.pick(&mut rng))
        } else if roll < 175 {
            Step::Ioc
        } else if !live.is_empty() && rng.below(2 * depth) < live.len() as u64 {
            Step::Cancel(live.pick(&mut rng))
        } else {
            let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
            let price = passive(side, &mut rng);
            let crosses = match side {
                Side::Buy => book.best_ask().is_some_and(|(a, _)| price >= a),
                Side::Sell => book.best_bid().is_some_and(|(b, _)| price <= b),
            };
            // The fair price ran through the other side's best: its owners mostly pull it first.
            match live.at_best(side.opposite(), &mut rng) {
                Some(stale) if crosses && rng.below(100) < PULL => Step::Cancel(stale),
                _ => Step::Limit(side, price),
            }
        };
        let id = OrderId::new(0, i as u64).unwrap_or(OrderId(i as u64));
        let ts = Timestamp(i as u64);
        let mut ioc_common = None;
        let mut modify_common = None;
        let kind = match step {
            Step::Limit(side, price) => {
                stats.limits += 1;
                let order = limit(client('g', i), side, price, Qty(1 + rng.below(LIMIT_LOTS)));
                let (cid, j) = next_common(&common);
                let kind = CommandKind::New(NewOrder { client_order_id: client('p', j), ..order });
                common.push(Command { id: cid, ts, kind });
                CommandKind::New(order)
            }
            Step::Ioc => {
                stats.iocs += 1;
                let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
                let marketable = rng.below(100) < IOC_MARKETABLE;
                let through = rng.below(2) as i64;
                let price = match (side, marketable) {
                    (Side::Buy, true) => book.best_ask().map_or(f + 1, |(a, _)| a.0 + through),
                    (Side::Sell, true) => book.best_bid().map_or(f - 1, |(b, _)| b.0 - through),
                    (Side::Buy, false) => book.best_bid().map_or(f - 1, |(b, _)| b.0 - 1),
                    (Side::Sell, false) => book.best_ask().map_or(f + 1, |(a, _)| a.0 + 1),
                };
                let order = limit(client('g', i), side, in_band(price), Qty(1 + rng.below(IOC_LOTS)));
                let (cid, j) = next_common(&common);
                let kind = CommandKind::New(NewOrder { client_order_id: client('p', j), ..order });
                common.push(Command { id: cid, ts, kind });
                ioc_common = Some(cid);
                CommandKind::New(NewOrder { tif: TimeInForce::Ioc, ..order })
            }
            Step::Cancel(target) => {
                stats.cancels += 1;
                let kind = CommandKind::Cancel(Cancel { order_id: common_id[&target], account: anonymous });
                let (cid, _) = next_common(&common);
                common.push(Command { id: cid, ts, kind });
                CommandKind::Cancel(Cancel { order_id: target, account: anonymous })
            }
            Step::Modify(target) => {
                stats.modifies += 1;
                let (_, o) = engine.order(target).expect("a live order rests");
                let mut price = o.price;
                if rng.below(2) == 0 {
                    price = passive(o.side, &mut rng);
                }
                let qty =
                    if price == o.price { Qty(o.leaves.0 + 1 + rng.below(SIZE_UP_LOTS)) } else { o.leaves };
                let kind = CommandKind::Cancel(Cancel { order_id: common_id[&target], account: anonymous });
                let (cid, _) = next_common(&common);
                common.push(Command { id: cid, ts, kind });
                let (cid, j) = next_common(&common);
                let kind = CommandKind::New(limit(client('p', j), o.side, price, qty));
                common.push(Command { id: cid, ts, kind });
                modify_common = Some(cid);
                CommandKind::Replace(Replace {
                    symbol: sym,
                    order_id: target,
                    account: anonymous,
                    price: Some(price),
                    qty: Some(qty),
                })
            }
        };
        let cmd = Command { id, ts, kind };
        events.clear();
        engine.apply(&cmd, &mut events);
        for e in &events {
            match e.kind {
                EventKind::Fill { maker, maker_leaves, .. } => {
                    stats.fills += 1;
                    if maker_leaves.is_zero() && live.remove(maker) {
                        stats.ended_filled += 1;
                        common_id.remove(&maker);
                    }
                }
                EventKind::Canceled { order_id, reason, .. } => {
                    if reason == CancelReason::Unfilled {
                        // An IOC's rest: in the common form it rested, and is canceled now.
                        if let Some(cid) = ioc_common {
                            let kind = CommandKind::Cancel(Cancel { order_id: cid, account: anonymous });
                            let (id, _) = next_common(&common);
                            common.push(Command { id, ts, kind });
                        }
                    } else if live.remove(order_id) {
                        stats.ended_canceled += 1;
                        common_id.remove(&order_id);
                    }
                }
                EventKind::Rejected { reason, .. } => panic!("the engine rejected {cmd:?}: {reason:?}"),
                _ => {}
            }
        }
        match cmd.kind {
            CommandKind::New(o) if o.tif == TimeInForce::Gtc && engine.order(id).is_some() => {
                stats.rested += 1;
                live.add(id, o.side, o.price.unwrap_or(Price(0)));
                common_id.insert(id, common[common.len() - 1].id);
            }
            CommandKind::Replace(r) => match (engine.order(r.order_id), modify_common) {
                (Some((_, o)), Some(cid)) => {
                    live.reprice(r.order_id, o.price);
                    common_id.insert(r.order_id, cid);
                }
                _ => {
                    // It traded in full at its new price.
                    if live.remove(r.order_id) {
                        stats.ended_filled += 1;
                    }
                    common_id.remove(&r.order_id);
                }
            },
            _ => {}
        }
        stats.max_live = stats.max_live.max(live.len());
        native.push(cmd);
        if i < warm_up {
            continue;
        }
        let book = engine.book(sym).expect("symbol exists");
        samples += 1;
        for (k, side) in [Side::Buy, Side::Sell].into_iter().enumerate() {
            orders[k].add(live.per_side[k]);
            levels[k].add(book.levels(side));
        }
        if let (Some((b, _)), Some((a, _))) = (book.best_bid(), book.best_ask()) {
            let mid = (b.0 + a.0) / 2;
            let m = &mut stats.mid;
            if samples == 1 {
                *m = MidPath { start: mid, low: (mid, i), high: (mid, i), end: mid };
            }
            if mid < m.low.0 {
                m.low = (mid, i);
            }
            if mid > m.high.0 {
                m.high = (mid, i);
            }
            m.end = mid;
        }
        if i % PROFILE_EVERY == 0 {
            profiles += 1;
            let depth = book.depth(usize::MAX);
            for levels in [&depth.bids, &depth.asks] {
                let Some(&(best, _)) = levels.first() else { continue };
                for &(price, qty) in levels {
                    let d = (price.0 - best.0).abs();
                    if let Some(k) = PROFILE_BUCKETS.iter().position(|&(from, to)| (from..to).contains(&d)) {
                        profile[k] += u128::from(qty.0);
                    }
                }
            }
        }
    }
    let shape = &mut stats.shape;
    shape.orders = [orders[0].spread(samples), orders[1].spread(samples)];
    shape.levels = [levels[0].spread(samples), levels[1].spread(samples)];
    for (k, &(from, to)) in PROFILE_BUCKETS.iter().enumerate() {
        // Both sides, per tick of the bucket.
        shape.profile[k] = profile[k] as f64 / (2 * profiles.max(1)) as f64 / (to - from) as f64;
    }
    RegimeStream { spec: *spec, native, common, stats }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;

    fn spec(regime: Regime, commands: usize) -> RegimeSpec {
        RegimeSpec { regime, commands, depth: 5_000, seed: 11 }
    }

    /// Each regime's stats at 1,000,000 messages (the bench's scale is 2,000,000; the regimes'
    /// timetables are fractions of the stream, so the moves here are twice as fast), made once.
    fn at_scale() -> &'static [(Regime, RegimeStats)] {
        static STATS: OnceLock<Vec<(Regime, RegimeStats)>> = OnceLock::new();
        STATS.get_or_init(|| Regime::ALL.map(|r| (r, generate(&spec(r, 1_000_000)).stats)).to_vec())
    }

    /// Replays `cmds` through a fresh engine: its traded lots, and the book it leaves.
    fn replay(cmds: &[Command], capacity: Capacity) -> (u64, matcher::Depth, Engine) {
        let mut engine = Engine::new(&stream::table(1), capacity);
        let (mut out, mut traded) = (Vec::new(), 0);
        for cmd in cmds {
            out.clear();
            engine.apply(cmd, &mut out);
            for e in &out {
                match e.kind {
                    EventKind::Fill { qty, .. } => traded += qty.0,
                    EventKind::Rejected { .. } => panic!("{cmd:?} -> {out:?}"),
                    _ => {}
                }
            }
        }
        let depth = engine.book(SymbolId(0)).expect("one symbol").depth(usize::MAX);
        (traded, depth, engine)
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        for regime in Regime::ALL {
            let a = generate(&spec(regime, 20_000));
            let b = generate(&spec(regime, 20_000));
            assert!(a.native == b.native && a.common == b.common, "{regime:?}");
            let c = generate(&RegimeSpec { seed: 12, ..spec(regime, 20_000) });
            assert!(a.native != c.native, "{regime:?}: another seed, another stream");
        }
    }

    #[test]
    fn each_regime_has_the_target_mix_and_a_deep_book() {
        for (regime, s) in at_scale() {
            let n = s.new_orders() + s.cancels + s.modifies;
            assert_eq!(n, 1_000_000);
            let new = s.new_orders() as f64 / n as f64;
            assert!((0.45..0.55).contains(&new), "{regime:?}: new orders {new}");
            assert!((0.13..0.17).contains(&s.ioc_share()), "{regime:?}: IOC {}", s.ioc_share());
            assert!((0.18..0.22).contains(&s.modify_share()), "{regime:?}: modifies {}", s.modify_share());
            // ~95 % of resting orders end canceled; a trending market trades more of them.
            let canceled = match regime {
                Regime::Static | Regime::Normal => 0.92..0.98,
                Regime::Swing | Regime::FlashCrash => 0.85..0.98,
            };
            assert!(canceled.contains(&s.canceled_share()), "{regime:?}: canceled {}", s.canceled_share());
            // Thousands of live orders, hundreds of levels per side.
            for k in 0..2 {
                assert!(s.shape.orders[k].mean > 1_000.0, "{regime:?}: {:?}", s.shape);
                assert!(s.shape.levels[k].mean > 200.0, "{regime:?}: {:?}", s.shape);
            }
        }
    }

    #[test]
    fn the_flash_crash_moves_the_mid_through_the_book_and_back() {
        let mid = |regime| at_scale().iter().find(|(r, _)| *r == regime).expect("every regime").1.mid;
        let m = mid(Regime::FlashCrash);
        assert!(m.start - m.low.0 >= 300, "{m:?}");
        assert!((m.end - m.start).abs() <= 80, "{m:?}");
        // The bottom comes fast: inside the crash's 5 % of the stream, not by drifting there.
        let [start, _, _, back] = CRASH_AT.map(|p| 1_000_000 * p / 100);
        assert!((start..back).contains(&m.low.1), "{m:?}");
        // Beside it: the static mid never moves, the normal one wanders, the swing goes both ways.
        let fixed = mid(Regime::Static);
        assert!(fixed.high.0 - fixed.low.0 <= 2, "{fixed:?}");
        let normal = mid(Regime::Normal);
        assert!(normal.high.0 - normal.low.0 < 200, "{normal:?}");
        let swing = mid(Regime::Swing);
        assert!(swing.high.0 - swing.low.0 >= 450, "{swing:?}");
    }

    #[test]
    fn depth_falls_off_away_from_the_touch() {
        for (regime, s) in at_scale() {
            // Lots per tick at 1–4, 5–19, 20–99 and 100–499 ticks from the touch: each bucket
            // thinner than the one before, 100× from the first to the last (a power law of
            // exponent ≈ 1.5). The touch itself is the thickest in a still market; when the price
            // moves it is the level being eaten or overtaken, thinner than the next few.
            let p = s.shape.profile;
            assert!(p[1..].windows(2).all(|w| w[0] > w[1]), "{regime:?}: {p:?}");
            assert!(p[1] > 40.0 * p[4], "{regime:?}: {p:?}");
        }
        let fixed = &at_scale()[0];
        assert!(fixed.1.shape.profile[0] > fixed.1.shape.profile[1], "{fixed:?}");
    }

    #[test]
    fn a_bad_regime_name_lists_the_known_ones() {
        assert_eq!("flash-crash".parse(), Ok(Regime::FlashCrash));
        assert_eq!(Regime::parse_list("all"), Ok(Regime::ALL.to_vec()));
        assert_eq!(Regime::parse_list("static,swing"), Ok(vec![Regime::Static, Regime::Swing]));
        let err = Regime::parse_list("static,crash").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown regime `crash`: the known ones are static, normal, swing, flash-crash (or `all`)"
        );
    }

    #[test]
    fn both_forms_leave_the_same_book_and_trade_the_same() {
        for regime in Regime::ALL {
            let s = generate(&spec(regime, 60_000));
            let capacity = capacity(&s);
            let (traded, depth, engine) = replay(&s.native, capacity);
            let (common_traded, common_depth, _) = replay(&s.common, capacity);
            assert!(traded > 0);
            assert_eq!(traded, common_traded, "{regime:?}");
            assert_eq!((depth.bids, depth.asks), (common_depth.bids, common_depth.asks), "{regime:?}");
            engine.validate().unwrap();
            // The common form holds only what the peers' adapters support.
            for cmd in &s.common {
                match cmd.kind {
                    CommandKind::New(o) => {
                        assert_eq!((o.order_type, o.tif), (OrderType::Limit, TimeInForce::Gtc))
                    }
                    CommandKind::Cancel(_) => {}
                    other => panic!("{other:?}"),
                }
            }
            assert!(s.common.len() > s.native.len(), "{regime:?}");
        }
    }
}

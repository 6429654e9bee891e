//! A realistic synthetic order flow, the same every time for a given seed.
//!
//! Most commands are limit orders added a few ticks from the top of the book, about a third are
//! cancels of live orders, about a tenth are marketable (they cross the spread and trade). The
//! full mix spreads over several symbols and uses every order type; the [`Mix::Common`] subset is
//! what every peer book supports (GTC limit adds, cancels, marketable limits, one symbol).
//!
//! The generator runs the commands through a real [`Engine`] as it goes, so every cancel names an
//! order that is live at that point and the book depth stays near a target.

use std::collections::HashMap;

use common::{
    Account, Cancel, ClientOrderId, Command, CommandKind, Event, EventKind, NewOrder, OrderId, OrderType,
    Price, Qty, Replace, Side, SymbolId, SymbolTable, TimeInForce, Timestamp,
};
use matcher::{Capacity, Engine};

/// Which commands a stream may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    /// Every command and order type, several symbols.
    Full,
    /// Only what every peer supports: GTC limit adds, cancels, marketable limits, one symbol.
    Common,
}

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct StreamSpec {
    /// Which commands.
    pub mix: Mix,
    /// How many commands.
    pub commands: usize,
    /// How many symbols (the common mix always uses one).
    pub symbols: u32,
    /// Resting orders per symbol above which adds give way to cancels.
    pub depth: usize,
    /// The random seed.
    pub seed: u64,
}

/// Counts of what a stream holds: printed beside the results.
#[derive(Clone, Copy, Debug, Default)]
pub struct StreamStats {
    /// Limit orders that rest (passive adds).
    pub adds: usize,
    /// Cancels.
    pub cancels: usize,
    /// Orders that cross the spread (marketable limits and market orders).
    pub marketable: usize,
    /// IOC limits, replaces and other commands of the full mix.
    pub other: usize,
    /// Fills the stream causes.
    pub fills: usize,
}

/// SplitMix64: small, fast, good enough for workloads.
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Live orders of one symbol, with O(1) removal by id.
#[derive(Default)]
struct Live {
    ids: Vec<OrderId>,
    at: HashMap<OrderId, usize>,
}

impl Live {
    fn add(&mut self, id: OrderId) {
        self.at.insert(id, self.ids.len());
        self.ids.push(id);
    }

    fn remove(&mut self, id: OrderId) {
        if let Some(i) = self.at.remove(&id) {
            self.ids.swap_remove(i);
            if let Some(moved) = self.ids.get(i) {
                self.at.insert(*moved, i);
            }
        }
    }
}

/// Engine capacity that holds a stream of this spec without growing (a quarter above its depth),
/// with the engine's default client-id window.
pub fn capacity(spec: &StreamSpec) -> Capacity {
    Capacity { orders: spec.depth + spec.depth / 4 + 64, ..Capacity::default() }
}

/// The symbol table streams use: the default set, cycled to as many symbols as asked.
pub fn table(symbols: u32) -> SymbolTable {
    let base: Vec<_> = SymbolTable::default().iter().map(|(_, s)| s.clone()).collect();
    let specs = (0..symbols.max(1) as usize)
        .map(|i| {
            let mut s = base[i % base.len()].clone();
            if i >= base.len() {
                s.name = format!("{}{}", s.name, i / base.len());
            }
            s
        })
        .collect();
    SymbolTable::new(specs)
}

/// Generates a stream; returns it with what it holds.
pub fn generate(spec: &StreamSpec) -> (Vec<Command>, StreamStats) {
    let symbols = if spec.mix == Mix::Common { 1 } else { spec.symbols.max(1) };
    let table = table(symbols);
    let mut engine = Engine::new(&table, capacity(spec));
    let mut live: Vec<Live> = (0..symbols).map(|_| Live::default()).collect();
    let mut rng = Rng::new(spec.seed);
    let mut stats = StreamStats::default();
    let mut cmds = Vec::with_capacity(spec.commands);
    let mut events: Vec<Event> = Vec::with_capacity(1024);
    let anonymous = Account::anonymous();
    let accounts =
        [anonymous, Account::new("alice").unwrap_or(anonymous), Account::new("bob").unwrap_or(anonymous)];
    for i in 0..spec.commands {
        let id = OrderId::new(0, i as u64).unwrap_or(OrderId(i as u64));
        let sym = SymbolId(rng.below(u64::from(symbols)) as u32);
        let book = engine.book(sym).expect("symbol exists");
        let reference = table.get(sym).map_or(Price(10_000), |s| s.reference);
        let mid = match (book.best_bid(), book.best_ask()) {
            (Some((b, _)), Some((a, _))) => Price((b.0 + a.0) / 2),
            (Some((b, _)), None) => Price(b.0 + 1),
            (None, Some((a, _))) => Price(a.0 - 1),
            (None, None) => book.reference().max(reference),
        };
        let side = if rng.below(2) == 0 { Side::Buy } else { Side::Sell };
        let qty = Qty(1 + rng.below(20));
        let client_order_id = ClientOrderId::new(&format!("g{i}")).unwrap_or_else(|_| unreachable!());
        let full = spec.mix == Mix::Full;
        let account = if full { accounts[rng.below(3) as usize] } else { anonymous };
        let order = |price: Option<Price>, order_type, tif| NewOrder {
            symbol: sym,
            account,
            client_order_id,
            side,
            order_type,
            tif,
            post_only: false,
            price,
            qty,
        };
        let own = &live[sym.0 as usize];
        let roll = rng.below(100);
        let kind = if !own.ids.is_empty() && (roll < 33 || own.ids.len() > spec.depth) {
            stats.cancels += 1;
            let target = own.ids[rng.below(own.ids.len() as u64) as usize];
            let owner = engine.order(target).map_or(anonymous, |(_, o)| o.account);
            CommandKind::Cancel(Cancel { order_id: target, account: owner })
        } else if roll < 43 {
            stats.marketable += 1;
            // Cross the spread by a few ticks; in the full mix a quarter are market orders.
            let through = 1 + rng.below(3) as i64;
            let price = match side {
                Side::Buy => Price(book.best_ask().map_or(mid.0, |(a, _)| a.0) + through),
                Side::Sell => Price(book.best_bid().map_or(mid.0, |(b, _)| b.0) - through),
            };
            if full && rng.below(4) == 0 {
                CommandKind::New(order(None, OrderType::Market, TimeInForce::Ioc))
            } else {
                CommandKind::New(order(Some(price), OrderType::Limit, TimeInForce::Gtc))
            }
        } else if full && roll < 46 && !own.ids.is_empty() {
            stats.other += 1;
            // Replace: usually shrink in place, sometimes move a tick.
            let target = own.ids[rng.below(own.ids.len() as u64) as usize];
            let (_, o) = engine.order(target).expect("live order");
            let (price, qty) = if rng.below(3) == 0 {
                (Price(o.price.0 + if o.side == Side::Buy { -1 } else { 1 }), o.leaves)
            } else {
                (o.price, Qty(o.leaves.0.div_ceil(2)))
            };
            CommandKind::Replace(Replace {
                symbol: sym,
                order_id: target,
                account: o.account,
                price: Some(price),
                qty: Some(qty),
            })
        } else if full && roll < 48 {
            stats.other += 1;
            let price = Price(mid.0 + if side == Side::Buy { 1 } else { -1 });
            CommandKind::New(order(Some(price), OrderType::Limit, TimeInForce::Ioc))
        } else {
            stats.adds += 1;
            // Passive, near the top: most within a few ticks of the mid.
            let distance = 1 + rng.below(6).min(rng.below(20)) as i64;
            let price = match side {
                Side::Buy => Price(mid.0 - distance),
                Side::Sell => Price(mid.0 + distance),
            };
            CommandKind::New(order(Some(price), OrderType::Limit, TimeInForce::Gtc))
        };
        let cmd = Command { id, ts: Timestamp(i as u64), kind };
        events.clear();
        engine.apply(&cmd, &mut events);
        let own = &mut live[sym.0 as usize];
        for e in &events {
            match e.kind {
                EventKind::Fill { maker, maker_leaves, .. } => {
                    stats.fills += 1;
                    if maker_leaves.is_zero() {
                        own.remove(maker);
                    }
                }
                EventKind::Canceled { order_id, .. } => own.remove(order_id),
                _ => {}
            }
        }
        if let CommandKind::New(_) = cmd.kind {
            if engine.order(id).is_some() {
                own.add(id);
            }
        }
        if let CommandKind::Replace(r) = cmd.kind {
            if engine.order(r.order_id).is_none() {
                own.remove(r.order_id);
            }
        }
        cmds.push(cmd);
    }
    (cmds, stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_shaped_as_promised() {
        let spec = StreamSpec { mix: Mix::Full, commands: 20_000, symbols: 4, depth: 500, seed: 7 };
        let (a, stats) = generate(&spec);
        let (b, _) = generate(&spec);
        assert_eq!(a, b);
        let n = spec.commands as f64;
        let cancels = stats.cancels as f64 / n;
        let marketable = stats.marketable as f64 / n;
        assert!((0.25..0.45).contains(&cancels), "cancels {cancels}");
        assert!((0.05..0.15).contains(&marketable), "marketable {marketable}");
        assert!(stats.fills > 0);
        // Every cancel names a live order: the engine rejects none of them.
        let table = table(4);
        let mut engine = Engine::new(&table, capacity(&spec));
        let mut out = Vec::new();
        for cmd in &a {
            out.clear();
            engine.apply(cmd, &mut out);
            if let CommandKind::Cancel(_) = cmd.kind {
                assert!(matches!(out[0].kind, EventKind::Canceled { .. }), "{:?}", out[0]);
            }
            let rejected = out.iter().any(|e| matches!(e.kind, EventKind::Rejected { .. }));
            assert!(!rejected, "{cmd:?} -> {out:?}");
        }
    }

    #[test]
    fn the_common_mix_holds_only_what_peers_support() {
        let spec = StreamSpec { mix: Mix::Common, commands: 5_000, symbols: 4, depth: 500, seed: 1 };
        let (cmds, _) = generate(&spec);
        for cmd in cmds {
            match cmd.kind {
                CommandKind::New(o) => {
                    assert_eq!(
                        (o.symbol, o.order_type, o.tif, o.post_only),
                        (SymbolId(0), OrderType::Limit, TimeInForce::Gtc, false)
                    );
                    assert!(o.account.is_anonymous());
                }
                CommandKind::Cancel(_) => {}
                other => panic!("{other:?}"),
            }
        }
    }
}

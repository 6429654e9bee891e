//! The books we compare against, behind one small interface, fed the same [`Mix::Common`]
//! stream: GTC limit adds (some marketable) and cancels, one symbol.
//!
//! Each does the work it does for these commands; ours also validates (band, duplicates,
//! ownership) and emits its full event stream, the peers return their own result values.
//!
//! [`Mix::Common`]: crate::stream::Mix::Common

use common::{Command, CommandKind, Event, OrderType, Side, SymbolTable};
use matcher::{Capacity, Engine};

/// A book that can replay the common stream.
pub trait Book {
    /// Its name in the report.
    fn name(&self) -> &'static str;
    /// Applies one command.
    fn apply(&mut self, cmd: &Command);
}

/// Trading Lab's engine.
pub struct Ours {
    engine: Engine,
    /// Reused for every command's events.
    out: Vec<Event>,
    /// Its name in the report.
    name: &'static str,
}

impl Ours {
    /// A fresh engine over `table` with room for `capacity`.
    pub fn new(table: &SymbolTable, capacity: Capacity) -> Ours {
        Ours { engine: Engine::new(table, capacity), out: Vec::with_capacity(1024), name: "trading-lab" }
    }

    /// The same with no window of ended client ids (open orders' ids are still checked): the
    /// window's cost, shown beside peers that keep none.
    pub fn without_window(table: &SymbolTable, capacity: Capacity) -> Ours {
        let capacity = Capacity { client_window: 0, ..capacity };
        Ours { name: "trading-lab, window 0", ..Ours::new(table, capacity) }
    }

    /// The engine, for checks after a run.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Book for Ours {
    fn name(&self) -> &'static str {
        self.name
    }

    #[inline]
    fn apply(&mut self, cmd: &Command) {
        self.out.clear();
        self.engine.apply(cmd, &mut self.out);
    }
}

/// `lobster` 0.7: a BTreeMap of price levels over an arena, single-threaded.
pub struct Lobster(lobster::OrderBook);

impl Lobster {
    /// A fresh book with room for `orders`.
    pub fn new(orders: usize) -> Lobster {
        Lobster(lobster::OrderBook::new(orders, 64, false))
    }
}

impl Book for Lobster {
    fn name(&self) -> &'static str {
        "lobster 0.7"
    }

    #[inline]
    fn apply(&mut self, cmd: &Command) {
        let order = match cmd.kind {
            CommandKind::New(o) if o.order_type == OrderType::Limit => lobster::OrderType::Limit {
                id: u128::from(cmd.id.0),
                side: if o.side == Side::Buy { lobster::Side::Bid } else { lobster::Side::Ask },
                qty: o.qty.0,
                price: o.price.map_or(0, |p| p.0 as u64),
            },
            CommandKind::Cancel(c) => lobster::OrderType::Cancel { id: u128::from(c.order_id.0) },
            _ => return,
        };
        std::hint::black_box(self.0.execute(order));
    }
}

/// `orderbook-rs` 0.15: a concurrent book (lock-free skip list of levels, atomics).
pub struct OrderbookRs(orderbook_rs::OrderBook<()>);

impl OrderbookRs {
    /// A fresh book.
    pub fn new() -> OrderbookRs {
        OrderbookRs(orderbook_rs::OrderBook::new("ABC"))
    }
}

impl Default for OrderbookRs {
    fn default() -> OrderbookRs {
        OrderbookRs::new()
    }
}

impl Book for OrderbookRs {
    fn name(&self) -> &'static str {
        "orderbook-rs 0.15"
    }

    #[inline]
    fn apply(&mut self, cmd: &Command) {
        use orderbook_rs::{Id, Side as S, TimeInForce};
        match cmd.kind {
            CommandKind::New(o) if o.order_type == OrderType::Limit => {
                let side = if o.side == Side::Buy { S::Buy } else { S::Sell };
                let price = o.price.map_or(0, |p| p.0 as u128);
                let r = self.0.add_limit_order(
                    Id::from_u64(cmd.id.0),
                    price,
                    o.qty.0,
                    side,
                    TimeInForce::Gtc,
                    None,
                );
                std::hint::black_box(r.is_ok());
            }
            CommandKind::Cancel(c) => {
                std::hint::black_box(self.0.cancel_order(Id::from_u64(c.order_id.0)).is_ok());
            }
            _ => {}
        }
    }
}

/// Which peers a benchmark replays beside ours (`book-bench --peers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peers {
    /// `lobster` 0.7.
    pub lobster: bool,
    /// `orderbook-rs` 0.15: by far the slowest, so most of a run's time.
    pub orderbook_rs: bool,
}

impl Peers {
    /// Both peers.
    pub const ALL: Peers = Peers { lobster: true, orderbook_rs: true };
    /// Ours alone.
    pub const NONE: Peers = Peers { lobster: false, orderbook_rs: false };

    /// `all`, `none`, or a comma-separated list of `lobster` and `orderbook-rs`.
    pub fn parse(s: &str) -> Result<Peers, String> {
        match s {
            "all" => return Ok(Peers::ALL),
            "none" => return Ok(Peers::NONE),
            _ => {}
        }
        let mut peers = Peers::NONE;
        for name in s.split(',') {
            match name {
                "lobster" => peers.lobster = true,
                "orderbook-rs" => peers.orderbook_rs = true,
                other => {
                    return Err(format!(
                        "unknown peer `{other}`: the known ones are lobster, orderbook-rs (or `all`, `none`)"
                    ))
                }
            }
        }
        Ok(peers)
    }

    /// True if any peer runs.
    pub fn any(self) -> bool {
        self.lobster || self.orderbook_rs
    }

    /// Makers for the chosen peers, in the order of [`Peers::names`], each with room for `orders`
    /// where it takes a size.
    pub fn makers<'a>(self, orders: usize) -> Vec<crate::report::Maker<'a>> {
        let mut makers: Vec<crate::report::Maker<'a>> = Vec::new();
        if self.lobster {
            makers.push(Box::new(move || Box::new(Lobster::new(orders)) as Box<dyn Book>));
        }
        if self.orderbook_rs {
            makers.push(Box::new(|| Box::new(OrderbookRs::new()) as Box<dyn Book>));
        }
        makers
    }

    /// The chosen peers' names, in the order they run.
    pub fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.lobster {
            names.push("lobster");
        }
        if self.orderbook_rs {
            names.push("orderbook-rs");
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_lists_and_refuse_unknown_names() {
        assert_eq!(Peers::parse("all"), Ok(Peers::ALL));
        assert_eq!(Peers::parse("none"), Ok(Peers::NONE));
        assert_eq!(Peers::parse("lobster"), Ok(Peers { lobster: true, orderbook_rs: false }));
        assert_eq!(Peers::parse("orderbook-rs,lobster"), Ok(Peers::ALL));
        assert_eq!(Peers::parse("lobster").map(Peers::names), Ok(vec!["lobster"]));
        assert!(!Peers::NONE.any());
        let err = Peers::parse("lobster,cpptrader").unwrap_err();
        assert_eq!(
            err,
            "unknown peer `cpptrader`: the known ones are lobster, orderbook-rs (or `all`, `none`)"
        );
        assert!(Peers::parse("").is_err());
    }

    #[test]
    fn peer_makers_follow_the_names() {
        for peers in [Peers::ALL, Peers::NONE, Peers::parse("orderbook-rs").unwrap()] {
            let made: Vec<&str> = peers.makers(64).iter_mut().map(|make| make().name()).collect();
            let names = peers.names();
            assert_eq!(made.len(), names.len());
            for (book, name) in made.iter().zip(names) {
                assert!(book.starts_with(name), "{book} is not {name}");
            }
        }
    }
}

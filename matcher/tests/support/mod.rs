//! Shared by the rule tests and the property tests: the oracle, a common interface over it and
//! the real engine, and helpers to build commands and read events.
#![allow(dead_code)]

pub mod oracle;

use common::{
    Account, Cancel, ClientOrderId, Command, CommandKind, Event, EventKind, NewOrder, OrderId, OrderType,
    Price, Qty, Replace, Side, SymbolId, SymbolTable, TimeInForce, Timestamp,
};
use matcher::{Capacity, Engine, RestingOrder};

use oracle::Oracle;

/// What the rule tests need of a book implementation.
pub trait Matching {
    fn apply(&mut self, cmd: &Command, out: &mut Vec<Event>);
    fn orders(&self, symbol: SymbolId, side: Side) -> Vec<RestingOrder>;
    fn validate(&self) -> Result<(), String>;
    fn name(&self) -> &'static str;
}

impl Matching for Engine {
    fn apply(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        Engine::apply(self, cmd, out)
    }
    fn orders(&self, symbol: SymbolId, side: Side) -> Vec<RestingOrder> {
        self.book(symbol).map(|b| b.orders(side)).unwrap_or_default()
    }
    fn validate(&self) -> Result<(), String> {
        Engine::validate(self)
    }
    fn name(&self) -> &'static str {
        "engine"
    }
}

impl Matching for Oracle {
    fn apply(&mut self, cmd: &Command, out: &mut Vec<Event>) {
        Oracle::apply(self, cmd, out)
    }
    fn orders(&self, symbol: SymbolId, side: Side) -> Vec<RestingOrder> {
        Oracle::orders(self, symbol, side)
    }
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    fn name(&self) -> &'static str {
        "oracle"
    }
}

pub const ABC: SymbolId = SymbolId(0);
pub const DEF: SymbolId = SymbolId(1);

pub fn acct(name: &str) -> Account {
    Account::new(name).unwrap()
}

pub fn cid(name: &str) -> ClientOrderId {
    ClientOrderId::new(name).unwrap()
}

/// A book implementation with a command counter and the last command's events.
pub struct Fixture {
    pub m: Box<dyn Matching>,
    next: u64,
    pub events: Vec<Event>,
}

/// The real engine and the oracle, with a client-id window of `window`.
pub fn both(window: usize) -> [Fixture; 2] {
    let table = SymbolTable::default();
    let capacity = Capacity { orders: 16, levels: 4, client_window: window };
    [
        Fixture { m: Box::new(Engine::new(&table, capacity)), next: 1, events: Vec::new() },
        Fixture { m: Box::new(Oracle::new(&table, window)), next: 1, events: Vec::new() },
    ]
}

/// A GTC limit order of the anonymous account, with a fresh client id.
pub fn limit(side: Side, price: i64, qty: u64) -> NewOrder {
    NewOrder {
        symbol: ABC,
        account: Account::anonymous(),
        client_order_id: cid("auto"),
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        post_only: false,
        price: Some(Price(price)),
        qty: Qty(qty),
    }
}

/// A market order of the anonymous account.
pub fn market(side: Side, qty: u64) -> NewOrder {
    NewOrder { order_type: OrderType::Market, tif: TimeInForce::Ioc, price: None, ..limit(side, 0, qty) }
}

impl Fixture {
    /// Applies a command with the next id; returns the id. Validates after every command.
    pub fn send(&mut self, kind: CommandKind) -> OrderId {
        self.send_on(0, kind)
    }

    /// Sends a command as if it came in on `partition` of the log.
    pub fn send_on(&mut self, partition: u16, kind: CommandKind) -> OrderId {
        let id = OrderId::new(partition, self.next).unwrap();
        self.next += 1;
        let cmd = Command { id, ts: Timestamp(1_000 + id.0), kind };
        self.events.clear();
        self.m.apply(&cmd, &mut self.events);
        if let Err(e) = self.m.validate() {
            panic!("{}: invariant broken after {cmd:?}: {e}", self.m.name());
        }
        id
    }

    /// Sends a new order, giving it client id `c<id>` if it has the placeholder `auto`.
    pub fn order(&mut self, mut o: NewOrder) -> OrderId {
        if o.client_order_id == cid("auto") {
            o.client_order_id = cid(&format!("c{}", self.next));
        }
        self.send(CommandKind::New(o))
    }

    pub fn cancel(&mut self, order_id: OrderId) -> OrderId {
        self.send(CommandKind::Cancel(Cancel { order_id, account: Account::anonymous() }))
    }

    pub fn replace(&mut self, order_id: OrderId, price: i64, qty: u64) -> OrderId {
        self.amend(order_id, Some(price), Some(qty))
    }

    /// A replace that may leave the price or the quantity as the order has it (`None`).
    pub fn amend(&mut self, order_id: OrderId, price: Option<i64>, qty: Option<u64>) -> OrderId {
        let r = Replace {
            symbol: ABC,
            order_id,
            account: Account::anonymous(),
            price: price.map(Price),
            qty: qty.map(Qty),
        };
        self.send(CommandKind::Replace(r))
    }

    /// The last command's events, one short line each.
    pub fn said(&self) -> Vec<String> {
        self.events.iter().map(describe).collect()
    }

    /// Resting orders of ABC on a side, best first: (offset, price, leaves).
    pub fn book(&self, side: Side) -> Vec<(u64, i64, u64)> {
        self.m.orders(ABC, side).iter().map(|o| (o.id.offset(), o.price.0, o.leaves.0)).collect()
    }
}

/// One line per event: what the rule tests compare.
pub fn describe(e: &Event) -> String {
    match e.kind {
        EventKind::Accepted { order_id, .. } => format!("accepted {}", order_id.offset()),
        EventKind::Rejected { order_id, reason, .. } => {
            format!("rejected {} {}", order_id.offset(), reason.as_str())
        }
        EventKind::Fill { fill, maker, taker, price, qty, maker_leaves, taker_leaves, .. } => format!(
            "fill#{fill} {}x{} maker {} ({} left) taker {} ({} left)",
            qty.0,
            price.0,
            maker.offset(),
            maker_leaves.0,
            taker.offset(),
            taker_leaves.0
        ),
        EventKind::Canceled { order_id, qty, reason, .. } => {
            format!("canceled {} {} {}", order_id.offset(), qty.0, reason.as_str())
        }
        EventKind::Replaced { order_id, price, qty, priority_kept, .. } => {
            format!("replaced {} {}x{} kept={priority_kept}", order_id.offset(), qty.0, price.0)
        }
        EventKind::Level { side, price, qty, orders } => {
            format!("level {} {} {}/{}", side.as_str(), price.0, qty.0, orders)
        }
        EventKind::Status { halted, reference } => format!("status halted={halted} ref={}", reference.0),
    }
}

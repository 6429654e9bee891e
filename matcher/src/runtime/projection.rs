//! The I/O thread's picture of the book, built from events alone: each open order's ordered and
//! filled quantity and its status, and each symbol's price levels with their sequence number.
//! It is what lets the sink write absolute, idempotent values — an order's `filled_qty` and
//! `status`, a whole depth snapshot — instead of increments a replay would apply twice.
//!
//! Pure: no Redis, no Kafka, no text. [`Projection::apply`] says what an event changed that the
//! sink cannot read off the event itself (a fill's effect on each order, which book moved), and
//! the sink formats it. Replayed events rebuild the projection exactly as live ones do.
//!
//! Memory is bounded by the open book (DESIGN.md §3): an order is forgotten once it ends (filled
//! or canceled). The order a command placed is kept until that command's [`Projection::done`],
//! which the sink still needs for its hop timestamps.
//!
//! Retention: each order forgotten is [`Retired::Ended`] (its Redis keys may now expire), and it
//! joins its book's mirror of the duplicate window — the last `window` ended client ids per
//! symbol, in the order the book closes them ([`crate::clients`]). The one that falls out of the
//! mirror is [`Retired::Evicted`]: from then on the book would accept its client id again, so its
//! `client:` key (which answers "which order had this id?") may expire too. The sink drains both
//! with [`Projection::retired`].

use std::collections::{BTreeMap, HashMap, VecDeque};

use common::{
    Account, ClientOrderId, Event, EventKind, OrderId, OrderStatus, OrderType, Price, Qty, Side, SymbolId,
    TimeInForce,
};

/// What the projection holds of an open order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderState {
    /// Quantity ordered (after a replace: what was filled plus the new open quantity), to tell
    /// `filled` from `partially_filled`.
    pub qty: Qty,
    /// Quantity traded so far.
    pub filled: Qty,
    /// Where it stands.
    pub status: OrderStatus,
    /// A GTC limit order: if nothing else happened to it, it rests once its command is done.
    pub can_rest: bool,
    /// Whose it is (the sink keeps each account's set of open orders).
    pub account: Account,
    /// The owner's handle: its `client:` key once the order ends.
    pub client_order_id: ClientOrderId,
    /// Its book: the duplicate window it joins once it ends.
    pub symbol: SymbolId,
}

/// An order's Redis keys that may now expire (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retired {
    /// The order ended: its `order:`, `fills:` and `trade:` keys.
    Ended {
        /// The order.
        order_id: OrderId,
        /// Its owner.
        account: Account,
        /// The owner's handle.
        client_order_id: ClientOrderId,
    },
    /// Its client id left the book's duplicate window: its `client:` key.
    Evicted {
        /// The book.
        symbol: SymbolId,
        /// The owner.
        account: Account,
        /// The handle the book accepts again.
        client_order_id: ClientOrderId,
    },
}

/// One symbol's price levels, from `level` events.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Levels {
    /// Bid price (ticks) → open quantity (lots).
    pub bids: BTreeMap<i64, u64>,
    /// Ask price (ticks) → open quantity (lots).
    pub asks: BTreeMap<i64, u64>,
    /// The sequence number of the last level event applied: the snapshot's.
    pub seq: u64,
}

impl Levels {
    /// The best `n` bids, best (highest) first.
    pub fn best_bids(&self, n: usize) -> impl Iterator<Item = (Price, Qty)> + '_ {
        self.bids.iter().rev().take(n).map(|(&p, &q)| (Price(p), Qty(q)))
    }

    /// The best `n` asks, best (lowest) first.
    pub fn best_asks(&self, n: usize) -> impl Iterator<Item = (Price, Qty)> + '_ {
        self.asks.iter().take(n).map(|(&p, &q)| (Price(p), Qty(q)))
    }
}

/// A fill, as it concerns one of its two orders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filled {
    /// The order.
    pub order_id: OrderId,
    /// Its owner.
    pub account: Account,
    /// The owner's handle.
    pub client_order_id: ClientOrderId,
    /// Traded so far, this fill included.
    pub filled: Qty,
    /// `partially_filled` or `filled`.
    pub status: OrderStatus,
    /// This is the order's first fill (the original lab's `trade:` key records it).
    pub first: bool,
}

/// What an event changed that the sink cannot read off the event itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the sink writes from the event alone, if at all.
    Nothing,
    /// A fill's effect on its maker and taker (`None`: an order not held here).
    Fill {
        /// The resting order.
        maker: Option<Filled>,
        /// The incoming order.
        taker: Option<Filled>,
    },
    /// This symbol's levels moved: its depth snapshot is out of date.
    Levels(SymbolId),
    /// An order held here was canceled: whose it was.
    Canceled(Account),
}

/// Open orders and price levels, from the event stream.
#[derive(Debug)]
pub struct Projection {
    /// Every open order, and the current command's own order until it is done.
    orders: HashMap<OrderId, OrderState>,
    /// Every symbol's levels.
    levels: HashMap<SymbolId, Levels>,
    /// The book's duplicate window: how many ended client ids it remembers per symbol.
    window: usize,
    /// Per symbol, the last `window` ended client ids, oldest first.
    recent: HashMap<SymbolId, VecDeque<(Account, ClientOrderId)>>,
    /// What ended or left the window since the last [`Projection::retired`].
    retired: Vec<Retired>,
}

impl Default for Projection {
    /// With the book's default duplicate window.
    fn default() -> Projection {
        Projection::new(crate::Capacity::default().client_window)
    }
}

impl Projection {
    /// Empty, mirroring a duplicate window of `window` ended ids per book.
    pub fn new(window: usize) -> Projection {
        Projection {
            orders: HashMap::new(),
            levels: HashMap::new(),
            window,
            recent: HashMap::new(),
            retired: Vec::new(),
        }
    }

    /// The open orders and levels as bytes for a snapshot's `extra` section (JSON, sorted, so the
    /// same state gives the same bytes). The duplicate-window mirror is not in it: it equals the
    /// books' windows, which the snapshot holds ([`Projection::restore`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut orders: Vec<_> = self.orders.iter().collect();
        orders.sort_unstable_by_key(|(id, _)| **id);
        let orders: Vec<serde_json::Value> = orders
            .into_iter()
            .map(|(id, o)| {
                serde_json::json!([
                    id.0,
                    o.qty.0,
                    o.filled.0,
                    o.status.as_str(),
                    o.can_rest,
                    o.account.as_str(),
                    o.client_order_id.as_str(),
                    o.symbol.0
                ])
            })
            .collect();
        let mut levels: Vec<_> = self.levels.iter().collect();
        levels.sort_unstable_by_key(|(symbol, _)| **symbol);
        let levels: Vec<serde_json::Value> = levels
            .into_iter()
            .map(|(symbol, l)| {
                let side =
                    |m: &BTreeMap<i64, u64>| m.iter().map(|(p, q)| [*p, *q as i64]).collect::<Vec<_>>();
                serde_json::json!([symbol.0, l.seq, side(&l.bids), side(&l.asks)])
            })
            .collect();
        serde_json::json!({"v": 1, "orders": orders, "levels": levels}).to_string().into_bytes()
    }

    /// A projection from [`Projection::encode`]'s bytes and each book's window of ended client
    /// ids (oldest first, as the snapshot holds them), mirroring a window of `window`.
    pub fn restore<'a>(
        bytes: &[u8],
        windows: impl IntoIterator<Item = (SymbolId, &'a [(Account, ClientOrderId)])>,
        window: usize,
    ) -> Result<Projection, String> {
        /// id, qty, filled, status, can_rest, account, client id, symbol.
        type Order = (u64, u64, u64, String, bool, String, String, u32);
        /// symbol, seq, bids, asks.
        type Prices = Vec<(i64, u64)>;
        #[derive(serde::Deserialize)]
        struct Image {
            v: u32,
            orders: Vec<Order>,
            levels: Vec<(u32, u64, Prices, Prices)>,
        }
        let image: Image = serde_json::from_slice(bytes).map_err(|e| format!("the projection: {e}"))?;
        if image.v != 1 {
            return Err(format!("the projection's format {} is not known", image.v));
        }
        let mut p = Projection::new(window);
        for (id, qty, filled, status, can_rest, account, client_order_id, symbol) in image.orders {
            let order = OrderState {
                qty: Qty(qty),
                filled: Qty(filled),
                status: OrderStatus::from_name(&status)
                    .ok_or_else(|| format!("order {id}: status {status:?}"))?,
                can_rest,
                account: Account::new(&account).map_err(|e| format!("order {id}: account {e}"))?,
                client_order_id: ClientOrderId::new(&client_order_id)
                    .map_err(|e| format!("order {id}: client id {e}"))?,
                symbol: SymbolId(symbol),
            };
            p.orders.insert(OrderId(id), order);
        }
        for (symbol, seq, bids, asks) in image.levels {
            let levels = Levels { bids: bids.into_iter().collect(), asks: asks.into_iter().collect(), seq };
            p.levels.insert(SymbolId(symbol), levels);
        }
        for (symbol, ended) in windows {
            if ended.len() > window {
                return Err(format!(
                    "symbol {}: {} ended ids, the window holds {window}",
                    symbol.0,
                    ended.len()
                ));
            }
            p.recent.insert(symbol, ended.iter().copied().collect());
        }
        Ok(p)
    }

    /// The duplicate window it mirrors.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Forgets command partition `p`'s orders and `symbols`' levels and windows (the partition
    /// moved; nothing is retired).
    pub fn forget_partition(&mut self, p: i32, symbols: &[SymbolId]) {
        self.orders.retain(|id, _| i32::from(id.partition()) != p);
        for s in symbols {
            self.levels.remove(s);
            self.recent.remove(s);
        }
    }

    /// Takes `other`'s orders of command partition `p` and its levels and windows of `symbols`
    /// (a snapshot's projection, for a partition taken over).
    pub fn adopt(&mut self, mut other: Projection, p: i32, symbols: &[SymbolId]) {
        self.orders.extend(other.orders.drain().filter(|(id, _)| i32::from(id.partition()) == p));
        for s in symbols {
            if let Some(l) = other.levels.remove(s) {
                self.levels.insert(*s, l);
            }
            if let Some(r) = other.recent.remove(s) {
                self.recent.insert(*s, r);
            }
        }
    }

    /// What ended, or left a duplicate window, since the last call, in event order.
    pub fn retired(&mut self) -> std::vec::Drain<'_, Retired> {
        self.retired.drain(..)
    }

    /// Applies one event.
    pub fn apply(&mut self, e: &Event) -> Change {
        match e.kind {
            EventKind::Accepted { order_id, account, client_order_id, order_type, tif, qty, .. } => {
                let can_rest = order_type == OrderType::Limit && tif == TimeInForce::Gtc;
                let order = OrderState {
                    qty,
                    filled: Qty::ZERO,
                    status: OrderStatus::Accepted,
                    can_rest,
                    account,
                    client_order_id,
                    // An accepted order always has its book's symbol.
                    symbol: e.symbol.unwrap_or(SymbolId(u32::MAX)),
                };
                self.orders.insert(order_id, order);
                Change::Nothing
            }
            EventKind::Fill {
                maker,
                taker,
                qty,
                maker_account,
                maker_client_order_id,
                taker_account,
                taker_client_order_id,
                ..
            } => Change::Fill {
                maker: self.fill(e.cmd, maker, qty, maker_account, maker_client_order_id),
                taker: self.fill(e.cmd, taker, qty, taker_account, taker_client_order_id),
            },
            EventKind::Canceled { order_id, .. } => {
                let account = self.orders.get_mut(&order_id).map(|order| {
                    order.status = OrderStatus::Canceled;
                    order.can_rest = false;
                    order.account
                });
                self.forget_if_ended(e.cmd, order_id);
                account.map_or(Change::Nothing, Change::Canceled)
            }
            EventKind::Replaced { order_id, qty, .. } => {
                if let Some(order) = self.orders.get_mut(&order_id) {
                    order.qty = Qty(order.filled.0.saturating_add(qty.0));
                }
                Change::Nothing
            }
            EventKind::Level { side, price, qty, .. } => {
                let Some(symbol) = e.symbol else { return Change::Nothing };
                let levels = self.levels.entry(symbol).or_default();
                let side = if side == Side::Buy { &mut levels.bids } else { &mut levels.asks };
                if qty.is_zero() {
                    side.remove(&price.0);
                } else {
                    side.insert(price.0, qty.0);
                }
                levels.seq = e.seq;
                Change::Levels(symbol)
            }
            EventKind::Rejected { .. } | EventKind::Status { .. } => Change::Nothing,
        }
    }

    /// Command `id` is fully applied. `None` if it placed no order held here (a cancel, a
    /// replace, a refused or malformed command); else its order's status now — `Resting` means it
    /// has just come to rest (only this makes an order `resting`). An order that ended is
    /// forgotten here.
    pub fn done(&mut self, id: OrderId) -> Option<OrderStatus> {
        let order = self.orders.get_mut(&id)?;
        if order.status == OrderStatus::Accepted && order.can_rest {
            order.status = OrderStatus::Resting;
        }
        let status = order.status;
        if status.is_final() {
            self.forget(id);
        }
        Some(status)
    }

    /// An open order's state.
    pub fn order(&self, id: OrderId) -> Option<&OrderState> {
        self.orders.get(&id)
    }

    /// How many orders are held (open ones, plus the current command's own).
    pub fn orders(&self) -> usize {
        self.orders.len()
    }

    /// A symbol's levels (`None`: no level event yet).
    pub fn levels(&self, symbol: SymbolId) -> Option<&Levels> {
        self.levels.get(&symbol)
    }

    /// Adds a fill to order `id`.
    fn fill(
        &mut self,
        cmd: OrderId,
        id: OrderId,
        qty: Qty,
        account: Account,
        client_order_id: ClientOrderId,
    ) -> Option<Filled> {
        let order = self.orders.get_mut(&id)?;
        order.filled = Qty(order.filled.0.saturating_add(qty.0));
        order.status =
            if order.filled >= order.qty { OrderStatus::Filled } else { OrderStatus::PartiallyFilled };
        let filled = Filled {
            order_id: id,
            account,
            client_order_id,
            filled: order.filled,
            status: order.status,
            first: order.filled == qty,
        };
        self.forget_if_ended(cmd, id);
        Some(filled)
    }

    /// Forgets order `id` if it ended, unless command `cmd` placed it ([`Projection::done`] does).
    fn forget_if_ended(&mut self, cmd: OrderId, id: OrderId) {
        if id != cmd && self.orders.get(&id).is_some_and(|o| o.status.is_final()) {
            self.forget(id);
        }
    }

    /// Forgets an ended order: it is retired, and its client id joins its book's window.
    fn forget(&mut self, id: OrderId) {
        let Some(o) = self.orders.remove(&id) else { return };
        self.retired.push(Retired::Ended {
            order_id: id,
            account: o.account,
            client_order_id: o.client_order_id,
        });
        let recent = self.recent.entry(o.symbol).or_default();
        recent.push_back((o.account, o.client_order_id));
        if recent.len() > self.window {
            if let Some((account, client_order_id)) = recent.pop_front() {
                self.retired.push(Retired::Evicted { symbol: o.symbol, account, client_order_id });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use common::{CancelReason, Timestamp};

    use super::*;

    const ABC: SymbolId = SymbolId(0);

    fn event(cmd: u64, seq: u64, kind: EventKind) -> Event {
        Event { cmd: OrderId(cmd), index: 0, symbol: Some(ABC), seq, ts: Timestamp(0), kind }
    }

    fn accepted(id: u64, qty: u64, tif: TimeInForce) -> Event {
        let kind = EventKind::Accepted {
            order_id: OrderId(id),
            account: Account::new("a").unwrap(),
            client_order_id: ClientOrderId::new(&format!("c{id}")).unwrap(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            tif,
            post_only: false,
            price: Some(Price(100)),
            qty: Qty(qty),
        };
        event(id, 0, kind)
    }

    fn fill(cmd: u64, maker: u64, taker: u64, qty: u64) -> Event {
        let kind = EventKind::Fill {
            fill: 0,
            maker: OrderId(maker),
            taker: OrderId(taker),
            taker_side: Side::Sell,
            price: Price(100),
            qty: Qty(qty),
            maker_leaves: Qty(0),
            taker_leaves: Qty(0),
            maker_account: Account::new("a").unwrap(),
            maker_client_order_id: ClientOrderId::new(&format!("c{maker}")).unwrap(),
            taker_account: Account::new("b").unwrap(),
            taker_client_order_id: ClientOrderId::new(&format!("c{taker}")).unwrap(),
        };
        event(cmd, 0, kind)
    }

    #[test]
    fn a_resting_order_fills_in_two_steps_then_is_forgotten() {
        let mut p = Projection::default();
        assert_eq!(p.apply(&accepted(1, 5, TimeInForce::Gtc)), Change::Nothing);
        assert_eq!(p.done(OrderId(1)), Some(OrderStatus::Resting));
        assert_eq!(p.order(OrderId(1)).map(|o| o.status), Some(OrderStatus::Resting));

        // Command 2 takes 2 of its 5 lots: a first, partial fill for both sides that are held.
        p.apply(&accepted(2, 2, TimeInForce::Ioc));
        let Change::Fill { maker: Some(maker), taker: Some(taker) } = p.apply(&fill(2, 1, 2, 2)) else {
            panic!("both orders are held")
        };
        assert_eq!((maker.filled, maker.status, maker.first), (Qty(2), OrderStatus::PartiallyFilled, true));
        assert_eq!(maker.client_order_id.as_str(), "c1");
        assert_eq!((taker.filled, taker.status, taker.first), (Qty(2), OrderStatus::Filled, true));
        assert!(p.order(OrderId(2)).is_some(), "the command's own order is kept until it is done");
        assert_eq!(p.done(OrderId(2)), Some(OrderStatus::Filled));
        assert_eq!(p.order(OrderId(2)), None, "forgotten once its command is done");

        // Command 3 takes the other 3: the maker is filled and forgotten at once.
        p.apply(&accepted(3, 3, TimeInForce::Ioc));
        let Change::Fill { maker: Some(maker), .. } = p.apply(&fill(3, 1, 3, 3)) else { panic!() };
        assert_eq!((maker.filled, maker.status, maker.first), (Qty(5), OrderStatus::Filled, false));
        assert_eq!(p.order(OrderId(1)), None);
        p.done(OrderId(3));
        assert_eq!(p.orders(), 0, "nothing open, nothing held");
    }

    #[test]
    fn cancels_replaces_and_unknown_orders() {
        let mut p = Projection::default();
        p.apply(&accepted(1, 5, TimeInForce::Gtc));
        p.done(OrderId(1));
        // Command 2 replaces it: 1 filled + 7 open makes 8 ordered.
        p.apply(&fill(9, 1, 9, 1));
        let replaced = EventKind::Replaced {
            order_id: OrderId(1),
            side: Side::Buy,
            price: Price(99),
            qty: Qty(7),
            priority_kept: false,
        };
        p.apply(&event(2, 0, replaced));
        assert_eq!(p.order(OrderId(1)).map(|o| (o.qty, o.filled)), Some((Qty(8), Qty(1))));
        assert_eq!(p.done(OrderId(2)), None, "a replace places no order");
        // Command 3 cancels it: forgotten at once.
        let canceled = EventKind::Canceled {
            order_id: OrderId(1),
            side: Side::Sell,
            price: Some(Price(100)),
            qty: Qty(7),
            reason: CancelReason::Requested,
        };
        p.apply(&event(3, 0, canceled));
        assert_eq!(p.order(OrderId(1)), None);
        assert_eq!(p.apply(&fill(4, 1, 4, 1)), Change::Fill { maker: None, taker: None });
        // An IOC order that could not rest stays accepted until its cancel.
        p.apply(&accepted(5, 5, TimeInForce::Ioc));
        assert_eq!(p.done(OrderId(5)), Some(OrderStatus::Accepted));
    }

    #[test]
    fn ended_orders_retire_and_leave_a_window_in_the_order_they_ended() {
        let mut p = Projection::new(2);
        for id in 1..=3 {
            p.apply(&accepted(id, 5, TimeInForce::Gtc));
            assert_eq!(p.done(OrderId(id)), Some(OrderStatus::Resting));
        }
        assert_eq!(p.retired().count(), 0, "open orders retire nothing");
        let cancel = |cmd, id| {
            event(
                cmd,
                0,
                EventKind::Canceled {
                    order_id: OrderId(id),
                    side: Side::Sell,
                    price: Some(Price(100)),
                    qty: Qty(5),
                    reason: CancelReason::Requested,
                },
            )
        };
        let ended = |id: u64| Retired::Ended {
            order_id: OrderId(id),
            account: Account::new("a").unwrap(),
            client_order_id: ClientOrderId::new(&format!("c{id}")).unwrap(),
        };
        let evicted = |id: u64| Retired::Evicted {
            symbol: ABC,
            account: Account::new("a").unwrap(),
            client_order_id: ClientOrderId::new(&format!("c{id}")).unwrap(),
        };
        // Orders 2 and 1 end (in that order): the window of two holds both.
        p.apply(&cancel(10, 2));
        p.apply(&fill(11, 1, 11, 5));
        assert_eq!(p.retired().collect::<Vec<_>>(), [ended(2), ended(1)]);
        // Order 3 ends: the oldest ended id (order 2's) leaves the window.
        p.apply(&cancel(12, 3));
        assert_eq!(p.retired().collect::<Vec<_>>(), [ended(3), evicted(2)]);
        // A command's own order retires when the command is done, not before.
        p.apply(&accepted(13, 5, TimeInForce::Ioc));
        p.apply(&cancel(13, 13));
        assert_eq!(p.retired().count(), 0);
        p.done(OrderId(13));
        assert_eq!(p.retired().collect::<Vec<_>>(), [ended(13), evicted(1)]);
        // An unknown order retires nothing.
        p.apply(&cancel(14, 99));
        assert_eq!(p.retired().count(), 0);
    }

    /// The mirror must forget exactly what the book forgets: random streams (orders that rest,
    /// trade, are canceled, replaced, IOC, from a few accounts reusing a few client ids) through
    /// the real engine, its events through a projection; after every command the projection's
    /// window equals the book's, and nothing evicted is still in it.
    #[test]
    fn the_window_mirror_follows_the_books_window() {
        use common::{Cancel, Command, CommandKind, NewOrder, Replace, SymbolTable};
        let table = SymbolTable::default();
        for (seed, window) in [(1u64, 1), (2, 3), (3, 5), (4, 0)] {
            let capacity = crate::Capacity { orders: 16, levels: 8, client_window: window };
            let mut engine = crate::Engine::new(&table, capacity);
            let mut p = Projection::new(window);
            let mut x = seed;
            let mut next = |n: u64| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (x >> 33) % n
            };
            let mut out = Vec::new();
            let mut evicted = 0;
            for i in 1..=3_000u64 {
                let account = Account::new(["a", "b", "c"][next(3) as usize]).unwrap();
                let id = OrderId(i);
                let target = OrderId(1 + next(i));
                let kind = match next(10) {
                    0..=5 => CommandKind::New(NewOrder {
                        symbol: ABC,
                        account,
                        client_order_id: ClientOrderId::new(&format!("c{}", next(12))).unwrap(),
                        side: if next(2) == 0 { Side::Buy } else { Side::Sell },
                        order_type: OrderType::Limit,
                        tif: if next(4) == 0 { TimeInForce::Ioc } else { TimeInForce::Gtc },
                        post_only: false,
                        price: Some(Price(9_995 + next(10) as i64)),
                        qty: Qty(1 + next(5)),
                    }),
                    6..=8 => CommandKind::Cancel(Cancel { order_id: target, account }),
                    _ => CommandKind::Replace(Replace {
                        symbol: ABC,
                        order_id: target,
                        account,
                        price: Some(Price(9_995 + next(10) as i64)),
                        qty: Some(Qty(1 + next(5))),
                    }),
                };
                out.clear();
                engine.apply(&Command { id, ts: Timestamp(i), kind }, &mut out);
                for e in &out {
                    p.apply(e);
                }
                p.done(id);
                let book = engine.book(ABC).unwrap().image().window;
                let mirror: Vec<_> =
                    p.recent.get(&ABC).map(|w| w.iter().copied().collect()).unwrap_or_default();
                assert_eq!(mirror, book, "seed {seed}, window {window}, after command {i}");
                for r in p.retired() {
                    if let Retired::Evicted { account, client_order_id, .. } = r {
                        assert!(!book.contains(&(account, client_order_id)), "evicted but remembered");
                        evicted += 1;
                    }
                }
            }
            assert!(evicted > 100, "seed {seed}: {evicted} evictions: the stream must end many orders");
        }
    }

    #[test]
    fn a_projection_comes_back_from_its_bytes_and_the_books_windows() {
        let mut p = Projection::new(2);
        p.apply(&accepted(1, 5, TimeInForce::Gtc));
        p.done(OrderId(1));
        p.apply(&fill(2, 1, 2, 2));
        let level = EventKind::Level { side: Side::Buy, price: Price(100), qty: Qty(3), orders: 1 };
        p.apply(&event(2, 7, level));
        let windows = [(ABC, vec![(Account::new("a").unwrap(), ClientOrderId::new("c0").unwrap())])];
        let q = Projection::restore(&p.encode(), windows.iter().map(|(s, w)| (*s, w.as_slice())), 2).unwrap();
        assert_eq!(q.orders, p.orders);
        assert_eq!(q.levels, p.levels);
        assert_eq!(q.encode(), p.encode(), "the same state, the same bytes");
        assert_eq!(q.recent[&ABC].len(), 1);
        // Bad bytes, an unknown format, a window too long: errors, never a guess.
        assert!(Projection::restore(b"{", [], 2).is_err());
        let future = String::from_utf8(p.encode()).unwrap().replace("\"v\":1", "\"v\":2");
        assert!(Projection::restore(future.as_bytes(), [], 2).unwrap_err().contains("format 2"));
        assert!(Projection::restore(&p.encode(), windows.iter().map(|(s, w)| (*s, w.as_slice())), 0).is_err());
    }

    #[test]
    fn levels_follow_level_events() {
        let mut p = Projection::default();
        let level =
            |side, price, qty| EventKind::Level { side, price: Price(price), qty: Qty(qty), orders: 1 };
        for (seq, kind) in [
            (1, level(Side::Buy, 99, 5)),
            (2, level(Side::Buy, 100, 3)),
            (3, level(Side::Sell, 102, 4)),
            (4, level(Side::Sell, 101, 1)),
            (5, level(Side::Buy, 99, 0)),
        ] {
            assert_eq!(p.apply(&event(seq, seq, kind)), Change::Levels(ABC));
        }
        let levels = p.levels(ABC).unwrap();
        assert_eq!(levels.seq, 5);
        assert_eq!(levels.best_bids(10).collect::<Vec<_>>(), [(Price(100), Qty(3))]);
        assert_eq!(levels.best_asks(1).collect::<Vec<_>>(), [(Price(101), Qty(1))]);
        assert_eq!(p.levels(SymbolId(1)).map(|l| l.seq), None);
    }
}

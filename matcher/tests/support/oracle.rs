//! The oracle: a deliberately simple reference book. A flat `Vec` of orders per symbol, every
//! question answered by a scan, priority by an explicit arrival counter. Slow and obviously
//! right; the real engine must produce exactly its events.

use std::collections::VecDeque;

use common::{
    Account, CancelReason, ClientOrderId, Command, CommandKind, Event, EventKind, NewOrder, OrderId,
    OrderType, Price, Qty, RejectReason, Replace, Side, SymbolId, SymbolTable, TimeInForce, Timestamp,
};
use matcher::{RestingOrder, MAX_ORDER_QTY};

#[derive(Clone, Debug)]
struct Order {
    id: OrderId,
    side: Side,
    price: Price,
    leaves: Qty,
    account: Account,
    client: ClientOrderId,
    post_only: bool,
    /// Arrival time at its level: lower goes first.
    prio: u64,
}

struct OBook {
    symbol: SymbolId,
    seq: u64,
    band_bps: u32,
    reference: Price,
    halted: bool,
    orders: Vec<Order>,
    recent: VecDeque<(Account, ClientOrderId)>,
}

pub struct Oracle {
    books: Vec<OBook>,
    window: usize,
    clock: u64,
}

struct Out<'a> {
    cmd: OrderId,
    ts: Timestamp,
    index: u32,
    fills: u32,
    out: &'a mut Vec<Event>,
}

impl Out<'_> {
    fn emit(&mut self, book: &mut OBook, kind: EventKind) {
        book.seq += 1;
        self.out.push(Event {
            cmd: self.cmd,
            index: self.index,
            symbol: Some(book.symbol),
            seq: book.seq,
            ts: self.ts,
            kind,
        });
        self.index += 1;
    }

    fn bare(&mut self, kind: EventKind) {
        self.out.push(Event { cmd: self.cmd, index: self.index, symbol: None, seq: 0, ts: self.ts, kind });
        self.index += 1;
    }
}

fn better(side: Side, a: Price, b: Price) -> bool {
    match side {
        Side::Buy => a > b,
        Side::Sell => a < b,
    }
}

fn crosses(side: Side, limit: Price, resting: Price) -> bool {
    match side {
        Side::Buy => resting <= limit,
        Side::Sell => resting >= limit,
    }
}

fn stp(a: &Account, b: &Account) -> bool {
    a == b && !a.is_anonymous()
}

impl OBook {
    fn band(&self) -> i128 {
        i128::from(self.reference.0) * i128::from(self.band_bps) / 10_000
    }

    fn in_band(&self, p: Price) -> bool {
        self.band_bps == 0 || (i128::from(p.0) - i128::from(self.reference.0)).abs() <= self.band()
    }

    fn best(&self, side: Side) -> Option<Price> {
        self.orders.iter().filter(|o| o.side == side).map(|o| o.price).reduce(|a, b| {
            if better(side, a, b) {
                a
            } else {
                b
            }
        })
    }

    fn level(&self, side: Side, price: Price) -> (Qty, u32) {
        let at = self.orders.iter().filter(|o| o.side == side && o.price == price);
        at.fold((Qty(0), 0), |(q, c), o| (Qty(q.0 + o.leaves.0), c + 1))
    }

    fn queue(&self, side: Side, price: Price) -> Vec<OrderId> {
        let mut at: Vec<&Order> = self.orders.iter().filter(|o| o.side == side && o.price == price).collect();
        at.sort_by_key(|o| o.prio);
        at.iter().map(|o| o.id).collect()
    }

    fn pos(&self, id: OrderId) -> usize {
        self.orders.iter().position(|o| o.id == id).expect("order present")
    }

    fn taken(&self, key: &(Account, ClientOrderId)) -> bool {
        self.orders.iter().any(|o| (o.account, o.client) == *key) || self.recent.contains(key)
    }

    fn end(&mut self, key: (Account, ClientOrderId), window: usize) {
        self.recent.push_back(key);
        if self.recent.len() > window {
            self.recent.pop_front();
        }
    }

    fn emit_level(&mut self, out: &mut Out, side: Side, price: Price) {
        let (qty, orders) = self.level(side, price);
        out.emit(self, EventKind::Level { side, price, qty, orders });
    }

    /// Matches an incoming order; returns its leaves.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        out: &mut Out,
        window: usize,
        id: OrderId,
        side: Side,
        account: Account,
        client: ClientOrderId,
        limit: Price,
        mut leaves: Qty,
    ) -> Qty {
        let opp = side.opposite();
        while leaves.0 > 0 {
            let Some(price) = self.best(opp) else { break };
            if !crosses(side, limit, price) {
                break;
            }
            for maker_id in self.queue(opp, price) {
                if leaves.0 == 0 {
                    break;
                }
                let i = self.pos(maker_id);
                let maker = self.orders[i].clone();
                if stp(&account, &maker.account) {
                    out.emit(
                        self,
                        EventKind::Canceled {
                            order_id: maker.id,
                            side: maker.side,
                            price: Some(maker.price),
                            qty: maker.leaves,
                            reason: CancelReason::SelfTrade,
                        },
                    );
                    self.orders.remove(i);
                    self.end((maker.account, maker.client), window);
                    continue;
                }
                let q = leaves.min(maker.leaves);
                leaves = Qty(leaves.0 - q.0);
                self.orders[i].leaves = Qty(maker.leaves.0 - q.0);
                self.reference = price;
                let fill = out.fills;
                out.fills += 1;
                out.emit(
                    self,
                    EventKind::Fill {
                        fill,
                        maker: maker.id,
                        taker: id,
                        taker_side: side,
                        price,
                        qty: q,
                        maker_leaves: self.orders[i].leaves,
                        taker_leaves: leaves,
                        maker_account: maker.account,
                        maker_client_order_id: maker.client,
                        taker_account: account,
                        taker_client_order_id: client,
                    },
                );
                if self.orders[i].leaves.0 == 0 {
                    self.orders.remove(i);
                    self.end((maker.account, maker.client), window);
                }
            }
            self.emit_level(out, opp, price);
        }
        leaves
    }
}

impl Oracle {
    pub fn new(table: &SymbolTable, window: usize) -> Oracle {
        let books = table
            .iter()
            .map(|(symbol, spec)| OBook {
                symbol,
                seq: 0,
                band_bps: spec.band_bps,
                reference: spec.reference,
                halted: false,
                orders: Vec::new(),
                recent: VecDeque::new(),
            })
            .collect();
        Oracle { books, window, clock: 0 }
    }

    fn find(&self, id: OrderId) -> Option<usize> {
        self.books.iter().position(|b| b.orders.iter().any(|o| o.id == id))
    }

    pub fn orders(&self, symbol: SymbolId, side: Side) -> Vec<RestingOrder> {
        let book = &self.books[symbol.0 as usize];
        let mut all: Vec<&Order> = book.orders.iter().filter(|o| o.side == side).collect();
        all.sort_by(|a, b| {
            if a.price == b.price {
                a.prio.cmp(&b.prio)
            } else if better(side, a.price, b.price) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        all.iter()
            .map(|o| RestingOrder {
                id: o.id,
                side: o.side,
                price: o.price,
                leaves: o.leaves,
                account: o.account,
                client_order_id: o.client,
            })
            .collect()
    }

    pub fn apply(&mut self, cmd: &Command, events: &mut Vec<Event>) {
        let mut out = Out { cmd: cmd.id, ts: cmd.ts, index: 0, fills: 0, out: events };
        let unknown = |out: &mut Out, order_id, account, reason| {
            out.bare(EventKind::Rejected { order_id, account, client_order_id: None, reason, qty: Qty(0) })
        };
        match cmd.kind {
            CommandKind::New(o) => {
                if (o.symbol.0 as usize) < self.books.len() {
                    self.new_order(cmd.id, &o, &mut out);
                } else {
                    out.bare(EventKind::Rejected {
                        order_id: cmd.id,
                        account: o.account,
                        client_order_id: Some(o.client_order_id),
                        reason: RejectReason::UnknownSymbol,
                        qty: o.qty,
                    });
                }
            }
            CommandKind::Cancel(c) => match self.find(c.order_id) {
                None => unknown(&mut out, c.order_id, c.account, RejectReason::UnknownOrder),
                Some(b) => {
                    let book = &mut self.books[b];
                    let i = book.pos(c.order_id);
                    if book.orders[i].account != c.account {
                        let kind = EventKind::Rejected {
                            order_id: c.order_id,
                            account: c.account,
                            client_order_id: None,
                            reason: RejectReason::NotOwner,
                            qty: Qty(0),
                        };
                        out.emit(book, kind);
                    } else {
                        Self::remove(book, &mut out, self.window, i, CancelReason::Requested);
                    }
                }
            },
            CommandKind::Replace(r) => {
                if (r.symbol.0 as usize) >= self.books.len() {
                    unknown(&mut out, r.order_id, r.account, RejectReason::UnknownSymbol);
                } else if self.find(r.order_id) != Some(r.symbol.0 as usize) {
                    unknown(&mut out, r.order_id, r.account, RejectReason::UnknownOrder);
                } else {
                    self.replace(&r, &mut out);
                }
            }
            CommandKind::Halt { symbol } | CommandKind::Resume { symbol } => {
                match self.books.get_mut(symbol.0 as usize) {
                    None => unknown(&mut out, cmd.id, Account::anonymous(), RejectReason::UnknownSymbol),
                    Some(book) => {
                        book.halted = matches!(cmd.kind, CommandKind::Halt { .. });
                        let kind = EventKind::Status { halted: book.halted, reference: book.reference };
                        out.emit(book, kind);
                    }
                }
            }
            CommandKind::SetReference { symbol, price } => match self.books.get_mut(symbol.0 as usize) {
                None => unknown(&mut out, cmd.id, Account::anonymous(), RejectReason::UnknownSymbol),
                Some(book) if price.0 <= 0 => {
                    let kind = EventKind::Rejected {
                        order_id: cmd.id,
                        account: Account::anonymous(),
                        client_order_id: None,
                        reason: RejectReason::InvalidOrder,
                        qty: Qty(0),
                    };
                    out.emit(book, kind);
                }
                Some(book) => {
                    book.reference = price;
                    let kind = EventKind::Status { halted: book.halted, reference: price };
                    out.emit(book, kind);
                }
            },
            CommandKind::MassCancel { account } => {
                for b in 0..self.books.len() {
                    for side in [Side::Buy, Side::Sell] {
                        let ids: Vec<OrderId> = self
                            .orders(SymbolId(b as u32), side)
                            .iter()
                            .filter(|o| o.account == account && o.id.partition() == cmd.id.partition())
                            .map(|o| o.id)
                            .collect();
                        let book = &mut self.books[b];
                        for id in ids {
                            let i = book.pos(id);
                            Self::remove(book, &mut out, self.window, i, CancelReason::MassCancel);
                        }
                    }
                }
            }
        }
    }

    fn remove(book: &mut OBook, out: &mut Out, window: usize, i: usize, reason: CancelReason) {
        let o = book.orders.remove(i);
        out.emit(
            book,
            EventKind::Canceled { order_id: o.id, side: o.side, price: Some(o.price), qty: o.leaves, reason },
        );
        book.emit_level(out, o.side, o.price);
        book.end((o.account, o.client), window);
    }

    fn new_order(&mut self, id: OrderId, o: &NewOrder, out: &mut Out) {
        let window = self.window;
        let book = &mut self.books[o.symbol.0 as usize];
        let reject = |book: &mut OBook, out: &mut Out, reason| {
            let kind = EventKind::Rejected {
                order_id: id,
                account: o.account,
                client_order_id: Some(o.client_order_id),
                reason,
                qty: o.qty,
            };
            out.emit(book, kind);
        };
        if book.halted {
            return reject(book, out, RejectReason::Halted);
        }
        let shape_ok = o.qty.0 > 0
            && o.qty <= MAX_ORDER_QTY
            && match o.order_type {
                OrderType::Limit => matches!(o.price, Some(p) if p.0 > 0),
                OrderType::Market => o.price.is_none() && !o.post_only,
            }
            && (!o.post_only || o.tif == TimeInForce::Gtc);
        if !shape_ok {
            return reject(book, out, RejectReason::InvalidOrder);
        }
        let key = (o.account, o.client_order_id);
        if book.taken(&key) {
            return reject(book, out, RejectReason::DuplicateClientOrderId);
        }
        if self.books.iter().any(|b| b.orders.iter().any(|x| x.id == id)) {
            let book = &mut self.books[o.symbol.0 as usize];
            return reject(book, out, RejectReason::DuplicateOrderId);
        }
        let book = &mut self.books[o.symbol.0 as usize];
        let limit = match o.price {
            Some(p) => {
                if !book.in_band(p) {
                    return reject(book, out, RejectReason::PriceBand);
                }
                p
            }
            None if book.band_bps == 0 => Price(if o.side == Side::Buy { i64::MAX } else { i64::MIN }),
            None => {
                let band = book.band() as i64;
                Price(if o.side == Side::Buy { book.reference.0 + band } else { book.reference.0 - band })
            }
        };
        let opp = o.side.opposite();
        let crossing = book.best(opp).is_some_and(|p| crosses(o.side, limit, p));
        if o.post_only && crossing {
            return reject(book, out, RejectReason::PostOnlyWouldTake);
        }
        if o.tif == TimeInForce::Fok {
            let available: u64 = book
                .orders
                .iter()
                .filter(|m| m.side == opp && crosses(o.side, limit, m.price) && !stp(&o.account, &m.account))
                .map(|m| m.leaves.0)
                .sum();
            if available < o.qty.0 {
                return reject(book, out, RejectReason::FokUnfillable);
            }
        }
        let kind = EventKind::Accepted {
            order_id: id,
            account: o.account,
            client_order_id: o.client_order_id,
            side: o.side,
            order_type: o.order_type,
            tif: o.tif,
            post_only: o.post_only,
            price: o.price,
            qty: o.qty,
        };
        out.emit(book, kind);
        let leaves = book.take(out, window, id, o.side, o.account, o.client_order_id, limit, o.qty);
        if leaves.0 == 0 {
            book.end(key, window);
        } else if o.order_type == OrderType::Limit && o.tif == TimeInForce::Gtc {
            self.clock += 1;
            book.orders.push(Order {
                id,
                side: o.side,
                price: limit,
                leaves,
                account: o.account,
                client: o.client_order_id,
                post_only: o.post_only,
                prio: self.clock,
            });
            book.emit_level(out, o.side, limit);
        } else {
            let kind = EventKind::Canceled {
                order_id: id,
                side: o.side,
                price: o.price,
                qty: leaves,
                reason: CancelReason::Unfilled,
            };
            out.emit(book, kind);
            book.end(key, window);
        }
    }

    fn replace(&mut self, r: &Replace, out: &mut Out) {
        let window = self.window;
        let book = &mut self.books[r.symbol.0 as usize];
        let i = book.pos(r.order_id);
        let old = book.orders[i].clone();
        let (price, qty) = (r.price.unwrap_or(old.price), r.qty.unwrap_or(old.leaves));
        let reason = if old.account != r.account {
            Some(RejectReason::NotOwner)
        } else if book.halted {
            Some(RejectReason::Halted)
        } else if qty.0 == 0 || qty > MAX_ORDER_QTY || price.0 <= 0 {
            Some(RejectReason::InvalidOrder)
        } else if price != old.price && !book.in_band(price) {
            Some(RejectReason::PriceBand)
        } else if (price != old.price || qty > old.leaves)
            && old.post_only
            && book.best(old.side.opposite()).is_some_and(|p| crosses(old.side, price, p))
        {
            Some(RejectReason::PostOnlyWouldTake)
        } else {
            None
        };
        if let Some(reason) = reason {
            let kind = EventKind::Rejected {
                order_id: old.id,
                account: r.account,
                client_order_id: None,
                reason,
                qty: Qty(0),
            };
            return out.emit(book, kind);
        }
        let kept = price == old.price && qty <= old.leaves;
        out.emit(
            book,
            EventKind::Replaced { order_id: old.id, side: old.side, price, qty, priority_kept: kept },
        );
        if kept {
            if qty != old.leaves {
                book.orders[i].leaves = qty;
                book.emit_level(out, old.side, old.price);
            }
            return;
        }
        book.orders.remove(i);
        book.emit_level(out, old.side, old.price);
        let leaves = book.take(out, window, old.id, old.side, old.account, old.client, price, qty);
        if leaves.0 == 0 {
            book.end((old.account, old.client), window);
        } else {
            self.clock += 1;
            book.orders.push(Order { price, leaves, prio: self.clock, ..old });
            book.emit_level(out, old.side, price);
        }
    }
}

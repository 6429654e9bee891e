//! One symbol's order book: price-time priority matching as a pure state machine.
//!
//! A book is two [`Ladder`]s of price levels over a [`Slab`] of resting orders, a [`Tape`] that
//! numbers its events, and the [`ClientIds`] in use. Commands arrive through [`crate::Engine`],
//! which owns the order-id index shared by all books. Nothing here reads a clock, allocates in
//! steady state, or formats text.
//!
//! Quantities: level totals change only through `Level::add` / `Level::remove` (checked, see
//! [`crate::ladder`]); the few plain subtractions left are of a quantity from a larger one, and
//! each says why at its site. A missing level for a resting order is a corrupt book and stops it
//! (`Ladder::level_of`). Debug builds — `cargo test`, the property tests — also trap any overflow.
//!
//! Rules (DESIGN.md §3, README "Matching rules"):
//! - Best price first, then arrival time. A fill trades at the resting (maker) order's price.
//! - Self-trade prevention, "cancel resting": when an order would trade with a resting order of
//!   the same account, the resting order is canceled (`self_trade`) and matching goes on. The
//!   shared `anonymous` account is exempt.
//! - The price band: a limit price must lie within `band_bps` of the reference price, which is
//!   the last trade price (or the configured or admin-set reference before any trade). A market
//!   order trades no further than the band's edge.
//! - Market orders never rest: what they cannot fill at once is canceled (`unfilled`), as is an
//!   IOC order's remainder. FOK orders trade in full at once or are rejected untouched. Post-only
//!   orders that would take are rejected untouched.

use common::{
    Account, CancelReason, ClientOrderId, EventKind, NewOrder, OrderId, OrderType, Price, Qty, RejectReason,
    Replace, Side, SymbolId, SymbolSpec, TimeInForce,
};

use crate::accounts::{AccountId, Accounts, ANONYMOUS};
use crate::clients::{self, ClientIds};
use crate::emit::{Emitter, Tape};
use crate::ladder::{Ladder, Level};
use crate::slab::{Node, Slab, NIL};
use crate::snapshot::{BookImage, LevelImage, OrderImage, SnapshotError};
use crate::table::Table;

/// Largest quantity one order may have at the book, in lots: keeps level totals far from
/// overflowing a `u64` however many orders share a level.
pub const MAX_ORDER_QTY: Qty = Qty(1 << 32);

/// Where a resting order lives: its book and its slot there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    /// The book's symbol index.
    pub symbol: u32,
    /// The order's slot in that book's slab.
    pub slot: u32,
}

/// Exchange order id → location, for every resting order of every book that is not at its home
/// ([`crate::slab`]; only a book alone in its engine has homes).
#[derive(Debug)]
pub struct OrderIndex(Table<u64, u64>);

impl OrderIndex {
    /// Room for `capacity` resting orders at most a quarter full (a [`Table`] is made for half
    /// full; twice that here), memory written now. Every cancel and every new order probes it at
    /// a random id, so shorter probe runs pay for the memory: 16 bytes an entry, 4 MB at the
    /// default capacity instead of 2. On static, interleaved sets of `book-bench --regime static`
    /// gave 1.60 → 1.76× and 1.67 → 1.74× lobster, and the tenth session's sets 1.49 → 1.60× and
    /// 1.49 → 1.56× (README, Speed).
    pub fn with_capacity(capacity: usize) -> OrderIndex {
        OrderIndex(Table::with_capacity(capacity.saturating_mul(2), 0))
    }

    /// Where an order rests.
    #[inline]
    pub fn get(&self, id: &OrderId) -> Option<Loc> {
        self.0.get(id.0).map(|v| Loc { symbol: (v >> 32) as u32, slot: v as u32 })
    }

    /// True if the order rests somewhere.
    #[inline]
    pub fn contains_key(&self, id: &OrderId) -> bool {
        self.0.contains_key(id.0)
    }

    /// Records where an order rests.
    #[inline]
    pub fn insert(&mut self, id: OrderId, loc: Loc) {
        self.0.insert(id.0, (u64::from(loc.symbol) << 32) | u64::from(loc.slot));
    }

    /// Forgets an order.
    #[inline]
    pub fn remove(&mut self, id: &OrderId) {
        self.0.remove(id.0);
    }

    /// Number of resting orders.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no order rests.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How much room a book reserves up front.
#[derive(Clone, Copy, Debug)]
pub struct Capacity {
    /// Resting orders per book before its slab grows.
    pub orders: usize,
    /// Per side, levels fewer than this many ticks from the best price are indexed directly
    /// (rounded up to a power of two; levels further out are kept sorted, [`crate::ladder`]).
    /// Each side writes 2 × this × 32 bytes at start-up.
    pub levels: usize,
    /// Ended client order ids remembered per book for duplicate protection.
    pub client_window: usize,
}

impl Default for Capacity {
    fn default() -> Capacity {
        Capacity { orders: 1 << 16, levels: 1 << 12, client_window: 1 << 14 }
    }
}

/// A resting order as seen from outside the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestingOrder {
    /// Its exchange id.
    pub id: OrderId,
    /// Bid or ask.
    pub side: Side,
    /// Its limit price.
    pub price: Price,
    /// Its open quantity.
    pub leaves: Qty,
    /// Its owner.
    pub account: Account,
    /// Its client id.
    pub client_order_id: ClientOrderId,
}

/// Top-of-book levels at a sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Depth {
    /// The symbol's last event sequence number when the snapshot was taken.
    pub seq: u64,
    /// Bid levels, best first: (price, total open quantity).
    pub bids: Vec<(Price, Qty)>,
    /// Ask levels, best first.
    pub asks: Vec<(Price, Qty)>,
}

/// The incoming side of a match.
struct Taker<'a> {
    id: OrderId,
    side: Side,
    account: &'a Account,
    /// `account` interned (`NONE` while it has no accepted order here).
    account_id: AccountId,
    client_order_id: &'a ClientOrderId,
    /// The worst price it accepts (its limit, or the band's edge for a market order).
    limit: Price,
    leaves: Qty,
}

/// One symbol's book.
#[derive(Debug)]
pub struct Book {
    /// Numbers this symbol's events.
    tape: Tape,
    /// Half-width of the price band in basis points of the reference (0: no band).
    band_bps: u32,
    /// The band's centre: the last trade price, or the configured/admin reference before one.
    reference: Price,
    /// Halted books refuse new orders and replaces, and accept cancels.
    halted: bool,
    /// Buy orders.
    bids: Ladder,
    /// Sell orders.
    asks: Ladder,
    /// Resting orders.
    slab: Slab,
    /// Client ids of open and recent orders.
    clients: ClientIds,
    /// Owners of orders accepted here.
    accounts: Accounts,
    /// The symbol's configured name: a snapshot's image of this book must carry it, so a
    /// reordered symbol table cannot restore one symbol's orders into another's book.
    name: String,
}

/// True if an order on `side` with limit `limit` trades against a resting order at `resting`.
#[inline]
fn crosses(side: Side, limit: Price, resting: Price) -> bool {
    match side {
        Side::Buy => resting <= limit,
        Side::Sell => resting >= limit,
    }
}

/// Queues the order in `slot` (open quantity `leaves`) at the back of `level`, and counts it there.
#[inline]
fn enqueue(slab: &mut Slab, level: &mut Level, slot: u32, leaves: Qty) {
    slab[slot].prev = level.tail;
    slab[slot].next = NIL;
    if level.tail == NIL {
        level.head = slot;
    } else {
        slab[level.tail].next = slot;
    }
    level.tail = slot;
    level.count += 1;
    level.add(leaves);
}

/// An account id no account has: for a taker whose account has no order here yet.
const NONE: AccountId = AccountId::MAX;

/// Self-trade prevention applies between this taker and this resting order.
#[inline]
fn self_trade(taker: &Taker, maker: &Node) -> bool {
    maker.account == taker.account_id && maker.account != ANONYMOUS
}

impl Book {
    /// An empty book for `symbol`.
    pub fn new(symbol: SymbolId, spec: &SymbolSpec, capacity: Capacity) -> Book {
        Book {
            tape: Tape { symbol, seq: 0 },
            band_bps: spec.band_bps,
            reference: spec.reference,
            halted: false,
            bids: Ladder::new(Side::Buy, capacity.levels),
            asks: Ladder::new(Side::Sell, capacity.levels),
            slab: Slab::with_capacity(capacity.orders),
            clients: ClientIds::new(capacity.orders, capacity.client_window),
            accounts: Accounts::with_capacity(1024),
            name: spec.name.clone(),
        }
    }

    /// The symbol.
    pub fn symbol(&self) -> SymbolId {
        self.tape.symbol
    }

    /// The symbol's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The last sequence number used.
    pub fn seq(&self) -> u64 {
        self.tape.seq
    }

    /// The band's centre.
    pub fn reference(&self) -> Price {
        self.reference
    }

    /// Whether the symbol is halted.
    pub fn halted(&self) -> bool {
        self.halted
    }

    /// Number of resting orders.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True if no order rests.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    /// Number of price levels on one side (O(1): the metrics read it after each command).
    pub fn levels(&self, side: Side) -> usize {
        self.ladder(side).len()
    }

    /// The open quantity resting at one price on one side (zero: no level there). Allocates
    /// nothing, unlike [`Book::depth`].
    pub fn qty_at(&self, side: Side, price: Price) -> Qty {
        self.ladder(side).get(price).map_or(Qty::ZERO, |l| l.qty)
    }

    /// Best bid: (price, total open quantity there).
    pub fn best_bid(&self) -> Option<(Price, Qty)> {
        self.bids.best().map(|l| (l.price, l.qty))
    }

    /// Best ask: (price, total open quantity there).
    pub fn best_ask(&self) -> Option<(Price, Qty)> {
        self.asks.best().map(|l| (l.price, l.qty))
    }

    /// The top `n` levels of each side, with the sequence number they are at.
    pub fn depth(&self, n: usize) -> Depth {
        let side = |l: &Ladder| l.iter().take(n).map(|l| (l.price, l.qty)).collect();
        Depth { seq: self.tape.seq, bids: side(&self.bids), asks: side(&self.asks) }
    }

    /// Every resting order of a side, best level first, in queue order within a level.
    pub fn orders(&self, side: Side) -> Vec<RestingOrder> {
        let mut all = Vec::new();
        for level in self.ladder(side).iter() {
            let mut slot = level.head;
            while slot != NIL {
                all.push(self.resting(slot));
                slot = self.slab[slot].next;
            }
        }
        all
    }

    /// The resting order in `slot`.
    pub fn resting(&self, slot: u32) -> RestingOrder {
        let n = &self.slab[slot];
        let client_order_id = self.clients.key(n.client).1;
        let account = self.accounts.name(n.account);
        RestingOrder { id: n.id, side: n.side, price: n.price, leaves: n.leaves, account, client_order_id }
    }

    /// Total open quantity resting on both sides.
    pub fn resting_qty(&self) -> u64 {
        self.bids.totals().0 + self.asks.totals().0
    }

    /// The band's half-width in ticks around the current reference.
    #[inline]
    fn band(&self) -> i64 {
        // i64 arithmetic when it cannot overflow (it never does for sane prices): an i128
        // division is a library call, and this runs for every priced order.
        match self.reference.0.checked_mul(i64::from(self.band_bps)) {
            Some(product) => product / 10_000,
            None => (i128::from(self.reference.0) * i128::from(self.band_bps) / 10_000) as i64,
        }
    }

    #[inline]
    fn in_band(&self, price: Price) -> bool {
        self.band_bps == 0 || price.0.abs_diff(self.reference.0) <= self.band().unsigned_abs()
    }

    /// The worst price a market order on `side` may trade at.
    #[inline]
    fn market_limit(&self, side: Side) -> Price {
        match (side, self.band_bps) {
            (Side::Buy, 0) => Price(i64::MAX),
            (Side::Sell, 0) => Price(i64::MIN),
            (Side::Buy, _) => Price(self.reference.0.saturating_add(self.band())),
            (Side::Sell, _) => Price(self.reference.0.saturating_sub(self.band())),
        }
    }

    fn reject(&mut self, em: &mut Emitter<'_>, order_id: OrderId, account: Account, reason: RejectReason) {
        let kind = EventKind::Rejected { order_id, account, client_order_id: None, reason, qty: Qty::ZERO };
        self.tape.emit(em, kind);
    }

    fn reject_new(&mut self, em: &mut Emitter<'_>, id: OrderId, o: &NewOrder, reason: RejectReason) {
        let kind = EventKind::Rejected {
            order_id: id,
            account: o.account,
            client_order_id: Some(o.client_order_id),
            reason,
            qty: o.qty,
        };
        self.tape.emit(em, kind);
    }

    /// Applies a new order with exchange id `id`.
    pub fn new_order(&mut self, id: OrderId, o: &NewOrder, index: &mut OrderIndex, em: &mut Emitter<'_>) {
        if self.halted {
            return self.reject_new(em, id, o, RejectReason::Halted);
        }
        let well_formed = !o.qty.is_zero()
            && o.qty <= MAX_ORDER_QTY
            && match o.order_type {
                OrderType::Limit => o.price.is_some_and(|p| p.0 > 0),
                OrderType::Market => o.price.is_none() && !o.post_only,
            }
            && (!o.post_only || o.tif == TimeInForce::Gtc);
        if !well_formed {
            return self.reject_new(em, id, o, RejectReason::InvalidOrder);
        }
        // An account with no accepted order here cannot hold a duplicate. The account's id and the
        // client key's fingerprint are worked out once, here, and reused when the order is accepted.
        let known = self.accounts.find(&o.account);
        let fingerprint = known.map(|account| clients::fingerprint(&(account, o.client_order_id)));
        if let (Some(account), Some(fp)) = (known, fingerprint) {
            if self.clients.contains_as(&(account, o.client_order_id), fp) {
                return self.reject_new(em, id, o, RejectReason::DuplicateClientOrderId);
            }
        }
        if self.slab.find(id).is_some() || index.contains_key(&id) {
            return self.reject_new(em, id, o, RejectReason::DuplicateOrderId);
        }
        let limit = match o.price {
            Some(price) if !self.in_band(price) => {
                return self.reject_new(em, id, o, RejectReason::PriceBand)
            }
            Some(price) => price,
            None => self.market_limit(o.side),
        };
        let mut taker = Taker {
            id,
            side: o.side,
            account: &o.account,
            account_id: known.unwrap_or(NONE),
            client_order_id: &o.client_order_id,
            limit,
            leaves: o.qty,
        };
        let opposite = self.ladder(o.side.opposite());
        let crossing = opposite.best().is_some_and(|l| crosses(o.side, limit, l.price));
        if o.post_only && crossing {
            return self.reject_new(em, id, o, RejectReason::PostOnlyWouldTake);
        }
        if o.tif == TimeInForce::Fok && !self.fillable(&taker) {
            return self.reject_new(em, id, o, RejectReason::FokUnfillable);
        }
        self.tape.emit(
            em,
            EventKind::Accepted {
                order_id: id,
                account: o.account,
                client_order_id: o.client_order_id,
                side: o.side,
                order_type: o.order_type,
                tif: o.tif,
                post_only: o.post_only,
                price: o.price,
                qty: o.qty,
            },
        );
        let client = match (known, fingerprint) {
            (Some(account), Some(fp)) => self.clients.open_as((account, o.client_order_id), fp),
            _ => {
                taker.account_id = self.accounts.intern(&o.account);
                self.clients.open((taker.account_id, o.client_order_id))
            }
        };
        if crossing {
            self.take(&mut taker, index, em);
        }
        if taker.leaves.is_zero() {
            self.clients.close(client);
        } else if o.order_type == OrderType::Limit && o.tif == TimeInForce::Gtc {
            let slot = self.slab.alloc_for(id);
            self.slab[slot] = Node {
                id,
                price: limit,
                leaves: taker.leaves,
                account: taker.account_id,
                client,
                prev: NIL,
                next: NIL,
                side: o.side,
                post_only: o.post_only,
            };
            if !self.slab.at_home(slot) {
                index.insert(id, Loc { symbol: self.tape.symbol.0, slot });
            }
            self.link(slot, em);
        } else {
            let kind = EventKind::Canceled {
                order_id: id,
                side: o.side,
                price: o.price,
                qty: taker.leaves,
                reason: CancelReason::Unfilled,
            };
            self.tape.emit(em, kind);
            self.clients.close(client);
        }
    }

    /// Whether `taker` could fill in full right now (self-trade candidates don't count).
    fn fillable(&self, taker: &Taker) -> bool {
        let mut need = taker.leaves.0;
        for level in self.ladder(taker.side.opposite()).iter() {
            if need == 0 || !crosses(taker.side, taker.limit, level.price) {
                break;
            }
            if taker.account.is_anonymous() {
                need = need.saturating_sub(level.qty.0);
                continue;
            }
            let mut slot = level.head;
            while slot != NIL && need > 0 {
                let node = &self.slab[slot];
                if !self_trade(taker, node) {
                    need = need.saturating_sub(node.leaves.0);
                }
                slot = node.next;
            }
        }
        need == 0
    }

    /// Matches `taker` against the opposite side while it crosses; the book's reference moves to
    /// the last trade price.
    fn take(&mut self, taker: &mut Taker, index: &mut OrderIndex, em: &mut Emitter<'_>) {
        let Book { tape, reference, bids, asks, slab, clients, accounts, .. } = self;
        let opposite = match taker.side {
            Side::Buy => asks,
            Side::Sell => bids,
        };
        let maker_side = opposite.side;
        while !taker.leaves.is_zero() {
            let Some(level) = opposite.best_mut() else { break };
            if !crosses(taker.side, taker.limit, level.price) {
                break;
            }
            let price = level.price;
            while level.head != NIL && !taker.leaves.is_zero() {
                let slot = level.head;
                let maker = slab[slot];
                let ended = if self_trade(taker, &maker) {
                    level.remove(maker.leaves);
                    let kind = EventKind::Canceled {
                        order_id: maker.id,
                        side: maker.side,
                        price: Some(price),
                        qty: maker.leaves,
                        reason: CancelReason::SelfTrade,
                    };
                    tape.emit(em, kind);
                    true
                } else {
                    // `qty` is the smaller of the two: neither subtraction can underflow.
                    let qty = taker.leaves.min(maker.leaves);
                    taker.leaves = Qty(taker.leaves.0 - qty.0);
                    let maker_leaves = Qty(maker.leaves.0 - qty.0);
                    slab[slot].leaves = maker_leaves;
                    level.remove(qty);
                    *reference = price;
                    let fill = em.next_fill();
                    let maker_account = accounts.name(maker.account);
                    let maker_client_order_id = clients.key(maker.client).1;
                    let kind = EventKind::Fill {
                        fill,
                        maker: maker.id,
                        taker: taker.id,
                        taker_side: taker.side,
                        price,
                        qty,
                        maker_leaves,
                        taker_leaves: taker.leaves,
                        maker_account,
                        maker_client_order_id,
                        taker_account: *taker.account,
                        taker_client_order_id: *taker.client_order_id,
                    };
                    tape.emit(em, kind);
                    maker_leaves.is_zero()
                };
                if ended {
                    level.head = maker.next;
                    if maker.next == NIL {
                        level.tail = NIL;
                    } else {
                        slab[maker.next].prev = NIL;
                    }
                    level.count -= 1;
                    if !slab.at_home(slot) {
                        index.remove(&maker.id);
                    }
                    clients.close(maker.client);
                    slab.remove(slot);
                }
            }
            let (qty, orders) = (level.qty, level.count);
            tape.emit(em, EventKind::Level { side: maker_side, price, qty, orders });
            if orders == 0 {
                opposite.pop_best();
            }
        }
    }

    /// Queues the order in `slot` at the back of its price level and reports the level.
    #[inline(always)] // Every resting order: README, Speed, *Calls that cost*.
    fn link(&mut self, slot: u32, em: &mut Emitter<'_>) {
        let Node { side, price, leaves, .. } = self.slab[slot];
        let ladder = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = ladder.level_at(price);
        enqueue(&mut self.slab, level, slot, leaves);
        let (qty, orders) = (level.qty, level.count);
        self.tape.emit(em, EventKind::Level { side, price, qty, orders });
    }

    /// Takes the order in `slot` out of its level's queue (the slot stays allocated) and
    /// reports the level.
    #[inline(always)]
    fn unlink(&mut self, slot: u32, em: &mut Emitter<'_>) {
        let Node { side, price, leaves, prev, next, .. } = self.slab[slot];
        let ladder = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = ladder.level_of(price);
        if prev == NIL {
            level.head = next;
        } else {
            self.slab[prev].next = next;
        }
        if next == NIL {
            level.tail = prev;
        } else {
            self.slab[next].prev = prev;
        }
        level.count -= 1;
        level.remove(leaves);
        let (qty, orders) = (level.qty, level.count);
        if orders == 0 {
            ladder.remove(price);
        }
        self.tape.emit(em, EventKind::Level { side, price, qty, orders });
    }

    /// Removes a resting order without trading: a cancel of any kind. Always inlined, with
    /// [`Book::unlink`] and [`Book::forget`]: a cancel made four calls, each saving and restoring
    /// registers, and inlined the book ran about 2 % faster in the same process (README, Speed, *Calls
    /// that cost*).
    #[inline(always)]
    fn remove(&mut self, slot: u32, reason: CancelReason, index: &mut OrderIndex, em: &mut Emitter<'_>) {
        let node = self.slab[slot];
        let kind = EventKind::Canceled {
            order_id: node.id,
            side: node.side,
            price: Some(node.price),
            qty: node.leaves,
            reason,
        };
        self.tape.emit(em, kind);
        self.unlink(slot, em);
        self.forget(slot, index);
    }

    /// Makes this book's orders found by their ids ([`crate::slab`]'s homes): for a book alone in
    /// its engine, where a cancel's id can only name an order of this book. Only while empty.
    pub(crate) fn find_by_id(&mut self) {
        assert!(self.slab.is_empty(), "homes are made before the first order");
        self.slab = Slab::with_homes(self.slab.capacity());
    }

    /// The slot of order `id` if it rests at its home (a book found by id).
    #[inline]
    pub(crate) fn find(&self, id: OrderId) -> Option<u32> {
        self.slab.find(id)
    }

    /// True if the order in `slot` is found through the engine's order index (not at its home).
    pub(crate) fn indexed(&self, slot: u32) -> bool {
        !self.slab.at_home(slot)
    }

    /// Enters every resting order not at its home into `index` (a restored book); returns how many.
    pub(crate) fn index_into(&self, index: &mut OrderIndex) -> usize {
        let symbol = self.tape.symbol.0;
        let mut n = 0;
        for (id, slot) in self.slots() {
            if self.indexed(slot) {
                index.insert(id, Loc { symbol, slot });
                n += 1;
            }
        }
        n
    }

    /// Frees an ended order's slot, index entry and client id.
    #[inline(always)]
    fn forget(&mut self, slot: u32, index: &mut OrderIndex) {
        let node = self.slab[slot];
        if !self.slab.at_home(slot) {
            index.remove(&node.id);
        }
        self.clients.close(node.client);
        self.slab.remove(slot);
    }

    /// True if `account` owns the order in `slot`: its name against the owner's (no hashing).
    #[inline]
    fn owns(&self, slot: u32, account: &Account) -> bool {
        self.accounts.name(self.slab[slot].account) == *account
    }

    /// Cancels the order in `slot` at its owner's request.
    pub fn cancel(&mut self, slot: u32, account: Account, index: &mut OrderIndex, em: &mut Emitter<'_>) {
        let node = self.slab[slot];
        if !self.owns(slot, &account) {
            return self.reject(em, node.id, account, RejectReason::NotOwner);
        }
        self.remove(slot, CancelReason::Requested, index, em);
    }

    /// Changes the price and/or open quantity of the order in `slot`.
    pub fn replace(&mut self, slot: u32, r: &Replace, index: &mut OrderIndex, em: &mut Emitter<'_>) {
        let node = self.slab[slot];
        // What the command leaves out is what the order has now.
        let (price, qty) = (r.price.unwrap_or(node.price), r.qty.unwrap_or(node.leaves));
        let reason = if !self.owns(slot, &r.account) {
            Some(RejectReason::NotOwner)
        } else if self.halted {
            Some(RejectReason::Halted)
        } else if qty.is_zero() || qty > MAX_ORDER_QTY || price.0 <= 0 {
            Some(RejectReason::InvalidOrder)
        } else if price != node.price && !self.in_band(price) {
            Some(RejectReason::PriceBand)
        } else {
            None
        };
        if let Some(reason) = reason {
            return self.reject(em, node.id, r.account, reason);
        }
        if price == node.price && qty <= node.leaves {
            // Smaller (or equal) at the same price: keeps its place in the queue.
            let kind =
                EventKind::Replaced { order_id: node.id, side: node.side, price, qty, priority_kept: true };
            self.tape.emit(em, kind);
            if qty != node.leaves {
                let ladder = match node.side {
                    Side::Buy => &mut self.bids,
                    Side::Sell => &mut self.asks,
                };
                let level = ladder.level_of(node.price);
                // `qty <= node.leaves` (this branch's condition): no underflow.
                level.remove(Qty(node.leaves.0 - qty.0));
                let (level_qty, orders) = (level.qty, level.count);
                self.slab[slot].leaves = qty;
                let level = EventKind::Level { side: node.side, price: node.price, qty: level_qty, orders };
                self.tape.emit(em, level);
            }
            return;
        }
        let crossing =
            self.ladder(node.side.opposite()).best().is_some_and(|l| crosses(node.side, price, l.price));
        if node.post_only && crossing {
            return self.reject(em, node.id, r.account, RejectReason::PostOnlyWouldTake);
        }
        let kind =
            EventKind::Replaced { order_id: node.id, side: node.side, price, qty, priority_kept: false };
        self.tape.emit(em, kind);
        self.unlink(slot, em);
        let leaves = if crossing {
            // Its account and client id are read only here: the fills name them.
            let account = self.accounts.name(node.account);
            let client_order_id = self.clients.key(node.client).1;
            let mut taker = Taker {
                id: node.id,
                side: node.side,
                account: &account,
                account_id: node.account,
                client_order_id: &client_order_id,
                limit: price,
                leaves: qty,
            };
            self.take(&mut taker, index, em);
            taker.leaves
        } else {
            qty
        };
        if leaves.is_zero() {
            self.forget(slot, index);
        } else {
            self.slab[slot].price = price;
            self.slab[slot].leaves = leaves;
            self.link(slot, em);
        }
    }

    /// Cancels every resting order of `account` that came in on `partition` (its id says where):
    /// bids then asks, best level first, queue order.
    pub fn mass_cancel(
        &mut self,
        account: Account,
        partition: u16,
        index: &mut OrderIndex,
        em: &mut Emitter<'_>,
    ) {
        let Some(owner) = self.accounts.find(&account) else { return };
        for side in [Side::Buy, Side::Sell] {
            // Level by level, best first; a level goes when its last order does, so the next one
            // is found from the price, not from the level.
            let mut at = self.ladder(side).best().map(|l| l.price);
            while let Some(price) = at {
                at = self.ladder(side).next_worse(price);
                let Some(level) = self.ladder(side).get(price) else { continue };
                let mut slot = level.head;
                while slot != NIL {
                    let next = self.slab[slot].next;
                    if self.slab[slot].account == owner && self.slab[slot].id.partition() == partition {
                        self.remove(slot, CancelReason::MassCancel, index, em);
                    }
                    slot = next;
                }
            }
        }
    }

    /// Halts (`true`) or resumes (`false`) new orders.
    pub fn set_halted(&mut self, halted: bool, em: &mut Emitter<'_>) {
        self.halted = halted;
        self.tape.emit(em, EventKind::Status { halted, reference: self.reference });
    }

    /// Moves the reference price, and with it the band.
    pub fn set_reference(&mut self, price: Price, em: &mut Emitter<'_>) {
        if price.0 <= 0 {
            let cmd = em.cmd();
            return self.reject(em, cmd, Account::anonymous(), RejectReason::InvalidOrder);
        }
        self.reference = price;
        self.tape.emit(em, EventKind::Status { halted: self.halted, reference: price });
    }

    /// The book's logical image: its state as orders, levels and ids rather than slots, so it
    /// survives changes of the in-memory layout ([`crate::snapshot`]). Two books with equal
    /// images behave identically from here on (under the same configuration). Allocates: for
    /// snapshots and tests, not the hot path.
    pub fn image(&self) -> BookImage {
        let side = |ladder: &Ladder| -> Vec<LevelImage> {
            let level = |level: &Level| {
                let mut orders = Vec::with_capacity(level.count as usize);
                let mut slot = level.head;
                while slot != NIL {
                    let n = &self.slab[slot];
                    orders.push(OrderImage {
                        id: n.id,
                        account: self.accounts.name(n.account),
                        client_order_id: self.clients.key(n.client).1,
                        leaves: n.leaves,
                        post_only: n.post_only,
                    });
                    slot = n.next;
                }
                LevelImage { price: level.price, orders }
            };
            ladder.iter().map(level).collect()
        };
        BookImage {
            symbol: self.tape.symbol,
            name: self.name.clone(),
            seq: self.tape.seq,
            reference: self.reference,
            halted: self.halted,
            bids: side(&self.bids),
            asks: side(&self.asks),
            window: self.clients.recent().map(|(account, id)| (self.accounts.name(account), id)).collect(),
        }
    }

    /// A book with this one's configuration (symbol, name, band width) and `image`'s state,
    /// built by inserting the orders directly: no matching, no events. The index is the caller's
    /// ([`crate::Engine::restore`]). `Err` if the image is inconsistent ([`BookImage::check`]),
    /// names another symbol, or remembers more ended client ids than `capacity` allows.
    pub(crate) fn restored(&self, image: &BookImage, capacity: Capacity) -> Result<Book, SnapshotError> {
        image.check()?;
        let symbol = self.tape.symbol;
        if image.symbol != symbol || image.name != self.name {
            return Err(SnapshotError::Invalid(format!(
                "image of symbol {} ({:?}) offered to the book of symbol {} ({:?})",
                image.symbol.0, image.name, symbol.0, self.name
            )));
        }
        if image.window.len() > capacity.client_window {
            return Err(SnapshotError::Invalid(format!(
                "symbol {}: {} ended client ids, the window holds {}",
                symbol.0,
                image.window.len(),
                capacity.client_window
            )));
        }
        let orders = image.bids.iter().chain(&image.asks).map(|l| l.orders.len()).sum::<usize>();
        let mut book = Book {
            tape: Tape { symbol, seq: image.seq },
            band_bps: self.band_bps,
            reference: image.reference,
            halted: image.halted,
            bids: Ladder::new(Side::Buy, capacity.levels),
            asks: Ladder::new(Side::Sell, capacity.levels),
            slab: if self.slab.has_homes() {
                Slab::with_homes(capacity.orders.max(orders))
            } else {
                Slab::with_capacity(capacity.orders.max(orders))
            },
            clients: ClientIds::new(capacity.orders.max(orders), capacity.client_window),
            accounts: Accounts::with_capacity(1024),
            name: self.name.clone(),
        };
        for (side, levels) in [(Side::Buy, &image.bids), (Side::Sell, &image.asks)] {
            // Worst first: each level is then the best so far, and those it leaves behind go to the
            // ladder's overflow in order (best first would insert each at its front).
            for l in levels.iter().rev() {
                let ladder = match side {
                    Side::Buy => &mut book.bids,
                    Side::Sell => &mut book.asks,
                };
                let level = ladder.level_at(l.price);
                for o in &l.orders {
                    let account = book.accounts.intern(&o.account);
                    let client = book.clients.open((account, o.client_order_id));
                    let node = Node {
                        id: o.id,
                        price: l.price,
                        leaves: o.leaves,
                        account,
                        client,
                        prev: NIL,
                        next: NIL,
                        side,
                        post_only: o.post_only,
                    };
                    let slot = book.slab.insert(node);
                    // `check` bounds a level to u32::MAX orders.
                    enqueue(&mut book.slab, level, slot, o.leaves);
                }
            }
        }
        // Oldest first: each one closed after the last, as they ended (`ClientIds::recent`).
        for (account, id) in &image.window {
            let account = book.accounts.intern(account);
            let handle = book.clients.open((account, *id));
            book.clients.close(handle);
        }
        Ok(book)
    }

    /// Every resting order's id and slot, for the index.
    pub(crate) fn slots(&self) -> Vec<(OrderId, u32)> {
        let mut all = Vec::with_capacity(self.len());
        for ladder in [&self.bids, &self.asks] {
            for level in ladder.iter() {
                let mut slot = level.head;
                while slot != NIL {
                    all.push((self.slab[slot].id, slot));
                    slot = self.slab[slot].next;
                }
            }
        }
        all
    }

    /// Checks every internal invariant; `Err` says which one broke. For tests.
    pub fn validate(&self, index: &OrderIndex) -> Result<(), String> {
        let mut live = 0;
        for ladder in [&self.bids, &self.asks] {
            ladder.validate()?;
            for level in ladder.iter() {
                let (mut qty, mut count, mut prev, mut slot) = (0u64, 0u32, NIL, level.head);
                while slot != NIL {
                    let n = &self.slab[slot];
                    if n.prev != prev || n.side != ladder.side || n.price != level.price || n.leaves.is_zero()
                    {
                        return Err(format!("bad node {n:?} at level {level:?}"));
                    }
                    let want = Loc { symbol: self.tape.symbol.0, slot };
                    let found = if self.indexed(slot) {
                        index.get(&n.id) == Some(want) && self.find(n.id).is_none()
                    } else {
                        index.get(&n.id).is_none() && self.find(n.id) == Some(slot)
                    };
                    if !found {
                        return Err(format!("index disagrees for {:?}", n.id));
                    }
                    let key = self.clients.key(n.client);
                    if !self.clients.contains(&key) || n.account != key.0 {
                        return Err(format!("client id of {:?} not taken or owner mismatch", n.id));
                    }
                    qty += n.leaves.0;
                    count += 1;
                    prev = slot;
                    slot = n.next;
                }
                if count == 0 || level.tail != prev || level.count != count || level.qty.0 != qty {
                    return Err(format!(
                        "level {level:?} disagrees with its orders ({count} orders, {qty} lots)"
                    ));
                }
                live += count as usize;
            }
        }
        if live != self.slab.len() {
            return Err(format!("{live} orders in levels, {} in the slab", self.slab.len()));
        }
        if let (Some((bid, _)), Some((ask, _))) = (self.best_bid(), self.best_ask()) {
            if bid >= ask {
                return Err(format!("crossed book: bid {bid:?} >= ask {ask:?}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use common::{ClientOrderId, SymbolTable, Timestamp};

    use super::*;

    /// A GTC bid of 5 at the reference of `spec`, from account "a" with client id `client`.
    fn bid(spec: &SymbolSpec, client: &str) -> NewOrder {
        NewOrder {
            symbol: SymbolId(0),
            account: Account::new("a").unwrap(),
            client_order_id: ClientOrderId::new(client).unwrap(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            tif: TimeInForce::Gtc,
            post_only: false,
            price: Some(spec.reference),
            qty: Qty(5),
        }
    }

    /// `order` applied as exchange id `id`.
    fn place(book: &mut Book, index: &mut OrderIndex, id: u64, order: &NewOrder) {
        let (id, mut out) = (OrderId(id), Vec::new());
        book.new_order(id, order, index, &mut Emitter::new(id, Timestamp(0), &mut out));
    }

    /// A book of the first default symbol with one resting bid: the book, the index, its slot.
    fn one_bid() -> (Book, OrderIndex, u32) {
        let table = SymbolTable::default();
        let spec = table.get(SymbolId(0)).unwrap();
        let mut book = Book::new(SymbolId(0), spec, Capacity { orders: 16, levels: 16, client_window: 16 });
        let mut index = OrderIndex::with_capacity(16);
        place(&mut book, &mut index, 1, &bid(spec, "c"));
        let slot = index.get(&OrderId(1)).unwrap().slot;
        (book, index, slot)
    }

    /// A book found by id keeps its orders at their homes, out of the index, and so does its
    /// restored copy; a taken home sends the next order with that home to the index.
    #[test]
    fn a_book_found_by_id_keeps_homes_across_a_restore() {
        let table = SymbolTable::default();
        let spec = table.get(SymbolId(0)).unwrap();
        let capacity = Capacity { orders: 4, levels: 16, client_window: 4 };
        let mut book = Book::new(SymbolId(0), spec, capacity);
        book.find_by_id();
        let mut index = OrderIndex::with_capacity(4);
        // 4 × 4 homes: ids 1 and 17 share one.
        for (n, id) in [1, 2, 17].into_iter().enumerate() {
            place(&mut book, &mut index, id, &bid(spec, &format!("c{n}")));
        }
        let homed = |book: &Book, index: &OrderIndex| {
            [1, 2, 17].map(|id| (book.find(OrderId(id)).is_some(), index.get(&OrderId(id)).is_some()))
        };
        assert_eq!(homed(&book, &index), [(true, false), (true, false), (false, true)]);
        book.validate(&index).unwrap();
        let copy = book.restored(&book.image(), capacity).unwrap();
        let mut copied = OrderIndex::with_capacity(4);
        assert_eq!(copy.index_into(&mut copied), 1, "only the order whose home was taken");
        assert_eq!(homed(&copy, &copied), [(true, false), (true, false), (false, true)]);
        copy.validate(&copied).unwrap();
    }

    /// A resting order whose level is gone is a corrupt book: it stops, in every build. (It was a
    /// `debug_assert!` and a return: a release build went on with the order still linked and
    /// its slot freed.)
    #[test]
    #[should_panic(expected = "book is corrupt")]
    fn a_resting_order_without_its_level_stops_the_book() {
        let (mut book, mut index, slot) = one_bid();
        book.validate(&index).unwrap();
        book.bids.clear();
        let mut out = Vec::new();
        let mut em = Emitter::new(OrderId(2), Timestamp(0), &mut out);
        book.cancel(slot, Account::new("a").unwrap(), &mut index, &mut em);
    }

    #[test]
    #[should_panic(expected = "book is corrupt")]
    fn a_smaller_replace_without_its_level_stops_the_book() {
        let (mut book, mut index, slot) = one_bid();
        let price = book.slab[slot].price;
        book.bids.clear();
        let mut out = Vec::new();
        let mut em = Emitter::new(OrderId(2), Timestamp(0), &mut out);
        let replace = Replace {
            symbol: SymbolId(0),
            order_id: OrderId(1),
            account: Account::new("a").unwrap(),
            price: Some(price),
            qty: Some(Qty(2)),
        };
        book.replace(slot, &replace, &mut index, &mut em);
    }
}

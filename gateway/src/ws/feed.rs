//! The feed actor: one per gateway. It takes the Kafka consumer's events, keeps each symbol's
//! [`Book`] (bootstrapped from the matcher's snapshot, see [`super::book`]), and fans every
//! frame out to the sessions subscribed to its channel: built once, pushed to each session's
//! bounded queue without waiting ([`Link::push`]). A session whose queue is full is dropped from
//! every channel and told (it resubscribes or closes: [`super::session`]), so one slow client
//! never holds up the others or the feed.
//!
//! A plain task with a bounded mailbox (not an actix actor: the consumer thread must wait when
//! the feed is behind, and nothing here may grow without bound). Every handler is synchronous;
//! the only I/O, reading a snapshot or an order's owner from the matcher front, runs in a task
//! of its own that answers with a message.
//!
//! Per symbol it checks the stream it gets: every event of a symbol carries the next sequence
//! number, so a repeated number is a duplicate (the matcher's output is at-least-once) and is
//! dropped, and a skipped one is a gap, which restarts that book's bootstrap; its subscribers
//! get a fresh snapshot when it is done.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use common::{Account, Decimal, OrderId, Side, SymbolId, SymbolSpec, SymbolTable};
use prometheus::{IntCounter, IntGauge};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::book::{Book, Snapshot, Took, Update};
use super::kafka::{FeedEvent, FeedKind, Fill, FillSide};
use super::link::{Link, Push};
use super::protocol::{self, Channel};
use crate::upstream::{Method, Pool};

/// Levels asked of the matcher front for a bootstrap (its most).
const SNAPSHOT_DEPTH: usize = 50;
/// Most order events held while their owner is being looked up.
const UNRESOLVED_CAP: usize = 10_000;

/// A session's id, unique in this gateway.
pub type SessionId = u64;

/// What the feed is told.
#[derive(Debug)]
pub enum FeedMsg {
    /// Events from the consumer, each partition's in log order (a symbol's are in one).
    Events(Vec<FeedEvent>),
    /// The consumer sits at a fixed offset: books may bootstrap.
    Positioned,
    /// The broker answers (or stopped answering).
    Status {
        /// Up or down.
        up: bool,
    },
    /// A bootstrap's snapshot, or why it could not be read.
    Snapshot {
        /// The symbol.
        symbol: SymbolId,
        /// Which bootstrap.
        attempt: u64,
        /// The snapshot.
        result: Result<Snapshot, String>,
    },
    /// An order's owner, looked up for events that did not name it.
    Owner {
        /// The order.
        order_id: OrderId,
        /// Its owner, if the matcher knows the order.
        account: Option<Account>,
    },
    /// A session opened.
    Join {
        /// Its id.
        id: SessionId,
        /// Its queue.
        link: Link,
        /// The signed-in account, if any (the `orders` channel's).
        account: Option<Account>,
    },
    /// A session wants a channel.
    Subscribe {
        /// The session.
        id: SessionId,
        /// The channel.
        channel: Channel,
    },
    /// A session no longer wants a channel.
    Unsubscribe {
        /// The session.
        id: SessionId,
        /// The channel.
        channel: Channel,
    },
    /// A session closed.
    Leave {
        /// The session.
        id: SessionId,
    },
    /// Test hook: leave the session's next update of the symbol's book out.
    Skip {
        /// The session.
        id: SessionId,
        /// The symbol.
        symbol: SymbolId,
    },
}

/// The feed's metrics.
#[derive(Clone)]
pub struct FeedMetrics {
    /// `ws_messages_sent_total`: frames queued to sessions.
    pub sent: IntCounter,
    /// `ws_overflows_total`: sessions whose queue overflowed.
    pub overflows: IntCounter,
    /// `ws_book_resyncs_total`: book bootstraps (start, gaps in the feed, full buffers).
    pub resyncs: IntCounter,
    /// `ws_feed_gaps_total`: sequence gaps in the gateway's own stream.
    pub gaps: IntCounter,
    /// `ws_feed_duplicates_total`: events seen twice (at-least-once output), dropped.
    pub duplicates: IntCounter,
    /// `ws_subscriptions`: channel subscriptions open.
    pub subscriptions: IntGauge,
}

/// A session, as the feed knows it.
struct Member {
    /// Its queue.
    link: Link,
    /// Its account (for `orders`).
    account: Option<Account>,
}

/// A symbol's state in the feed.
struct SymbolFeed {
    /// The book the `book:` channel shows.
    book: Book,
    /// The sequence of the last event of the symbol seen (`None`: none since the consumer began).
    last_seq: Option<u64>,
    /// The sequence of the last trade sent (`None`: unknown, after a start or a gap).
    last_trade: Option<u64>,
    /// Sessions getting the book's updates (they have their snapshot).
    book_subs: Vec<SessionId>,
    /// Sessions waiting for a snapshot (the book is bootstrapping).
    waiting: Vec<SessionId>,
    /// Sessions getting the trades.
    trade_subs: Vec<SessionId>,
    /// Test hook: sessions whose next update is left out.
    skip: Vec<SessionId>,
}

/// The feed actor's state.
pub struct Feed {
    /// Symbols (for names and decimals).
    table: SymbolTable,
    /// Per symbol, by `SymbolId`.
    symbols: Vec<SymbolFeed>,
    /// Every open session.
    members: HashMap<SessionId, Member>,
    /// Sessions on the `orders` channel, by account.
    orders: HashMap<Account, Vec<SessionId>>,
    /// The owner of every order seen accepted and still open.
    owners: HashMap<OrderId, Account>,
    /// Order events whose owner is being looked up: the frame, and whether the order ended.
    unresolved: HashMap<OrderId, Vec<(ByteString, bool)>>,
    /// The consumer sits at a fixed offset.
    positioned: bool,
    /// The broker answers.
    up: bool,
    /// Bootstrap attempts so far (each one's id).
    attempts: u64,
    /// The matcher front.
    reads: Arc<Pool>,
    /// The feed's own mailbox, for the answers of its tasks.
    mailbox: mpsc::Sender<FeedMsg>,
    /// Metrics.
    metrics: FeedMetrics,
}

impl Feed {
    /// A feed for `table`'s symbols, reading snapshots from `reads`.
    pub fn new(
        table: SymbolTable,
        reads: Arc<Pool>,
        mailbox: mpsc::Sender<FeedMsg>,
        metrics: FeedMetrics,
        buffer_cap: usize,
    ) -> Feed {
        let symbols = table
            .iter()
            .map(|_| SymbolFeed {
                book: Book::new(buffer_cap),
                last_seq: None,
                last_trade: None,
                book_subs: Vec::new(),
                waiting: Vec::new(),
                trade_subs: Vec::new(),
                skip: Vec::new(),
            })
            .collect();
        Feed {
            table,
            symbols,
            members: HashMap::new(),
            orders: HashMap::new(),
            owners: HashMap::new(),
            unresolved: HashMap::new(),
            positioned: false,
            up: false,
            attempts: 0,
            reads,
            mailbox,
            metrics,
        }
    }

    /// Runs until every sender is gone.
    pub async fn run(mut self, mut inbox: mpsc::Receiver<FeedMsg>) {
        while let Some(msg) = inbox.recv().await {
            self.handle(msg);
        }
    }

    /// Handles one message.
    pub fn handle(&mut self, msg: FeedMsg) {
        match msg {
            FeedMsg::Events(events) => self.events(events),
            FeedMsg::Positioned => self.positioned(),
            FeedMsg::Status { up } => self.status(up),
            FeedMsg::Snapshot { symbol, attempt, result } => self.snapshot(symbol, attempt, result),
            FeedMsg::Owner { order_id, account } => self.owner(order_id, account),
            FeedMsg::Join { id, link, account } => {
                self.members.insert(id, Member { link, account });
            }
            FeedMsg::Subscribe { id, channel } => self.subscribe(id, channel),
            FeedMsg::Unsubscribe { id, channel } => self.unsubscribe(id, channel),
            FeedMsg::Leave { id } => {
                self.drop_subscriptions(id);
                self.members.remove(&id);
            }
            FeedMsg::Skip { id, symbol } => {
                if let Some(s) = self.symbols.get_mut(symbol.0 as usize) {
                    s.skip.push(id);
                }
            }
        }
    }

    /// The consumer's position is fixed: every book bootstraps afresh.
    fn positioned(&mut self) {
        self.positioned = true;
        for i in 0..self.symbols.len() {
            self.symbols[i].last_seq = None;
            self.resync(SymbolId(i as u32));
        }
    }

    /// The broker's health changed: every session is told.
    fn status(&mut self, up: bool) {
        if self.up == up {
            return;
        }
        self.up = up;
        let frame = protocol::status(up);
        let ids: Vec<SessionId> = self.members.keys().copied().collect();
        self.deliver(&ids, &frame);
    }

    /// Handles a chunk of events, then closes every book's pending update.
    fn events(&mut self, events: Vec<FeedEvent>) {
        for e in events {
            self.event(e);
        }
        for i in 0..self.symbols.len() {
            if let Some(u) = self.symbols[i].book.flush() {
                self.publish_update(SymbolId(i as u32), &u);
            }
        }
    }

    fn event(&mut self, e: FeedEvent) {
        if let Some(symbol) = e.symbol {
            let s = &mut self.symbols[symbol.0 as usize];
            match s.last_seq {
                Some(last) if e.seq <= last => {
                    self.metrics.duplicates.inc();
                    return;
                }
                Some(last) if e.seq > last + 1 => {
                    tracing::warn!(
                        symbol = symbol.0,
                        after = last,
                        got = e.seq,
                        "sequence gap in order-events: resyncing the book"
                    );
                    self.metrics.gaps.inc();
                    s.last_seq = Some(e.seq);
                    s.last_trade = None;
                    self.resync(symbol);
                }
                _ => s.last_seq = Some(e.seq),
            }
        }
        match e.kind {
            FeedKind::Level(level) => {
                let Some(symbol) = e.symbol else { return };
                let (took, closed) = self.symbols[symbol.0 as usize].book.level(level);
                if let Some(u) = closed {
                    self.publish_update(symbol, &u);
                }
                if took == Took::BufferFull {
                    tracing::warn!(symbol = symbol.0, "bootstrap buffer full: starting over");
                    self.resync(symbol);
                }
            }
            FeedKind::Fill(fill) => {
                let Some(symbol) = e.symbol else { return };
                self.trade(symbol, e.seq, e.ts.0, &fill);
            }
            FeedKind::Order { order_id, account, ends, mut body } => {
                if let Some(seq) = body.remove("seq") {
                    body.insert("sequence".into(), seq);
                }
                let mut v = json!({"type": "order", "channel": "orders"});
                if let Value::Object(m) = &mut v {
                    m.extend(body);
                }
                let frame = protocol::frame(&v);
                let is_acceptance = v["event"] == "accepted";
                self.route(order_id, account, frame, ends, is_acceptance);
            }
            FeedKind::Other => {}
        }
    }

    /// A trade: to the symbol's `trades:` subscribers without the owners, and to each owner's
    /// `orders` channel as their side of it.
    fn trade(&mut self, symbol: SymbolId, seq: u64, ts: u64, f: &Fill) {
        let name = self.name(symbol).to_owned();
        let s = &mut self.symbols[symbol.0 as usize];
        let prev = s.last_trade.replace(seq);
        if !s.trade_subs.is_empty() {
            let frame = protocol::frame(&json!({
                "type": "trade",
                "channel": format!("trades:{name}"),
                "symbol": name,
                "sequence": seq,
                "prev_sequence": prev,
                "trade_id": f.trade_id.to_string(),
                "price": f.price.to_string(),
                "qty": f.qty.to_string(),
                "taker_side": f.taker_side.as_str(),
                "ts": ts,
            }));
            let ids = s.trade_subs.clone();
            self.deliver(&ids, &frame);
        }
        let maker_side = if f.taker_side == Side::Buy { Side::Sell } else { Side::Buy };
        for (side, liquidity, who) in [(maker_side, "maker", &f.maker), (f.taker_side, "taker", &f.taker)] {
            let frame = fill_frame(&name, seq, ts, f, side, liquidity, who);
            let ends = !who.leaves.is_positive();
            self.route(who.order_id, Some(who.account), frame, ends, false);
        }
    }

    /// An order event to its owner's `orders` sessions: the owner as the event names it, else
    /// as the order's acceptance did, else looked up.
    fn route(
        &mut self,
        order_id: OrderId,
        account: Option<Account>,
        frame: ByteString,
        ends: bool,
        accepted: bool,
    ) {
        let owner = account.or_else(|| self.owners.get(&order_id).copied());
        let Some(owner) = owner else {
            if let Some(waiting) = self.unresolved.get_mut(&order_id) {
                waiting.push((frame, ends));
            } else if self.unresolved.len() < UNRESOLVED_CAP {
                self.unresolved.insert(order_id, vec![(frame, ends)]);
                self.look_up_owner(order_id);
            } else {
                tracing::warn!(%order_id, "too many order events waiting for their owner: one dropped");
            }
            return;
        };
        if let Some(waiting) = self.unresolved.get_mut(&order_id) {
            // Keep the order of the owner's events: behind the ones being looked up.
            waiting.push((frame, ends));
            return;
        }
        if accepted {
            self.owners.insert(order_id, owner);
        } else if ends {
            self.owners.remove(&order_id);
        }
        if let Some(ids) = self.orders.get(&owner) {
            let ids = ids.clone();
            self.deliver(&ids, &frame);
        }
    }

    /// An owner lookup came back: the events that waited for it go out.
    fn owner(&mut self, order_id: OrderId, account: Option<Account>) {
        let Some(waiting) = self.unresolved.remove(&order_id) else { return };
        let Some(account) = account else {
            tracing::warn!(%order_id, events = waiting.len(), "no owner for an order: its events are dropped");
            return;
        };
        let ended = waiting.iter().any(|(_, ends)| *ends);
        if !ended {
            self.owners.insert(order_id, account);
        }
        if let Some(ids) = self.orders.get(&account).cloned() {
            for (frame, _) in waiting {
                self.deliver(&ids, &frame);
            }
        }
    }

    fn look_up_owner(&self, order_id: OrderId) {
        let reads = self.reads.clone();
        let mailbox = self.mailbox.clone();
        // A task of this thread's (the pool's client is the thread's: `crate::upstream`).
        actix_web::rt::spawn(async move {
            let path = format!("/api/v1/orders/{order_id}");
            let answer = reads.send(Method::GET, &path, None, "ws-owner", None).await;
            let account = answer
                .ok()
                .filter(|a| a.status == 200)
                .and_then(|a| serde_json::from_slice::<Value>(&a.body).ok())
                .and_then(|v| v["account"].as_str().and_then(|a| Account::new(a).ok()));
            let _ = mailbox.send(FeedMsg::Owner { order_id, account }).await;
        });
    }

    /// A book update to the symbol's subscribers.
    fn publish_update(&mut self, symbol: SymbolId, u: &Update) {
        let s = &self.symbols[symbol.0 as usize];
        if s.book_subs.is_empty() {
            return;
        }
        let spec = &self.table.get(symbol).expect("a symbol of the table").clone();
        let changes: Vec<Value> = u
            .changes
            .iter()
            .map(|&(side, p, q)| {
                json!([side.as_str(), spec.price_decimal(p).to_string(), spec.qty_decimal(q).to_string()])
            })
            .collect();
        let frame = protocol::frame(&json!({
            "type": "update",
            "channel": format!("book:{}", spec.name),
            "symbol": spec.name,
            "sequence": u.sequence,
            "prev_sequence": u.prev_sequence,
            "ts": u.ts.0,
            "changes": changes,
        }));
        let s = &mut self.symbols[symbol.0 as usize];
        let mut ids = s.book_subs.clone();
        if !s.skip.is_empty() {
            let skip = std::mem::take(&mut s.skip);
            ids.retain(|id| !skip.contains(id));
        }
        self.deliver(&ids, &frame);
    }

    /// Restarts a book's bootstrap: its subscribers wait for a fresh snapshot.
    fn resync(&mut self, symbol: SymbolId) {
        self.attempts += 1;
        self.metrics.resyncs.inc();
        let attempt = self.attempts;
        let s = &mut self.symbols[symbol.0 as usize];
        s.book.begin_sync(attempt);
        let subs = std::mem::take(&mut s.book_subs);
        s.waiting.extend(subs);
        if self.positioned {
            self.fetch(symbol, attempt, Duration::ZERO);
        }
    }

    /// Reads the matcher's snapshot of `symbol` after `delay`, in a task of its own.
    fn fetch(&self, symbol: SymbolId, attempt: u64, delay: Duration) {
        let Some(spec) = self.table.get(symbol).cloned() else { return };
        let reads = self.reads.clone();
        let mailbox = self.mailbox.clone();
        actix_web::rt::spawn(async move {
            tokio::time::sleep(delay).await;
            let path = format!("/api/v1/book/{}?depth={SNAPSHOT_DEPTH}", spec.name);
            let result = match reads.send(Method::GET, &path, None, "ws-snapshot", None).await {
                Ok(a) if a.status == 200 => parse_snapshot(&a.body, &spec),
                Ok(a) => Err(format!("the matcher answered {}", a.status)),
                Err(e) => Err(format!("{e:?}")),
            };
            let _ = mailbox.send(FeedMsg::Snapshot { symbol, attempt, result }).await;
        });
    }

    /// A bootstrap's snapshot: the book goes live and its waiting subscribers get it.
    fn snapshot(&mut self, symbol: SymbolId, attempt: u64, result: Result<Snapshot, String>) {
        let Some(s) = self.symbols.get_mut(symbol.0 as usize) else { return };
        match result {
            Ok(snap) => {
                if !s.book.synced(attempt, &snap) {
                    return;
                }
                let waiting = std::mem::take(&mut s.waiting);
                let frame = self.snapshot_frame(symbol);
                let delivered = self.deliver(&waiting, &frame);
                self.symbols[symbol.0 as usize].book_subs.extend(delivered);
            }
            Err(e) if s.book.attempt() == Some(attempt) => {
                tracing::warn!(symbol = %self.name(symbol), error = %e, "could not read the book snapshot; retrying");
                self.fetch(symbol, attempt, Duration::from_millis(500));
            }
            Err(_) => {}
        }
    }

    fn snapshot_frame(&self, symbol: SymbolId) -> ByteString {
        let spec = self.table.get(symbol).expect("a symbol of the table");
        let snap = self.symbols[symbol.0 as usize].book.snapshot();
        let side = |levels: &[(common::Price, common::Qty)]| -> Vec<Value> {
            levels.iter().map(|&(p, q)| protocol::level(spec.price_decimal(p), spec.qty_decimal(q))).collect()
        };
        protocol::frame(&json!({
            "type": "snapshot",
            "channel": format!("book:{}", spec.name),
            "symbol": spec.name,
            "sequence": snap.sequence,
            "bids": side(&snap.bids),
            "asks": side(&snap.asks),
        }))
    }

    fn subscribe(&mut self, id: SessionId, channel: Channel) {
        let Some(member) = self.members.get(&id) else { return };
        self.metrics.subscriptions.inc();
        match channel {
            Channel::Book(symbol) => {
                let live = self.symbols[symbol.0 as usize].book.live();
                if live && self.positioned {
                    let frame = self.snapshot_frame(symbol);
                    if self.deliver(&[id], &frame).is_empty() {
                        return;
                    }
                    self.symbols[symbol.0 as usize].book_subs.push(id);
                } else {
                    self.symbols[symbol.0 as usize].waiting.push(id);
                }
            }
            Channel::Trades(symbol) => self.symbols[symbol.0 as usize].trade_subs.push(id),
            Channel::Orders => {
                if let Some(account) = member.account {
                    self.orders.entry(account).or_default().push(id);
                }
            }
        }
    }

    fn unsubscribe(&mut self, id: SessionId, channel: Channel) {
        let account = self.members.get(&id).and_then(|m| m.account);
        let removed = match channel {
            Channel::Book(symbol) => {
                let s = &mut self.symbols[symbol.0 as usize];
                remove(&mut s.book_subs, id) | remove(&mut s.waiting, id)
            }
            Channel::Trades(symbol) => remove(&mut self.symbols[symbol.0 as usize].trade_subs, id),
            Channel::Orders => {
                account.is_some_and(|a| self.orders.get_mut(&a).is_some_and(|v| remove(v, id)))
            }
        };
        if removed {
            self.metrics.subscriptions.dec();
        }
    }

    /// Takes a session off every channel.
    fn drop_subscriptions(&mut self, id: SessionId) {
        let mut n = 0;
        for s in &mut self.symbols {
            n += usize::from(remove(&mut s.book_subs, id));
            n += usize::from(remove(&mut s.waiting, id));
            n += usize::from(remove(&mut s.trade_subs, id));
            remove(&mut s.skip, id);
        }
        if let Some(account) = self.members.get(&id).and_then(|m| m.account) {
            if let Some(v) = self.orders.get_mut(&account) {
                n += usize::from(remove(v, id));
                if v.is_empty() {
                    self.orders.remove(&account);
                }
            }
        }
        self.metrics.subscriptions.sub(n as i64);
    }

    /// Queues `frame` to each of `ids`; the ones it reached. A full queue takes the session off
    /// every channel (it has been told and will resubscribe); a closed one is forgotten.
    fn deliver(&mut self, ids: &[SessionId], frame: &ByteString) -> Vec<SessionId> {
        let mut reached = Vec::with_capacity(ids.len());
        let mut failed = Vec::new();
        for &id in ids {
            let Some(m) = self.members.get(&id) else { continue };
            match m.link.push(frame.clone()) {
                Push::Sent => reached.push(id),
                other => failed.push((id, other)),
            }
        }
        self.metrics.sent.inc_by(reached.len() as u64);
        for (id, why) in failed {
            self.drop_subscriptions(id);
            if why == Push::Overflow {
                self.metrics.overflows.inc();
            } else {
                self.members.remove(&id);
            }
        }
        reached
    }

    fn name(&self, symbol: SymbolId) -> &str {
        self.table.get(symbol).map_or("?", |s| s.name.as_str())
    }
}

/// Removes `id` from `list`; whether it was there.
fn remove(list: &mut Vec<SessionId>, id: SessionId) -> bool {
    let before = list.len();
    list.retain(|&x| x != id);
    list.len() != before
}

/// One side of a fill, as its owner's `orders` channel shows it.
fn fill_frame(
    symbol: &str,
    seq: u64,
    ts: u64,
    f: &Fill,
    side: Side,
    liquidity: &str,
    who: &FillSide,
) -> ByteString {
    protocol::frame(&json!({
        "type": "order",
        "channel": "orders",
        "event": "fill",
        "symbol": symbol,
        "sequence": seq,
        "ts": ts,
        "order_id": who.order_id.to_string(),
        "client_order_id": who.client_order_id.as_str(),
        "account": who.account.as_str(),
        "trade_id": f.trade_id.to_string(),
        "side": side.as_str(),
        "liquidity": liquidity,
        "price": f.price.to_string(),
        "qty": f.qty.to_string(),
        "leaves": who.leaves.to_string(),
    }))
}

/// The matcher front's `{"sequence", "bids": [["100.00", "5"], …], "asks": …}`.
pub fn parse_snapshot(body: &[u8], spec: &SymbolSpec) -> Result<Snapshot, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let sequence = v["sequence"].as_u64().ok_or("a snapshot without a sequence")?;
    let side = |name: &str| -> Result<Vec<(common::Price, common::Qty)>, String> {
        let levels = v[name].as_array().ok_or_else(|| format!("a snapshot without {name}"))?;
        levels
            .iter()
            .map(|l| {
                let text = |i: usize| l[i].as_str().ok_or_else(|| format!("a bad level in {name}: {l}"));
                let price = Decimal::parse(text(0)?).map_err(|e| e.to_string())?;
                let qty = Decimal::parse(text(1)?).map_err(|e| e.to_string())?;
                Ok((
                    spec.price("price", price).map_err(|e| e.to_string())?,
                    spec.qty("qty", qty).map_err(|e| e.to_string())?,
                ))
            })
            .collect()
    };
    Ok(Snapshot { sequence, bids: side("bids")?, asks: side("asks")? })
}

#[cfg(test)]
mod tests {
    use common::{Price, Qty, Timestamp};

    use super::*;
    use crate::ws::book::Level;
    use crate::ws::link::{link, Inbox, Next};

    fn metrics() -> FeedMetrics {
        FeedMetrics {
            sent: IntCounter::new("s", "s").unwrap(),
            overflows: IntCounter::new("o", "o").unwrap(),
            resyncs: IntCounter::new("r", "r").unwrap(),
            gaps: IntCounter::new("g", "g").unwrap(),
            duplicates: IntCounter::new("d", "d").unwrap(),
            subscriptions: IntGauge::new("n", "n").unwrap(),
        }
    }

    fn feed() -> (Feed, mpsc::Receiver<FeedMsg>) {
        let (tx, rx) = mpsc::channel(64);
        let pool = Pool::new(vec!["http://127.0.0.1:9".into()], Duration::from_millis(10)).unwrap();
        (Feed::new(SymbolTable::default(), pool, tx, metrics(), 1000), rx)
    }

    fn level(seq: u64, cmd: u64, side: Side, price: i64, qty: u64) -> FeedEvent {
        let l = Level { seq, cmd: OrderId(cmd), ts: Timestamp(1), side, price: Price(price), qty: Qty(qty) };
        FeedEvent {
            symbol: Some(SymbolId(0)),
            seq,
            cmd: OrderId(cmd),
            ts: Timestamp(1),
            kind: FeedKind::Level(l),
        }
    }

    fn frames(inbox: &mut Inbox) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            match inbox.try_next() {
                Some(Next::Frame(f)) => out.push(serde_json::from_str(&f).unwrap()),
                Some(Next::Overflowed) => out.push(json!({"type": "overflowed"})),
                _ => return out,
            }
        }
    }

    fn join(f: &mut Feed, id: SessionId, cap: usize) -> Inbox {
        let (l, inbox) = link(cap);
        f.handle(FeedMsg::Join { id, link: l, account: None });
        inbox
    }

    /// Positioned, with ABC live at `seq` (no snapshot fetch: the test answers it).
    fn live(f: &mut Feed, seq: u64) {
        f.positioned = true;
        for i in 0..f.symbols.len() {
            f.symbols[i].book.begin_sync(1);
        }
        let snap = Snapshot { sequence: seq, bids: vec![(Price(9_900), Qty(3))], asks: vec![] };
        f.handle(FeedMsg::Snapshot { symbol: SymbolId(0), attempt: 1, result: Ok(snap) });
    }

    #[actix_web::test]
    async fn a_subscriber_gets_the_snapshot_then_chained_updates_and_gaps_resync() {
        let (mut f, _rx) = feed();
        let mut a = join(&mut f, 1, 16);
        f.handle(FeedMsg::Subscribe { id: 1, channel: Channel::Book(SymbolId(0)) });
        assert!(frames(&mut a).is_empty(), "no snapshot before the book is live");
        live(&mut f, 4);
        let got = frames(&mut a);
        assert_eq!(got[0]["type"], "snapshot");
        assert_eq!(got[0]["sequence"], 4);
        assert_eq!(got[0]["bids"], json!([["99.00", "3"]]));
        f.handle(FeedMsg::Events(vec![level(5, 9, Side::Buy, 9_900, 0), level(6, 9, Side::Sell, 10_000, 2)]));
        let got = frames(&mut a);
        assert_eq!(got.len(), 1, "one command, one update: {got:?}");
        assert_eq!((got[0]["sequence"].as_u64(), got[0]["prev_sequence"].as_u64()), (Some(6), Some(4)));
        assert_eq!(got[0]["changes"], json!([["buy", "99.00", "0"], ["sell", "100.00", "2"]]));
        // A duplicate is dropped; a gap sends the subscriber back to waiting for a snapshot.
        f.handle(FeedMsg::Events(vec![level(6, 9, Side::Sell, 10_000, 2)]));
        assert!(frames(&mut a).is_empty());
        f.handle(FeedMsg::Events(vec![level(9, 10, Side::Sell, 10_000, 1)]));
        assert!(frames(&mut a).is_empty(), "no update across a gap");
        assert_eq!(f.symbols[0].waiting, vec![1]);
        assert_eq!(f.metrics.gaps.get(), 1);
    }

    #[actix_web::test]
    async fn a_full_queue_takes_the_session_off_every_channel() {
        let (mut f, _rx) = feed();
        live(&mut f, 1);
        let mut slow = join(&mut f, 1, 2);
        let mut fast = join(&mut f, 2, 64);
        for id in [1, 2] {
            f.handle(FeedMsg::Subscribe { id, channel: Channel::Book(SymbolId(0)) });
            f.handle(FeedMsg::Subscribe { id, channel: Channel::Trades(SymbolId(0)) });
        }
        for seq in 2..10 {
            f.handle(FeedMsg::Events(vec![level(seq, seq, Side::Buy, 9_000 + seq as i64, 1)]));
        }
        assert_eq!(f.metrics.overflows.get(), 1);
        assert!(!f.symbols[0].book_subs.contains(&1) && !f.symbols[0].trade_subs.contains(&1));
        assert_eq!(frames(&mut slow)[0]["type"], "overflowed");
        assert_eq!(frames(&mut fast).len(), 9, "the others are not held up");
        // Resubscribing gives a fresh snapshot at the book's sequence.
        slow.drain();
        f.handle(FeedMsg::Subscribe { id: 1, channel: Channel::Book(SymbolId(0)) });
        let got = frames(&mut slow);
        assert_eq!((got[0]["type"].as_str(), got[0]["sequence"].as_u64()), (Some("snapshot"), Some(9)));
    }

    #[actix_web::test]
    async fn order_events_reach_only_their_owner() {
        let (mut f, _rx) = feed();
        live(&mut f, 1);
        let (la, mut a) = link(16);
        let (lb, mut b) = link(16);
        let alice = Account::new("alice").unwrap();
        f.handle(FeedMsg::Join { id: 1, link: la, account: Some(alice) });
        f.handle(FeedMsg::Join { id: 2, link: lb, account: Some(Account::new("bob").unwrap()) });
        for id in [1, 2] {
            f.handle(FeedMsg::Subscribe { id, channel: Channel::Orders });
        }
        let body = |event: &str, account: Option<&str>| {
            let mut m = serde_json::Map::new();
            m.insert("event".into(), event.into());
            m.insert("seq".into(), 2.into());
            if let Some(a) = account {
                m.insert("account".into(), a.into());
            }
            m
        };
        let ev =
            |seq, kind| FeedEvent { symbol: Some(SymbolId(0)), seq, cmd: OrderId(1), ts: Timestamp(1), kind };
        f.handle(FeedMsg::Events(vec![
            ev(
                2,
                FeedKind::Order {
                    order_id: OrderId(1),
                    account: Some(alice),
                    ends: false,
                    body: body("accepted", Some("alice")),
                },
            ),
            // A cancel names no account: the acceptance said whose it is.
            ev(
                3,
                FeedKind::Order {
                    order_id: OrderId(1),
                    account: None,
                    ends: true,
                    body: body("canceled", None),
                },
            ),
        ]));
        let got = frames(&mut a);
        assert_eq!(
            got.iter().map(|v| v["event"].as_str().unwrap()).collect::<Vec<_>>(),
            ["accepted", "canceled"]
        );
        assert_eq!(got[0]["sequence"], 2);
        assert!(frames(&mut b).is_empty());
        assert!(f.owners.is_empty(), "a canceled order's owner is forgotten");
    }

    #[actix_web::test]
    async fn sessions_are_told_when_the_feed_goes_down_and_comes_back() {
        let (mut f, _rx) = feed();
        let mut a = join(&mut f, 1, 16);
        f.handle(FeedMsg::Status { up: true });
        f.handle(FeedMsg::Status { up: true });
        f.handle(FeedMsg::Status { up: false });
        f.handle(FeedMsg::Status { up: true });
        let got: Vec<Value> = frames(&mut a);
        assert_eq!(
            got,
            vec![
                json!({"type": "status", "feed": "up"}),
                json!({"type": "status", "feed": "down"}),
                json!({"type": "status", "feed": "up"})
            ]
        );
    }
}

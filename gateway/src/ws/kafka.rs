//! The gateway's one Kafka consumer: a thread that reads the `order-events` topic from its end,
//! turns each message into a [`FeedEvent`], and hands them to the [`super::feed`] actor in
//! chunks (whatever one poll brought, so the events of one command usually travel together).
//!
//! Only `order-events`: it holds every event, fills included, in the matcher's order. The
//! `trades` topic carries the same fill messages again, one per fill; reading both would double
//! the fetches and leave two streams to order against each other, for nothing.
//!
//! No consumer group: the partition is assigned at a fixed offset (the end, read once), so no
//! commit and no rebalance, and everything produced after that offset reaches the feed, which
//! the book bootstrap relies on (see [`super::book`]). `fetch.wait.max.ms` is low (DESIGN.md §1:
//! Tansu holds a fetch for about that long even when data is there).
//!
//! The broker's health: when nothing has arrived for a second, the thread asks for the
//! partition's watermarks (also the offset lag); a failure means the feed is down, and the next
//! success that it is back. librdkafka reconnects on its own and resumes at its position.
//!
//! With a wake-up address it dozes (`common::wake`): idle for `IDLE`, it gives up the partition
//! and takes it again, at the offset after the last message read, on the matcher's wake-up (sent
//! once the events are written) or after `RECHECK`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::wake::{Doze, Listener};
use common::{
    Account, ClientOrderId, Decimal, OrderId, Qty, Side, SymbolId, SymbolTable, Timestamp, TradeId,
};
use prometheus::{Histogram, IntGauge};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::book::Level;
use super::feed::FeedMsg;

/// Where to read.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// `host:port,…`.
    pub brokers: String,
    /// The events topic (`order-events`).
    pub topic: String,
    /// `fetch.wait.max.ms`.
    pub fetch_wait_ms: u32,
    /// Most messages handed over in one chunk.
    pub chunk: usize,
    /// Where the matcher's wake-ups arrive (UDP `host:port`); `None`: fetch all the time.
    pub wake_listen: Option<String>,
}

/// Idle this long, the consumer gives up its partition.
const IDLE: Duration = Duration::from_millis(250);

/// After a recheck that found nothing, it gives it up again this soon.
const PEEK: Duration = Duration::from_millis(20);

/// A dozing consumer takes its partition again after this long even without a wake-up.
const RECHECK: Duration = Duration::from_secs(1);

/// One event of the stream, as the feed needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedEvent {
    /// Its symbol (`None`: a reject that names no known symbol).
    pub symbol: Option<SymbolId>,
    /// The symbol's sequence number (0 without a symbol).
    pub seq: u64,
    /// The causing command.
    pub cmd: OrderId,
    /// The command's time.
    pub ts: Timestamp,
    /// What happened.
    pub kind: FeedKind,
}

/// What happened, reduced to what the channels show.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedKind {
    /// A level's new totals (`book:` channel).
    Level(Level),
    /// A trade (`trades:` channel; both owners' `orders` channel). Boxed: it is several times
    /// the size of a level, the common event.
    Fill(Box<Fill>),
    /// Another event about one order: accepted, rejected, canceled, replaced (`orders`). The
    /// owner is in `account` when the event names it (accepted, rejected); for a cancel or a
    /// replace the feed knows it from the order's acceptance.
    Order {
        /// The order.
        order_id: OrderId,
        /// Its owner, if the event says.
        account: Option<Account>,
        /// The order leaves the book with this event (canceled): forget its owner after.
        ends: bool,
        /// The event as the `orders` channel shows it (the matcher's fields, `type` → `event`).
        body: Map<String, Value>,
    },
    /// Anything else (a symbol's status): it only takes a sequence number.
    Other,
}

/// A fill, both sides.
#[derive(Clone, Debug, PartialEq)]
pub struct Fill {
    /// The trade id.
    pub trade_id: TradeId,
    /// The trade price.
    pub price: Decimal,
    /// The quantity.
    pub qty: Decimal,
    /// The taker's side.
    pub taker_side: Side,
    /// The resting order's side of it.
    pub maker: FillSide,
    /// The incoming order's side of it.
    pub taker: FillSide,
}

/// One order's side of a fill.
#[derive(Clone, Debug, PartialEq)]
pub struct FillSide {
    /// The order.
    pub order_id: OrderId,
    /// Its owner.
    pub account: Account,
    /// The owner's handle.
    pub client_order_id: ClientOrderId,
    /// What it has left open.
    pub leaves: Decimal,
}

/// The fields of an `order-events` message the feed reads (readers ignore the others).
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: String,
    cmd: OrderId,
    #[serde(default)]
    symbol: String,
    #[serde(default)]
    seq: u64,
    ts: Timestamp,
    side: Option<Side>,
    price: Option<Decimal>,
    qty: Option<Decimal>,
    order_id: Option<OrderId>,
    account: Option<Account>,
    trade_id: Option<TradeId>,
    taker_side: Option<Side>,
    maker_order_id: Option<OrderId>,
    taker_order_id: Option<OrderId>,
    maker_account: Option<Account>,
    taker_account: Option<Account>,
    maker_client_order_id: Option<ClientOrderId>,
    taker_client_order_id: Option<ClientOrderId>,
    maker_leaves: Option<Decimal>,
    taker_leaves: Option<Decimal>,
}

/// Reads one `order-events` message. `None`: not one the feed can use (logged by the caller).
pub fn parse(bytes: &[u8], table: &SymbolTable) -> Result<FeedEvent, String> {
    let w: Wire = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let symbol = if w.symbol.is_empty() {
        None
    } else {
        Some(table.lookup(&w.symbol).ok_or_else(|| format!("unknown symbol {:?}", w.symbol))?)
    };
    let missing = |f: &str| format!("{} event without {f}", w.kind);
    let kind = match w.kind.as_str() {
        "level" => {
            let spec = symbol.and_then(|s| table.get(s)).ok_or_else(|| missing("symbol"))?;
            let price =
                spec.price("price", w.price.ok_or_else(|| missing("price"))?).map_err(|e| e.to_string())?;
            // A level's total may be 0 (the level is gone), which `SymbolSpec::qty` refuses.
            let lots = w.qty.ok_or_else(|| missing("qty"))?.units_of(spec.lot).map_err(|e| e.to_string())?;
            let qty = Qty(u64::try_from(lots).map_err(|_| format!("level qty {lots} lots"))?);
            let side = w.side.ok_or_else(|| missing("side"))?;
            FeedKind::Level(Level { seq: w.seq, cmd: w.cmd, ts: w.ts, side, price, qty })
        }
        "fill" => {
            let side = |order_id: Option<OrderId>,
                        account: Option<Account>,
                        client: Option<ClientOrderId>,
                        leaves: Option<Decimal>| {
                Some(FillSide {
                    order_id: order_id?,
                    account: account?,
                    client_order_id: client?,
                    leaves: leaves?,
                })
            };
            FeedKind::Fill(Box::new(Fill {
                trade_id: w.trade_id.ok_or_else(|| missing("trade_id"))?,
                price: w.price.ok_or_else(|| missing("price"))?,
                qty: w.qty.ok_or_else(|| missing("qty"))?,
                taker_side: w.taker_side.ok_or_else(|| missing("taker_side"))?,
                maker: side(w.maker_order_id, w.maker_account, w.maker_client_order_id, w.maker_leaves)
                    .ok_or_else(|| missing("the maker"))?,
                taker: side(w.taker_order_id, w.taker_account, w.taker_client_order_id, w.taker_leaves)
                    .ok_or_else(|| missing("the taker"))?,
            }))
        }
        "accepted" | "rejected" | "canceled" | "replaced" => {
            let mut body: Map<String, Value> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
            body.remove("v");
            if let Some(t) = body.remove("type") {
                body.insert("event".into(), t);
            }
            FeedKind::Order {
                order_id: w.order_id.ok_or_else(|| missing("order_id"))?,
                account: w.account,
                // A reject names the sender and changes no order (a refused cancel leaves its
                // target open): only a cancel ends one.
                ends: w.kind == "canceled",
                body,
            }
        }
        _ => FeedKind::Other,
    };
    Ok(FeedEvent { symbol, seq: w.seq, cmd: w.cmd, ts: w.ts, kind })
}

/// The consumer thread's metrics.
#[derive(Clone)]
pub struct ConsumerMetrics {
    /// `ws_feed_lag_seconds`: the message's Kafka timestamp → the gateway has it.
    pub lag: Histogram,
    /// `ws_feed_offset_lag`: messages behind the partition's end, when last asked.
    pub offset_lag: IntGauge,
    /// `ws_feed_up`: 1 while the broker answers.
    pub up: IntGauge,
}

/// Starts the consumer thread; it stops when `stop` is set or the feed is gone.
pub fn spawn(
    config: KafkaConfig,
    table: SymbolTable,
    feed: mpsc::Sender<FeedMsg>,
    metrics: ConsumerMetrics,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("ws-kafka".into()).spawn(move || {
        if let Err(e) = consume(&config, &table, &feed, &metrics, &stop) {
            tracing::error!(error = %e, "the market-data consumer stopped");
        }
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn consume(
    config: &KafkaConfig,
    table: &SymbolTable,
    feed: &mpsc::Sender<FeedMsg>,
    metrics: &ConsumerMetrics,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        // Required by librdkafka for a consumer; never joined (assign, no subscribe) or committed.
        .set("group.id", "gateway-ws")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", config.fetch_wait_ms.to_string())
        .set("socket.timeout.ms", "3000")
        .create()?;
    let send = |msg: FeedMsg| feed.blocking_send(msg).is_ok();
    let mut up = None::<bool>;
    let mut set_up = |now_up: bool| {
        if up != Some(now_up) {
            up = Some(now_up);
            metrics.up.set(i64::from(now_up));
            if now_up {
                tracing::info!(topic = %config.topic, "market-data feed up");
            } else {
                tracing::warn!(topic = %config.topic, "market-data feed down: the broker does not answer");
            }
            return send(FeedMsg::Status { up: now_up });
        }
        true
    };
    // The end of the topic, as a fixed offset.
    let end = loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match consumer.fetch_watermarks(&config.topic, 0, Duration::from_secs(2)) {
            Ok((_, high)) => break high,
            Err(e) => {
                tracing::debug!(error = %e, "waiting for the broker");
                if !set_up(false) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&config.topic, 0, Offset::Offset(end))?;
    consumer.assign(&tpl)?;
    if !set_up(true) || !send(FeedMsg::Positioned) {
        return Ok(());
    }
    tracing::info!(topic = %config.topic, offset = end, "market-data consumer assigned at the end of the topic");
    let listener = config.wake_listen.as_deref().and_then(|addr| match Listener::bind(addr) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot listen for wake-ups; fetching all the time");
            None
        }
    });
    let mut doze = Doze::new(IDLE, PEEK, RECHECK, Instant::now());
    // Where it goes on: dozing, it gives up the partition and takes it again at this offset.
    let mut next = end;
    let mut heard = Instant::now();
    let mut chunk = Vec::with_capacity(config.chunk);
    while !stop.load(Ordering::Relaxed) {
        if let Some(listener) = listener.as_ref().filter(|_| doze.paused()) {
            let woken = listener.wait(doze.wait_for(Instant::now(), Duration::from_millis(100)));
            let now = Instant::now();
            if doze.should_resume(now, woken) {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&config.topic, 0, Offset::Offset(next))?;
                consumer.assign(&tpl)?;
                doze.resume(now, woken);
            }
        }
        let mut wait = Duration::from_millis(if listener.is_some() { 10 } else { 100 });
        while !doze.paused() && chunk.len() < config.chunk {
            let Some(polled) = consumer.poll(wait) else {
                let now = Instant::now();
                if listener.is_some() && doze.should_pause(now) {
                    consumer.unassign()?;
                    doze.pause(now);
                }
                break;
            };
            wait = Duration::ZERO;
            match polled {
                Ok(m) => {
                    heard = Instant::now();
                    doze.read(heard);
                    next = m.offset() + 1;
                    if let Some(ts) = m.timestamp().to_millis() {
                        metrics.lag.observe((now_ms() - ts).max(0) as f64 / 1000.0);
                    }
                    match parse(m.payload().unwrap_or_default(), table) {
                        Ok(e) => chunk.push(e),
                        Err(e) => {
                            tracing::warn!(offset = m.offset(), error = %e, "skipping an order-events message")
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "market-data consumer"),
            }
        }
        if !chunk.is_empty() {
            if !set_up(true) || !send(FeedMsg::Events(std::mem::take(&mut chunk))) {
                return Ok(());
            }
            chunk.reserve(config.chunk);
        }
        if heard.elapsed() >= Duration::from_secs(1) {
            heard = Instant::now();
            let probe = consumer.fetch_watermarks(&config.topic, 0, Duration::from_secs(1));
            if let Ok((_, high)) = probe {
                let at = consumer.position().ok().and_then(|p| {
                    p.find_partition(&config.topic, 0).and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                });
                if let Some(at) = at {
                    metrics.offset_lag.set((high - at).max(0));
                }
            }
            if !set_up(probe.is_ok()) {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use common::envelope::encode_event;
    use common::{CancelReason, Event, EventKind, Price};

    use super::*;

    fn event(seq: u64, kind: EventKind) -> Vec<u8> {
        let t = SymbolTable::default();
        let e = Event { cmd: OrderId(7), index: 0, symbol: t.lookup("ABC"), seq, ts: Timestamp(5), kind };
        encode_event(&e, &t)
    }

    #[test]
    fn the_matchers_events_parse() {
        let t = SymbolTable::default();
        let abc = t.lookup("ABC");
        let level =
            event(3, EventKind::Level { side: Side::Sell, price: Price(10_001), qty: Qty(4), orders: 1 });
        let e = parse(&level, &t).unwrap();
        assert_eq!((e.symbol, e.seq), (abc, 3));
        assert_eq!(
            e.kind,
            FeedKind::Level(Level {
                seq: 3,
                cmd: OrderId(7),
                ts: Timestamp(5),
                side: Side::Sell,
                price: Price(10_001),
                qty: Qty(4)
            })
        );
        let a = Account::new("alice").unwrap();
        let c = ClientOrderId::new("c1").unwrap();
        let fill = event(
            4,
            EventKind::Fill {
                fill: 0,
                maker: OrderId(1),
                taker: OrderId(7),
                taker_side: Side::Buy,
                price: Price(10_001),
                qty: Qty(2),
                maker_leaves: Qty(2),
                taker_leaves: Qty(0),
                maker_account: a,
                maker_client_order_id: c,
                taker_account: Account::anonymous(),
                taker_client_order_id: c,
            },
        );
        let FeedKind::Fill(f) = parse(&fill, &t).unwrap().kind else { panic!("a fill") };
        assert_eq!(
            (f.maker.account, f.taker.order_id, f.price.to_string()),
            (a, OrderId(7), "100.01".into())
        );
        let cancel = event(
            5,
            EventKind::Canceled { order_id: OrderId(1), qty: Qty(2), reason: CancelReason::Requested },
        );
        let FeedKind::Order { order_id, account, ends, body } = parse(&cancel, &t).unwrap().kind else {
            panic!("an order event")
        };
        assert_eq!((order_id, account, ends), (OrderId(1), None, true));
        assert_eq!(body["event"], "canceled");
        assert!(body.get("v").is_none() && body.get("type").is_none());
        assert!(parse(b"{}", &t).is_err());
        let gone =
            event(6, EventKind::Level { side: Side::Buy, price: Price(9_999), qty: Qty(0), orders: 0 });
        let FeedKind::Level(l) = parse(&gone, &t).unwrap().kind else { panic!("a level") };
        assert_eq!(l.qty, Qty(0), "a level that is gone");
        let other = br#"{"v":1,"type":"status","event_id":"1-0","cmd":"1","symbol":"ABC","seq":9,"ts":1,"halted":true,"reference":"100.00"}"#;
        assert_eq!(parse(other, &t).unwrap().kind, FeedKind::Other);
    }
}

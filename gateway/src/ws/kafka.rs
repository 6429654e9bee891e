//! The gateway's one Kafka consumer: a thread that reads the `order-events` topic from its end,
//! turns each event of each message (a pack of one batch's events) into a [`FeedEvent`], and hands them to the [`super::feed`] actor in
//! chunks (whatever one poll brought, so the events of one command usually travel together).
//!
//! Only `order-events`: it holds every event, fills included, in the matcher's order. The
//! `trades` topic carries the same fill messages again, one per fill; reading both would double
//! the fetches and leave two streams to order against each other, for nothing.
//!
//! Every partition of it: the matcher writes the events of `orders` partition *i* to partition
//! *i*, and a symbol lives in one `orders` partition, so each symbol's events are in one
//! partition, in order. Across partitions there is no order, and none is needed: the feed checks
//! sequence numbers per symbol, and an order's events all belong to its symbol. The partitions are
//! the ones the topic has at start (read from its metadata); one added later is not read.
//!
//! No consumer group: each partition is assigned at a fixed offset (its end, read once), so no
//! commit and no rebalance, and everything produced after those offsets reaches the feed, which
//! the book bootstrap relies on (see [`super::book`]). `fetch.wait.max.ms` is how long the broker may
//! hold a fetch that finds nothing (`common::kafka::FETCH_WAIT_MS`).
//!
//! The broker's health: when nothing has arrived for a second, the thread asks for every
//! partition's watermarks (also the offset lag, summed over the partitions); a failure means the
//! feed is down, and the next success that it is back. librdkafka reconnects on its own and
//! resumes at its position. While it dozes it does not ask: each recheck does, so at rest the
//! broker is asked as rarely as it is fetched from.
//!
//! With a wake-up address it dozes (`common::wake`): idle for `IDLE`, it gives up the partitions
//! and takes them again, each at the offset after the last message read from it (`Positions`),
//! on the matcher's wake-up (sent once the events are written) or after `RECHECK` (doubled after
//! each recheck that finds nothing, up to `common::wake::LONGEST_RECHECK`).

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
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
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
    /// About how many events are handed over in one chunk (checked per message, so a chunk may
    /// end up to one pack of events past it).
    pub chunk: usize,
    /// Where the matcher's wake-ups arrive (UDP `host:port`); `None`: fetch all the time.
    pub wake_listen: Option<String>,
}

/// Idle this long, the consumer gives up its partitions.
const IDLE: Duration = Duration::from_millis(250);

/// After a recheck that found nothing, it gives it up again this soon.
const PEEK: Duration = Duration::from_millis(20);

/// A dozing consumer takes its partitions again after this long even without a wake-up.
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
    /// `ws_feed_offset_lag`: messages behind the partitions' ends (summed), when last asked.
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
    // Every partition and its end, as fixed offsets.
    let mut positions = loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match ends(&consumer, &config.topic, Duration::from_secs(2)) {
            Ok(ends) => break Positions::new(ends),
            Err(e) => {
                tracing::debug!(error = %e, "waiting for the broker");
                if !set_up(false) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    };
    consumer.assign(&positions.assignment(&config.topic)?)?;
    if !set_up(true) || !send(FeedMsg::Positioned) {
        return Ok(());
    }
    tracing::info!(
        topic = %config.topic,
        partitions = positions.len(),
        offsets = ?positions,
        "market-data consumer assigned at the end of the topic"
    );
    let listener = config.wake_listen.as_deref().and_then(|addr| match Listener::bind(addr) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot listen for wake-ups; fetching all the time");
            None
        }
    });
    let mut doze =
        Doze::new(IDLE, PEEK, RECHECK, Instant::now()).backing_off_to(common::wake::LONGEST_RECHECK);
    let mut heard = Instant::now();
    // A recheck asks for the broker's health whatever happens in its short peek.
    let mut check_due = false;
    let mut chunk = Vec::with_capacity(config.chunk);
    while !stop.load(Ordering::Relaxed) {
        if let Some(listener) = listener.as_ref().filter(|_| doze.paused()) {
            let woken = listener.wait(doze.wait_for(Instant::now(), Duration::from_millis(100)));
            let now = Instant::now();
            if doze.should_resume(now, woken) {
                consumer.assign(&positions.assignment(&config.topic)?)?;
                doze.resume(now, woken);
                check_due = !woken;
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
                    positions.read(m.partition(), m.offset());
                    if let Some(ts) = m.timestamp().to_millis() {
                        metrics.lag.observe((now_ms() - ts).max(0) as f64 / 1000.0);
                    }
                    // A message is a pack of events, one a line (`common::envelope::pack_event`).
                    for event in common::envelope::unpack_events(m.payload().unwrap_or_default()) {
                        match parse(event, table) {
                            Ok(e) => chunk.push(e),
                            Err(e) => tracing::warn!(
                                partition = m.partition(),
                                offset = m.offset(),
                                error = %e,
                                "skipping an order-events event"
                            ),
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
        // Not between rechecks while dozing: each recheck makes it (so a broker that went away at
        // rest is told within a recheck's wait, at most LONGEST_RECHECK, plus the check's timeout).
        if check_due || (!doze.paused() && heard.elapsed() >= Duration::from_secs(1)) {
            check_due = false;
            heard = Instant::now();
            let highs: Result<Vec<i64>, _> = (0..positions.len() as i32)
                .map(|p| consumer.fetch_watermarks(&config.topic, p, Duration::from_secs(1)).map(|(_, h)| h))
                .collect();
            if let Ok(highs) = &highs {
                metrics.offset_lag.set(positions.lag(highs));
            }
            if !set_up(highs.is_ok()) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Each partition's end (high watermark), in partition order; the partitions are the ones the
/// topic's metadata lists now (partitions added later are never read).
fn ends(consumer: &BaseConsumer, topic: &str, timeout: Duration) -> Result<Vec<i64>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        // Not created yet, or the broker is still starting.
        return Err(KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition));
    }
    (0..partitions as i32)
        .map(|p| consumer.fetch_watermarks(topic, p, timeout).map(|(_, high)| high))
        .collect()
}

/// Where the consumer goes on in each partition of the topic: the offset after the last message
/// read from it (at first, the partition's end as read at start). Dozing, the consumer gives up
/// its partitions and takes each one again at exactly this offset, so nothing fetched ahead and
/// dropped is skipped. Per partition, because the matcher writes a symbol's events to one
/// partition only: the partitions' streams are independent, and only each one's order matters.
#[derive(Clone, PartialEq, Eq)]
struct Positions {
    /// Indexed by partition (a topic's partitions are `0..n`).
    next: Vec<i64>,
}

impl Positions {
    /// Starts each partition at its `ends` entry (partition order).
    fn new(ends: Vec<i64>) -> Positions {
        Positions { next: ends }
    }

    /// How many partitions are read.
    fn len(&self) -> usize {
        self.next.len()
    }

    /// The message at `offset` of `partition` was read. A partition it does not read is ignored.
    fn read(&mut self, partition: i32, offset: i64) {
        if let Some(next) = usize::try_from(partition).ok().and_then(|p| self.next.get_mut(p)) {
            *next = offset + 1;
        }
    }

    /// Messages behind the partitions' ends (`highs`, in partition order), summed; a partition
    /// whose end was read before its latest messages counts as 0, not less.
    fn lag(&self, highs: &[i64]) -> i64 {
        self.next.iter().zip(highs).map(|(&next, &high)| (high - next).max(0)).sum()
    }

    /// Every partition at its offset, to assign.
    fn assignment(&self, topic: &str) -> KafkaResult<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(self.next.len());
        for (p, &next) in self.next.iter().enumerate() {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(next))?;
        }
        Ok(tpl)
    }
}

impl std::fmt::Debug for Positions {
    /// `{partition: next offset, …}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.next.iter().enumerate()).finish()
    }
}

#[cfg(test)]
mod tests {
    use common::envelope::encode_event;
    use common::{CancelReason, Event, EventKind, Price};

    use super::*;

    fn event(seq: u64, kind: EventKind) -> Vec<u8> {
        event_of("ABC", seq, kind)
    }

    fn event_of(symbol: &str, seq: u64, kind: EventKind) -> Vec<u8> {
        let t = SymbolTable::default();
        let e = Event { cmd: OrderId(7), index: 0, symbol: t.lookup(symbol), seq, ts: Timestamp(5), kind };
        encode_event(&e, &t)
    }

    #[test]
    fn positions_go_on_per_partition() {
        let mut p = Positions::new(vec![10, 0, 7]);
        assert_eq!(p.len(), 3);
        assert_eq!(format!("{p:?}"), "{0: 10, 1: 0, 2: 7}");
        p.read(1, 0);
        p.read(1, 1);
        p.read(0, 10);
        // A partition it does not read (the topic grew after start) changes nothing.
        p.read(3, 50);
        p.read(-1, 50);
        assert_eq!(p.next, vec![11, 2, 7]);
        let tpl = p.assignment("order-events").unwrap();
        let at: Vec<(i32, Offset)> = tpl.elements().iter().map(|e| (e.partition(), e.offset())).collect();
        assert_eq!(at, vec![(0, Offset::Offset(11)), (1, Offset::Offset(2)), (2, Offset::Offset(7))]);
        assert!(tpl.elements().iter().all(|e| e.topic() == "order-events"));
        // Summed; a partition read past an older end counts 0, not less.
        assert_eq!(p.lag(&[11, 2, 7]), 0);
        assert_eq!(p.lag(&[15, 2, 9]), 6);
        assert_eq!(p.lag(&[15, 1, 9]), 6);
        // One partition: as before.
        let mut one = Positions::new(vec![4]);
        one.read(0, 4);
        assert_eq!((one.next.clone(), one.lag(&[9])), (vec![5], 4));
    }

    /// The consumer against librdkafka's mock broker with a two-partition topic: it starts at
    /// each partition's end, reads both, and after dozing takes each again where it left off.
    #[test]
    fn the_consumer_reads_every_partition_and_resumes_each_after_dozing() {
        use rdkafka::mocking::MockCluster;
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("order-events", 2, 1).unwrap();
        let producer: BaseProducer =
            ClientConfig::new().set("bootstrap.servers", cluster.bootstrap_servers()).create().unwrap();
        let level = |symbol: &str, seq: u64| {
            event_of(
                symbol,
                seq,
                EventKind::Level { side: Side::Buy, price: Price(100), qty: Qty(1), orders: 1 },
            )
        };
        let produce = |partition: i32, payload: Vec<u8>| {
            producer
                .send(BaseRecord::<(), _>::to("order-events").partition(partition).payload(&payload))
                .unwrap();
            producer.flush(Duration::from_secs(5)).unwrap();
        };
        // Before the consumer starts: never read.
        produce(0, level("ABC", 1));
        produce(1, level("DEF", 1));
        produce(1, level("DEF", 2));

        let table = SymbolTable::default();
        let (abc, def) = (table.lookup("ABC").unwrap(), table.lookup("DEF").unwrap());
        let metrics = ConsumerMetrics {
            lag: Histogram::with_opts(prometheus::HistogramOpts::new("l", "l")).unwrap(),
            offset_lag: IntGauge::new("o", "o").unwrap(),
            up: IntGauge::new("u", "u").unwrap(),
        };
        let config = KafkaConfig {
            brokers: cluster.bootstrap_servers(),
            topic: "order-events".into(),
            fetch_wait_ms: 5,
            chunk: 64,
            // No one sends a wake-up: it dozes, and takes its partitions again after RECHECK.
            wake_listen: Some("127.0.0.1:0".into()),
        };
        let (tx, mut rx) = mpsc::channel(64);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = spawn(config, table, tx, metrics.clone(), stop.clone()).unwrap();
        let mut positioned = false;
        while !positioned {
            match rx.blocking_recv().expect("the consumer runs") {
                FeedMsg::Positioned => positioned = true,
                FeedMsg::Status { up } => assert!(up, "the mock broker answers"),
                other => panic!("before Positioned: {other:?}"),
            }
        }
        // Reads until `n` events came (or `secs` passed), as (symbol, seq), sorted.
        let mut take = |n: usize, secs: u64| {
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut got = Vec::new();
            while got.len() < n && Instant::now() < deadline {
                match rx.try_recv() {
                    Ok(FeedMsg::Events(events)) => {
                        got.extend(events.into_iter().map(|e| (e.symbol.unwrap(), e.seq)))
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            got.sort();
            got
        };
        produce(1, level("DEF", 3));
        produce(0, level("ABC", 2));
        assert_eq!(take(2, 10), vec![(abc, 2), (def, 3)]);
        // Idle past IDLE: it gives up both partitions; meanwhile both move on.
        std::thread::sleep(IDLE * 3);
        produce(0, level("ABC", 3));
        // Two events in one message: a pack, as the matcher writes them.
        let mut pack = level("DEF", 4);
        assert!(common::envelope::pack_event(&mut pack, &level("DEF", 5)));
        produce(1, pack);
        assert_eq!(take(3, 10), vec![(abc, 3), (def, 4), (def, 5)]);
        // Nothing again, nothing more: no partition went back, none skipped ahead.
        assert_eq!(take(1, 2), vec![]);
        assert_eq!(metrics.offset_lag.get(), 0);
        assert_eq!(metrics.up.get(), 1);
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
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
            EventKind::Canceled {
                order_id: OrderId(1),
                side: Side::Sell,
                price: Some(Price(100)),
                qty: Qty(2),
                reason: CancelReason::Requested,
            },
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

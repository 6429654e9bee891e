//! The I/O thread: turns events into Redis writes and Kafka messages, in batches, and reports the
//! offsets whose outputs are persisted so the consumer commits them.
//!
//! It keeps what it needs to write absolute, idempotent values (an order's attributes and filled
//! quantity, each symbol's price levels); replayed events rebuild that state and write nothing.
//! Redis keys (README "Redis keys"): `order:<id>` hash, `fills:<id>` hash by trade id,
//! `trade:<account>:<client_order_id>` (first fill, `SET NX`), `client:<account>:<symbol>:<client_order_id>`
//! (`SET NX`), `book:<symbol>` (depth snapshot with its sequence), `trades:<symbol>` (stream whose
//! entry ids are sequence numbers: a re-add is skipped).

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::Sender;
use std::time::Duration;

use anyhow::Context as _;
use common::envelope::encode_event;
use common::{Event, EventKind, OrderId, OrderType, Price, Qty, Side, SymbolTable, TimeInForce};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

use super::http::Metrics;
use super::{now_ns, Config, Hops, Idle, Output, Stop};

/// Most events handled per batch (one Redis round trip, one wait for Kafka acks).
const BATCH: usize = 512;
/// Levels kept in each `book:<symbol>` snapshot.
const SNAPSHOT_DEPTH: usize = 50;

/// What the I/O thread remembers of an order.
struct OrderInfo {
    account: String,
    client_order_id: String,
    qty: Qty,
    filled: Qty,
    status: &'static str,
    resting_possible: bool,
}

/// One symbol's price levels, from `level` events.
#[derive(Default)]
struct Levels {
    bids: BTreeMap<i64, u64>,
    asks: BTreeMap<i64, u64>,
    seq: u64,
}

struct State<'a> {
    table: &'a SymbolTable,
    orders: HashMap<OrderId, OrderInfo>,
    levels: HashMap<String, Levels>,
    /// Last `trades:<symbol>` stream id written, per symbol (read from Redis on first use).
    stream_last: HashMap<String, u64>,
}

fn tif_str(t: TimeInForce) -> &'static str {
    match t {
        TimeInForce::Gtc => "gtc",
        TimeInForce::Ioc => "ioc",
        TimeInForce::Fok => "fok",
    }
}

/// A `trades:<symbol>` entry: symbol, sequence number (the entry id), fields.
type StreamEntry = (String, u64, Vec<(&'static str, String)>);

/// The writes of one batch.
#[derive(Default)]
struct Batch {
    pipe: redis::Pipeline,
    /// (topic, key, payload).
    kafka: Vec<(String, String, Vec<u8>)>,
    /// Next offset to commit, per partition.
    commits: HashMap<i32, i64>,
    /// Symbols whose book snapshot changed.
    books: Vec<String>,
    /// Orders of this batch's commands: their `persisted` hop is stamped once the batch is written.
    persisted: Vec<OrderId>,
    /// Stream entries to add.
    stream: Vec<StreamEntry>,
    /// The catch-up marker came in this batch: the matcher is current once the batch is written.
    caught_up: bool,
    writes: usize,
}

impl State<'_> {
    fn price(&self, symbol: &str, p: Price) -> String {
        self.table
            .lookup(symbol)
            .and_then(|id| self.table.get(id))
            .map_or(p.0.to_string(), |s| s.price_decimal(p).to_string())
    }

    fn qty(&self, symbol: &str, q: Qty) -> String {
        self.table
            .lookup(symbol)
            .and_then(|id| self.table.get(id))
            .map_or(q.0.to_string(), |s| s.qty_decimal(q).to_string())
    }

    /// Applies one event to the state and, unless replayed, queues its writes.
    fn event(&mut self, e: &Event, replay: bool, b: &mut Batch) {
        let symbol = e.symbol.and_then(|s| self.table.get(s)).map_or(String::new(), |s| s.name.clone());
        match e.kind {
            EventKind::Accepted {
                order_id,
                account,
                client_order_id,
                side,
                order_type,
                tif,
                post_only,
                price,
                qty,
            } => {
                let info = OrderInfo {
                    account: account.to_string(),
                    client_order_id: client_order_id.to_string(),
                    qty,
                    filled: Qty::ZERO,
                    status: "accepted",
                    resting_possible: order_type == OrderType::Limit && tif == TimeInForce::Gtc,
                };
                if !replay {
                    let key = format!("order:{order_id}");
                    let price = price.map(|p| self.price(&symbol, p)).unwrap_or_default();
                    b.pipe
                        .hset_multiple(
                            &key,
                            &[
                                ("order_id", order_id.to_string()),
                                ("symbol", symbol.clone()),
                                ("account", info.account.clone()),
                                ("client_order_id", info.client_order_id.clone()),
                                ("side", side.as_str().to_owned()),
                                (
                                    "type",
                                    if order_type == OrderType::Limit { "limit" } else { "market" }
                                        .to_owned(),
                                ),
                                ("time_in_force", tif_str(tif).to_owned()),
                                ("post_only", post_only.to_string()),
                                ("price", price),
                                ("qty", self.qty(&symbol, qty)),
                                ("filled_qty", self.qty(&symbol, Qty::ZERO)),
                                ("status", "accepted".to_owned()),
                            ],
                        )
                        .ignore();
                    let client = format!("client:{}:{symbol}:{}", info.account, info.client_order_id);
                    b.pipe.set_nx(client, order_id.to_string()).ignore();
                    b.writes += 2;
                }
                self.orders.insert(order_id, info);
            }
            EventKind::Rejected { order_id, account, client_order_id, reason, qty } => {
                if replay {
                    return;
                }
                let reason = serde_json::to_value(reason)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let key = format!("order:{order_id}");
                match client_order_id {
                    // A refused new order: it exists only as this rejection.
                    Some(cid) if order_id == e.cmd => {
                        b.pipe
                            .hset_multiple(
                                &key,
                                &[
                                    ("order_id", order_id.to_string()),
                                    ("symbol", symbol.clone()),
                                    ("account", account.to_string()),
                                    ("client_order_id", cid.to_string()),
                                    ("qty", self.qty(&symbol, qty)),
                                    ("filled_qty", "0".to_owned()),
                                    ("status", "rejected".to_owned()),
                                    ("reject_reason", reason),
                                ],
                            )
                            .ignore();
                        b.pipe
                            .set_nx(format!("client:{account}:{symbol}:{cid}"), order_id.to_string())
                            .ignore();
                    }
                    // A refused cancel or replace: noted on the order it named.
                    _ => {
                        b.pipe.hset(&key, "last_request_rejected", format!("{}:{reason}", e.cmd)).ignore();
                    }
                }
                b.writes += 1;
            }
            EventKind::Fill { fill, maker, taker, price, qty, .. } => {
                let trade_id = format!("{}-{fill}", e.cmd);
                for id in [maker, taker] {
                    let Some(info) = self.orders.get_mut(&id) else { continue };
                    info.filled = Qty(info.filled.0 + qty.0);
                    info.status = if info.filled >= info.qty { "filled" } else { "partially_filled" };
                    if replay {
                        continue;
                    }
                    let (status, filled, account, cid, first) = (
                        info.status,
                        info.filled,
                        info.account.clone(),
                        info.client_order_id.clone(),
                        info.filled == qty,
                    );
                    let price_s = self.price(&symbol, price);
                    let qty_s = self.qty(&symbol, qty);
                    let fill_json =
                        json!({"trade_id": trade_id, "price": price_s, "qty": qty_s, "ts": e.ts.0})
                            .to_string();
                    b.pipe.hset(format!("fills:{id}"), &trade_id, fill_json).ignore();
                    b.pipe
                        .hset_multiple(
                            format!("order:{id}"),
                            &[("filled_qty", self.qty(&symbol, filled)), ("status", status.to_owned())],
                        )
                        .ignore();
                    if first {
                        // The original lab's shape: the first fill of that client order id.
                        let lab = json!({
                            "order_id": cid,
                            "price": common::Decimal::parse(&price_s).map_or(0.0, |d| d.to_f64_lossy()),
                            "qty": common::Decimal::parse(&qty_s).map_or(serde_json::Value::Null, |d| d.to_lab_json()),
                            "ts": e.ts.0 as f64 / 1e9,
                        });
                        b.pipe.set_nx(format!("trade:{account}:{cid}"), lab.to_string()).ignore();
                    }
                    b.writes += 3;
                }
                if !replay {
                    let fields = vec![
                        ("trade_id", trade_id.clone()),
                        ("price", self.price(&symbol, price)),
                        ("qty", self.qty(&symbol, qty)),
                        ("maker_order_id", maker.to_string()),
                        ("taker_order_id", taker.to_string()),
                        ("ts", e.ts.0.to_string()),
                    ];
                    b.stream.push((symbol.clone(), e.seq, fields));
                    b.kafka.push(("trades".into(), symbol.clone(), encode_event(e, self.table)));
                }
            }
            EventKind::Canceled { order_id, qty, reason } => {
                if let Some(info) = self.orders.get_mut(&order_id) {
                    info.status = "canceled";
                    info.resting_possible = false;
                }
                if !replay {
                    let reason = serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    b.pipe
                        .hset_multiple(
                            format!("order:{order_id}"),
                            &[
                                ("status", "canceled".to_owned()),
                                ("canceled_qty", self.qty(&symbol, qty)),
                                ("cancel_reason", reason),
                            ],
                        )
                        .ignore();
                    b.writes += 1;
                }
            }
            EventKind::Replaced { order_id, price, qty, .. } => {
                if let Some(info) = self.orders.get_mut(&order_id) {
                    info.qty = Qty(info.filled.0 + qty.0);
                }
                if !replay {
                    b.pipe
                        .hset_multiple(
                            format!("order:{order_id}"),
                            &[("price", self.price(&symbol, price)), ("open_qty", self.qty(&symbol, qty))],
                        )
                        .ignore();
                    b.writes += 1;
                }
            }
            EventKind::Level { side, price, qty, .. } => {
                let levels = self.levels.entry(symbol.clone()).or_default();
                let map = if side == Side::Buy { &mut levels.bids } else { &mut levels.asks };
                if qty.is_zero() {
                    map.remove(&price.0);
                } else {
                    map.insert(price.0, qty.0);
                }
                levels.seq = e.seq;
                if !replay && !b.books.contains(&symbol) {
                    b.books.push(symbol.clone());
                }
            }
            EventKind::Status { halted, reference } => {
                if !replay {
                    b.pipe
                        .hset_multiple(
                            format!("symbol:{symbol}"),
                            &[("halted", halted.to_string()), ("reference", self.price(&symbol, reference))],
                        )
                        .ignore();
                }
            }
        }
        if !replay && !symbol.is_empty() {
            b.kafka.push(("order-events".into(), symbol, encode_event(e, self.table)));
        } else if !replay {
            b.kafka.push(("order-events".into(), String::new(), encode_event(e, self.table)));
        }
    }

    /// A command is done: settle the status of an order that rests, note hops and the offset.
    fn done(&mut self, id: OrderId, replay: bool, hops: Hops, b: &mut Batch) {
        if let Some(info) = self.orders.get_mut(&id) {
            if info.status == "accepted" && info.resting_possible {
                info.status = "resting";
                if !replay {
                    b.pipe.hset(format!("order:{id}"), "status", "resting").ignore();
                }
            }
            if !replay {
                let key = format!("order:{id}");
                if hops.gateway > 0 {
                    b.pipe.hset(&key, "hop_gateway_ns", hops.gateway).ignore();
                }
                b.pipe
                    .hset_multiple(
                        key,
                        &[
                            ("hop_published_ns", hops.published),
                            ("hop_consumed_ns", hops.consumed),
                            ("hop_matched_ns", hops.matched),
                        ],
                    )
                    .ignore();
                b.persisted.push(id);
            }
        }
        if !replay {
            let next = id.offset() as i64 + 1;
            let entry = b.commits.entry(i32::from(id.partition())).or_insert(next);
            *entry = (*entry).max(next);
        }
    }

    fn snapshot(&self, symbol: &str) -> String {
        let levels = self.levels.get(symbol);
        let side = |m: Option<&BTreeMap<i64, u64>>, best_high: bool| -> Vec<[String; 2]> {
            let Some(m) = m else { return Vec::new() };
            let row = |(p, q): (&i64, &u64)| [self.price(symbol, Price(*p)), self.qty(symbol, Qty(*q))];
            if best_high {
                m.iter().rev().take(SNAPSHOT_DEPTH).map(row).collect()
            } else {
                m.iter().take(SNAPSHOT_DEPTH).map(row).collect()
            }
        };
        json!({
            "symbol": symbol,
            "sequence": levels.map_or(0, |l| l.seq),
            "bids": side(levels.map(|l| &l.bids), true),
            "asks": side(levels.map(|l| &l.asks), false),
        })
        .to_string()
    }
}

/// Runs until `stop`; a fatal error stops every thread.
pub fn run(
    config: &Config,
    table: &SymbolTable,
    input: rtrb::Consumer<Output>,
    commits: Sender<(i32, i64)>,
    stop: &Stop,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result = rt.block_on(serve(config, table, input, commits, stop, metrics));
    if let Err(e) = &result {
        tracing::error!(error = %e, "I/O thread failed; stopping");
        stop.stop();
    }
    result
}

async fn serve(
    config: &Config,
    table: &SymbolTable,
    mut input: rtrb::Consumer<Output>,
    commits: Sender<(i32, i64)>,
    stop: &Stop,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let client = redis::Client::open(config.redis.as_str()).context("redis url")?;
    let mut redis = redis::aio::ConnectionManager::new(client).await.context("connecting to Redis")?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("message.timeout.ms", "10000")
        .create()
        .context("creating the Kafka producer")?;
    let mut state =
        State { table, orders: HashMap::new(), levels: HashMap::new(), stream_last: HashMap::new() };
    let mut idle = Idle::new(config.spin);
    while !stop.stopped() {
        let available = input.slots();
        if available == 0 {
            // The book thread left (a drain) and all it pushed is persisted: returning drops
            // `commits`, which tells the consumer to make its final commit.
            if input.is_abandoned() && input.slots() == 0 {
                break;
            }
            idle.wait();
            continue;
        }
        idle.reset();
        let mut batch = Batch::default();
        // One MULTI/EXEC: a reader sees a batch's order, fills, trade and book all or none.
        batch.pipe.atomic();
        let mut emitted = false;
        for _ in 0..available.min(BATCH) {
            let Ok(item) = input.pop() else { break };
            match item {
                Output::Event { event, replay } => {
                    emitted |= !replay;
                    state.event(&event, replay, &mut batch);
                }
                Output::Done { id, replay, hops } => {
                    state.done(id, replay, hops, &mut batch);
                }
                Output::CaughtUp => batch.caught_up = true,
            }
        }
        if !emitted && batch.commits.is_empty() {
            caught_up(batch.caught_up, metrics);
            continue;
        }
        persist(&mut state, &mut redis, &producer, &mut batch, config, stop, metrics).await?;
        if !batch.persisted.is_empty() {
            // The hop after the writes: one more small pipeline (its failure loses only a hop).
            let at = now_ns().to_string();
            let mut pipe = redis::pipe();
            for id in batch.persisted.drain(..) {
                pipe.hset(format!("order:{id}"), "hop_persisted_ns", &at).ignore();
            }
            if let Err(e) = pipe.query_async::<()>(&mut redis).await {
                tracing::warn!(error = %e, "could not record the persisted hop");
            }
        }
        for (p, next) in batch.commits.drain() {
            let _ = commits.send((p, next));
        }
        caught_up(batch.caught_up, metrics);
    }
    Ok(())
}

/// Marks the matcher current when the catch-up marker's batch is done.
fn caught_up(marker: bool, metrics: &Metrics) {
    if marker {
        metrics.caught_up.set(1);
        tracing::info!("caught up with the orders log: the book is current; ready");
    }
}

/// Writes a batch: Redis first (one pipelined transaction), then Kafka (waiting for every ack).
/// Retries until it succeeds: offsets are committed only after.
async fn persist(
    state: &mut State<'_>,
    redis: &mut redis::aio::ConnectionManager,
    producer: &FutureProducer,
    b: &mut Batch,
    config: &Config,
    stop: &Stop,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    // Retries wait for Redis or the broker to come back, unless the matcher is told to stop now:
    // then the batch is left unwritten and its offsets uncommitted, so the next start replays it.
    let give_up = || {
        anyhow::anyhow!(
            "stopped with a batch not yet persisted (its commands are replayed on the next start)"
        )
    };
    for symbol in std::mem::take(&mut b.books) {
        let snapshot = state.snapshot(&symbol);
        b.pipe.set(format!("book:{symbol}"), snapshot).ignore();
    }
    // Stream entries: ids are sequence numbers; skip what a previous run already added.
    for (symbol, seq, fields) in std::mem::take(&mut b.stream) {
        let last = match state.stream_last.get(&symbol) {
            Some(&last) => last,
            None => {
                let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                    .arg(format!("trades:{symbol}"))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(redis)
                    .await?;
                let last = newest.ids.first().and_then(|e| e.id.split('-').next()?.parse().ok()).unwrap_or(0);
                state.stream_last.insert(symbol.clone(), last);
                last
            }
        };
        if seq > last {
            b.pipe
                .cmd("XADD")
                .arg(format!("trades:{symbol}"))
                .arg("MAXLEN")
                .arg("~")
                .arg(10_000)
                .arg(format!("{seq}-0"))
                .arg(&fields)
                .ignore();
            state.stream_last.insert(symbol, seq);
        }
    }
    loop {
        match b.pipe.query_async::<()>(redis).await {
            Ok(()) => break,
            Err(_) if stop.stopped() => return Err(give_up()),
            Err(e) => {
                metrics.io_retries.inc();
                tracing::warn!(error = %e, "Redis write failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let topic =
        |t: &str| if t == "trades" { config.trades_topic.clone() } else { config.events_topic.clone() };
    let mut pending = Vec::with_capacity(b.kafka.len());
    for (t, key, payload) in &b.kafka {
        let name = topic(t);
        loop {
            let record = FutureRecord::to(&name).key(key.as_str()).payload(payload.as_slice());
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push((name.clone(), key.clone(), payload.clone(), delivery));
                    break;
                }
                Err(_) if stop.stopped() => return Err(give_up()),
                Err((e, _)) => {
                    tracing::warn!(error = %e, "Kafka queue full; waiting");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    for (name, key, payload, delivery) in pending {
        let mut outcome = delivery.await;
        loop {
            match outcome {
                Ok(Ok(_)) => break,
                _ if stop.stopped() => return Err(give_up()),
                _ => {
                    metrics.io_retries.inc();
                    tracing::warn!(topic = %name, "Kafka delivery failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let record = FutureRecord::to(&name).key(key.as_str()).payload(payload.as_slice());
                    outcome = match producer.send_result(record) {
                        Ok(d) => d.await,
                        Err(_) => continue,
                    };
                }
            }
        }
    }
    metrics.persisted_batches.inc();
    Ok(())
}

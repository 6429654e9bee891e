//! The I/O thread, the pipeline's sink: it pops events from the book thread's ring in batches,
//! turns each batch into one Redis transaction and a set of Kafka messages (`trades`: one per
//! fill; `order-events`: every event, packed — one message per partition per batch, one event a
//! line: [`common::envelope::pack_event`]), writes them — Redis first, then Kafka, waiting for every
//! acknowledgement — and then reports the batch's offsets to the consumer, which commits them.
//!
//! What it writes is absolute and idempotent (keys in [`super::keys`]; an order's filled quantity
//! and status and each depth snapshot come from the [`Projection`]; `SET NX` for first-only keys;
//! stream entry ids are sequence numbers), so a batch written twice — after a crash, or a retry —
//! changes nothing. Replayed events only update the projection.
//!
//! Exactly once on the topics: output partition *i* of `trades` and `order-events` holds the
//! events of `orders` partition *i*'s commands, in order. On start the thread reads the last
//! message of each output partition and emits to it only events past that one's last (`Outlet`), so a
//! command emitted again after a crash (its outputs written, its offset not yet committed) adds
//! nothing to the topics; Redis writes are idempotent anyway.
//!
//! A failed Kafka delivery is not simply sent again: the partitions are read back and only what
//! they do not hold yet is sent, in order (`write_kafka`).
//!
//! A failed Redis or Kafka call is retried after a pause for as long as it fails (`Retry`):
//! offsets are committed only once everything is written, so giving up would lose outputs. Only a
//! stop (the drain timed out, or another thread failed) ends the retries; the batch is then
//! replayed on the next start.

use std::collections::HashMap;
use std::future::Future;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use common::envelope::{encode_event, pack_event, unpack_events};
use common::kafka::Producer;
use common::{
    Event, EventKind, OrderId, OrderStatus, OrderType, Price, Qty, SymbolId, SymbolSpec, SymbolTable,
    TimeInForce, Timestamp, TradeId,
};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use serde_json::json;

use super::config::Config;
use super::keys;
use super::metrics::Metrics;
use super::ownership::Ownership;
use super::projection::{Change, Filled, Projection, Retired};
use super::ring::{now_ns, Hops, Idle, Output, Stop};
use super::snapshots::Writer;

/// Most events handled per batch (one Redis round trip, one wait for Kafka acks).
const BATCH: usize = 512;

/// Runs until `stop`, or until the book thread has left and everything it pushed is persisted;
/// a fatal error stops every thread. `projection` is empty, or restored from the snapshot the
/// book thread's engine was; `snapshots` writes the snapshots the book thread takes.
#[allow(clippy::too_many_arguments)]
pub fn run(
    config: &Config,
    table: &SymbolTable,
    projection: Projection,
    snapshots: Option<Writer>,
    owner: &Arc<Ownership>,
    input: rtrb::Consumer<Output>,
    commits: Sender<(i32, i64)>,
    stop: &Stop,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let result =
        rt.block_on(pump(config, table, projection, snapshots, owner, input, commits, stop, metrics));
    if let Err(e) = &result {
        tracing::error!(error = %e, "I/O thread failed; stopping");
        stop.stop();
    }
    result
}

/// The thread's loop: batch, persist, report the offsets (and, at a snapshot's marker, have the
/// snapshot written).
#[allow(clippy::too_many_arguments)]
async fn pump(
    config: &Config,
    table: &SymbolTable,
    projection: Projection,
    mut snapshots: Option<Writer>,
    owner: &Arc<Ownership>,
    mut input: rtrb::Consumer<Output>,
    commits: Sender<(i32, i64)>,
    stop: &Stop,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<()> {
    let client = redis::Client::open(config.redis.as_str()).context("redis url")?;
    let mut redis = redis::aio::ConnectionManager::new_with_config(client, super::redis_config())
        .await
        .context("connecting to Redis")?;
    let mut producer = producer(config, MESSAGE_TIMEOUT)?;
    let retry = Retry { stop, retries: &metrics.io_retries, pause: Duration::from_millis(200) };
    // The gateways' market-data consumers doze while nothing flows (`common::wake`).
    let waker = common::wake::Waker::new(&config.wake).context("opening the wake-up socket")?;
    let retention = (config.retention_secs > 0).then_some(config.retention_secs);
    let outlet = loop {
        match Outlet::read(config) {
            Ok(outlet) => break outlet,
            Err(e) => {
                retry.after("reading the last event of each output partition", &format!("{e:#}")).await?
            }
        }
    };
    if !outlet.last.is_empty() {
        tracing::info!(last = ?outlet.last, "output topics: emitting only past their last events");
    }
    // Alone, every partition is ours at generation 0 from the start; sharing, none until taken.
    let generation = if owner.is_shared() { u64::MAX } else { 0 };
    let generations = vec![generation; super::ownership::MAX_PARTITIONS as usize];
    let owner = owner.clone();
    let mut sink =
        Sink { table, projection, stream_last: HashMap::new(), retention, outlet, owner, generations };
    let mut idle = Idle::new(config.spin);
    // The `persisted` hops of the batch written last: they go with the next batch's transaction
    // (no round trip of their own while orders flow), or on their own once the ring is empty.
    let mut stamped = PersistedHops::default();
    while !stop.stopped() {
        // What this batch writes follows the ownership as it is now (`ownership`).
        sink.owner.io_tick();
        let available = input.slots();
        metrics.ring_out.set(available as i64);
        if available == 0 {
            if !stamped.is_empty() {
                stamped.write_alone(&mut redis).await;
                continue;
            }
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
        // Every command's result comes back (`ignore_errors`) and `Store::run` checks them: a
        // transaction retried after its reply was lost (it had gone through) re-adds stream
        // entries that exist, which Redis refuses — the only error a write here expects, the rest
        // being absolute — while any other error fails the batch, which is then retried.
        batch.pipe.ignore_errors();
        let mut emitted = false;
        for _ in 0..available.min(BATCH) {
            let Ok(item) = input.pop() else { break };
            match item {
                Output::Event { event, replay } => {
                    emitted |= !replay;
                    sink.event(&event, replay, &mut batch);
                }
                Output::Done { id, replay, hops } => sink.done(id, replay, hops, &mut batch),
                Output::CaughtUp => batch.caught_up = true,
                Output::Reset { partition, token } => {
                    let reset = sink.owner.take(token);
                    loop {
                        match sink.reset(config, partition, &reset) {
                            Ok(()) => break,
                            Err(e) => retry.after("taking over a partition", &format!("{e:#}")).await?,
                        }
                    }
                }
                // The batch ends here: the snapshot is written once all before it is.
                Output::Snapshot => {
                    batch.snapshot = true;
                    break;
                }
            }
        }
        if !emitted && batch.commits.is_empty() {
            caught_up(batch.caught_up, metrics);
            if let Some(w) = snapshots.as_mut().filter(|_| batch.snapshot) {
                w.marker(&sink.projection, metrics);
            }
            continue;
        }
        if sink.owner.expired(super::leases::unix_ms()) {
            anyhow::bail!(
                "the partition leases were not renewed in time: stopping before another matcher takes \
                 them over (the supervisor starts this one again)"
            );
        }
        // Before the batch's expiries, which `write_redis` adds last.
        stamped.join(&mut batch.pipe);
        let started = Instant::now();
        sink.write_redis(&mut redis, &mut batch, &retry).await?;
        metrics.redis_write.observe(started.elapsed().as_secs_f64());
        if !batch.kafka.is_empty() {
            let started = Instant::now();
            write_kafka(&mut producer, &batch.kafka, config, &mut sink.outlet, &retry).await?;
            metrics.kafka_write.observe(started.elapsed().as_secs_f64());
            if let Some(w) = &waker {
                w.wake();
            }
        }
        metrics.persisted_batches.inc();
        let persisted = now_ns();
        measure_hops(&mut batch, persisted, metrics);
        stamped.stamp(&mut batch.persisted, persisted);
        for (p, next) in batch.commits.drain() {
            let _ = commits.send((p, next));
        }
        caught_up(batch.caught_up, metrics);
        if let Some(w) = snapshots.as_mut().filter(|_| batch.snapshot) {
            w.marker(&sink.projection, metrics);
        }
    }
    if let Some(w) = snapshots.as_mut() {
        w.finish();
    }
    Ok(())
}

/// The `hop_persisted_ns` of orders whose batch is written, not yet in Redis.
#[derive(Default)]
struct PersistedHops {
    /// One `HSET` per order.
    writes: Vec<redis::Cmd>,
}

impl PersistedHops {
    /// The orders `ids` (drained) were persisted at `at` (ns).
    fn stamp(&mut self, ids: &mut Vec<OrderId>, at: u64) {
        let at = at.to_string();
        for id in ids.drain(..) {
            let mut set = redis::cmd("HSET");
            set.arg(keys::order(id)).arg("hop_persisted_ns").arg(&at);
            self.writes.push(set);
        }
    }

    /// True when there is nothing to write.
    fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Adds the stamps to the next batch's transaction, after its own commands and before the
    /// expiries `write_redis` adds last (a stamp is absolute: written again with a retried batch,
    /// it changes nothing).
    fn join(&mut self, pipe: &mut redis::Pipeline) {
        for set in self.writes.drain(..) {
            pipe.add_command(set);
        }
    }

    /// Writes the stamps by themselves (nothing else to send them with); a failure loses only the
    /// hops.
    async fn write_alone(&mut self, redis: &mut impl Store) {
        let mut pipe = redis::pipe();
        self.join(&mut pipe);
        if let Err(e) = redis.run(&pipe).await {
            tracing::warn!(error = %e, "could not record the persisted hop");
        }
    }
}

/// Records the hops of a written batch's emitted commands, persisted at `persisted` (ns).
fn measure_hops(batch: &mut Batch, persisted: u64, metrics: &Metrics) {
    for hops in batch.hops.drain(..) {
        metrics.observe_hops(&hops, persisted);
    }
}

/// Marks the matcher current when the catch-up marker's batch is done.
fn caught_up(marker: bool, metrics: &Metrics) {
    if marker {
        metrics.caught_up.set(1);
        tracing::info!("caught up with the orders log: the book is current; ready");
    }
}

/// What the sink keeps from batch to batch.
struct Sink<'a> {
    /// Symbol names and decimals.
    table: &'a SymbolTable,
    /// Open orders and depth, from every event, replayed or not.
    projection: Projection,
    /// The last `trades:<symbol>` entry written, per symbol (read from Redis on first use), so
    /// an entry a previous run added is not added again.
    stream_last: HashMap<SymbolId, u64>,
    /// Seconds an ended order's keys stay in Redis (`None`: for ever).
    retention: Option<u64>,
    /// What the output topics already hold.
    outlet: Outlet,
    /// Which partitions are ours.
    owner: Arc<Ownership>,
    /// Per partition: the ownership generation it was taken over under (its [`Output::Reset`]
    /// came through). Its events are written while that is its generation now; others are stale
    /// (from before it moved, or from before it came back) and dropped. `u64::MAX`: never.
    generations: Vec<u64>,
}

/// Where each output partition's log ends: the `(command id, event index)` of its last message,
/// for the partitions that had one at start. An event at or before it is on the topic already.
#[derive(Default)]
struct Outlet {
    /// (topic, partition) → the last event's (command id, index).
    last: HashMap<(Topic, i32), (u64, u32)>,
    /// Each topic's partition count, if it has fewer than `orders` (a run directory from before
    /// the topics were partitioned; Tansu cannot add partitions): command partition *i* goes to
    /// *i* mod the count, and that topic is written at least once, not exactly once.
    fewer: HashMap<Topic, i32>,
    /// The reader, kept for partitions taken over later.
    reader: Option<rdkafka::consumer::BaseConsumer>,
}

impl Outlet {
    /// Reads the last message of every partition of both output topics.
    fn read(config: &Config) -> anyhow::Result<Outlet> {
        let reader = Outlet::reader(config)?;
        let (last, fewer) = Outlet::ends(&reader, config, None)?;
        Ok(Outlet { last, fewer, reader: Some(reader) })
    }

    /// A consumer for reading the topics' last messages (no group joined, nothing committed).
    fn reader(config: &Config) -> anyhow::Result<rdkafka::consumer::BaseConsumer> {
        ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            // Required by librdkafka; never joined (assign) nor committed.
            .set("group.id", format!("{}-outlet", config.group))
            .set("enable.auto.commit", "false")
            .set("socket.timeout.ms", "3000")
            // Each read is one message that is there: no reason to let the broker hold a fetch.
            .set("fetch.wait.max.ms", "5")
            .create()
            .context("creating the output topics' reader")
    }

    /// The last events of every output partition (`only`: of that command partition's), and the
    /// topics with fewer partitions than `orders`.
    #[allow(clippy::type_complexity)]
    fn ends(
        consumer: &rdkafka::consumer::BaseConsumer,
        config: &Config,
        only: Option<i32>,
    ) -> anyhow::Result<(HashMap<(Topic, i32), (u64, u32)>, HashMap<Topic, i32>)> {
        use rdkafka::consumer::Consumer;
        use rdkafka::Message;
        let count = |name: &str| -> anyhow::Result<i32> {
            let md = consumer.fetch_metadata(Some(name), Duration::from_secs(5))?;
            let partitions = md.topics().first().map_or(0, |t| t.partitions().len()) as i32;
            anyhow::ensure!(partitions > 0, "topic {name} has no partitions (not created yet?)");
            Ok(partitions)
        };
        let orders = count(&config.orders_topic)?;
        let (mut last, mut fewer) = (HashMap::new(), HashMap::new());
        for (topic, name) in [(Topic::Trades, &config.trades_topic), (Topic::Events, &config.events_topic)] {
            let partitions = count(name)?;
            if partitions < orders {
                tracing::warn!(
                    topic = %name,
                    partitions,
                    orders,
                    "fewer partitions than the orders topic: written at least once, not exactly once \
                     (a fresh run directory creates them partitioned like orders)"
                );
                fewer.insert(topic, partitions);
                continue;
            }
            for p in (0..partitions).filter(|p| only.is_none_or(|o| o == *p)) {
                let (low, high) = consumer.fetch_watermarks(name, p, Duration::from_secs(5))?;
                if high <= low {
                    continue;
                }
                let mut tpl = rdkafka::TopicPartitionList::new();
                tpl.add_partition_offset(name, p, rdkafka::Offset::Offset(high - 1))?;
                consumer.assign(&tpl)?;
                let deadline = Instant::now() + Duration::from_secs(10);
                let message = loop {
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "no message at {name}/{p} offset {}",
                        high - 1
                    );
                    match consumer.poll(Duration::from_millis(200)) {
                        Some(Ok(m)) if m.partition() == p && m.topic() == name.as_str() => {
                            break m.payload().map(<[u8]>::to_vec)
                        }
                        // A connection error the idle reader kept from an outage: read on.
                        Some(Err(e)) => tracing::debug!(error = %e, "reading {name}/{p}"),
                        _ => {}
                    }
                };
                let id = message.as_deref().and_then(event_position).with_context(|| {
                    format!(
                        "the last message of {name}/{p} names no event (`event_id` \"<command>-<index>\")"
                    )
                })?;
                last.insert((topic, p), id);
            }
        }
        consumer.unassign()?;
        Ok((last, fewer))
    }

    /// The last events of command partition `p`'s output partitions now (the reader made on first
    /// use).
    fn ends_now(&mut self, config: &Config, p: i32) -> anyhow::Result<HashMap<(Topic, i32), (u64, u32)>> {
        if self.reader.is_none() {
            self.reader = Some(Outlet::reader(config)?);
        }
        let reader = self.reader.as_ref().context("the output topics' reader")?;
        Ok(Outlet::ends(reader, config, Some(p))?.0)
    }

    /// Partition `p` was taken over: what the topics hold of it now.
    fn reread(&mut self, config: &Config, p: i32) -> anyhow::Result<()> {
        let fresh = self.ends_now(config, p)?;
        self.last.retain(|(_, q), _| *q != p);
        self.last.extend(fresh);
        Ok(())
    }

    /// Of `messages` (a batch, in the order sent), the ones not on their topics now: past the last
    /// event each of their partitions holds (a partition's messages land as a prefix: the producer
    /// is gapless). On a topic with fewer partitions, whose events of several command partitions
    /// share one (not comparable), the `failed` ones.
    fn unsent(
        &mut self,
        config: &Config,
        messages: &[(Topic, i32, String, Vec<u8>)],
        failed: &[usize],
    ) -> anyhow::Result<Vec<usize>> {
        let mut partitions: Vec<i32> = messages.iter().map(|m| m.1).collect();
        partitions.sort_unstable();
        partitions.dedup();
        let mut tails = HashMap::new();
        for p in partitions {
            tails.extend(self.ends_now(config, p)?);
        }
        Ok((0..messages.len())
            .filter(|i| {
                let (t, p, _, payload) = &messages[*i];
                if self.fewer.contains_key(t) {
                    return failed.contains(i);
                }
                match (tails.get(&(*t, *p)), event_position(payload)) {
                    (Some(tail), Some(at)) => at > *tail,
                    _ => true,
                }
            })
            .collect())
    }

    /// The partition of `topic` that command partition `p`'s events go to.
    fn partition(&self, topic: Topic, p: i32) -> i32 {
        self.fewer.get(&topic).map_or(p, |&n| p % n)
    }

    /// True if `e` is on `topic` already (at or before its partition's last message at start).
    /// Past it, the partition is forgotten: everything after is new.
    fn holds(&mut self, topic: Topic, e: &Event) -> bool {
        let key = (topic, i32::from(e.cmd.partition()));
        match self.last.get(&key) {
            Some(&last) if (e.cmd.0, e.index) <= last => true,
            Some(_) => {
                self.last.remove(&key);
                false
            }
            None => false,
        }
    }
}

/// The `(command id, index)` of a message's last event (its `event_id`, `"<command>-<index>"`).
fn event_position(payload: &[u8]) -> Option<(u64, u32)> {
    let v: serde_json::Value = serde_json::from_slice(unpack_events(payload).last()?).ok()?;
    let (cmd, index) = v.get("event_id")?.as_str()?.split_once('-')?;
    Some((cmd.parse().ok()?, index.parse().ok()?))
}

/// The output topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Topic {
    /// One message per fill.
    Trades,
    /// Every event.
    Events,
}

/// A `trades:<symbol>` entry to add: symbol, sequence number (the entry id), fields.
type StreamEntry = (SymbolId, u64, Vec<(&'static str, String)>);

/// The writes of one batch.
#[derive(Default)]
struct Batch {
    /// The Redis transaction.
    pipe: redis::Pipeline,
    /// (topic, partition, key, payload).
    kafka: Vec<(Topic, i32, String, Vec<u8>)>,
    /// Per `order-events` partition: the index in `kafka` of the pack still taking events.
    packs: HashMap<i32, usize>,
    /// Next offset to commit, per partition.
    commits: HashMap<i32, i64>,
    /// Symbols whose depth snapshot changed.
    books: Vec<SymbolId>,
    /// Orders of this batch's commands: their `persisted` hop is stamped once the batch is written.
    persisted: Vec<OrderId>,
    /// The hops of this batch's emitted commands (replays have none): `matcher_hop_seconds` once
    /// the batch is written.
    hops: Vec<Hops>,
    /// Stream entries to add.
    stream: Vec<StreamEntry>,
    /// The catch-up marker came in this batch: the matcher is current once the batch is written.
    caught_up: bool,
    /// A snapshot's marker ended this batch: write the snapshot once the batch is written.
    snapshot: bool,
    /// Keys of ended orders, to expire at the end of the transaction (after this batch's last
    /// write to them: a write after the `EXPIRE` could create a key with no expiry).
    expire: Vec<String>,
}

/// A price as the symbol's decimal (raw ticks for an event with no symbol).
fn price(spec: Option<&SymbolSpec>, p: Price) -> String {
    spec.map_or_else(|| p.0.to_string(), |s| s.price_decimal(p).to_string())
}

/// A quantity as the symbol's decimal (raw lots for an event with no symbol).
fn qty(spec: Option<&SymbolSpec>, q: Qty) -> String {
    spec.map_or_else(|| q.0.to_string(), |s| s.qty_decimal(q).to_string())
}

/// Adds order `id` to its account's recent orders, keeping the newest [`keys::RECENT_KEPT`].
fn recent(account: &str, id: OrderId, at: Timestamp, b: &mut Batch) {
    let key = keys::recent(account);
    b.pipe.zadd(&key, id.to_string(), at.0 / 1_000_000);
    b.pipe.zremrangebyrank(key, 0, -(keys::RECENT_KEPT + 1));
}

impl<'a> Sink<'a> {
    /// A sink with nothing written yet, mirroring the default duplicate window.
    #[cfg(test)]
    fn new(table: &'a SymbolTable, retention: Option<u64>) -> Sink<'a> {
        Sink {
            table,
            projection: Projection::default(),
            stream_last: HashMap::new(),
            retention,
            outlet: Outlet::default(),
            owner: Arc::new(Ownership::all()),
            generations: vec![0; super::ownership::MAX_PARTITIONS as usize],
        }
    }

    /// Applies one event to the projection and, unless replayed, queues its writes.
    fn event(&mut self, e: &Event, replay: bool, b: &mut Batch) {
        if !self.writes(e.cmd) {
            return;
        }
        let change = self.projection.apply(e);
        self.retire(replay, b);
        if replay {
            return;
        }
        let spec = e.symbol.and_then(|s| self.table.get(s));
        let symbol = spec.map_or("", |s| s.name.as_str());
        match e.kind {
            EventKind::Accepted {
                order_id,
                account,
                client_order_id,
                side,
                order_type,
                tif,
                post_only,
                price: limit,
                qty: ordered,
            } => {
                b.pipe.hset_multiple(
                    keys::order(order_id),
                    &[
                        ("order_id", order_id.to_string()),
                        ("symbol", symbol.to_owned()),
                        ("account", account.to_string()),
                        ("client_order_id", client_order_id.to_string()),
                        ("side", side.as_str().to_owned()),
                        ("type", order_type.as_str().to_owned()),
                        ("time_in_force", tif.as_str().to_owned()),
                        ("post_only", post_only.to_string()),
                        ("price", limit.map(|p| price(spec, p)).unwrap_or_default()),
                        ("qty", qty(spec, ordered)),
                        ("filled_qty", qty(spec, Qty::ZERO)),
                        ("status", OrderStatus::Accepted.as_str().to_owned()),
                        ("entered_ns", e.ts.0.to_string()),
                    ],
                );
                // The newest accepted order with this client id (the book refuses a reuse while
                // the first is open or in its window); a plain `SET` also clears an expiry.
                let client = keys::client(account.as_str(), symbol, client_order_id.as_str());
                b.pipe.set(client, order_id.to_string());
                recent(account.as_str(), order_id, e.ts, b);
                if order_type == OrderType::Limit && tif == TimeInForce::Gtc {
                    b.pipe.sadd(keys::open(account.as_str()), order_id.to_string());
                }
            }
            EventKind::Rejected { order_id, account, client_order_id, reason, qty: refused } => {
                match client_order_id {
                    // A refused new order: it exists only as this rejection.
                    Some(cid) if order_id == e.cmd => {
                        b.pipe.hset_multiple(
                            keys::order(order_id),
                            &[
                                ("order_id", order_id.to_string()),
                                ("symbol", symbol.to_owned()),
                                ("account", account.to_string()),
                                ("client_order_id", cid.to_string()),
                                ("qty", qty(spec, refused)),
                                ("filled_qty", "0".to_owned()),
                                ("status", OrderStatus::Rejected.as_str().to_owned()),
                                ("reject_reason", reason.as_str().to_owned()),
                                ("entered_ns", e.ts.0.to_string()),
                            ],
                        );
                        // Only if no order holds the id (a duplicate's first copy keeps it).
                        let client = keys::client(account.as_str(), symbol, cid.as_str());
                        let mut set = redis::cmd("SET");
                        set.arg(client).arg(order_id.to_string()).arg("NX");
                        if let Some(secs) = self.retention {
                            set.arg("EX").arg(secs);
                        }
                        b.pipe.add_command(set);
                        recent(account.as_str(), order_id, e.ts, b);
                        b.expire.push(keys::order(order_id));
                    }
                    // A refused cancel or replace: noted on the order it named, which expires
                    // again if it has ended (or never existed).
                    _ => {
                        let note = format!("{}:{}", e.cmd, reason.as_str());
                        b.pipe.hset(keys::order(order_id), "last_request_rejected", note);
                        if self.projection.order(order_id).is_none() {
                            b.expire.push(keys::order(order_id));
                        }
                    }
                }
            }
            EventKind::Fill { fill, maker, taker, price: at, qty: traded, .. } => {
                let trade_id = TradeId { cmd: e.cmd, index: fill }.to_string();
                if let Change::Fill { maker: m, taker: t } = change {
                    for side in [m, t].into_iter().flatten() {
                        self.fill(e, spec, &trade_id, at, traded, &side, b);
                    }
                }
                let fields = vec![
                    ("trade_id", trade_id),
                    ("price", price(spec, at)),
                    ("qty", qty(spec, traded)),
                    ("maker_order_id", maker.to_string()),
                    ("taker_order_id", taker.to_string()),
                    ("ts", e.ts.0.to_string()),
                ];
                if let Some(symbol) = e.symbol {
                    b.stream.push((symbol, e.seq, fields));
                }
                self.publish(Topic::Trades, e, symbol, b);
            }
            EventKind::Canceled { order_id, qty: open, reason, .. } => {
                b.pipe.hset_multiple(
                    keys::order(order_id),
                    &[
                        ("status", OrderStatus::Canceled.as_str().to_owned()),
                        ("canceled_qty", qty(spec, open)),
                        ("cancel_reason", reason.as_str().to_owned()),
                    ],
                );
                if let Change::Canceled(account) = change {
                    b.pipe.srem(keys::open(account.as_str()), order_id.to_string());
                }
            }
            EventKind::Replaced { order_id, price: limit, qty: open, .. } => {
                b.pipe.hset_multiple(
                    keys::order(order_id),
                    &[
                        ("price", price(spec, limit)),
                        // The order's quantity is now what it filled plus its new open quantity
                        // (the front works the open quantity out from the two).
                        ("qty", qty(spec, self.projection.order(order_id).map_or(open, |o| o.qty))),
                    ],
                );
            }
            EventKind::Level { .. } => {
                if let Change::Levels(symbol) = change {
                    if !b.books.contains(&symbol) {
                        b.books.push(symbol);
                    }
                }
            }
            EventKind::Status { halted, reference } => {
                b.pipe.hset_multiple(
                    keys::symbol(symbol),
                    &[("halted", halted.to_string()), ("reference", price(spec, reference))],
                );
            }
        }
        self.publish(Topic::Events, e, symbol, b);
    }

    /// One order's side of a fill: the fill, the order's filled quantity and status, and the
    /// original lab's `trade:` key on its first fill.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &self,
        e: &Event,
        spec: Option<&SymbolSpec>,
        trade_id: &str,
        at: Price,
        traded: Qty,
        side: &Filled,
        b: &mut Batch,
    ) {
        let (price_s, qty_s) = (price(spec, at), qty(spec, traded));
        let fill = json!({"trade_id": trade_id, "price": price_s, "qty": qty_s, "ts": e.ts.0}).to_string();
        b.pipe.hset(keys::fills(side.order_id), trade_id, fill);
        b.pipe.hset_multiple(
            keys::order(side.order_id),
            &[("filled_qty", qty(spec, side.filled)), ("status", side.status.as_str().to_owned())],
        );
        if side.status == OrderStatus::Filled {
            b.pipe.srem(keys::open(side.account.as_str()), side.order_id.to_string());
        }
        if side.first {
            let cid = side.client_order_id.as_str();
            let lab = json!({
                "order_id": cid,
                "price": common::Decimal::parse(&price_s).map_or(0.0, |d| d.to_f64_lossy()),
                "qty": common::Decimal::parse(&qty_s).map_or(serde_json::Value::Null, |d| d.to_lab_json()),
                "ts": e.ts.0 as f64 / 1e9,
            });
            b.pipe.set_nx(keys::trade(side.account.as_str(), cid), lab.to_string());
        }
    }

    /// A command is done: settle the status of an order that rests, note hops and the offset.
    fn done(&mut self, id: OrderId, replay: bool, hops: Hops, b: &mut Batch) {
        if !self.writes(id) {
            return;
        }
        let status = self.projection.done(id);
        self.retire(replay, b);
        if replay {
            return;
        }
        b.hops.push(hops);
        if let Some(status) = status {
            // One command for the order's status and its hops so far (Redis's cost is mostly per
            // command: three `HSET`s here were ~2 of the ~20 commands an order took).
            let mut set = redis::cmd("HSET");
            set.arg(keys::order(id));
            if status == OrderStatus::Resting {
                set.arg("status").arg(status.as_str());
            }
            if hops.gateway > 0 {
                set.arg("hop_gateway_ns").arg(hops.gateway);
            }
            set.arg("hop_published_ns").arg(hops.published);
            set.arg("hop_consumed_ns").arg(hops.consumed);
            set.arg("hop_matched_ns").arg(hops.matched);
            b.pipe.add_command(set);
            b.persisted.push(id);
        }
        let next = id.offset() as i64 + 1;
        let entry = b.commits.entry(i32::from(id.partition())).or_insert(next);
        *entry = (*entry).max(next);
    }

    /// True if command `id`'s partition is ours, under the generation it was taken over in.
    #[inline]
    fn writes(&self, id: OrderId) -> bool {
        let p = i32::from(id.partition());
        self.owner.owns(p)
            && self.generations.get(usize::from(id.partition())) == Some(&self.owner.generation(p))
    }

    /// Partition `p` was taken over (reset `token`): the projection forgets what it held of it
    /// and takes the snapshot's part, the topics' ends are read again, and its events are
    /// written from now on.
    fn reset(&mut self, config: &Config, p: i32, reset: &super::ownership::Reset) -> anyhow::Result<()> {
        // The topics first: a failure leaves the projection as it was, for the retry.
        self.outlet.reread(config, p)?;
        let symbols: Vec<SymbolId> = reset.symbols.iter().map(|&s| SymbolId(s)).collect();
        self.projection.forget_partition(p, &symbols);
        if let Some(bytes) = &reset.projection {
            let windows = reset.windows.iter().map(|(s, w)| (*s, w.as_slice()));
            let snapshot = Projection::restore(bytes, windows, self.projection.window())
                .map_err(|e| anyhow::anyhow!("partition {p}'s snapshot projection: {e}"))?;
            self.projection.adopt(snapshot, p, &symbols);
        }
        for s in &symbols {
            self.stream_last.remove(s);
        }
        if let Some(g) = usize::try_from(p).ok().and_then(|i| self.generations.get_mut(i)) {
            *g = reset.generation;
        }
        tracing::info!(
            partition = p,
            symbols = symbols.len(),
            open_orders = self.projection.orders(),
            "partition taken over"
        );
        Ok(())
    }

    /// Queues `e` for `topic`, on its command's partition, unless the topic holds it already: a
    /// message of its own on `trades`, into its partition's pack on `order-events` (a pack is
    /// keyed by its first event's symbol).
    fn publish(&mut self, topic: Topic, e: &Event, symbol: &str, b: &mut Batch) {
        if self.outlet.holds(topic, e) {
            return;
        }
        let partition = self.outlet.partition(topic, i32::from(e.cmd.partition()));
        let encoded = encode_event(e, self.table);
        if topic == Topic::Events {
            if let Some(&i) = b.packs.get(&partition) {
                if pack_event(&mut b.kafka[i].3, &encoded) {
                    return;
                }
            }
            b.packs.insert(partition, b.kafka.len());
        }
        b.kafka.push((topic, partition, symbol.to_owned(), encoded));
    }

    /// Queues the expiry of what the projection retired (replayed: already done by the run that
    /// emitted it).
    fn retire(&mut self, replay: bool, b: &mut Batch) {
        let table = self.table;
        let retention = self.retention.filter(|_| !replay);
        for retired in self.projection.retired() {
            let Some(secs) = retention else { continue };
            match retired {
                Retired::Ended { order_id, account, client_order_id } => {
                    b.expire.push(keys::order(order_id));
                    b.expire.push(keys::fills(order_id));
                    b.expire.push(keys::trade(account.as_str(), client_order_id.as_str()));
                }
                // In command order, not at the end of the transaction: the id may be accepted
                // again later in this batch, and that order's `SET` must clear this expiry.
                Retired::Evicted { symbol, account, client_order_id } => {
                    let name = table.get(symbol).map_or("", |s| s.name.as_str());
                    let key = keys::client(account.as_str(), name, client_order_id.as_str());
                    b.pipe.expire(key, secs as i64);
                }
            }
        }
    }

    /// A symbol's depth snapshot: `{"symbol", "sequence", "bids", "asks"}`, decimals as strings.
    fn snapshot(&self, symbol: SymbolId) -> String {
        let spec = self.table.get(symbol);
        let levels = self.projection.levels(symbol);
        let row = |(p, q): (Price, Qty)| [price(spec, p), qty(spec, q)];
        let bids: Vec<_> =
            levels.map(|l| l.best_bids(keys::BOOK_DEPTH).map(row).collect()).unwrap_or_default();
        let asks: Vec<_> =
            levels.map(|l| l.best_asks(keys::BOOK_DEPTH).map(row).collect()).unwrap_or_default();
        json!({
            "symbol": spec.map_or("", |s| s.name.as_str()),
            "sequence": levels.map_or(0, |l| l.seq),
            "bids": bids,
            "asks": asks,
        })
        .to_string()
    }

    /// The Redis half of a batch: depth snapshots and new `trades:<symbol>` entries join the
    /// batch's transaction, which is written once; every call is retried the same way.
    async fn write_redis(
        &mut self,
        redis: &mut impl Store,
        b: &mut Batch,
        retry: &Retry<'_>,
    ) -> anyhow::Result<()> {
        for symbol in std::mem::take(&mut b.books) {
            let name = self.table.get(symbol).map_or("", |s| s.name.as_str());
            b.pipe.set(keys::book(name), self.snapshot(symbol));
        }
        // Stream entries: ids are sequence numbers; skip what a previous run already added.
        for (symbol, seq, fields) in std::mem::take(&mut b.stream) {
            let key = keys::trades(self.table.get(symbol).map_or("", |s| s.name.as_str()));
            let last = match self.stream_last.get(&symbol) {
                Some(&last) => last,
                None => loop {
                    match redis.newest_stream_seq(&key).await {
                        Ok(last) => break last,
                        Err(e) => retry.after("reading the newest trades entry", &e).await?,
                    }
                },
            };
            if seq > last {
                b.pipe
                    .cmd("XADD")
                    .arg(key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(keys::TRADES_KEPT)
                    .arg(keys::stream_id(seq))
                    .arg(&fields);
            }
            self.stream_last.insert(symbol, seq.max(last));
        }
        if let Some(secs) = self.retention {
            for key in b.expire.drain(..) {
                b.pipe.expire(key, secs as i64);
            }
        }
        loop {
            match redis.run(&b.pipe).await {
                Ok(()) => return Ok(()),
                Err(e) => retry.after("Redis write", &e).await?,
            }
        }
    }
}

/// How long librdkafka tries to deliver a message before it reports the delivery failed: never
/// (0). A message that times out leaves a gap that the gapless guarantee does not cover — the
/// producer skips it and sends the later ones (librdkafka's INTRODUCTION.md, "Message timeout
/// considerations") — so a broker that is down is waited for instead, as long as the matcher is
/// not stopping ([`delivered`]). A broker's permanent error then stops the producer (gapless);
/// local failures (a refusal at enqueue, a purge) are handled in [`write_kafka`].
const MESSAGE_TIMEOUT: Duration = Duration::ZERO;

/// After this long without a delivery report, the I/O thread says that it is waiting for the
/// broker (once per batch) and counts a retry.
const SLOW_DELIVERY: Duration = Duration::from_secs(10);

/// The output producer: idempotent, and gapless — a broker's permanent error stops the producer
/// rather than let a later message of its partition land, so (with no timeout) what a failed
/// batch left on a partition is a prefix of what it sent there.
/// `timeout`: `message.timeout.ms` ([`MESSAGE_TIMEOUT`]; tests time out on purpose).
fn producer(config: &Config, timeout: Duration) -> anyhow::Result<Producer> {
    Producer::create(
        ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("enable.gapless.guarantee", "true")
            .set("acks", "all")
            .set("linger.ms", config.linger_ms.to_string())
            .set("message.timeout.ms", timeout.as_millis().to_string()),
    )
    .context("creating the Kafka producer")
}

/// Writes a batch's Kafka messages, in order per partition, each exactly once.
///
/// If any delivery fails, the failed messages are not simply sent again: a message reported
/// failed may be on the topic all the same (its acknowledgement lost), and one sent again after
/// later ones landed would be out of order. So after a failure it reads what each of the batch's
/// partitions ends with now and sends, in order, only the messages past that (what landed is a
/// prefix: [`producer`]). A producer that failed for good is replaced. Topics with fewer
/// partitions than `orders` (at least once, [`Outlet`]) get their failed messages again.
async fn write_kafka(
    producer: &mut Producer,
    messages: &[(Topic, i32, String, Vec<u8>)],
    config: &Config,
    outlet: &mut Outlet,
    retry: &Retry<'_>,
) -> anyhow::Result<()> {
    let topic = |t: Topic| match t {
        Topic::Trades => config.trades_topic.as_str(),
        Topic::Events => config.events_topic.as_str(),
    };
    let mut todo: Vec<usize> = (0..messages.len()).collect();
    loop {
        let mut pending = Vec::with_capacity(todo.len());
        // Messages the producer refused because it failed for good: never sent.
        let mut refused = &todo[todo.len()..];
        let mut error = String::new();
        'sending: for (n, &i) in todo.iter().enumerate() {
            let (t, partition, key, payload) = &messages[i];
            loop {
                let record =
                    FutureRecord::to(topic(*t)).partition(*partition).key(key.as_str()).payload(payload);
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push((i, delivery));
                        break;
                    }
                    Err(_) if retry.stop.stopped() => return Err(retry.give_up()),
                    Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                        tracing::warn!("Kafka queue full; waiting");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    // Refused for good (a producer that failed for good refuses everything): this
                    // one and the rest are not sent; a later one must not land before this one.
                    Err(e) => {
                        refused = &todo[n..];
                        error = e.to_string();
                        break 'sending;
                    }
                }
            }
        }
        let mut failed = Vec::new();
        let started = Instant::now();
        for (i, delivery) in pending {
            match delivered(delivery, started, producer, retry).await? {
                Ok(()) => {}
                Err(e) => {
                    if failed.is_empty() {
                        error = e;
                    }
                    failed.push(i);
                }
            }
        }
        failed.extend_from_slice(refused);
        let Some(&first) = failed.first() else { return Ok(()) };
        retry.after(&format!("Kafka delivery to {}", topic(messages[first].0)), &error).await?;
        if let Some((code, reason)) = producer.client().fatal_error() {
            tracing::warn!(?code, %reason, "the Kafka producer failed for good; a new one takes over");
            *producer = loop {
                match self::producer(config, MESSAGE_TIMEOUT) {
                    Ok(p) => break p,
                    Err(e) => retry.after("creating the Kafka producer", &format!("{e:#}")).await?,
                }
            };
        }
        todo = loop {
            match outlet.unsent(config, messages, &failed) {
                Ok(todo) => break todo,
                Err(e) => {
                    retry.after("reading the output partitions' last events", &format!("{e:#}")).await?
                }
            }
        };
    }
}

/// Waits for one delivery report: `Ok(Ok)` delivered, `Ok(Err(why))` failed, `Err` if the matcher
/// stops first. With no message timeout a report can take as long as the broker is away: past
/// [`SLOW_DELIVERY`] (counted from `started`, the batch's first wait) it says so, once. A
/// `producer` that failed for good never sends again, and a message it put back in its queue
/// would never be reported: the wait ends then as a failure (what landed is read back).
async fn delivered(
    mut delivery: common::kafka::DeliveryFuture,
    started: Instant,
    producer: &Producer,
    retry: &Retry<'_>,
) -> anyhow::Result<Result<(), String>> {
    let mut told = started.elapsed() >= SLOW_DELIVERY;
    loop {
        tokio::select! {
            outcome = &mut delivery => {
                return Ok(match outcome {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e.to_string()),
                    Err(_) => Err("the producer dropped the message".to_owned()),
                });
            }
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if retry.stop.stopped() {
                    return Err(retry.give_up());
                }
                if let Some((_, reason)) = producer.client().fatal_error() {
                    return Ok(Err(format!("the producer failed for good: {reason}")));
                }
                if !told && started.elapsed() >= SLOW_DELIVERY {
                    told = true;
                    retry.retries.inc();
                    tracing::warn!(
                        waited = ?started.elapsed(),
                        "no Kafka acknowledgement yet: the broker is away or slow; waiting for it"
                    );
                }
            }
        }
    }
}

/// Where a batch goes in Redis: the connection, or a test double.
trait Store {
    /// The sequence number of the newest entry of stream `key` (0: it has none).
    fn newest_stream_seq(&mut self, key: &str) -> impl Future<Output = redis::RedisResult<u64>>;

    /// Runs `pipe`.
    fn run(&mut self, pipe: &redis::Pipeline) -> impl Future<Output = redis::RedisResult<()>>;
}

impl Store for redis::aio::ConnectionManager {
    async fn newest_stream_seq(&mut self, key: &str) -> redis::RedisResult<u64> {
        let newest: redis::streams::StreamRangeReply =
            redis::cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1).query_async(self).await?;
        Ok(newest.ids.first().and_then(|e| keys::stream_seq(&e.id)).unwrap_or(0))
    }

    async fn run(&mut self, pipe: &redis::Pipeline) -> redis::RedisResult<()> {
        let results: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(self).await?;
        first_unexpected(results)
    }
}

/// How Redis refuses a stream entry whose id is not past the stream's newest: what a batch
/// written again after its reply was lost meets, and the one error a write expects.
const STALE_ENTRY: &str = "equal or smaller than the target stream top item";

/// `Ok` unless a command of a batch failed otherwise than by re-adding an existing stream entry.
fn first_unexpected(results: Vec<redis::RedisResult<redis::Value>>) -> redis::RedisResult<()> {
    match results.into_iter().filter_map(Result::err).find(|e| !e.to_string().contains(STALE_ENTRY)) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// How the I/O thread waits out a failed Redis or Kafka call: count it, log it, pause, try again
/// — for as long as Redis or the broker is away, since offsets are committed only after the
/// writes — unless the matcher is told to stop now: then the batch is left unwritten and its
/// offsets uncommitted, so the next start replays it.
struct Retry<'a> {
    /// Asked before each retry.
    stop: &'a Stop,
    /// `matcher_io_retries_total`.
    retries: &'a prometheus::IntCounter,
    /// The pause before the next try.
    pause: Duration,
}

impl Retry<'_> {
    /// After `what` failed with `error`: `Ok` once it is time to try again, `Err` if stopping.
    async fn after(&self, what: &str, error: &dyn std::fmt::Display) -> anyhow::Result<()> {
        if self.stop.stopped() {
            return Err(self.give_up());
        }
        self.retries.inc();
        tracing::warn!(error = %error, "{what} failed; retrying");
        tokio::time::sleep(self.pause).await;
        Ok(())
    }

    /// The error that ends the retries.
    fn give_up(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "stopped with a batch not yet persisted (its commands are replayed on the next start)"
        )
    }
}

#[cfg(test)]
mod tests {
    use common::{Account, ClientOrderId, OrderType, Side, TimeInForce, Timestamp};

    use super::*;

    #[test]
    fn the_linger_may_be_a_fraction_of_a_millisecond_but_not_negative() {
        let config = |linger_ms| Config {
            brokers: "127.0.0.1:1".into(),
            linger_ms,
            ..super::super::book_thread::tests::config()
        };
        assert!(producer(&config(0.2), MESSAGE_TIMEOUT).is_ok());
        let refused = producer(&config(-1.0), MESSAGE_TIMEOUT).err().expect("a negative linger is refused");
        assert!(format!("{refused:#}").contains("linger.ms"), "{refused:#}");
    }

    /// librdkafka's mock broker with the output topics (two partitions each), and a configuration
    /// pointing at it.
    fn mock_topics(
    ) -> (rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>, Config) {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        for topic in ["orders", "trades", "order-events"] {
            cluster.create_topic(topic, 2, 1).unwrap();
        }
        let config = Config {
            brokers: cluster.bootstrap_servers(),
            group: "io-test".into(),
            orders_topic: "orders".into(),
            trades_topic: "trades".into(),
            events_topic: "order-events".into(),
            ..super::super::book_thread::tests::config()
        };
        (cluster, config)
    }

    /// An `order-events` message holding command `cmd`'s first event, on partition `cmd % 2`.
    fn event_message(cmd: u64) -> (Topic, i32, String, Vec<u8>) {
        let payload = format!("{{\"event_id\":\"{cmd}-0\"}}").into_bytes();
        (Topic::Events, (cmd % 2) as i32, cmd.to_string(), payload)
    }

    /// The command ids on each `order-events` partition, in log order (all of them: it reads until
    /// half a second brings nothing more).
    fn logged_commands(brokers: &str) -> [Vec<u64>; 2] {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::Message;
        let reader: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", "check").create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..2 {
            tpl.add_partition_offset("order-events", p, rdkafka::Offset::Beginning).unwrap();
        }
        reader.assign(&tpl).unwrap();
        // Read each partition to its end as the broker has it now, however the fetches of the two
        // are spread in time (stopping at the first quiet half second once one had messages lost
        // the other's when a loaded machine answered it later).
        let sizes: Vec<usize> = (0..2)
            .map(|p| {
                let (low, high) = reader.fetch_watermarks("order-events", p, Duration::from_secs(5)).unwrap();
                (high - low) as usize
            })
            .collect();
        let mut seen: [Vec<u64>; 2] = Default::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && seen.iter().zip(&sizes).any(|(s, n)| s.len() < *n) {
            match reader.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    seen[m.partition() as usize].push(event_position(m.payload().unwrap()).unwrap().0)
                }
                Some(Err(e)) => panic!("reading order-events: {e}"),
                None => {}
            }
        }
        seen
    }

    /// Deliveries reported failed whose messages are on the log all the same are not sent again:
    /// here the mock broker wrote every message of the batch but answered after a (deliberately
    /// short) delivery timeout. Each message ends up on its partition once and in order (sending
    /// the failed ones again put every one of them there twice).
    #[tokio::test]
    async fn a_batch_whose_acknowledgements_came_late_lands_once_and_in_order() {
        let (cluster, config) = mock_topics();
        let mut producer = producer(&config, Duration::from_millis(300)).unwrap();
        // Commands 0 and 1 go first, one to each partition, so that the producer has its id and
        // the partitions' leaders before the answers slow down: the batch then goes out at once
        // and only its answers are late. (Deliveries time out after 300 ms: the first may fail.)
        for cmd in [0, 1] {
            let (_, partition, key, payload) = event_message(cmd);
            let mut delivered = false;
            for _ in 0..20 {
                let record =
                    FutureRecord::to("order-events").partition(partition).key(&key).payload(&payload);
                if producer.send_result(record).unwrap().await.is_ok_and(|r| r.is_ok()) {
                    delivered = true;
                    break;
                }
            }
            assert!(delivered, "the producer never delivered");
        }
        let messages: Vec<_> = (2..22).map(event_message).collect();
        let mut outlet = Outlet::default();
        let (stop, retries) = (Stop::default(), retries());
        let retry = Retry { stop: &stop, retries: &retries, pause: Duration::from_millis(500) };
        // librdkafka times requests out on a one-second scan: answers 5 s late, healed after 2.5 s.
        cluster.broker_round_trip_time(1, Duration::from_secs(5)).unwrap();
        let write = write_kafka(&mut producer, &messages, &config, &mut outlet, &retry);
        let heal = async {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();
        };
        let (written, ()) =
            tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(write, heal) })
                .await
                .expect("the batch is written within 30 s");
        written.unwrap();
        assert!(retries.get() >= 1, "the first deliveries timed out");
        let want: [Vec<u64>; 2] = [(0..22).step_by(2).collect(), (1..22).step_by(2).collect()];
        assert_eq!(logged_commands(&config.brokers), want);
    }

    /// A producer that fails for good (the broker answers a produce with a sequence error, which
    /// the gapless producer makes fatal) is replaced, and the batch lands once, in order.
    #[tokio::test]
    async fn a_producer_that_failed_for_good_is_replaced() {
        use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

        let (cluster, config) = mock_topics();
        let messages: Vec<_> = (0..6).map(event_message).collect();
        let mut producer = producer(&config, MESSAGE_TIMEOUT).unwrap();
        let first = producer.clone();
        cluster.request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
        );
        let mut outlet = Outlet::default();
        let (stop, retries) = (Stop::default(), retries());
        let retry = Retry { stop: &stop, retries: &retries, pause: Duration::from_millis(50) };
        let write = write_kafka(&mut producer, &messages, &config, &mut outlet, &retry);
        tokio::time::timeout(Duration::from_secs(30), write).await.expect("written within 30 s").unwrap();
        assert!(first.client().fatal_error().is_some(), "the first producer failed for good");
        assert!(producer.client().fatal_error().is_none(), "and another took over");
        assert_eq!(logged_commands(&config.brokers), [vec![0, 2, 4], vec![1, 3, 5]]);
    }

    /// With no delivery timeout a report can take as long as the broker is away: the wait for it
    /// ends when the matcher stops, and a report that comes is passed on.
    #[tokio::test]
    async fn a_delivery_is_awaited_until_the_matcher_stops() {
        let (stop, retries) = (Stop::default(), retries());
        let retry = Retry { stop: &stop, retries: &retries, pause: Duration::from_millis(1) };
        let config = Config { brokers: "127.0.0.1:1".into(), ..super::super::book_thread::tests::config() };
        let producer = producer(&config, MESSAGE_TIMEOUT).unwrap();
        let (_unanswered, delivery) = tokio::sync::oneshot::channel();
        let stopping = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.stop();
        };
        let (waited, ()) = tokio::join!(delivered(delivery, Instant::now(), &producer, &retry), stopping);
        assert!(waited.is_err(), "gave up once stopping: {waited:?}");
        let stop = Stop::default();
        let retry = Retry { stop: &stop, retries: &retries, pause: Duration::from_millis(1) };
        let (dropped, delivery) = tokio::sync::oneshot::channel();
        drop(dropped);
        let outcome = delivered(delivery, Instant::now(), &producer, &retry).await.unwrap();
        assert_eq!(outcome, Err("the producer dropped the message".to_owned()));
    }

    /// A Redis that fails its first calls of each kind and records the transactions it ran.
    #[derive(Default)]
    struct Flaky {
        read_failures: usize,
        write_failures: usize,
        reads: usize,
        written: Vec<String>,
    }

    fn down() -> redis::RedisError {
        redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Redis is down"))
    }

    impl Store for Flaky {
        async fn newest_stream_seq(&mut self, _key: &str) -> redis::RedisResult<u64> {
            self.reads += 1;
            if self.read_failures > 0 {
                self.read_failures -= 1;
                return Err(down());
            }
            Ok(0)
        }

        async fn run(&mut self, pipe: &redis::Pipeline) -> redis::RedisResult<()> {
            if self.write_failures > 0 {
                self.write_failures -= 1;
                return Err(down());
            }
            self.written.push(String::from_utf8_lossy(&pipe.get_packed_pipeline()).into_owned());
            Ok(())
        }
    }

    /// A batch's results: re-adding an existing stream entry is expected (a batch written again
    /// after its reply was lost); any other server error fails the batch.
    #[test]
    fn only_a_stale_stream_entry_is_an_expected_error() {
        let server = |code: &str, detail: &str| redis::make_extension_error(code.into(), Some(detail.into()));
        let stale = || {
            Err(server("ERR", "The ID specified in XADD is equal or smaller than the target stream top item"))
        };
        let ok = || Ok(redis::Value::Okay);
        assert!(first_unexpected(vec![]).is_ok());
        assert!(first_unexpected(vec![ok(), stale(), ok(), stale()]).is_ok());
        let wrong = Err(server("WRONGTYPE", "Operation against a key holding the wrong kind of value"));
        let e = first_unexpected(vec![ok(), stale(), wrong, ok()]).unwrap_err();
        assert!(e.to_string().contains("WRONGTYPE"), "{e}");
        let oom = Err(server("OOM", "command not allowed when used memory > 'maxmemory'"));
        assert!(first_unexpected(vec![oom]).is_err());
    }

    fn retries() -> prometheus::IntCounter {
        prometheus::IntCounter::new("retries", "retries").unwrap()
    }

    const ABC: SymbolId = SymbolId(0);

    fn event(cmd: u64, seq: u64, kind: EventKind) -> Event {
        Event { cmd: OrderId(cmd), index: 0, symbol: Some(ABC), seq, ts: Timestamp(1_000_000_000), kind }
    }

    /// Account `a`'s order `id` (client id `c<id>`) accepted: 5 lots, limit at `price` ticks.
    fn accepted(id: u64, side: Side, tif: TimeInForce, price: i64) -> EventKind {
        EventKind::Accepted {
            order_id: OrderId(id),
            account: Account::new("a").unwrap(),
            client_order_id: ClientOrderId::new(&format!("c{id}")).unwrap(),
            side,
            order_type: OrderType::Limit,
            tif,
            post_only: false,
            price: Some(Price(price)),
            qty: Qty(5),
        }
    }

    /// Account `a`'s buy (order 2, `c2`) takes all 5 lots of its sell (order 1, `c1`) at 100.00.
    fn full_fill() -> EventKind {
        let account = Account::new("a").unwrap();
        EventKind::Fill {
            fill: 0,
            maker: OrderId(1),
            taker: OrderId(2),
            taker_side: Side::Buy,
            price: Price(10_000),
            qty: Qty(5),
            maker_leaves: Qty(0),
            taker_leaves: Qty(0),
            maker_account: account,
            maker_client_order_id: ClientOrderId::new("c1").unwrap(),
            taker_account: account,
            taker_client_order_id: ClientOrderId::new("c2").unwrap(),
        }
    }

    /// The `event_id`s `b` sends to `topic`, in order, unpacked.
    fn event_ids(b: &Batch, topic: Topic) -> Vec<String> {
        let id = |e: &[u8]| event_position(e).map(|(c, i)| format!("{c}-{i}")).unwrap();
        b.kafka.iter().filter(|m| m.0 == topic).flat_map(|m| unpack_events(&m.3).map(id)).collect()
    }

    /// A resting sell (command 1), then a buy (command 2) that takes all of it: one batch.
    fn a_trade(sink: &mut Sink<'_>) -> Batch {
        let fill = full_fill();
        let level =
            |qty| EventKind::Level { side: Side::Sell, price: Price(10_000), qty: Qty(qty), orders: 1 };
        let mut b = Batch::default();
        sink.event(&event(1, 1, accepted(1, Side::Sell, TimeInForce::Gtc, 10_000)), false, &mut b);
        sink.event(&event(1, 2, level(5)), false, &mut b);
        sink.done(OrderId(1), false, Hops::default(), &mut b);
        sink.event(&event(2, 3, accepted(2, Side::Buy, TimeInForce::Gtc, 10_000)), false, &mut b);
        sink.event(&event(2, 4, fill), false, &mut b);
        sink.event(&event(2, 5, level(0)), false, &mut b);
        sink.done(OrderId(2), false, Hops::default(), &mut b);
        b
    }

    /// After [`a_trade`]: a resting sell (command 3), then its cancel (command 4).
    fn a_canceled_rest(sink: &mut Sink<'_>, b: &mut Batch) {
        sink.event(&event(3, 6, accepted(3, Side::Sell, TimeInForce::Gtc, 10_100)), false, b);
        sink.done(OrderId(3), false, Hops::default(), b);
        let canceled = EventKind::Canceled {
            order_id: OrderId(3),
            side: Side::Sell,
            price: Some(Price(100)),
            qty: Qty(5),
            reason: common::CancelReason::Requested,
        };
        sink.event(&event(4, 7, canceled), false, b);
    }

    #[tokio::test]
    async fn a_batch_writes_the_orders_the_trade_and_the_book() {
        let table = SymbolTable::default();
        let mut sink = Sink::new(&table, None);
        let mut b = a_trade(&mut sink);
        assert_eq!(b.books, [ABC]);
        assert_eq!(b.stream.len(), 1);
        let topics: Vec<Topic> = b.kafka.iter().map(|(t, _, _, _)| *t).collect();
        assert_eq!(topics.iter().filter(|t| **t == Topic::Trades).count(), 1, "one trades message per fill");
        assert_eq!(topics.iter().filter(|t| **t == Topic::Events).count(), 1, "one order-events pack");
        assert_eq!(event_ids(&b, Topic::Events), ["1-0", "1-0", "2-0", "2-0", "2-0"], "every event");
        assert_eq!(b.commits.get(&0), Some(&3), "the next offset to commit");
        assert_eq!(b.persisted, [OrderId(1), OrderId(2)]);
        assert_eq!(b.hops.len(), 2, "both commands' hops, for matcher_hop_seconds");
        assert_eq!(sink.projection.orders(), 0, "both orders ended");

        let (stop, retries) = (Stop::default(), retries());
        let retry = Retry { stop: &stop, retries: &retries, pause: Duration::from_millis(1) };
        let mut redis = Flaky::default();
        sink.write_redis(&mut redis, &mut b, &retry).await.unwrap();
        let tx = &redis.written[0];
        for needle in [
            "order:1",
            "client:a:ABC:c1",
            "resting",
            "fills:1",
            "fills:2",
            "2-0",
            "filled",
            "trade:a:c1",
            "trade:a:c2",
            "book:ABC",
            "trades:ABC",
            "XADD",
            "4-0",
        ] {
            assert!(tx.contains(needle), "the transaction lacks {needle}: {tx}");
        }
        assert!(!tx.contains("partially_filled"), "{tx}");
    }

    /// The batch's commands that touch `key`, each as `COMMAND member`.
    fn touching(b: &Batch, key: &str) -> Vec<String> {
        b.pipe
            .cmd_iter()
            .filter_map(|c| {
                let packed = String::from_utf8_lossy(&c.get_packed_command()).into_owned();
                let words: Vec<&str> = packed.split("\r\n").filter(|w| !w.starts_with(['*', '$'])).collect();
                (words.get(1) == Some(&key)).then(|| format!("{} {}", words[0], words.get(2).unwrap_or(&"")))
            })
            .collect()
    }

    #[test]
    fn an_account_s_open_orders_are_those_that_rest_until_they_end() {
        let table = SymbolTable::default();
        let mut sink = Sink::new(&table, None);
        // Both orders of the trade were open for a moment (in order), and both end filled.
        let b = a_trade(&mut sink);
        assert_eq!(touching(&b, "open:a"), ["SADD 1", "SADD 2", "SREM 1", "SREM 2"]);
        assert_eq!(touching(&b, "orders:a").iter().filter(|c| c.starts_with("ZADD")).count(), 2);
        // A resting order that is canceled leaves the set.
        let mut b = Batch::default();
        a_canceled_rest(&mut sink, &mut b);
        assert_eq!(touching(&b, "open:a"), ["SADD 3", "SREM 3"]);
        // An IOC order never rests: never in the set.
        let mut b = Batch::default();
        sink.event(&event(5, 8, accepted(5, Side::Sell, TimeInForce::Ioc, 10_100)), false, &mut b);
        assert!(touching(&b, "open:a").is_empty());
    }

    /// Events of two command partitions, interleaved and more than one pack holds: each partition's
    /// events go to its own `order-events` partition, in order, in packs of at most
    /// `PACK_BYTES`; `trades` keeps one message per fill.
    #[test]
    fn order_events_are_packed_per_partition_in_order() {
        let table = SymbolTable::default();
        let mut sink = Sink::new(&table, None);
        let mut b = Batch::default();
        let level = |q| EventKind::Level { side: Side::Sell, price: Price(10_000), qty: Qty(q), orders: 1 };
        for n in 1..=1_000u64 {
            let cmd = OrderId::new((n % 2) as u16, n).unwrap();
            sink.event(&Event { cmd, ..event(0, n, level(n)) }, false, &mut b);
        }
        let mut seen = [Vec::new(), Vec::new()];
        let mut packs = [0, 0];
        for (topic, partition, _, payload) in &b.kafka {
            assert_eq!(*topic, Topic::Events);
            assert!(payload.len() <= common::envelope::PACK_BYTES);
            packs[*partition as usize] += 1;
            for e in unpack_events(payload) {
                let (cmd, _) = event_position(e).unwrap();
                assert_eq!(OrderId(cmd).partition() as i32, *partition, "on its command's partition");
                seen[*partition as usize].push(OrderId(cmd).offset());
            }
        }
        assert!(packs.iter().all(|&n| n > 1), "500 events a partition fill more than one pack: {packs:?}");
        assert_eq!(seen[0], (1..=1_000).filter(|n| n % 2 == 0).collect::<Vec<_>>());
        assert_eq!(seen[1], (1..=1_000).filter(|n| n % 2 == 1).collect::<Vec<_>>());
    }

    #[test]
    fn replayed_events_rebuild_the_projection_and_write_nothing() {
        let table = SymbolTable::default();
        let mut sink = Sink::new(&table, None);
        let mut b = Batch::default();
        sink.event(&event(1, 1, accepted(1, Side::Sell, TimeInForce::Gtc, 10_000)), true, &mut b);
        sink.done(OrderId(1), true, Hops::default(), &mut b);
        assert!(b.kafka.is_empty() && b.commits.is_empty() && b.persisted.is_empty());
        assert!(b.hops.is_empty(), "a replayed command's hops are not measured");
        assert_eq!(b.pipe.cmd_iter().count(), 0);
        assert_eq!(sink.projection.order(OrderId(1)).map(|o| o.status), Some(OrderStatus::Resting));
    }

    #[test]
    fn only_emitted_commands_are_measured_hop_by_hop() {
        let table = SymbolTable::default();
        let mut sink = Sink::new(&table, None);
        let mut b = Batch::default();
        let hops = Hops { gateway: 0, published: 1_000, consumed: 2_000, matched: 3_000 };
        sink.event(&event(1, 1, accepted(1, Side::Sell, TimeInForce::Gtc, 10_000)), true, &mut b);
        sink.done(OrderId(1), true, hops, &mut b);
        sink.event(&event(2, 2, accepted(2, Side::Sell, TimeInForce::Gtc, 10_100)), false, &mut b);
        sink.done(OrderId(2), false, hops, &mut b);
        let metrics = Metrics::new().unwrap();
        measure_hops(&mut b, 4_000, &metrics);
        let counts: Vec<u64> = metrics.hops.iter().map(|h| h.get_sample_count()).collect();
        // The replayed command is not measured; the emitted one came straight to order entry.
        assert_eq!(counts, [0, 1, 1, 1]);
        assert!(b.hops.is_empty(), "measured once");
    }

    #[test]
    fn a_command_emitted_again_adds_to_a_topic_only_what_it_lacks() {
        let table = SymbolTable::default();
        // The previous run's last messages: order-events had command 2's first event (2-0),
        // trades only command 1's; partition 1 had nothing.
        let mut sink = Sink::new(&table, None);
        sink.outlet.last.insert((Topic::Events, 0), (2, 0));
        sink.outlet.last.insert((Topic::Trades, 0), (1, 9));
        let mut b = Batch::default();
        let fill = full_fill();
        let level = EventKind::Level { side: Side::Sell, price: Price(10_000), qty: Qty(0), orders: 0 };
        for (index, kind) in
            [accepted(2, Side::Buy, TimeInForce::Gtc, 10_000), fill, level].into_iter().enumerate()
        {
            sink.event(&Event { index: index as u32, ..event(2, index as u64 + 1, kind) }, false, &mut b);
        }
        let sent: Vec<(Topic, i32, String)> = b
            .kafka
            .iter()
            .map(|(t, p, _, payload)| {
                (*t, *p, event_position(payload).map(|(c, i)| format!("{c}-{i}")).unwrap())
            })
            .collect();
        // order-events: one pack with both missing events; its position is its last event's.
        assert_eq!(sent, [(Topic::Trades, 0, "2-1".into()), (Topic::Events, 0, "2-2".into())]);
        assert_eq!(event_ids(&b, Topic::Events), ["2-1", "2-2"]);
        assert!(sink.outlet.last.is_empty(), "past their last events, both partitions are forgotten");
        // Later commands go out whole, on their command's partition.
        let mut b = Batch::default();
        let id = OrderId::new(1, 7).unwrap();
        let e = Event { cmd: id, ..event(0, 8, accepted(id.0, Side::Buy, TimeInForce::Gtc, 9_000)) };
        sink.event(&e, false, &mut b);
        assert_eq!(b.kafka.iter().map(|(t, p, _, _)| (*t, *p)).collect::<Vec<_>>(), [(Topic::Events, 1)]);
        assert_eq!(event_position(b"{\"event_id\":\"x\"}"), None);
    }

    /// The packed commands of `b`'s transaction, once written, with `\r\n` as spaces.
    async fn written(sink: &mut Sink<'_>, mut b: Batch) -> String {
        let (stop, retries) = (Stop::default(), retries());
        let retry = Retry { stop: &stop, retries: &retries, pause: Duration::from_millis(1) };
        let mut redis = Flaky::default();
        sink.write_redis(&mut redis, &mut b, &retry).await.unwrap();
        redis.written.remove(0).replace("\r\n", " ")
    }

    /// `EXPIRE key secs` as packed by [`written`].
    fn expire(key: &str, secs: u64) -> String {
        format!("EXPIRE ${} {key} ${} {secs} ", key.len(), secs.to_string().len())
    }

    /// An order's status and hops so far are one `HSET`; its `persisted` hop goes with the next
    /// batch's transaction, before that batch's expiries, or alone when no batch follows; a failed
    /// write of it loses only the hops.
    #[tokio::test]
    async fn persisted_hops_ride_with_the_next_batch_or_go_alone() {
        let table = SymbolTable::default();
        let mut sink = Sink::new(&table, Some(600));
        let mut b = Batch::default();
        sink.event(&event(3, 6, accepted(3, Side::Sell, TimeInForce::Gtc, 10_100)), false, &mut b);
        let hops = Hops { gateway: 11, published: 22, consumed: 33, matched: 44 };
        sink.done(OrderId(3), false, hops, &mut b);
        let mut persisted = std::mem::take(&mut b.persisted);
        let tx = written(&mut sink, b).await;
        assert_eq!(tx.matches("hop_").count(), 4, "{tx}");
        assert!(
            tx.contains(
                "HSET $7 order:3 $6 status $7 resting $14 hop_gateway_ns $2 11 $16 hop_published_ns $2 22"
            ),
            "{tx}"
        );
        assert_eq!(persisted, [OrderId(3)]);

        let mut stamped = PersistedHops::default();
        stamped.stamp(&mut persisted, 55);
        assert!(persisted.is_empty() && !stamped.is_empty());
        let mut b = a_trade(&mut sink);
        stamped.join(&mut b.pipe);
        assert!(stamped.is_empty());
        let tx = written(&mut sink, b).await;
        let stamp = tx.find("HSET $7 order:3 $16 hop_persisted_ns $2 55 ").unwrap_or_else(|| panic!("{tx}"));
        assert!(stamp < tx.find("EXPIRE").unwrap(), "before the expiries: {tx}");

        let (mut redis, mut ids) = (Flaky::default(), vec![OrderId(4), OrderId(5)]);
        stamped.stamp(&mut ids, 66);
        stamped.write_alone(&mut redis).await;
        let alone = redis.written.remove(0).replace("\r\n", " ");
        assert!(alone.contains("order:4 $16 hop_persisted_ns $2 66") && alone.contains("order:5"), "{alone}");
        assert!(!alone.contains("MULTI"), "{alone}");
        let mut redis = Flaky { write_failures: 1, ..Flaky::default() };
        stamped.stamp(&mut vec![OrderId(6)], 77);
        stamped.write_alone(&mut redis).await;
        assert!(stamped.is_empty() && redis.written.is_empty(), "dropped, not retried");
    }

    #[tokio::test]
    async fn ended_orders_expire_after_their_last_write_and_open_ones_never() {
        let table = SymbolTable::default();
        let mut sink = Sink::new(&table, Some(600));
        let b = a_trade(&mut sink);
        let tx = written(&mut sink, b).await;
        for key in ["order:1", "fills:1", "trade:a:c1", "order:2", "fills:2", "trade:a:c2"] {
            let at = tx.find(&expire(key, 600)).unwrap_or_else(|| panic!("{key} never expires: {tx}"));
            let (before, after) = (&tx[..at], &tx[at + expire(key, 600).len()..]);
            let touches = |s: &str| s.contains(&format!(" {key} "));
            assert!(touches(before) && !touches(after), "{key} is written after it is set to expire: {tx}");
        }
        // Client ids stay while the book's window still refuses them (16,384 ended ids).
        assert!(!tx.contains("EXPIRE $15 client:"), "{tx}");

        // A resting order: nothing of it expires.
        let mut b = Batch::default();
        sink.event(&event(3, 6, accepted(3, Side::Sell, TimeInForce::Gtc, 10_100)), false, &mut b);
        sink.done(OrderId(3), false, Hops::default(), &mut b);
        let tx = written(&mut sink, b).await;
        assert!(!tx.contains("EXPIRE"), "{tx}");

        // Without retention, nothing ever expires.
        let mut sink = Sink::new(&table, None);
        let b = a_trade(&mut sink);
        assert!(!written(&mut sink, b).await.contains("EXPIRE"));
    }

    #[tokio::test]
    async fn a_client_id_expires_once_it_leaves_the_duplicate_window() {
        let table = SymbolTable::default();
        let mut sink = Sink::new(&table, Some(60));
        sink.projection = Projection::new(1);
        // Orders 1 and 2 end in the trade (1 first), then order 3 is canceled: with a window of
        // one, ids c1 and c2 have left it and c3 is in it.
        let mut b = a_trade(&mut sink);
        a_canceled_rest(&mut sink, &mut b);
        // Then c1, which left the window (the book accepts it again), is accepted again in the
        // same batch: its `SET` comes after the expiry, so the open order's key keeps no expiry.
        let mut again = accepted(1, Side::Buy, TimeInForce::Gtc, 9_000);
        if let EventKind::Accepted { order_id, .. } = &mut again {
            *order_id = OrderId(5);
        }
        sink.event(&event(5, 8, again), false, &mut b);
        sink.done(OrderId(5), false, Hops::default(), &mut b);
        let tx = written(&mut sink, b).await;
        for key in ["client:a:ABC:c1", "client:a:ABC:c2"] {
            assert!(tx.contains(&expire(key, 60)), "{key}: {tx}");
        }
        assert!(!tx.contains(&expire("client:a:ABC:c3", 60)), "{tx}");
        let expired = tx.find(&expire("client:a:ABC:c1", 60)).expect("c1 expires");
        let set = tx.rfind("SET $15 client:a:ABC:c1 $1 5 ").expect("c1 held by order 5");
        assert!(expired < set, "the expiry must come before the order that takes the id again: {tx}");
        assert_eq!(tx.matches(&expire("client:a:ABC:c1", 60)).count(), 1, "{tx}");
        // An accepted order takes its client id outright (which also clears an expiry).
        assert!(tx.contains("SET $15 client:a:ABC:c3 $1 3 "), "{tx}");
    }

    #[tokio::test]
    async fn a_refused_order_expires_and_never_takes_a_client_id_from_its_holder() {
        let table = SymbolTable::default();
        let mut sink = Sink::new(&table, Some(60));
        let mut b = Batch::default();
        let refused = EventKind::Rejected {
            order_id: OrderId(7),
            account: Account::new("a").unwrap(),
            client_order_id: Some(ClientOrderId::new("c1").unwrap()),
            reason: common::RejectReason::DuplicateClientOrderId,
            qty: Qty(5),
        };
        sink.event(&event(7, 0, refused), false, &mut b);
        // A refused cancel of an order that is not open: the note it leaves expires too.
        let refused_cancel = EventKind::Rejected {
            order_id: OrderId(5),
            account: Account::new("a").unwrap(),
            client_order_id: None,
            reason: common::RejectReason::UnknownOrder,
            qty: Qty::ZERO,
        };
        sink.event(&event(8, 0, refused_cancel), false, &mut b);
        let tx = written(&mut sink, b).await;
        assert!(tx.contains("SET $15 client:a:ABC:c1 $1 7 $2 NX $2 EX $2 60 "), "{tx}");
        assert!(tx.contains(&expire("order:7", 60)), "{tx}");
        assert!(tx.contains(&expire("order:5", 60)), "{tx}");
    }

    /// A batch with one new `trades:ABC` entry, whose newest id must be read first.
    fn one_trade(table: &SymbolTable) -> (Sink<'_>, Batch) {
        let sink = Sink::new(table, None);
        let mut batch = Batch::default();
        batch.stream.push((ABC, 1, vec![("trade_id", "5-0".to_owned())]));
        (sink, batch)
    }

    #[tokio::test]
    async fn a_failed_stream_read_is_retried_like_every_other_redis_call() {
        let table = SymbolTable::default();
        let (mut sink, mut batch) = one_trade(&table);
        let (stop, retries) = (Stop::default(), retries());
        let retry = Retry { stop: &stop, retries: &retries, pause: Duration::from_millis(1) };
        let mut redis = Flaky { read_failures: 2, write_failures: 1, ..Flaky::default() };
        sink.write_redis(&mut redis, &mut batch, &retry).await.expect("written after retries");
        assert_eq!((redis.reads, retries.get()), (3, 3), "two failed reads and one failed write, retried");
        assert_eq!(redis.written.len(), 1);
        let tx = &redis.written[0];
        assert!(tx.contains("XADD") && tx.contains("trades:ABC") && tx.contains("1-0"), "{tx}");
        assert_eq!(sink.stream_last.get(&ABC), Some(&1));
    }

    #[tokio::test]
    async fn a_stop_ends_the_retries_and_leaves_the_batch_unwritten() {
        let table = SymbolTable::default();
        let (mut sink, mut batch) = one_trade(&table);
        let (stop, retries) = (Stop::default(), retries());
        stop.stop();
        let retry = Retry { stop: &stop, retries: &retries, pause: Duration::from_millis(1) };
        let mut redis = Flaky { read_failures: usize::MAX, ..Flaky::default() };
        let result = sink.write_redis(&mut redis, &mut batch, &retry).await;
        assert!(result.is_err_and(|e| e.to_string().contains("replayed on the next start")));
        assert!(redis.written.is_empty());
        assert_eq!(retries.get(), 0);
    }
}

//! The consumer thread: reads every partition of the `orders` topic from the beginning (or a
//! restored snapshot's offsets, [`super::snapshots`]), decodes
//! each message into a command stamped with its log position, and pushes it into the ring of the
//! book thread. Commands below the group's committed offset are marked `replay`. It also commits
//! the offsets the I/O thread reports as persisted.
//!
//! With a wake-up address it dozes (`common::wake`): once caught up and idle for `IDLE`, it
//! gives up its partitions, so the broker is not asked for empty fetches, and takes them again on
//! order-svc's wake-up or after `RECHECK`, each at the offset after the last message it handed
//! on.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use common::envelope::decode_command_traced;
use common::wake::{Doze, Listener};
use common::{OrderId, SymbolTable};
use prometheus::IntGaugeVec;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};

use super::config::Config;
use super::metrics::Metrics;
use super::ring::{now_ns, push_wait, Hops, Input, Stop};

/// Idle this long (caught up, nothing read), the consumer gives up its partitions.
const IDLE: Duration = Duration::from_millis(250);

/// After a recheck that found nothing, it gives them up again this soon.
const PEEK: Duration = Duration::from_millis(20);

/// A dozing consumer takes its partitions again after this long even without a wake-up.
const RECHECK: Duration = Duration::from_secs(1);

/// Reads the client's statistics (once a second, served by `poll`) into the per-partition lag:
/// the partition's end as of the last fetch minus the next offset to hand on.
struct LagStats {
    topic: String,
    lag: IntGaugeVec,
}

impl ClientContext for LagStats {
    fn stats(&self, stats: Statistics) {
        let Some(topic) = stats.topics.get(&self.topic) else { return };
        for (&p, part) in &topic.partitions {
            // -1 is librdkafka's unassigned placeholder; offsets below 0 are "not known yet".
            if p >= 0 && part.hi_offset >= 0 && part.app_offset >= 0 {
                self.lag.with_label_values(&[&p.to_string()]).set((part.hi_offset - part.app_offset).max(0));
            }
        }
    }
}

impl ConsumerContext for LagStats {}

type OrdersConsumer = BaseConsumer<LagStats>;

/// Runs until `stop`; a fatal error stops every thread.
#[allow(clippy::too_many_arguments)]
pub fn run(
    config: &Config,
    table: &SymbolTable,
    start_at: &HashMap<i32, i64>,
    ring: rtrb::Producer<Input>,
    book: Thread,
    commits: Receiver<(i32, i64)>,
    stop: &Stop,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let result = consume(config, table, start_at, ring, &book, &commits, stop, metrics);
    if let Err(e) = &result {
        tracing::error!(error = %e, "consumer failed; stopping");
        stop.stop();
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn consume(
    config: &Config,
    table: &SymbolTable,
    start_at: &HashMap<i32, i64>,
    mut ring: rtrb::Producer<Input>,
    book: &Thread,
    commits: &Receiver<(i32, i64)>,
    stop: &Stop,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let lag = LagStats { topic: config.orders_topic.clone(), lag: metrics.consumer_lag.clone() };
    let consumer: OrdersConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // The broker holds a fetch for about this long even when data is there (DESIGN.md §1).
        .set("fetch.wait.max.ms", config.fetch_wait_ms.max(1).to_string())
        .set("socket.timeout.ms", "3000")
        .set("statistics.interval.ms", "1000")
        .create_with_context(lag)
        .context("creating the Kafka consumer")?;
    let partitions = loop {
        match consumer.fetch_metadata(Some(&config.orders_topic), Duration::from_secs(3)) {
            Ok(md) => {
                let n = md.topics().first().map_or(0, |t| t.partitions().len());
                if n > 0 {
                    break n as i32;
                }
            }
            Err(e) => tracing::warn!(error = %e, "waiting for the broker"),
        }
        if stop.draining() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // What the group has persisted: replay below it, emit from it.
    let mut all = TopicPartitionList::new();
    for p in 0..partitions {
        all.add_partition(&config.orders_topic, p);
    }
    let committed =
        consumer.committed_offsets(all, Duration::from_secs(10)).context("reading committed offsets")?;
    let mut emit_from: HashMap<i32, i64> = HashMap::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(n) => n,
            _ => 0,
        };
        emit_from.insert(e.partition(), offset);
    }
    // What the log held at start, per partition: the matcher is current (ready) once it has read
    // all of it — replayed below the committed offset, emitted above — and the marker pushed after
    // it has gone through the pipeline.
    let mut catch_up_last: HashMap<i32, i64> = HashMap::new();
    let mut remaining = 0;
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(&config.orders_topic, p, Duration::from_secs(10))
            .context("reading the orders topic's watermarks")?;
        let low = low.max(start_at.get(&p).copied().unwrap_or(0));
        if high > low {
            catch_up_last.insert(p, high - 1);
            remaining += high - low;
        }
    }
    metrics.catch_up_remaining.set(remaining);
    for p in 0..partitions {
        // Exported from the start; the statistics keep it current.
        metrics.consumer_lag.with_label_values(&[&p.to_string()]).set(0);
    }
    tracing::info!(partitions, ?emit_from, ?start_at, remaining, "replaying the orders topic");
    // Where each partition goes on, from the snapshot's offset or the beginning: a dozing consumer gives up its assignment
    // (nothing is fetched) and takes it again at exactly these offsets, so nothing read ahead and
    // dropped can be skipped. (librdkafka's pause/resume left a partition stuck in the tests.)
    let mut next: Vec<Offset> =
        (0..partitions).map(|p| start_at.get(&p).map_or(Offset::Beginning, |&o| Offset::Offset(o))).collect();
    let at = |next: &[Offset]| -> anyhow::Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for (p, &offset) in next.iter().enumerate() {
            tpl.add_partition_offset(&config.orders_topic, p as i32, offset)?;
        }
        Ok(tpl)
    };
    consumer.assign(&at(&next)?)?;
    let listener = config.wake_listen.as_deref().and_then(|addr| match Listener::bind(addr) {
        Ok(l) => {
            tracing::info!(%addr, "dozing when idle: wake-ups arrive on UDP {addr}");
            Some(l)
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot listen for wake-ups; fetching all the time");
            None
        }
    });
    let mut doze = Doze::new(IDLE, PEEK, RECHECK, Instant::now());

    let mut pending: HashMap<i32, i64> = HashMap::new();
    let commit_interval = Duration::from_millis(config.commit_interval_ms);
    let mut committed_at = Instant::now();
    let mut caught_up_sent = false;
    while !stop.draining() {
        if !caught_up_sent && catch_up_last.is_empty() {
            // The marker follows the last replayed command through the rings.
            push(&mut ring, Input::CaughtUp, book, stop, metrics);
            caught_up_sent = true;
        }
        // Commit what the I/O thread has persisted (at most once per interval).
        pending.extend(commits.try_iter());
        if !pending.is_empty() && committed_at.elapsed() >= commit_interval {
            commit(&consumer, &config.orders_topic, &mut pending, CommitMode::Async)?;
            committed_at = Instant::now();
        }
        if let Some(listener) = listener.as_ref().filter(|_| doze.paused()) {
            // Back often enough to commit what the I/O thread persists meanwhile.
            let woken = listener.wait(doze.wait_for(Instant::now(), Duration::from_millis(20)));
            let now = Instant::now();
            if doze.should_resume(now, woken) {
                consumer.assign(&at(&next)?).context("taking the orders partitions again")?;
                doze.resume(now, woken);
                metrics.resumes[usize::from(!woken)].inc();
                metrics.paused.set(0);
            }
            continue;
        }
        let Some(msg) = consumer.poll(Duration::from_millis(10)) else {
            let now = Instant::now();
            if listener.is_some() && caught_up_sent && doze.should_pause(now) {
                consumer.unassign().context("giving up the orders partitions while idle")?;
                doze.pause(now);
                metrics.pauses.inc();
                metrics.paused.set(1);
            }
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "consume error");
                continue;
            }
        };
        let consumed = now_ns();
        if listener.is_some() {
            doze.read(Instant::now());
        }
        let (partition, offset) = (msg.partition(), msg.offset());
        if let Some(n) = usize::try_from(partition).ok().and_then(|p| next.get_mut(p)) {
            *n = Offset::Offset(offset + 1);
        }
        let replay = offset < emit_from.get(&partition).copied().unwrap_or(0);
        if let Some(&last) = catch_up_last.get(&partition) {
            metrics.catch_up_remaining.dec();
            if offset >= last {
                catch_up_last.remove(&partition);
            }
        }
        let Some(id) = u16::try_from(partition).ok().and_then(|p| OrderId::new(p, offset as u64)) else {
            tracing::error!(partition, offset, "log position does not fit an order id; skipped");
            continue;
        };
        let input = match decode_command_traced(msg.payload().unwrap_or_default(), id, table) {
            Ok((cmd, trace)) => {
                let gateway = trace.gateway_in.map_or(0, |t| t.0);
                let hops = Hops { gateway, published: cmd.ts.0, consumed, matched: 0 };
                Input::Cmd { cmd, replay, hops }
            }
            Err(e) => {
                tracing::warn!(partition, offset, error = %e, "undecodable command");
                Input::Bad { id, reason: e.reject_reason(), replay }
            }
        };
        metrics.consumed.inc();
        if !push(&mut ring, input, book, stop, metrics) {
            return Ok(());
        }
    }
    // Draining: the book and I/O threads finish what was pushed; the I/O thread drops the commit
    // channel when all of it is persisted. Then one synchronous commit of everything.
    drop(ring);
    book.unpark();
    loop {
        match commits.recv_timeout(Duration::from_millis(50)) {
            Ok((p, next)) => {
                pending.insert(p, next);
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) if stop.stopped() => return Ok(()),
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
    let last = pending.clone();
    commit(&consumer, &config.orders_topic, &mut pending, CommitMode::Sync)?;
    if pending.is_empty() {
        tracing::info!(?last, "drained: every persisted command is committed");
    }
    Ok(())
}

/// Pushes into the book thread's ring, yielding while it is full, and wakes the book thread; false
/// if told to stop while waiting.
fn push(
    ring: &mut rtrb::Producer<Input>,
    input: Input,
    book: &Thread,
    stop: &Stop,
    metrics: &Metrics,
) -> bool {
    let pushed = push_wait(ring, input, book, std::thread::yield_now, stop, &metrics.ring_full);
    book.unpark();
    pushed
}

/// Commits `pending` (partition → next offset) and clears it; a failed commit leaves it for the
/// next try.
fn commit(
    consumer: &OrdersConsumer,
    topic: &str,
    pending: &mut HashMap<i32, i64>,
    mode: CommitMode,
) -> anyhow::Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for (&p, &next) in pending.iter() {
        tpl.add_partition_offset(topic, p, Offset::Offset(next))?;
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => pending.clear(),
        Err(e) => tracing::warn!(error = %e, "commit failed; will retry"),
    }
    Ok(())
}

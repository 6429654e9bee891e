//! The consumer thread: reads the `orders` partitions this matcher owns, decodes each message
//! into a command stamped with its log position, and pushes it into the ring of the book thread.
//! Commands below the group's committed offset are marked `replay`. It also commits the offsets
//! the I/O thread reports as persisted, at most once per `--commit-interval-ms`.
//!
//! Alone (the default) the matcher owns every partition and reads each from the beginning, or a
//! restored snapshot's offsets ([`super::snapshots`]). With a wake-up address it dozes
//! (`common::wake`): once caught up and idle for `IDLE`, it gives up its partitions, so the
//! broker is not asked for empty fetches, and takes them again on order-svc's wake-up or after
//! `RECHECK` (doubled after each recheck that finds nothing, up to `common::wake::LONGEST_RECHECK`), each at
//! the offset after the last message it handed on.
//!
//! With `--share-partitions` the matchers split the partitions by leases in Redis
//! ([`super::leases`]), and this thread keeps them: a partition taken over is read from its
//! newest snapshot's offset, behind a reset that rebuilds its books ([`super::ownership`]); a
//! partition given up is first written out and committed. It does not doze then.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
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
use super::leases::Leases;
use super::metrics::Metrics;
use super::ownership::Ownership;
use super::ring::{now_ns, push_wait, Hops, Input, Stop};
use super::snapshots;
use crate::book::Capacity;

/// Idle this long (caught up, nothing read), the consumer gives up its partitions.
const IDLE: Duration = Duration::from_millis(250);

/// After a recheck that found nothing, it gives them up again this soon.
const PEEK: Duration = Duration::from_millis(20);

/// A dozing consumer takes its partitions again after this long even without a wake-up.
const RECHECK: Duration = Duration::from_secs(1);

/// How long a partition given up waits for the I/O thread to stop writing it.
const HAND_OVER: Duration = Duration::from_secs(10);

/// The threads the consumer wakes.
pub struct Threads {
    /// The book thread (after each push).
    pub book: Thread,
    /// The I/O thread (while a partition is given up).
    pub io: Thread,
}

/// Persisted offsets from the I/O thread, and those not yet committed.
struct Commits {
    /// From the I/O thread: (partition, next offset).
    rx: Receiver<(i32, i64)>,
    /// Partition → next offset to commit.
    pending: HashMap<i32, i64>,
}

impl Commits {
    /// Takes what the I/O thread reported since the last call.
    fn collect(&mut self) {
        while let Ok((p, next)) = self.rx.try_recv() {
            self.note(p, next);
        }
    }

    /// Partition `p` is persisted up to `next`.
    fn note(&mut self, p: i32, next: i64) {
        let entry = self.pending.entry(p).or_insert(next);
        *entry = (*entry).max(next);
    }
}

/// The group's committed offset of each of `partitions` (0 where nothing was committed yet).
fn committed(
    consumer: &OrdersConsumer,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
    timeout: Duration,
) -> anyhow::Result<HashMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, timeout).context("reading committed offsets")?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| (e.partition(), if let Offset::Offset(n) = e.offset() { n } else { 0 }))
        .collect())
}

/// A partition taken over, for the loop to start.
struct Assigned {
    /// The partition.
    partition: i32,
    /// Its reset's token.
    token: u64,
    /// Where reading starts (`None`: the beginning).
    start: Option<i64>,
    /// The group's committed offset: emit from here.
    committed: i64,
    /// The partition's first offset (older records may be gone).
    low: i64,
    /// The partition's end when it was assigned: caught up past it.
    high: i64,
}

/// What taking partitions over and giving them up needs (shared partitions only).
struct Group {
    /// Who owns what.
    owner: Arc<Ownership>,
    /// Snapshots of partitions taken over come from here.
    snapshot_dir: Option<PathBuf>,
    /// Symbols, for restoring books.
    table: SymbolTable,
    /// Book capacity, for restoring books.
    capacity: Capacity,
    /// Woken while a partition is given up.
    io: Thread,
    /// A drain skips the hand-over wait (the pipeline is finishing anyway).
    stop: Stop,
    /// The partition leases.
    leases: Leases,
}

/// The consumer's context: per-partition lag from librdkafka's statistics (once a second,
/// served by `poll`), and the commits.
struct Context {
    /// The orders topic.
    topic: String,
    /// `matcher_consumer_lag_messages`.
    lag: IntGaugeVec,
    /// Persisted offsets.
    commits: Mutex<Commits>,
}

impl ClientContext for Context {
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

impl ConsumerContext for Context {}

impl Group {
    /// Partition `p` is ours: its snapshot (if any) is filed for the pipeline, its committed
    /// offset and end noted for the loop.
    /// Fails (nothing granted) if the broker cannot say where the partition stands.
    fn take_over(&self, consumer: &BaseConsumer<Context>, topic: &str, p: i32) -> anyhow::Result<Assigned> {
        let committed =
            committed(consumer, topic, [p], Duration::from_secs(5))?.get(&p).copied().unwrap_or(0);
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .context("reading the partition's ends")?;
        let mut reset = self
            .snapshot_dir
            .as_deref()
            .and_then(|dir| snapshots::for_partition(dir, p, &self.table, self.capacity))
            .unwrap_or_default();
        self.owner.grant(p);
        reset.generation = self.owner.generation(p);
        let start = reset.start;
        let token = self.owner.file(reset);
        tracing::info!(partition = p, ?start, committed, high, "taking over a partition");
        Ok(Assigned { partition: p, token, start, committed, low, high })
    }

    /// Partitions `ps` are going: nothing of theirs is written after this returns, and what was
    /// persisted is committed. False if the I/O thread did not finish its batch in time (then
    /// their leases must expire rather than be released: it may still write).
    fn give_up(
        &self,
        consumer: &BaseConsumer<Context>,
        topic: &str,
        ps: &[i32],
        commits: &Mutex<Commits>,
    ) -> bool {
        let epoch = self.owner.revoke(ps);
        let handed_over = self.stop.draining() || self.owner.await_io(epoch, &self.io, HAND_OVER);
        if !handed_over {
            tracing::warn!(?ps, "the I/O thread is still writing a batch (Redis or the broker away?): the leases will expire instead");
        }
        let mut commits = commits.lock().unwrap_or_else(|e| e.into_inner());
        commits.collect();
        let mut going: HashMap<i32, i64> =
            ps.iter().filter_map(|p| commits.pending.remove(p).map(|next| (*p, next))).collect();
        if let Err(e) = commit(consumer, topic, &mut going, CommitMode::Sync) {
            tracing::warn!(error = %e, "committing the partitions given up failed");
        }
        tracing::info!(?ps, "partitions given up");
        handed_over
    }
}

type OrdersConsumer = BaseConsumer<Context>;

/// Runs until `stop`; a fatal error stops every thread.
#[allow(clippy::too_many_arguments)]
pub fn run(
    config: &Config,
    table: &SymbolTable,
    start_at: &HashMap<i32, i64>,
    owner: Arc<Ownership>,
    ring: rtrb::Producer<Input>,
    threads: Threads,
    commits: Receiver<(i32, i64)>,
    stop: &Stop,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<()> {
    let result = consume(config, table, start_at, owner, ring, threads, commits, stop, metrics);
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
    owner: Arc<Ownership>,
    mut ring: rtrb::Producer<Input>,
    threads: Threads,
    commits: Receiver<(i32, i64)>,
    stop: &Stop,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<()> {
    let book = &threads.book;
    let shared = owner.is_shared();
    let context = Context {
        topic: config.orders_topic.clone(),
        lag: metrics.consumer_lag.clone(),
        commits: Mutex::new(Commits { rx: commits, pending: HashMap::new() }),
    };
    let mut settings = ClientConfig::new();
    settings
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // How long the broker may hold a fetch that finds nothing (stock Tansu: every fetch).
        .set("fetch.wait.max.ms", config.fetch_wait_ms.max(1).to_string())
        .set("socket.timeout.ms", "3000")
        .set("statistics.interval.ms", "1000")
        // A start below the log's first record (trimmed) reads from there, never from the end.
        .set("auto.offset.reset", "earliest");
    let consumer: OrdersConsumer =
        settings.create_with_context(context).context("creating the Kafka consumer")?;
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
    // Per partition: emit from its committed offset; the matcher is current (ready) once it has
    // read what each partition held when it was taken — replayed below the committed offset,
    // emitted above — and the marker pushed after it has gone through the pipeline.
    let mut emit_from: HashMap<i32, i64> = HashMap::new();
    let mut catch_up_last: HashMap<i32, i64> = HashMap::new();
    for p in 0..partitions {
        // Exported from the start; the statistics keep it current.
        metrics.consumer_lag.with_label_values(&[&p.to_string()]).set(0);
    }
    // Where each partition goes on, from the snapshot's offset or the beginning: a dozing
    // consumer gives up its assignment (nothing is fetched) and takes it again at exactly these
    // offsets, so nothing read ahead and dropped can be skipped. (librdkafka's pause/resume left
    // a partition stuck in the tests.)
    let mut next: Vec<Offset> =
        (0..partitions).map(|p| start_at.get(&p).map_or(Offset::Beginning, |&o| Offset::Offset(o))).collect();
    let at = |next: &[Offset]| -> anyhow::Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        for (p, &offset) in next.iter().enumerate().filter(|(p, _)| owner.owns(*p as i32)) {
            tpl.add_partition_offset(&config.orders_topic, p as i32, offset)?;
        }
        Ok(tpl)
    };
    let mut group = None;
    if shared {
        anyhow::ensure!(
            partitions <= super::ownership::MAX_PARTITIONS,
            "{partitions} orders partitions: a matcher sharing them handles at most {}",
            super::ownership::MAX_PARTITIONS
        );
        let ttl = Duration::from_millis(u64::from(config.lease_ms.max(300)));
        let leases = Leases::new(&config.redis, &config.group, &config.instance, partitions, ttl)?;
        group = Some(Group {
            owner: owner.clone(),
            snapshot_dir: config.snapshot_dir.clone(),
            table: table.clone(),
            capacity: config.capacity,
            io: threads.io.clone(),
            stop: stop.clone(),
            leases,
        });
        consumer.assign(&TopicPartitionList::new())?;
        metrics.owned_partitions.set(0);
        tracing::info!(group = %config.group, lease_ms = ttl.as_millis() as u64, "sharing the orders partitions by leases");
    } else {
        emit_from = committed(&consumer, &config.orders_topic, 0..partitions, Duration::from_secs(10))?;
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
        tracing::info!(partitions, ?emit_from, ?start_at, remaining, "replaying the orders topic");
        consumer.assign(&at(&next)?)?;
        metrics.owned_partitions.set(i64::from(partitions));
        for p in 0..partitions {
            metrics.owns_partition.with_label_values(&[&p.to_string()]).set(1);
        }
    }
    let listener =
        config.wake_listen.as_deref().filter(|_| !shared).and_then(|addr| match Listener::bind(addr) {
            Ok(l) => {
                tracing::info!(%addr, "dozing when idle: wake-ups arrive on UDP {addr}");
                Some(l)
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "cannot listen for wake-ups; fetching all the time");
                None
            }
        });
    let mut doze =
        Doze::new(IDLE, PEEK, RECHECK, Instant::now()).backing_off_to(common::wake::LONGEST_RECHECK);

    let commit_interval = Duration::from_millis(config.commit_interval_ms);
    let mut committed_at = Instant::now();
    // Alone, the marker can follow the replay at once; sharing, only once the group has said
    // which partitions are ours.
    let mut caught_up_sent = false;
    let mut assigned_once = !shared;
    while !stop.draining() {
        if let Some(group) = group.as_mut().filter(|g| g.leases.due(Instant::now())) {
            let d = group.leases.round(Instant::now());
            let moved = !(d.lost.is_empty() && d.release.is_empty() && d.take.is_empty());
            group.owner.renewed_until(group.leases.good_until_ms());
            for &p in d.lost.iter().chain(&d.release) {
                let handed_over =
                    group.give_up(&consumer, &config.orders_topic, &[p], &consumer.context().commits);
                catch_up_last.remove(&p);
                emit_from.remove(&p);
                if d.release.contains(&p) {
                    if handed_over {
                        group.leases.release(p);
                    } else {
                        group.leases.abandon(p);
                    }
                }
            }
            for &p in &d.take {
                let a = match group.take_over(&consumer, &config.orders_topic, p) {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(partition = p, error = %e, "cannot take the partition over now; its lease goes back");
                        group.leases.release(p);
                        continue;
                    }
                };
                if let Some(n) = usize::try_from(p).ok().and_then(|i| next.get_mut(i)) {
                    *n = a.start.map_or(Offset::Beginning, Offset::Offset);
                }
                if !begin(a, &mut ring, book, stop, metrics, &mut emit_from, &mut catch_up_last) {
                    return Ok(());
                }
            }
            if moved {
                consumer.assign(&at(&next)?).context("assigning the partitions leased")?;
                let owned = owner.owned();
                metrics.owned_partitions.set(owned.len() as i64);
                for p in 0..partitions {
                    metrics
                        .owns_partition
                        .with_label_values(&[&p.to_string()])
                        .set(i64::from(owned.contains(&p)));
                }
                metrics.rebalances.inc();
                caught_up_sent = false;
                assigned_once = true;
            }
        }
        if assigned_once && !caught_up_sent && catch_up_last.is_empty() {
            // The marker follows the last replayed command through the rings.
            push(&mut ring, Input::CaughtUp, book, stop, metrics);
            caught_up_sent = true;
        }
        // Commit what the I/O thread has persisted (at most once per interval), of partitions
        // still ours.
        if committed_at.elapsed() >= commit_interval {
            let mut commits = consumer.context().commits.lock().unwrap_or_else(|e| e.into_inner());
            commits.collect();
            commits.pending.retain(|p, _| owner.owns(*p));
            if !commits.pending.is_empty() {
                commit(&consumer, &config.orders_topic, &mut commits.pending, CommitMode::Async)?;
                committed_at = Instant::now();
            }
        }
        if let Some(listener) = listener.as_ref().filter(|_| doze.paused()) {
            // Back often enough to commit what the I/O thread persists meanwhile (it pauses 250 ms
            // after the last read: by then that is little or nothing).
            let woken = listener.wait(doze.wait_for(Instant::now(), Duration::from_millis(100)));
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
        if shared && !owner.owns(partition) {
            continue;
        }
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
    let mut last = HashMap::new();
    {
        let mut commits = consumer.context().commits.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            match commits.rx.recv_timeout(Duration::from_millis(50)) {
                Ok((p, next)) => commits.note(p, next),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) if stop.stopped() => return Ok(()),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        commits.pending.retain(|p, _| owner.owns(*p));
        last.clone_from(&commits.pending);
        commit(&consumer, &config.orders_topic, &mut commits.pending, CommitMode::Sync)?;
        if commits.pending.is_empty() {
            tracing::info!(?last, "drained: every persisted command is committed");
        }
    }
    // The others need not wait for the leases to expire.
    if let Some(group) = group.as_mut() {
        group.leases.release_all();
    }
    Ok(())
}

/// Starts a partition taken over: its reset goes into the ring (before any of its commands), its
/// committed offset and end are noted, and the matcher is not current until it has read up to
/// that end. False if told to stop.
fn begin(
    a: Assigned,
    ring: &mut rtrb::Producer<Input>,
    book: &Thread,
    stop: &Stop,
    metrics: &Metrics,
    emit_from: &mut HashMap<i32, i64>,
    catch_up_last: &mut HashMap<i32, i64>,
) -> bool {
    if !push(ring, Input::Reset { partition: a.partition, token: a.token }, book, stop, metrics) {
        return false;
    }
    emit_from.insert(a.partition, a.committed);
    let from = a.start.unwrap_or(0).max(a.low);
    catch_up_last.remove(&a.partition);
    if a.high > from {
        catch_up_last.insert(a.partition, a.high - 1);
        metrics.catch_up_remaining.add(a.high - from);
    }
    metrics.caught_up.set(0);
    true
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

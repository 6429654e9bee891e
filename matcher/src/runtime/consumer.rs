//! The consumer thread: reads every partition of the `orders` topic from the beginning, decodes
//! each message into a command stamped with its log position, and pushes it into the ring of the
//! book thread. Commands below the group's committed offset are marked `replay`. It also commits
//! the offsets the I/O thread reports as persisted.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::Thread;
use std::time::Duration;

use anyhow::Context as _;
use common::envelope::decode_command_traced;
use common::{OrderId, SymbolTable};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use super::config::Config;
use super::metrics::Metrics;
use super::ring::{now_ns, push_wait, Hops, Input, Stop};

/// Runs until `stop`; a fatal error stops every thread.
pub fn run(
    config: &Config,
    table: &SymbolTable,
    ring: rtrb::Producer<Input>,
    book: Thread,
    commits: Receiver<(i32, i64)>,
    stop: &Stop,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let result = consume(config, table, ring, &book, &commits, stop, metrics);
    if let Err(e) = &result {
        tracing::error!(error = %e, "consumer failed; stopping");
        stop.stop();
    }
    result
}

fn consume(
    config: &Config,
    table: &SymbolTable,
    mut ring: rtrb::Producer<Input>,
    book: &Thread,
    commits: &Receiver<(i32, i64)>,
    stop: &Stop,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // The broker holds a fetch for about this long even when data is there (DESIGN.md §1).
        .set("fetch.wait.max.ms", "2")
        .set("socket.timeout.ms", "3000")
        .create()
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
        if high > low {
            catch_up_last.insert(p, high - 1);
            remaining += high - low;
        }
    }
    metrics.catch_up_remaining.set(remaining);
    tracing::info!(partitions, ?emit_from, remaining, "replaying the orders topic from the beginning");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&config.orders_topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;

    let mut pending: HashMap<i32, i64> = HashMap::new();
    let mut caught_up_sent = false;
    while !stop.draining() {
        if !caught_up_sent && catch_up_last.is_empty() {
            // The marker follows the last replayed command through the rings.
            push(&mut ring, Input::CaughtUp, book, stop, metrics);
            caught_up_sent = true;
        }
        // Commit what the I/O thread has persisted.
        pending.extend(commits.try_iter());
        commit(&consumer, &config.orders_topic, &mut pending, CommitMode::Async)?;
        let Some(msg) = consumer.poll(Duration::from_millis(20)) else { continue };
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "consume error");
                continue;
            }
        };
        let consumed = now_ns();
        let (partition, offset) = (msg.partition(), msg.offset());
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
    consumer: &BaseConsumer,
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

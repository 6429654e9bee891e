//! A Kafka producer that is quiet at rest: `rdkafka`'s `FutureProducer` with its own polling
//! thread.
//!
//! `FutureProducer` polls its delivery reports from a thread that calls `poll(100 ms)` in a loop,
//! and rdkafka 0.39 turns the last fraction of each 100 ms into a zero-millisecond wait (its
//! `Timeout::as_millis` truncates), so the thread spins through it: ~1 % of a core per producer
//! with nothing to send (seen with `perf`: `clock_gettime` on top), the larger part of the stack's
//! CPU at rest once the consumers doze (`crate::wake`). [`Producer`] is the same thing over a
//! `BaseProducer` whose thread polls a second at a time: the same delivery futures, the same
//! client, a tenth of the spin. Delivery reports still arrive at once (`poll` serves each event as
//! it comes).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Message, ToBytes};
use rdkafka::producer::future_producer::{Delivery, OwnedDeliveryResult};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, FutureRecord, Producer as _, ProducerContext,
};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use tokio::sync::oneshot;

/// The consumers' `fetch.wait.max.ms` by default: how long the broker may hold a fetch that finds
/// nothing. Kafka, and the Tansu `broker/` builds, answer a held fetch as soon as its topic is
/// written, so the wait costs no latency, and a long one spares the broker the empty fetches of a
/// consumer asking again and again. Stock Tansu held every fetch for the whole wait, data or not
/// (DESIGN.md §1): against it a consumer needs a few milliseconds (the stack's plan passes
/// `--kafka-fetch-wait-ms` then).
pub const FETCH_WAIT_MS: u32 = 100;

/// How long one `poll` of the reporting thread lasts (and so how soon it notices its producer
/// is gone).
const POLL: Duration = Duration::from_secs(1);

/// Routes each delivery report to the future of its message.
pub struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Box<oneshot::Sender<OwnedDeliveryResult>>;

    fn delivery(&self, result: &DeliveryResult<'_>, to: Self::DeliveryOpaque) {
        let owned = match result {
            Ok(m) => Ok(Delivery { partition: m.partition(), offset: m.offset(), timestamp: m.timestamp() }),
            Err((e, m)) => Err((e.clone(), m.detach())),
        };
        let _ = to.send(owned); // the caller may have stopped waiting
    }
}

/// A message's delivery report, once the broker answered (or the producer gave it up: `Err`).
pub type DeliveryFuture = oneshot::Receiver<OwnedDeliveryResult>;

/// An idempotent-capable producer with delivery futures and a quiet reporting thread.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    producer: Arc<BaseProducer<Reports>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The thread ends within a poll and drops the last handle (which purges what is left).
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Producer {
    /// A producer with `config`, and its reporting thread.
    pub fn create(config: &ClientConfig) -> KafkaResult<Producer> {
        let producer = Arc::new(BaseProducer::from_config_and_context(config, Reports)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (producer.clone(), stop.clone());
        std::thread::Builder::new()
            .name("kafka-reports".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    p.poll(POLL);
                }
            })
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        Ok(Producer { inner: Arc::new(Inner { producer, stop }) })
    }

    /// Enqueues `record`; the future resolves with its delivery report. Fails at once if the local
    /// queue is full (the caller still has the record's parts).
    pub fn send_result<K, P>(&self, record: FutureRecord<'_, K, P>) -> Result<DeliveryFuture, KafkaError>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (tx, rx) = oneshot::channel();
        let FutureRecord { topic, partition, payload, key, timestamp, headers } = record;
        let base =
            BaseRecord { topic, partition, payload, key, timestamp, headers, delivery_opaque: Box::new(tx) };
        self.inner.producer.send(base).map(|()| rx).map_err(|(e, _)| e)
    }

    /// Waits up to `timeout` for everything enqueued to be delivered.
    pub fn flush(&self, timeout: impl Into<Timeout>) -> KafkaResult<()> {
        self.inner.producer.flush(timeout)
    }

    /// The client (metadata, watermarks).
    pub fn client(&self) -> &rdkafka::client::Client<Reports> {
        self.inner.producer.client()
    }
}

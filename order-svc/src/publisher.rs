//! The publisher actor: owns the Kafka producer and turns a command into a durable log entry.
//!
//! The producer is idempotent with `acks=all`, so an acknowledged message is in the log exactly
//! once; the exchange order id is where it landed, `(partition, offset)`, read from the delivery
//! report. A delivery that does not complete within the delivery timeout is an *unknown outcome*
//! (the broker may have logged it): the caller answers 503 and the client looks the order up by
//! its client order id, or resubmits it (a second copy is rejected by the book as a duplicate).
//!
//! After a failed delivery the actor replaces its producer with a fresh one (a new producer id).
//! A producer whose messages timed out bumps its epoch on its own and retries, which the Tansu
//! broker does not survive (its idempotence check panics on the bumped epoch and the broker stops
//! storing: DESIGN.md §1); a fresh producer starts clean, on any broker. Nothing acknowledged is
//! affected: only messages whose outcome was already reported unknown are dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use common::OrderId;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

/// Publishes commands to the `orders` topic.
pub struct Publisher {
    /// The idempotent producer.
    producer: FutureProducer,
    /// Its settings, to make a fresh one.
    config: ClientConfig,
    /// Set by a failed delivery: replace the producer before the next publish.
    failed: Arc<AtomicBool>,
    /// Topic name.
    topic: String,
    /// How long a delivery may take before it is reported as unknown.
    delivery_timeout: Duration,
}

/// Why a publish did not get an acknowledgement.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker did not acknowledge in time, or refused: the outcome is unknown.
    #[error("the broker did not acknowledge the order ({0}); the outcome is unknown: look the order up by client_order_id, or resubmit it with the same client_order_id (a second copy is rejected as a duplicate)")]
    Unacknowledged(String),
    /// The broker acknowledged a position that does not fit an exchange order id.
    #[error("the broker returned an unusable position {partition}/{offset}")]
    Position {
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
}

impl Publisher {
    /// A producer for `brokers`, with `extra` client settings (`key=value`, broker-specific tuning).
    pub fn new(
        brokers: &str,
        topic: &str,
        delivery_timeout: Duration,
        extra: &[(String, String)],
    ) -> anyhow::Result<Publisher> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            // Bounded in-flight load: an overloaded broker is worse than a slower client.
            .set("max.in.flight.requests.per.connection", "5")
            .set("queue.buffering.max.messages", "10000")
            .set("message.timeout.ms", delivery_timeout.as_millis().to_string())
            .set("socket.timeout.ms", "3000");
        for (k, v) in extra {
            config.set(k, v);
        }
        let producer: FutureProducer = config.create()?;
        Ok(Publisher {
            producer,
            config,
            failed: Arc::new(AtomicBool::new(false)),
            topic: topic.to_owned(),
            delivery_timeout,
        })
    }

    /// Replaces the producer after a failed delivery.
    fn renew_if_failed(&mut self) {
        if self.failed.swap(false, Ordering::Relaxed) {
            match self.config.create::<FutureProducer>() {
                Ok(fresh) => {
                    tracing::warn!("a delivery failed: replacing the Kafka producer with a fresh one");
                    // Dropping the old one purges what it still holds (all already reported 503).
                    self.producer = fresh;
                }
                Err(e) => tracing::error!(error = %e, "could not create a fresh Kafka producer"),
            }
        }
    }
}

/// Is the broker reachable and the topic there? Answers with its partition count.
#[derive(Message)]
#[rtype(result = "Result<usize, String>")]
pub struct CheckReady;

impl Handler<CheckReady> for Publisher {
    type Result = ResponseFuture<Result<usize, String>>;

    /// Fetches the topic's metadata on a blocking thread.
    fn handle(&mut self, _: CheckReady, _: &mut Self::Context) -> Self::Result {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        Box::pin(async move {
            let check = tokio::task::spawn_blocking(move || {
                let md = producer
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(2))
                    .map_err(|e| e.to_string())?;
                match md.topics().first() {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len()),
                    _ => Err(format!("topic {topic} not found")),
                }
            });
            check.await.map_err(|e| e.to_string())?
        })
    }
}

impl Actor for Publisher {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        // Deliver what is queued before the process goes.
        let _ = self.producer.flush(Timeout::After(self.delivery_timeout));
    }
}

/// Publish one command; answers with its exchange id and how long the acknowledgement took.
#[derive(Message)]
#[rtype(result = "Result<(OrderId, Duration), PublishError>")]
pub struct Publish {
    /// The message key (the symbol, so one symbol stays in one partition); `None` with `partition`.
    pub key: Option<String>,
    /// An explicit partition (a cancel goes where its order is).
    pub partition: Option<i32>,
    /// The envelope JSON.
    pub payload: Vec<u8>,
}

impl Handler<Publish> for Publisher {
    type Result = ResponseFuture<Result<(OrderId, Duration), PublishError>>;

    /// Enqueues the message and waits for the broker's acknowledgement.
    fn handle(&mut self, msg: Publish, _: &mut Self::Context) -> Self::Result {
        self.renew_if_failed();
        let started = Instant::now();
        let mut record = FutureRecord::<str, [u8]>::to(&self.topic).payload(&msg.payload);
        if let Some(key) = msg.key.as_deref() {
            record = record.key(key);
        }
        if let Some(partition) = msg.partition {
            record = record.partition(partition);
        }
        let enqueued =
            self.producer.send_result(record).map_err(|(e, _)| PublishError::Unacknowledged(e.to_string()));
        // A safety net past the producer's own delivery timeout.
        let limit = self.delivery_timeout + Duration::from_secs(1);
        let failed = self.failed.clone();
        Box::pin(async move {
            let outcome = deliver(enqueued, limit).await;
            if outcome.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            outcome.map(|id| (id, started.elapsed()))
        })
    }
}

/// Waits for a delivery report and turns it into an exchange order id.
async fn deliver(
    enqueued: Result<rdkafka::producer::DeliveryFuture, PublishError>,
    limit: Duration,
) -> Result<OrderId, PublishError> {
    {
        {
            let delivery = enqueued?;
            let report = match tokio::time::timeout(limit, delivery).await {
                Ok(Ok(report)) => report,
                Ok(Err(_canceled)) => return Err(PublishError::Unacknowledged("producer shut down".into())),
                Err(_) => return Err(PublishError::Unacknowledged("delivery timed out".into())),
            };
            let delivery = report.map_err(|(e, _)| PublishError::Unacknowledged(e.to_string()))?;
            let (partition, offset) = (delivery.partition, delivery.offset);
            let id = u16::try_from(partition)
                .ok()
                .zip(u64::try_from(offset).ok())
                .and_then(|(p, o)| OrderId::new(p, o))
                .ok_or(PublishError::Position { partition, offset })?;
            Ok(id)
        }
    }
}

//! Trading Lab's order entry (DESIGN.md §1, §5): stateless, horizontally scaled. It validates an
//! order (shape, ranges, known symbol, exact decimals, static limits), publishes it to the
//! `orders` topic with an idempotent, `acks=all` producer keyed by symbol, and answers `202` with
//! the exchange order id — `(partition, offset)` from the delivery report — only after the broker
//! acknowledged. A broker that does not acknowledge in time gives `503`: outcome unknown.
//!
//! # Layout
//! - `validate`, `error`: request bodies → commands and the JSON error shape, shared with the
//!   gateway from [`common::http`].
//! - [`publisher`]: the actor that owns the Kafka producer.
//! - [`routes`]: the HTTP routes.
//! - [`metrics`]: Prometheus metrics.
#![forbid(unsafe_code)]

pub mod metrics;
pub mod publisher;
pub mod routes;

pub use common::http::{error, validate};

use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_web::web;
use anyhow::Context as _;
use common::shutdown::Shutdown;
use common::SymbolTable;

/// Everything the service is started with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// This instance's name.
    pub instance: String,
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The commands topic.
    pub topic: String,
    /// How long a publish may wait for the broker's acknowledgement.
    pub delivery_timeout: Duration,
    /// Extra producer settings (`key=value`).
    pub kafka_options: Vec<(String, String)>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Whom to wake once the broker has acknowledged a command (UDP `host:port` each: the
    /// matcher, `common::wake`).
    pub wake: Vec<String>,
}

/// Serves until `shutdown` fires (graceful: in-flight requests finish, the producer flushes).
/// Needs an actix system (`#[actix_web::main]`, `#[actix_web::test]`).
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(&config.listen)
        .with_context(|| format!("listening on {}", config.listen))?;
    let publisher = publisher::Publisher::new(
        &config.brokers,
        &config.topic,
        config.delivery_timeout,
        &config.kafka_options,
    )?
    .waking(&config.wake)
    .context("opening the wake-up socket")?;
    let publisher = publisher.start();
    let metrics = Arc::new(metrics::Metrics::new("order-svc")?);
    let state = web::Data::new(routes::State {
        table: SymbolTable::default(),
        publisher,
        instance: config.instance.clone(),
        metrics: metrics.clone(),
        body_limit: config.body_limit,
    });
    tracing::info!(listen = %config.listen, brokers = %config.brokers, instance = %config.instance, "order-svc starting");
    common::http::serve(listener, 2, state, routes::configure, shutdown).await?;
    tracing::info!("order-svc stopped");
    Ok(())
}

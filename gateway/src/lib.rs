//! Trading Lab's API gateway (DESIGN.md §1, §5): the public routes behind nginx. It validates at
//! the edge (the same checks as order entry: bad requests never reach it), assigns a request id
//! (`x-request-id`, passed on and returned), enforces a body limit (413), sends writes to the
//! order-svc pool with health checks and failover, and reads to the matcher front.
//!
//! # Layout
//! - [`upstream`]: the keep-alive pools, health checks, failover.
//! - [`routes`]: the routes.
#![forbid(unsafe_code)]

pub mod routes;
pub mod upstream;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use common::SymbolTable;

/// Everything the gateway is started with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Instance name.
    pub instance: String,
    /// order-svc base URLs.
    pub order_svcs: Vec<String>,
    /// Matcher front base URL.
    pub matcher: String,
    /// Largest request body.
    pub body_limit: usize,
    /// How long an upstream may take to answer.
    pub upstream_timeout: Duration,
}

/// Runs until SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let writes = upstream::Pool::new(config.order_svcs.clone(), config.upstream_timeout)?;
    let reads = upstream::Pool::new(vec![config.matcher.clone()], config.upstream_timeout)?;
    actix_web::rt::spawn(writes.clone().check_health(Duration::from_millis(500)));
    actix_web::rt::spawn(reads.clone().check_health(Duration::from_millis(500)));
    let metrics = Arc::new(routes::Metrics::new()?);
    let state = web::Data::new(routes::State {
        table: SymbolTable::default(),
        writes,
        reads,
        instance: config.instance.clone(),
        body_limit: config.body_limit,
        metrics: metrics.clone(),
        counter: AtomicU64::new(0),
    });
    tracing::info!(listen = %config.listen, instance = %config.instance, order_svcs = ?config.order_svcs, matcher = %config.matcher, "gateway starting");
    common::http::serve(&config.listen, 2, state, metrics.http.clone(), routes::configure).await?;
    tracing::info!("gateway stopped");
    Ok(())
}

//! Trading Lab's API gateway (DESIGN.md §1, §5): the public routes behind nginx. It knows who
//! calls (accounts, session tokens and cookies, API keys), rate-limits, validates at the edge (the
//! same checks as order entry: bad requests never reach it), assigns a request id (`x-request-id`,
//! passed on and returned), enforces a body limit (413), sends writes to the order-svc pool with
//! health checks and failover, and reads to the matcher front.
//!
//! # Layout
//! - [`auth`]: users, tokens, API keys; who is calling.
//! - [`accounts`]: the account routes (sign-up, login, API keys).
//! - [`admin`]: the operators' routes (halt, resume, reference price, mass-cancel) and their log.
//! - [`limits`]: rate limits.
//! - [`routes`]: the order and market-data routes.
//! - [`system`]: the live system map's data: every process's health, rate and p99.
//! - [`upstream`]: the keep-alive pools, health checks, failover.
//! - [`ws`]: market data over WebSocket (`GET /ws`): the Kafka feed, books, sessions.
#![forbid(unsafe_code)]

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod limits;
pub mod routes;
pub mod system;
pub mod upstream;
pub mod ws;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use anyhow::Context as _;
use common::shutdown::Shutdown;
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
    /// Accounts: `None` is development mode (`--no-auth`, everyone is `anonymous`).
    pub accounts: Option<Accounts>,
    /// Rate limits.
    pub limits: limits::Config,
    /// Peers whose `X-Real-IP` names the client (nginx).
    pub trusted_proxies: accounts::TrustedProxies,
    /// Market data over WebSocket.
    pub ws: ws::Config,
    /// The processes the system map shows (empty: this gateway's own upstreams).
    pub watch: Vec<(String, system::Target)>,
}

/// What accounts need.
#[derive(Clone)]
pub struct Accounts {
    /// Redis, where users and API keys live.
    pub redis: String,
    /// The token-signing secret (at least 32 bytes).
    pub secret: Vec<u8>,
    /// How long a session token lives.
    pub token_ttl: Duration,
    /// Mark the session cookie `Secure` (behind HTTPS).
    pub cookie_secure: bool,
}

impl std::fmt::Debug for Accounts {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").field("redis", &self.redis).field("token_ttl", &self.token_ttl).finish()
    }
}

/// Serves until `shutdown` fires, then lets the requests in flight finish. Needs an actix system
/// (`#[actix_web::main]`, `#[actix_web::test]`).
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(&config.listen)
        .with_context(|| format!("listening on {}", config.listen))?;
    let metrics = Arc::new(routes::Metrics::new()?);
    let (timeout, pools) = (config.upstream_timeout, &metrics.upstream);
    let writes = upstream::Pool::observed("order_svc", config.order_svcs.clone(), timeout, pools)?;
    let reads = upstream::Pool::observed("matcher", vec![config.matcher.clone()], timeout, pools)?;
    let checks = [
        actix_web::rt::spawn(writes.clone().check_health(Duration::from_millis(500))),
        actix_web::rt::spawn(reads.clone().check_health(Duration::from_millis(500))),
    ];
    let watched = if config.watch.is_empty() {
        let own = config.order_svcs.iter().enumerate().map(|(i, url)| (format!("order-svc-{}", i + 1), url));
        own.chain([("matcher".to_owned(), &config.matcher)])
            .map(|(name, url)| (name, system::Target::Service(url.trim_end_matches('/').to_owned())))
            .collect()
    } else {
        config.watch.clone()
    };
    let system = system::Watch::new(watched)?;
    let watching = actix_web::rt::spawn(system.clone().run());
    let (hub, feed) = ws::Hub::start(
        config.ws.clone(),
        SymbolTable::default(),
        reads.clone(),
        &metrics.http.registry,
        shutdown.clone(),
        &config.instance,
    )?;
    let auth = match &config.accounts {
        Some(a) => auth::Auth {
            tokens: Some(auth::token::Tokens::new(&a.secret, a.token_ttl)?),
            store: Some(
                auth::store::Store::connect(&a.redis).await.context("connecting to Redis for accounts")?,
            ),
            cookie_secure: a.cookie_secure,
        },
        None => {
            tracing::warn!("accounts are off (--no-auth): every caller is the shared anonymous account");
            auth::Auth::off()
        }
    };
    let state = web::Data::new(routes::State {
        table: SymbolTable::default(),
        writes,
        reads,
        instance: config.instance.clone(),
        body_limit: config.body_limit,
        metrics: metrics.clone(),
        counter: AtomicU64::new(0),
        auth,
        limits: limits::Limits::new(&config.limits),
        trusted_proxies: config.trusted_proxies.clone(),
        ws: hub,
        system,
    });
    let forget = {
        let state = state.clone();
        actix_web::rt::spawn(async move {
            loop {
                actix_web::rt::time::sleep(Duration::from_secs(60)).await;
                state.limits.forget_idle();
            }
        })
    };
    tracing::info!(listen = %config.listen, instance = %config.instance, order_svcs = ?config.order_svcs, matcher = %config.matcher, brokers = %config.ws.kafka.brokers, "gateway starting");
    let served = common::http::serve(listener, 2, state, routes::configure, shutdown).await;
    checks.iter().for_each(|c| c.abort());
    forget.abort();
    watching.abort();
    feed.stop();
    served?;
    tracing::info!("gateway stopped");
    Ok(())
}

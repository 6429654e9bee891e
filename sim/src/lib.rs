//! Trading Lab's simulated market (issue 9, "A market to trade against"): a market maker that
//! quotes both sides of every symbol around a slowly moving mid through the public API (nginx),
//! with API keys of its own, amends its quotes with cancel-replace, and now and then crosses
//! them from a second account, so a newcomer finds a live book and trades at once. It is a
//! client of the exchange like any other — it sees only what the API shows — and a service of
//! the stack: `./lab up` starts it, and it serves `/healthz`, `/readyz` (ready once it has signed
//! in and quotes both sides of every symbol it can), `/whoami` and `/metrics` like every service.
//!
//! Two accounts: `sim-maker` rests the quotes (post-only GTC limits); `sim-taker` sends the
//! crossing IOCs (the maker's own would be stopped by self-trade prevention). The rate is one
//! action a tick, `rate` ticks a second (default 4: a 2-core machine stays responsive), plus at
//! most one status read a tick.
//!
//! # Layout
//! - [`quote`]: the pure core — symbols in ticks and lots, the quotes wanted around a mid, the
//!   random walk and its band clamp, which quote to place or amend next, crosses, backoff.
//! - [`client`]: the public API over HTTP: one request, how to read its answer and its trouble,
//!   signing an account in.
//! - [`maker`]: the loop that ties them together on a steady schedule.
//! - [`metrics`]: `sim_actions_total`, `sim_errors_total`, `sim_request_seconds`.
//! - [`run`] (here): the service around the loop.
#![forbid(unsafe_code)]

pub mod client;
pub mod maker;
pub mod metrics;
pub mod quote;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::web;
use anyhow::Context as _;
use common::http::error::{ApiError, Unavailable};
use common::http::{HttpMetrics, Service};
use common::shutdown::Shutdown;
use serde_json::{Map, Value};

/// Everything the simulator is started with.
#[derive(Clone)]
pub struct Config {
    /// The public API's base URL (nginx).
    pub url: String,
    /// Address of its own HTTP endpoints.
    pub listen: String,
    /// This instance's name (`/whoami`).
    pub instance: String,
    /// The accounts' password.
    pub password: String,
    /// The account that quotes.
    pub maker_user: String,
    /// The account that crosses.
    pub taker_user: String,
    /// Only these symbols (`None`: every symbol the exchange lists).
    pub symbols: Option<Vec<String>>,
    /// Ticks a second: one action each.
    pub rate: f64,
    /// Quotes per side.
    pub levels: usize,
    /// Bid-ask spread, in basis points of the reference (at least two ticks).
    pub spread_bps: u32,
    /// One step of the mid's walk, in basis points of the reference (at least a tick).
    pub walk_bps: u32,
    /// Chance that a tick's action is a cross.
    pub cross_prob: f64,
    /// The random source's seed.
    pub seed: u64,
    /// Stop after this long (`None`: run until stopped).
    pub duration: Option<Duration>,
}

impl std::fmt::Debug for Config {
    /// Everything but the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("listen", &self.listen)
            .field("instance", &self.instance)
            .field("maker_user", &self.maker_user)
            .field("taker_user", &self.taker_user)
            .field("symbols", &self.symbols)
            .field("rate", &self.rate)
            .field("levels", &self.levels)
            .field("spread_bps", &self.spread_bps)
            .field("walk_bps", &self.walk_bps)
            .field("cross_prob", &self.cross_prob)
            .field("seed", &self.seed)
            .field("duration", &self.duration)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Checks what flags alone can get wrong; the message names the flag.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1_000.0,
            "--rate must be above 0 and at most 1000 actions/s, not {}",
            self.rate
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.cross_prob),
            "--cross-prob must be between 0 and 1, not {}",
            self.cross_prob
        );
        anyhow::ensure!(
            (1..=quote::MAX_LEVELS).contains(&self.levels),
            "--levels must be 1 to {}, not {}",
            quote::MAX_LEVELS,
            self.levels
        );
        anyhow::ensure!(
            (10..=128).contains(&self.password.len()),
            "the password must be 10 to 128 bytes (the exchange's rule), not {}",
            self.password.len()
        );
        anyhow::ensure!(self.maker_user != self.taker_user, "--maker-user and --taker-user must differ");
        anyhow::ensure!(
            self.url.starts_with("http://") || self.url.starts_with("https://"),
            "--url must start with http:// or https://, not {:?}",
            self.url
        );
        if let Some(symbols) = &self.symbols {
            anyhow::ensure!(!symbols.is_empty(), "--symbols names no symbol");
        }
        Ok(())
    }
}

/// Whether the simulator is ready, and what it is doing or quoting: `/readyz`.
#[derive(Debug, Default)]
pub struct Readiness {
    state: Mutex<(bool, String)>,
}

impl Readiness {
    /// Ready or not; `what` says what it waits for, or which symbols it quotes.
    pub fn set(&self, ready: bool, what: &str) {
        if let Ok(mut s) = self.state.lock() {
            *s = (ready, what.to_owned());
        }
    }

    /// True once ready.
    pub fn is_ready(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.0)
    }

    fn get(&self) -> (bool, String) {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// What the service's endpoints share.
pub struct State {
    /// This instance's name.
    pub instance: String,
    /// Every metric.
    pub metrics: Arc<metrics::Metrics>,
    /// Set by the loop.
    pub readiness: Arc<Readiness>,
}

impl Service for State {
    const NAME: &'static str = "market-sim";

    fn instance(&self) -> &str {
        &self.instance
    }

    fn metrics(&self) -> &Arc<HttpMetrics> {
        &self.metrics.http
    }

    /// Ready once signed in and quoting both sides of every symbol it can; says which.
    async fn ready(&self) -> Result<Map<String, Value>, ApiError> {
        match self.readiness.get() {
            (true, symbols) => Ok(Map::from_iter([("symbols".to_owned(), Value::from(symbols))])),
            (false, waiting) => {
                Err(ApiError::unavailable(Unavailable::Upstream, format!("not quoting yet: {waiting}")))
            }
        }
    }
}

/// No routes of its own: [`common::http::serve`] adds `/healthz`, `/readyz`, `/whoami`, `/metrics`.
fn routes(_: &mut web::ServiceConfig) {}

/// Runs the simulator and its endpoints until `shutdown` fires (or `config.duration` passes),
/// then cancels its quotes and stops. An error: bad flags, a port it cannot listen on, a password
/// that cannot log in, no symbol it can quote. Needs an actix system (`#[actix_web::main]`).
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    config.check()?;
    let listener = std::net::TcpListener::bind(&config.listen)
        .with_context(|| format!("listening on {} (--listen)", config.listen))?;
    let address = listener.local_addr()?;
    let metrics = Arc::new(metrics::Metrics::new()?);
    let readiness = Arc::new(Readiness::default());
    let state = web::Data::new(State {
        instance: config.instance.clone(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    });
    tracing::info!(listen = %address, instance = %config.instance, "market-sim serving its endpoints");
    let server = actix_web::rt::spawn(common::http::serve(listener, 1, state, routes, shutdown.clone()));
    if let Some(d) = config.duration {
        let stop = shutdown.clone();
        actix_web::rt::spawn(async move {
            tokio::time::sleep(d).await;
            tracing::info!(after_s = d.as_secs_f64(), "--duration-secs reached: stopping");
            stop.trigger();
        });
    }
    let maker = maker::Maker::new(config, metrics, readiness, shutdown.clone())?;
    let outcome = maker.run().await;
    shutdown.trigger();
    let served = server.await;
    outcome?;
    served.context("the HTTP server's task")?.context("the HTTP server")?;
    tracing::info!("market-sim stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            url: "http://127.0.0.1:8080".into(),
            listen: "127.0.0.1:0".into(),
            instance: "market-sim".into(),
            password: "a-long-password".into(),
            maker_user: "sim-maker".into(),
            taker_user: "sim-taker".into(),
            symbols: None,
            rate: 4.0,
            levels: 3,
            spread_bps: 10,
            walk_bps: 2,
            cross_prob: 0.15,
            seed: 1,
            duration: None,
        }
    }

    #[test]
    fn flags_are_checked_and_the_password_never_printed() {
        assert!(config().check().is_ok());
        let bad = [
            Config { rate: 0.0, ..config() },
            Config { rate: f64::NAN, ..config() },
            Config { cross_prob: 1.5, ..config() },
            Config { levels: 0, ..config() },
            Config { password: "short".into(), ..config() },
            Config { taker_user: "sim-maker".into(), ..config() },
            Config { url: "127.0.0.1:8080".into(), ..config() },
            Config { symbols: Some(vec![]), ..config() },
        ];
        for c in bad {
            assert!(c.check().is_err(), "{c:?}");
        }
        assert!(!format!("{:?}", config()).contains("a-long-password"));
    }

    #[actix_web::test]
    async fn an_unreachable_exchange_is_waited_for_until_stopped() {
        // Nothing listens there: the run keeps retrying until stopped, then ends cleanly.
        let nothing = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let shutdown = Shutdown::new();
        let stop = shutdown.clone();
        actix_web::rt::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1_200)).await;
            stop.trigger();
        });
        let c = Config { url: format!("http://{nothing}"), ..config() };
        let ran = tokio::time::timeout(Duration::from_secs(10), run(c, shutdown)).await;
        assert!(matches!(ran, Ok(Ok(()))), "an unreachable exchange is waited for, not an error: {ran:?}");
        // Bad flags are an error at once.
        let ran = run(Config { rate: -1.0, ..config() }, Shutdown::new()).await;
        assert!(ran.unwrap_err().to_string().contains("--rate"));
    }

    /// A stand-in exchange whose login refuses every password.
    fn refusing_exchange(cfg: &mut web::ServiceConfig) {
        use actix_web::HttpResponse;
        cfg.route(
            "/api/v1/auth/signup",
            web::post().to(|| async {
                HttpResponse::BadRequest()
                    .json(serde_json::json!({"error": {"code": "username_taken", "message": "taken"}}))
            }),
        )
        .route(
            "/api/v1/auth/login",
            web::post().to(|| async {
                HttpResponse::Unauthorized().json(
                    serde_json::json!({"error": {"code": "bad_credentials", "message": "wrong username or password"}}),
                )
            }),
        );
    }

    #[actix_web::test]
    async fn a_password_the_exchange_refuses_ends_the_run_with_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = actix_web::HttpServer::new(|| actix_web::App::new().configure(refusing_exchange))
            .workers(1)
            .listen(listener)
            .unwrap()
            .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let ran =
            tokio::time::timeout(Duration::from_secs(10), run(Config { url, ..config() }, Shutdown::new()))
                .await;
        handle.stop(false).await;
        let message = ran.expect("it gives up at once").unwrap_err().to_string();
        assert!(message.contains("sim-maker") && message.contains("another password"), "{message}");
    }
}

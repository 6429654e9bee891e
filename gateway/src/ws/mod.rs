//! Market data over WebSocket, `GET /ws` (gateway/WEBSOCKET.md has the protocol and the sync
//! rules a client follows).
//!
//! ```text
//!  Kafka order-events ──► consumer thread ──► feed actor ──► bounded queue ──► session actor ──► socket
//!  (every partition)      (kafka.rs)          (feed.rs:        (link.rs)        (session.rs,
//!                          one per gateway     books, fan-out)                   one per client)
//!                                                 ▲
//!                     matcher front GET /api/v1/book/{sym}: a book's bootstrap (book.rs)
//! ```
//!
//! One consumer per gateway reads the events once; the feed keeps each symbol's book (so a
//! subscriber's snapshot and the updates after it come from the same place, in order: no race
//! per session) and builds each frame once; each session has a bounded queue, and a full queue
//! never blocks the feed: the session is told, resynced, or closed.
//!
//! # Layout
//! - [`protocol`]: the client's ops, the channels, the server's frames.
//! - [`book`]: a symbol's book, its bootstrap and update sequencing; the client's rules as code.
//! - [`link`]: the bounded queue to a session and its overflow signal.
//! - [`kafka`]: the consumer thread and the events it reads.
//! - [`feed`]: the feed actor.
//! - [`session`]: the session actor.

pub mod book;
pub mod feed;
pub mod kafka;
pub mod link;
pub mod protocol;
pub mod session;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use common::http::error::{ApiError, Unavailable};
use common::shutdown::Shutdown;
use common::{Account, SymbolTable};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use tokio::sync::mpsc;

use self::feed::{Feed, FeedMetrics, FeedMsg};
use self::kafka::{ConsumerMetrics, KafkaConfig};
use crate::auth::Caller;
use crate::routes::State;
use crate::upstream::Pool;

/// How the WebSocket side runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// The Kafka consumer.
    pub kafka: KafkaConfig,
    /// Frames a session may have queued before it overflows.
    pub queue: usize,
    /// How often a session is pinged and sent a `heartbeat`.
    pub heartbeat: Duration,
    /// How long a client may stay silent (not even a pong) before it is closed.
    pub idle_timeout: Duration,
    /// Most sessions open at once (more: `503`).
    pub max_sessions: usize,
    /// Level events a bootstrapping book keeps while it waits for its snapshot.
    pub bootstrap_buffer: usize,
    /// Test hooks on: `debug_pause`, `debug_skip`.
    pub test_hooks: bool,
}

impl Config {
    /// The defaults, reading `brokers`.
    pub fn new(brokers: &str) -> Config {
        Config {
            kafka: KafkaConfig {
                brokers: brokers.to_owned(),
                topic: "order-events".into(),
                fetch_wait_ms: common::kafka::FETCH_WAIT_MS,
                chunk: 512,
                wake_listen: None,
            },
            queue: 1024,
            heartbeat: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_sessions: 10_000,
            bootstrap_buffer: 200_000,
            test_hooks: false,
        }
    }
}

/// The WebSocket metrics (in the gateway's registry).
#[derive(Clone)]
pub struct Metrics {
    /// `ws_sessions`: sessions open.
    pub sessions: IntGauge,
    /// `ws_messages_sent_total`: frames written to sockets.
    pub sent: IntCounter,
    /// `ws_slow_closes_total`: sessions closed for overflowing again and again.
    pub slow_closes: IntCounter,
    /// `ws_feed_up`: 1 while the broker answers.
    pub feed_up: IntGauge,
    /// The feed's.
    pub feed: FeedMetrics,
    /// The consumer's.
    pub consumer: ConsumerMetrics,
}

impl Metrics {
    /// Registers every metric in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let lag = Histogram::with_opts(
            HistogramOpts::new(
                "ws_feed_lag_seconds",
                "An order-events message's Kafka timestamp (ms) to the gateway's consumer having it",
            )
            .buckets(common::http::buckets()),
        )?;
        registry.register(Box::new(lag.clone()))?;
        let feed_up = gauge("ws_feed_up", "1 while the broker answers the market-data consumer")?;
        Ok(Metrics {
            sessions: gauge("ws_sessions", "WebSocket sessions open")?,
            sent: counter("ws_messages_sent_total", "Frames written to WebSocket sessions")?,
            slow_closes: counter(
                "ws_slow_closes_total",
                "Sessions closed for overflowing their queue again and again",
            )?,
            feed_up: feed_up.clone(),
            feed: FeedMetrics {
                sent: counter("ws_frames_queued_total", "Frames the feed queued to sessions")?,
                overflows: counter(
                    "ws_overflows_total",
                    "Session queues that overflowed (the session was resynced or closed)",
                )?,
                resyncs: counter("ws_book_resyncs_total", "Book bootstraps from the matcher's snapshot")?,
                gaps: counter("ws_feed_gaps_total", "Sequence gaps in the gateway's order-events stream")?,
                duplicates: counter("ws_feed_duplicates_total", "Repeated order-events, dropped")?,
                subscriptions: gauge("ws_subscriptions", "Channel subscriptions open")?,
            },
            consumer: ConsumerMetrics {
                lag,
                offset_lag: gauge(
                    "ws_feed_offset_lag",
                    "Messages (packs of events) the market-data consumer is behind the topic's end, summed over its partitions",
                )?,
                up: feed_up,
            },
        })
    }
}

/// What every session shares; cheap to clone.
#[derive(Clone)]
pub struct Hub(Arc<HubInner>);

/// The hub's contents.
pub struct HubInner {
    /// How sessions run.
    pub config: Config,
    /// Symbols, for channel names.
    pub table: SymbolTable,
    /// The feed's mailbox.
    pub feed: mpsc::Sender<FeedMsg>,
    /// Metrics.
    pub metrics: Metrics,
    /// Fired when the gateway stops: sessions close with 1001.
    pub shutdown: Shutdown,
    /// This gateway's name (in `welcome`).
    pub instance: String,
    /// The next session id.
    next_id: AtomicU64,
    /// Sessions open.
    open: AtomicUsize,
}

impl std::ops::Deref for Hub {
    type Target = HubInner;

    fn deref(&self) -> &HubInner {
        &self.0
    }
}

/// The running feed: stop it with [`Running::stop`].
pub struct Running {
    /// Tells the consumer thread to stop.
    stop: Arc<AtomicBool>,
    /// The consumer thread (not joined: it notices the flag within one poll, 100 ms, or one
    /// round of metadata and watermark requests, a few seconds, and nothing waits for it).
    _consumer: std::thread::JoinHandle<()>,
    /// The feed task.
    feed: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the consumer and the feed.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.feed.abort();
    }
}

impl Hub {
    /// Starts the feed actor and the consumer thread (on the current runtime).
    pub fn start(
        config: Config,
        table: SymbolTable,
        reads: Arc<Pool>,
        registry: &Registry,
        shutdown: Shutdown,
        instance: &str,
    ) -> anyhow::Result<(Hub, Running)> {
        let metrics = Metrics::new(registry)?;
        let (tx, rx) = mpsc::channel(1024);
        let feed = Feed::new(table.clone(), reads, tx.clone(), metrics.feed.clone(), config.bootstrap_buffer);
        // On this thread's local set: the feed's own requests use the thread's client.
        let feed = actix_web::rt::spawn(feed.run(rx));
        let stop = Arc::new(AtomicBool::new(false));
        let consumer = kafka::spawn(
            config.kafka.clone(),
            table.clone(),
            tx.clone(),
            metrics.consumer.clone(),
            stop.clone(),
        )?;
        let hub = Hub(Arc::new(HubInner {
            config,
            table,
            feed: tx,
            metrics,
            shutdown,
            instance: instance.to_owned(),
            next_id: AtomicU64::new(1),
            open: AtomicUsize::new(0),
        }));
        Ok((hub, Running { stop, _consumer: consumer, feed }))
    }

    /// Whether the broker answers the feed.
    pub fn feed_up(&self) -> bool {
        self.metrics.feed_up.get() == 1
    }
}

/// Counts a session open while it lives.
struct Open(Hub);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.sessions.dec();
    }
}

/// `GET /ws`: upgrades to a session. Anyone may connect (the public channels); the `orders`
/// channel needs the caller's token (`Authorization: Bearer`) or session cookie on this request.
pub async fn upgrade(
    state: web::Data<State>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let hub = state.ws.clone();
    if hub.open.fetch_add(1, Ordering::Relaxed) >= hub.config.max_sessions {
        hub.open.fetch_sub(1, Ordering::Relaxed);
        return Err(ApiError::unavailable(
            Unavailable::Upstream,
            "too many WebSocket sessions; try again later",
        ));
    }
    hub.metrics.sessions.inc();
    let open = Open(hub.clone());
    let account = match crate::accounts::caller(&state, &req).await {
        Ok(Caller::User(user)) => Account::new(&user).map_err(|e| e.to_string()),
        Ok(Caller::Anyone) => Ok(Account::anonymous()),
        Err(e) => Err(e.to_string()),
    };
    let (response, ws, stream) = actix_ws::handle(&req, body).map_err(|e| ApiError::BadRequest {
        code: "bad_request",
        message: format!("GET /ws is a WebSocket endpoint: {e}"),
    })?;
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
    let (link, inbox) = link::link(hub.config.queue);
    hub.feed
        .send(FeedMsg::Join { id, link, account: account.as_ref().ok().copied() })
        .await
        .map_err(|_| ApiError::unavailable(Unavailable::Upstream, "the market-data feed is not running"))?;
    let session = session::Session::new(id, hub, ws, account);
    actix_web::rt::spawn(async move {
        let _open = open;
        session.run(stream.max_frame_size(64 * 1024), inbox).await;
    });
    Ok(response)
}

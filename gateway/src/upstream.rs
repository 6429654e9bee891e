//! The order-svc pool: keep-alive HTTP connections, active health checks, and failover.
//!
//! A background task asks every instance's `/healthz` twice a second. A write goes to the next
//! healthy instance in turn; if the connection cannot be made (the request was never sent), the
//! next instance is tried, so one instance down costs no client error. A request that was sent
//! but got no answer is not retried: the order may have been logged (`503`, outcome unknown).
//!
//! The client is actix's own (`awc`), one per thread of the gateway (its connections are the
//! thread's): a request is written and its answer read by the handler's own task. reqwest, before
//! it, ran each connection as a task of its own that the request's task talked to over a channel,
//! two wake-ups more per request (~28 % of a gateway's CPU was the upstream request at 1,000/s).
//! An idle connection is kept [`IDLE_KEPT`], less than the services' own keep-alive (actix's
//! 5 s), so a request never goes out on a connection the other side is closing; one the other side
//! has closed is noticed (and dropped) when it is taken from the pool.
//!
//! Each pool records, labelled with its name ([`UpstreamMetrics`]): how long answered requests
//! took, failover included (`gateway_upstream_seconds{pool}`), each failover
//! (`gateway_upstream_failovers_total{pool}`), and each failure
//! (`gateway_upstream_errors_total{pool,kind}`, [`ErrorKind`]).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use awc::error::SendRequestError;
use common::http::buckets;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

pub use awc::http::Method;

/// How long an idle connection to an instance is kept for the next request.
pub const IDLE_KEPT: Duration = Duration::from_secs(4);

/// How long making a connection may take before the next instance is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The largest answer read (the matcher front's longest lists are well below it).
const MAX_ANSWER: usize = 64 << 20;

thread_local! {
    /// This thread's client (`awc` is single-threaded: each actix worker has its own).
    static CLIENT: awc::Client = awc::Client::builder()
        .connector(awc::Connector::new().timeout(CONNECT_TIMEOUT).conn_keep_alive(IDLE_KEPT))
        .disable_timeout()
        .no_default_headers()
        .finish();
}

fn client() -> awc::Client {
    CLIENT.with(Clone::clone)
}

/// An upstream's answer: status, body, content type.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Why no upstream answered.
#[derive(Debug)]
pub enum Failure {
    /// No instance could be connected to: nothing was sent.
    NoneReachable,
    /// Sent, but no answer in time: the outcome is unknown.
    NoAnswer(String),
}

/// What `gateway_upstream_errors_total{kind}` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// One instance could not be connected to (nothing sent): the next one is tried.
    Connect,
    /// No instance could be connected to: the request failed, nothing was sent.
    NoneReachable,
    /// Sent, and no answer within the timeout.
    Timeout,
    /// Sent, and the connection failed before the whole answer came.
    NoAnswer,
}

impl ErrorKind {
    /// Every kind, in declaration order (`ALL[k as usize] == k`).
    pub const ALL: [ErrorKind; 4] =
        [ErrorKind::Connect, ErrorKind::NoneReachable, ErrorKind::Timeout, ErrorKind::NoAnswer];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::NoneReachable => "none_reachable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NoAnswer => "no_answer",
        }
    }

    /// The kind of a failed request that was sent.
    fn of(e: &SendRequestError) -> ErrorKind {
        match e {
            SendRequestError::Timeout => ErrorKind::Timeout,
            _ => ErrorKind::NoAnswer,
        }
    }
}

/// The pools' metrics, labelled by pool: registered once, each pool resolves its own children.
pub struct UpstreamMetrics {
    /// `gateway_upstream_seconds{pool}`.
    seconds: HistogramVec,
    /// `gateway_upstream_failovers_total{pool}`.
    failovers: IntCounterVec,
    /// `gateway_upstream_errors_total{pool,kind}`.
    errors: IntCounterVec,
}

impl UpstreamMetrics {
    /// The metrics, registered in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<UpstreamMetrics> {
        let m = UpstreamMetrics::unregistered()?;
        registry.register(Box::new(m.seconds.clone()))?;
        registry.register(Box::new(m.failovers.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        Ok(m)
    }

    /// The metrics, registered nowhere (a pool nobody scrapes).
    fn unregistered() -> prometheus::Result<UpstreamMetrics> {
        Ok(UpstreamMetrics {
            seconds: HistogramVec::new(
                HistogramOpts::new(
                    "gateway_upstream_seconds",
                    "Requests to an upstream pool until the answer, failovers included",
                )
                .buckets(buckets()),
                &["pool"],
            )?,
            failovers: IntCounterVec::new(
                Opts::new(
                    "gateway_upstream_failovers_total",
                    "Requests moved to another instance after a failed connect",
                ),
                &["pool"],
            )?,
            errors: IntCounterVec::new(
                Opts::new("gateway_upstream_errors_total", "Failed upstream requests and connects, by kind"),
                &["pool", "kind"],
            )?,
        })
    }

    /// One pool's children (every series exists from then on, at zero).
    fn pool(&self, pool: &str) -> PoolMetrics {
        PoolMetrics {
            seconds: self.seconds.with_label_values(&[pool]),
            failovers: self.failovers.with_label_values(&[pool]),
            errors: ErrorKind::ALL.map(|k| self.errors.with_label_values(&[pool, k.as_str()])),
        }
    }
}

/// One pool's metrics, resolved.
struct PoolMetrics {
    /// `gateway_upstream_seconds{pool}`.
    seconds: Histogram,
    /// `gateway_upstream_failovers_total{pool}`.
    failovers: IntCounter,
    /// `gateway_upstream_errors_total{pool,kind}`, by [`ErrorKind`].
    errors: [IntCounter; ErrorKind::ALL.len()],
}

impl PoolMetrics {
    /// Counts a failure.
    fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].inc();
    }
}

/// A set of equivalent upstream instances.
pub struct Pool {
    /// Base URLs (`http://127.0.0.1:9101`).
    urls: Vec<String>,
    /// Health as last checked.
    healthy: Vec<AtomicBool>,
    /// Round-robin cursor.
    next: AtomicUsize,
    /// How long a request may take until its answer.
    timeout: Duration,
    /// Latency, failovers, failures.
    metrics: PoolMetrics,
}

impl Pool {
    /// A pool of `urls` whose metrics are registered nowhere; all are assumed healthy until checked.
    pub fn new(urls: Vec<String>, timeout: Duration) -> anyhow::Result<Arc<Pool>> {
        Pool::observed("unobserved", urls, timeout, &UpstreamMetrics::unregistered()?)
    }

    /// A pool of `urls` recording in `metrics` as `pool`; all are assumed healthy until checked.
    pub fn observed(
        pool: &str,
        urls: Vec<String>,
        timeout: Duration,
        metrics: &UpstreamMetrics,
    ) -> anyhow::Result<Arc<Pool>> {
        let healthy = urls.iter().map(|_| AtomicBool::new(true)).collect();
        let metrics = metrics.pool(pool);
        Ok(Arc::new(Pool { urls, healthy, next: AtomicUsize::new(0), timeout, metrics }))
    }

    /// Checks every instance's `/healthz` every `every`, forever.
    pub async fn check_health(self: Arc<Pool>, every: Duration) {
        loop {
            for (i, url) in self.urls.iter().enumerate() {
                let ok = client()
                    .get(format!("{url}/healthz"))
                    .timeout(Duration::from_millis(400))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                let was = self.healthy[i].swap(ok, Ordering::Relaxed);
                if was != ok {
                    tracing::warn!(upstream = %url, healthy = ok, "upstream health changed");
                }
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Healthy instances, starting at the round-robin cursor; unhealthy ones after, as a last resort.
    fn order(&self) -> Vec<usize> {
        let n = self.urls.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let all = (0..n).map(|k| (start + k) % n);
        let (up, down): (Vec<usize>, Vec<usize>) =
            all.partition(|&i| self.healthy[i].load(Ordering::Relaxed));
        up.into_iter().chain(down).collect()
    }

    /// Whether any instance looks healthy.
    pub fn any_healthy(&self) -> bool {
        self.healthy.iter().any(|h| h.load(Ordering::Relaxed))
    }

    /// Sends a request to one instance, failing over while nothing was sent.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        request_id: &str,
        gateway_in: Option<common::Timestamp>,
    ) -> Result<Answer, Failure> {
        let started = Instant::now();
        let order = self.order();
        let client = client();
        let body = body.map(actix_web::web::Bytes::from);
        for (tried, &i) in order.iter().enumerate() {
            let url = format!("{}{path_and_query}", self.urls[i]);
            let mut req = client
                .request(method.clone(), &url)
                .timeout(self.timeout)
                .insert_header(("x-request-id", request_id));
            if let Some(at) = gateway_in {
                req = req.insert_header((common::http::GATEWAY_TS_HEADER, at.0.to_string()));
            }
            let sent = match &body {
                Some(body) => {
                    req.insert_header(("content-type", "application/json")).send_body(body.clone()).await
                }
                None => req.send().await,
            };
            let failed = match sent {
                Ok(mut r) => {
                    let status = r.status().as_u16();
                    match r.body().limit(MAX_ANSWER).await {
                        Ok(body) => {
                            self.metrics.seconds.observe(started.elapsed().as_secs_f64());
                            return Ok(Answer { status, body: body.to_vec() });
                        }
                        Err(e) => (ErrorKind::NoAnswer, e.to_string()),
                    }
                }
                Err(SendRequestError::Connect(e)) => {
                    self.healthy[i].store(false, Ordering::Relaxed);
                    self.metrics.error(ErrorKind::Connect);
                    if tried + 1 < order.len() {
                        self.metrics.failovers.inc();
                    }
                    tracing::warn!(upstream = %self.urls[i], error = %e, "cannot connect; trying the next instance");
                    continue;
                }
                Err(e) => (ErrorKind::of(&e), e.to_string()),
            };
            self.metrics.error(failed.0);
            return Err(Failure::NoAnswer(failed.1));
        }
        self.metrics.error(ErrorKind::NoneReachable);
        Err(Failure::NoneReachable)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An address nothing listens on (a port just released).
    fn dead() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    /// An instance that reads each request, writes `reply` and closes the connection.
    async fn answering(reply: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = vec![0; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(reply).await;
                let _ = s.shutdown().await;
            }
        });
        url
    }

    /// An instance that answers every request `202` and says it closes the connection.
    async fn live() -> String {
        answering(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").await
    }

    /// An instance that answers each request `202` as if it kept the connection, then closes it
    /// (as a service does with a connection idle past its keep-alive).
    async fn closing() -> String {
        answering(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok").await
    }

    #[actix_web::test]
    async fn a_connection_the_instance_closed_is_not_used_again() {
        let pool = Pool::new(vec![closing().await], Duration::from_secs(2)).unwrap();
        for i in 0..3 {
            let answer = pool.send(Method::POST, "/api/v1/orders", Some(b"{}".to_vec()), "r", None).await;
            assert_eq!(answer.as_ref().map(|a| a.status).ok(), Some(202), "request {i}: {:?}", answer.err());
            // The instance's close reaches this side before the next request.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn value(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
        let families = registry.gather();
        let family = families.iter().find(|f| f.name() == name).unwrap_or_else(|| panic!("no {name}"));
        let metric = family.get_metric().iter().find(|m| {
            labels.iter().all(|(k, v)| m.get_label().iter().any(|l| l.name() == *k && l.value() == *v))
        });
        let metric = metric.unwrap_or_else(|| panic!("no {name}{labels:?}"));
        match family.get_field_type() {
            prometheus::proto::MetricType::HISTOGRAM => metric.get_histogram().get_sample_count() as f64,
            _ => metric.get_counter().get_value(),
        }
    }

    #[actix_web::test]
    async fn a_failover_and_each_failure_are_counted_per_pool() {
        let registry = Registry::new();
        let metrics = UpstreamMetrics::new(&registry).unwrap();
        let timeout = Duration::from_secs(2);
        let writes = Pool::observed("order_svc", vec![dead(), live().await], timeout, &metrics).unwrap();
        let reads = Pool::observed("matcher", vec![dead()], timeout, &metrics).unwrap();

        // The first instance refuses: the second answers, and the caller sees no error.
        let answer = writes.send(Method::POST, "/api/v1/orders", None, "r-1", None).await;
        assert_eq!(answer.map(|a| a.status).ok(), Some(202));
        // The only instance refuses: nothing to fail over to.
        let failed = reads.send(Method::GET, "/api/v1/book/ABC", None, "r-2", None).await;
        assert!(matches!(failed, Err(Failure::NoneReachable)), "{:?}", failed.err());

        let get = |name, pool, kind: Option<&'static str>| {
            let mut labels = vec![("pool", pool)];
            labels.extend(kind.map(|k| ("kind", k)));
            value(&registry, name, &labels)
        };
        let errors = "gateway_upstream_errors_total";
        assert_eq!(get("gateway_upstream_failovers_total", "order_svc", None), 1.0);
        assert_eq!(get("gateway_upstream_failovers_total", "matcher", None), 0.0);
        assert_eq!(get("gateway_upstream_seconds", "order_svc", None), 1.0);
        assert_eq!(get("gateway_upstream_seconds", "matcher", None), 0.0, "only answers are timed");
        assert_eq!(get(errors, "order_svc", Some("connect")), 1.0);
        assert_eq!(get(errors, "order_svc", Some("none_reachable")), 0.0);
        assert_eq!(get(errors, "matcher", Some("connect")), 1.0);
        assert_eq!(get(errors, "matcher", Some("none_reachable")), 1.0);
        assert_eq!(get(errors, "matcher", Some("timeout")), 0.0);
    }
}

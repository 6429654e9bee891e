//! The live system map's data (`GET /api/v1/system`): every process of the stack with its health,
//! instance, request rate and p99 latency, read from the processes' own health and metrics
//! endpoints by the gateway, so a browser sees the whole stack through nginx without any internal
//! port being exposed.
//!
//! What to watch is configuration (`--watch name=url,…`; `./lab up` passes the whole stack): an
//! `http://host:port` is one of our services (`/healthz`, `/readyz`, `/whoami`, `/metrics`); an
//! `http://host:port/path` is nginx's `stub_status`; `redis://host:port` is asked `PING`;
//! `tcp://host:port` (the broker) must accept a connection. A background task polls them all
//! every [`INTERVAL`] while someone looks (the route was asked in the last [`WATCHED_FOR`]; a
//! stack nobody watches is not polled), and the route serves the last round. Each gateway polls on
//! its own, and says which one answered.
//!
//! The rate and the p99 are over the last interval, from the differences of the counters
//! (`http_requests_total`, and the `http_request_duration_seconds` buckets: the p99 is the upper
//! bound of the bucket it falls in), leaving out the probes' own routes. The matcher also reports
//! its commands per second (`matcher_commands_total`, every `type` together).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpResponse};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::routes::State;

/// How often the stack is polled.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// How long one request of a probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// How long one process's probe (up to four requests) may take in all.
const ROUND_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long after the route was last asked the stack is still polled.
pub const WATCHED_FOR: Duration = Duration::from_secs(30);

/// Routes the probes themselves call: not counted as traffic.
const PROBE_ROUTES: [&str; 4] = ["/healthz", "/readyz", "/whoami", "/metrics"];

/// How a process is watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One of our services at this base URL.
    Service(String),
    /// nginx's `stub_status` at this URL.
    Nginx(String),
    /// Redis at `host:port`.
    Redis(String),
    /// Something that must accept TCP connections at `host:port` (the broker).
    Tcp(String),
}

impl Target {
    /// Reads `redis://h:p`, `tcp://h:p`, `http://h:p` (a service) or `http://h:p/path` (nginx).
    pub fn parse(url: &str) -> Result<Target, String> {
        if let Some(rest) = url.strip_prefix("redis://") {
            // `redis://[user:password@]host:port[/db]`: the address only (the probe sends no AUTH).
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            Ok(Target::Redis(host.split('/').next().unwrap_or_default().to_owned()))
        } else if let Some(addr) = url.strip_prefix("tcp://") {
            Ok(Target::Tcp(addr.trim_end_matches('/').to_owned()))
        } else if let Some(rest) = url.strip_prefix("http://") {
            match rest.split_once('/') {
                Some((_, path)) if !path.is_empty() => Ok(Target::Nginx(url.to_owned())),
                _ => Ok(Target::Service(url.trim_end_matches('/').to_owned())),
            }
        } else {
            Err(format!("{url:?}: expected http://, redis:// or tcp://"))
        }
    }
}

/// Reads `--watch` entries, `name=url`.
pub fn parse_watch(entries: &[String]) -> Result<Vec<(String, Target)>, String> {
    entries
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (name, url) = e.split_once('=').ok_or_else(|| format!("--watch {e:?} is not name=url"))?;
            Ok((name.trim().to_owned(), Target::parse(url.trim())?))
        })
        .collect()
}

/// One process as last seen.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Node {
    /// Its name in the stack (`gateway-1`).
    pub name: String,
    /// What it is (`gateway`): the name without its instance number.
    pub kind: String,
    /// It answered its liveness probe.
    pub up: bool,
    /// It says it can serve (its own dependencies answer).
    pub ready: bool,
    /// Its `/whoami` instance, for our services.
    pub instance: Option<String>,
    /// Requests per second over the last interval (nginx: all; ours: without the probes).
    pub rps: Option<f64>,
    /// The p99 request latency over the last interval, in ms (a bucket's upper bound).
    pub p99_ms: Option<f64>,
    /// The matcher's commands per second over the last interval.
    pub commands_per_s: Option<f64>,
    /// What went wrong, when it is not up and ready.
    pub error: Option<String>,
}

/// The counters a rate or a percentile is worked out from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// When they were read.
    at: Option<Instant>,
    /// Requests served so far.
    requests: f64,
    /// Cumulative latency buckets: (upper bound in seconds, count), summed over routes.
    buckets: Vec<(f64, f64)>,
    /// The matcher's commands so far.
    commands: Option<f64>,
}

/// Reads the counters from a Prometheus text exposition.
pub fn counters(text: &str) -> Counters {
    let mut c = Counters::default();
    let mut buckets: HashMap<String, f64> = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let label = |key: &str| {
            labels.split(',').find_map(|kv| kv.strip_prefix(key)?.strip_prefix("=\"")?.split('"').next())
        };
        if label("route").is_some_and(|r| PROBE_ROUTES.contains(&r)) {
            continue;
        }
        match name {
            "http_requests_total" => c.requests += value,
            "http_request_duration_seconds_bucket" => {
                if let Some(le) = label("le") {
                    *buckets.entry(le.to_owned()).or_default() += value;
                }
            }
            "matcher_commands_total" => *c.commands.get_or_insert(0.0) += value,
            _ => {}
        }
    }
    c.buckets = buckets
        .into_iter()
        .filter_map(|(le, n)| Some((if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? }, n)))
        .collect();
    c.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    c
}

/// Per second, from `before` to `now`.
fn rate(before: f64, now: f64, secs: f64) -> f64 {
    ((now - before).max(0.0) / secs * 10.0).round() / 10.0
}

/// The rate and p99 (ms) between two readings; `None` without an earlier one (or no traffic for
/// the p99).
pub fn between(before: &Counters, now: &Counters) -> (Option<f64>, Option<f64>, Option<f64>) {
    let (Some(t0), Some(t1)) = (before.at, now.at) else { return (None, None, None) };
    let secs = t1.duration_since(t0).as_secs_f64().max(0.001);
    let rps = rate(before.requests, now.requests, secs);
    let commands = match (before.commands, now.commands) {
        (Some(a), Some(b)) => Some(rate(a, b, secs)),
        _ => None,
    };
    let old: HashMap<u64, f64> = before.buckets.iter().map(|(le, n)| (le.to_bits(), *n)).collect();
    let delta: Vec<(f64, f64)> =
        now.buckets.iter().map(|(le, n)| (*le, n - old.get(&le.to_bits()).copied().unwrap_or(0.0))).collect();
    let total = delta.last().map_or(0.0, |d| d.1);
    let p99 = (total > 0.0)
        .then(|| delta.iter().find(|(_, n)| *n >= total * 0.99).map(|(le, _)| *le))
        .flatten()
        .map(|le| if le.is_finite() { (le * 1e6).round() / 1e3 } else { f64::INFINITY })
        .filter(|ms| ms.is_finite());
    (Some(rps), p99, commands)
}

/// The requests counter of a `stub_status` page (`Active connections: …`, then `accepts handled
/// requests` and their three numbers).
pub fn stub_requests(text: &str) -> Option<f64> {
    let mut lines = text.lines();
    lines.find(|l| l.trim_start().starts_with("server accepts"))?;
    lines.next()?.split_whitespace().nth(2)?.parse().ok()
}

/// Who talks to whom, by kind: the arrows of the map.
const FLOWS: [(&str, &str); 9] = [
    ("market-sim", "nginx"),
    ("nginx", "gateway"),
    ("gateway", "order-svc"),
    ("gateway", "matcher"),
    ("gateway", "redis"),
    ("order-svc", "broker"),
    ("broker", "matcher"),
    ("broker", "gateway"),
    ("matcher", "redis"),
];

/// The kind of a process: its name without a trailing instance number.
fn kind(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((base, n)) if n.chars().all(|c| c.is_ascii_digit()) => base.to_owned(),
        _ => name.to_owned(),
    }
}

/// The arrows between the watched processes.
pub fn edges(names: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (from, to) in FLOWS {
        for a in names.iter().filter(|n| kind(n) == from) {
            for b in names.iter().filter(|n| kind(n) == to) {
                out.push((a.clone(), b.clone()));
            }
        }
    }
    out
}

/// The last round, as served.
#[derive(Clone, Debug, Default, Serialize)]
struct Round {
    checked_ms: u64,
    nodes: Vec<Node>,
}

/// The watcher: the targets, the counters of the last round, and the last round.
pub struct Watch {
    targets: Vec<(String, Target)>,
    edges: Vec<(String, String)>,
    client: reqwest::Client,
    last: Mutex<(Vec<Counters>, Round)>,
    /// When the route was last asked (ms since the epoch).
    asked_ms: std::sync::atomic::AtomicU64,
}

impl Watch {
    /// Watches `targets` (the map has just this gateway's own upstreams when none are given).
    pub fn new(targets: Vec<(String, Target)>) -> anyhow::Result<Arc<Watch>> {
        let names: Vec<String> = targets.iter().map(|(n, _)| n.clone()).collect();
        let client = reqwest::Client::builder().timeout(PROBE_TIMEOUT).build()?;
        let n = targets.len();
        Ok(Arc::new(Watch {
            edges: edges(&names),
            targets,
            client,
            last: Mutex::new((vec![Counters::default(); n], Round::default())),
            asked_ms: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    /// Polls every target every [`INTERVAL`] while someone looks, forever.
    pub async fn run(self: Arc<Watch>) {
        loop {
            let asked = self.asked_ms.load(std::sync::atomic::Ordering::Relaxed);
            if now_ms().saturating_sub(asked) <= WATCHED_FOR.as_millis() as u64 {
                self.round().await;
                tokio::time::sleep(INTERVAL).await;
            } else {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }

    /// One round: every target at once.
    async fn round(&self) {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, (name, target)) in self.targets.iter().enumerate() {
            let (name, target, client) = (name.clone(), target.clone(), self.client.clone());
            tasks.spawn(async move {
                let kind = kind(&name);
                let timed_out = || Node {
                    name: name.clone(),
                    kind,
                    error: Some("the probe timed out".into()),
                    ..Node::default()
                };
                let seen = tokio::time::timeout(ROUND_TIMEOUT, probe(&client, name.clone(), &target)).await;
                (i, seen.unwrap_or_else(|_| (timed_out(), Counters::default())))
            });
        }
        let mut seen: Vec<Option<(Node, Counters)>> = vec![None; self.targets.len()];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((i, result)) = joined {
                seen[i] = Some(result);
            }
        }
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut nodes = Vec::with_capacity(seen.len());
        for (i, s) in seen.into_iter().enumerate() {
            let (mut node, now) = s.unwrap_or_else(|| {
                let name = self.targets[i].0.clone();
                (
                    Node {
                        kind: kind(&name),
                        name,
                        error: Some("the probe failed".into()),
                        ..Node::default()
                    },
                    Counters::default(),
                )
            });
            let (rps, p99, commands) = between(&last.0[i], &now);
            if node.up {
                node.rps = node.rps.or(rps);
                node.p99_ms = p99;
                node.commands_per_s = commands;
            }
            last.0[i] = now;
            nodes.push(node);
        }
        last.1 = Round { checked_ms: now_ms(), nodes };
    }

    /// `GET /api/v1/system`'s body (and, from now on, a reason to keep polling).
    fn answer(&self, served_by: &str) -> serde_json::Value {
        self.asked_ms.store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        let last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        serde_json::json!({
            "served_by": served_by,
            "checked_ms": last.1.checked_ms,
            "interval_ms": INTERVAL.as_millis() as u64,
            "nodes": last.1.nodes,
            "edges": self.edges,
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A request's failure and its root cause, without the URL (internal addresses stay internal):
/// `error sending request: Connection refused (os error 111)`.
fn failed(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut cause: &dyn std::error::Error = &e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    let (what, why) = (e.to_string(), cause.to_string());
    if why == what {
        what
    } else {
        format!("{what}: {why}")
    }
}

/// Probes one target: the node as seen, and its counters.
async fn probe(client: &reqwest::Client, name: String, target: &Target) -> (Node, Counters) {
    let mut node = Node { kind: kind(&name), name, ..Node::default() };
    let mut counters = Counters::default();
    let result: Result<(), String> = async {
        match target {
            Target::Service(base) => {
                let get = |path: &str| client.get(format!("{base}{path}")).send();
                let health = get("/healthz").await.map_err(failed)?;
                node.up = health.status().is_success();
                if !node.up {
                    return Err(format!("/healthz answered {}", health.status()));
                }
                let ready = get("/readyz").await.map_err(failed)?;
                node.ready = ready.status().is_success();
                let why = (!node.ready).then_some(ready.text().await.unwrap_or_default());
                if let Ok(r) = get("/whoami").await {
                    let v: serde_json::Value = r.json().await.unwrap_or_default();
                    node.instance = v["instance"].as_str().map(str::to_owned);
                }
                if let Ok(r) = get("/metrics").await {
                    counters = counters_now(&r.text().await.unwrap_or_default());
                }
                match why {
                    Some(body) => Err(not_ready(&body)),
                    None => Ok(()),
                }
            }
            Target::Nginx(url) => {
                let r = client.get(url).send().await.map_err(failed)?;
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                counters.requests =
                    stub_requests(&text).ok_or_else(|| format!("no stub_status at its URL ({status})"))?;
                node.up = true;
                node.ready = true;
                counters.at = Some(Instant::now());
                Ok(())
            }
            Target::Redis(addr) => {
                let pong = tokio::time::timeout(PROBE_TIMEOUT, ping(addr))
                    .await
                    .map_err(|_| "timed out".to_owned())?;
                let answer = pong.map_err(|e| e.to_string())?;
                node.up = true;
                node.ready = answer.starts_with("+PONG");
                if node.ready {
                    Ok(())
                } else {
                    Err(format!("PING answered {:?}", answer.trim()))
                }
            }
            Target::Tcp(addr) => {
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr.as_str()))
                    .await
                    .map_err(|_| "timed out".to_owned())?
                    .map_err(|e| e.to_string())?;
                node.up = true;
                node.ready = true;
                Ok(())
            }
        }
    }
    .await;
    node.error = result.err();
    (node, counters)
}

/// Counters, stamped now.
fn counters_now(text: &str) -> Counters {
    Counters { at: Some(Instant::now()), ..counters(text) }
}

/// The message of a `/readyz` refusal (`{"error": {"message"}}`), or the body as it is.
fn not_ready(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// Redis's answer to `PING` (`+PONG`; `-NOAUTH …` from a Redis that wants a password).
async fn ping(addr: &str) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"PING\r\n").await?;
    let mut buf = [0u8; 128];
    let n = s.read(&mut buf).await?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// `GET /api/v1/system`: the last round (public: names, health and rates, no addresses).
pub async fn system(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(state.system.answer(&state.instance))
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP http_requests_total HTTP requests
# TYPE http_requests_total counter
http_requests_total{method="GET",route="/healthz",service="gateway",status="200"} 1000
http_requests_total{method="POST",route="/api/v1/orders",service="gateway",status="202"} 90
http_requests_total{method="GET",route="/api/v1/book/{symbol}",service="gateway",status="200"} 10
http_request_duration_seconds_bucket{route="/api/v1/orders",service="gateway",le="0.001"} 50
http_request_duration_seconds_bucket{route="/api/v1/orders",service="gateway",le="0.005"} 89
http_request_duration_seconds_bucket{route="/api/v1/orders",service="gateway",le="0.01"} 90
http_request_duration_seconds_bucket{route="/api/v1/orders",service="gateway",le="+Inf"} 90
http_request_duration_seconds_bucket{route="/healthz",service="gateway",le="+Inf"} 1000
matcher_commands_total{service="matcher",type="new"} 5
matcher_commands_total{service="matcher",type="cancel"} 2
"#;

    #[test]
    fn counters_leave_out_the_probes() {
        let c = counters(METRICS);
        assert_eq!(c.requests, 100.0);
        assert_eq!(c.buckets.last(), Some(&(f64::INFINITY, 90.0)));
        assert_eq!(c.commands, Some(7.0));
        assert_eq!(counters("garbage\n{}\nx y z"), Counters::default());
    }

    #[test]
    fn rate_and_p99_come_from_the_differences() {
        let t0 = Instant::now();
        let before = Counters { at: Some(t0), ..counters(METRICS) };
        let later = METRICS
            .replace("} 90\n", "} 290\n")
            .replace("le=\"0.001\"} 50", "le=\"0.001\"} 150")
            .replace("le=\"0.005\"} 89", "le=\"0.005\"} 287");
        let now = Counters { at: Some(t0 + Duration::from_secs(2)), ..counters(&later) };
        let (rps, p99, commands) = between(&before, &now);
        assert_eq!(rps, Some(100.0));
        // 200 new requests: 100 under 1 ms, 198 under 5 ms, 200 under 10 ms: the 198th is p99.
        assert_eq!(p99, Some(5.0));
        assert_eq!(commands, Some(0.0));
        assert_eq!(between(&Counters::default(), &now), (None, None, None));
        let idle = Counters { at: Some(t0 + Duration::from_secs(4)), ..now.clone() };
        assert_eq!(between(&now, &idle), (Some(0.0), None, Some(0.0)));
    }

    #[test]
    fn nginx_stub_status_and_targets_parse() {
        let page = "Active connections: 3 \nserver accepts handled requests\n 10 10 57 \nReading: 0 Writing: 1 Waiting: 2 \n";
        assert_eq!(stub_requests(page), Some(57.0));
        assert_eq!(stub_requests("<html>not it</html>"), None);
        let w = parse_watch(&[
            "gateway-1=http://127.0.0.1:9001".into(),
            "nginx=http://127.0.0.1:8080/_status".into(),
            "redis=redis://127.0.0.1:16379".into(),
            "broker=tcp://127.0.0.1:19092".into(),
        ])
        .unwrap();
        assert_eq!(w[0].1, Target::Service("http://127.0.0.1:9001".into()));
        assert_eq!(w[1].1, Target::Nginx("http://127.0.0.1:8080/_status".into()));
        assert_eq!(w[2].1, Target::Redis("127.0.0.1:16379".into()));
        assert_eq!(Target::parse("redis://:pw@h:1/0"), Ok(Target::Redis("h:1".into())));
        assert_eq!(w[3].1, Target::Tcp("127.0.0.1:19092".into()));
        assert!(parse_watch(&["gateway-1".into()]).unwrap_err().contains("name=url"));
        assert!(parse_watch(&["x=ftp://h".into()]).unwrap_err().contains("expected"));
    }

    #[test]
    fn edges_follow_the_flows_between_present_processes() {
        let names: Vec<String> = ["nginx", "gateway-1", "gateway-2", "order-svc-1", "broker"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let e = edges(&names);
        assert!(e.contains(&("nginx".into(), "gateway-2".into())));
        assert!(e.contains(&("gateway-1".into(), "order-svc-1".into())));
        assert!(e.contains(&("broker".into(), "gateway-1".into())));
        assert!(!e.iter().any(|(a, b)| a == "matcher" || b == "matcher"));
        assert_eq!(kind("order-svc-2"), "order-svc");
        assert_eq!(kind("market-sim"), "market-sim");
    }
}

//! What every HTTP service shares (feature `http`): [`serve`], which runs a service's routes
//! with the endpoints every service has (`/healthz`, `/readyz`, `/whoami`, `/metrics`: DESIGN.md
//! §1) until its [`Shutdown`] fires; the request metrics of DESIGN.md §6 —
//! `http_requests_total{route,method,status}` and `http_request_duration_seconds{route}` — in a
//! registry the service adds its own metrics to, and the middleware that records them; the one
//! JSON error shape ([`error`]), which `serve` also gives actix's own refusals (a bad query
//! string, path or JSON body, an unknown route); and the validation of order bodies
//! ([`validate`]), so the gateway at the edge and order entry behind it check exactly the same
//! things.
//!
//! A service implements [`Service`] for its handlers' shared state (its name, its instance, its
//! metrics, its readiness check), writes its routes as a `configure` function, and hands both to
//! [`serve`]; it starts its logs with [`logging::init`].

pub mod error;
pub mod logging;
pub mod validate;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};
use serde_json::{json, Map, Value};

use crate::shutdown::Shutdown;
use error::ApiError;

/// Latency buckets in seconds: 50 µs … ~13 s, doubling.
pub fn buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_05, 2.0, 19).unwrap_or_default()
}

/// A service's registry with the per-route request metrics in it.
pub struct HttpMetrics {
    /// Every metric of the service; add service-specific ones here.
    pub registry: Registry,
    /// `http_requests_total{route, method, status}`.
    pub requests: IntCounterVec,
    /// `http_request_duration_seconds{route}`.
    pub latency: HistogramVec,
}

impl HttpMetrics {
    /// A registry labelled `service=<service>` with the request metrics registered.
    pub fn new(service: &str) -> prometheus::Result<HttpMetrics> {
        let registry = Registry::new_custom(None, Some([("service".to_owned(), service.to_owned())].into()))?;
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route, method and status"),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route")
                .buckets(buckets()),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(HttpMetrics { registry, requests, latency })
    }

    /// The Prometheus text exposition of the whole registry.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding to a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Reads a request body of at most `limit` bytes: larger is `413`, unreadable is `400`.
pub async fn read_body(payload: web::Payload, limit: usize) -> Result<web::Bytes, ApiError> {
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(ApiError::field(format!("could not read the body: {e}"))),
        Err(_) => Err(ApiError::TooLarge(limit)),
    }
}

/// Unknown routes: 404 in the one error shape.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}

/// Middleware: counts and times every request by its route pattern.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let metrics = req.app_data::<web::Data<HttpMetrics>>().cloned();
    let started = Instant::now();
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let status = res.status().as_u16().to_string();
        m.requests.with_label_values(&[route.as_str(), method.as_str(), status.as_str()]).inc();
        m.latency.with_label_values(&[route.as_str()]).observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}

/// How long a stopping server lets the requests in flight finish, in seconds.
pub const SHUTDOWN_GRACE_SECS: u64 = 10;

/// What [`serve`] needs of a service for the endpoints every service has. Implemented by the
/// state its handlers share.
pub trait Service: Send + Sync + 'static {
    /// The service in `/whoami`: `gateway`, `order-svc`, `matcher`.
    const NAME: &'static str;

    /// This instance's name, in `/whoami`.
    fn instance(&self) -> &str;

    /// The registry `/metrics` renders; the middleware records the request metrics in it.
    fn metrics(&self) -> &Arc<HttpMetrics>;

    /// `/readyz`: the fields `200 {"status": "ready", ...}` adds, or why the service is not
    /// ready (a `503` whose code names what is missing).
    fn ready(&self) -> impl Future<Output = Result<Map<String, Value>, ApiError>>;
}

/// Serves `routes` and the endpoints every service has on `listener` until `shutdown` fires,
/// then stops gracefully (the requests in flight get [`SHUTDOWN_GRACE_SECS`]); actix's own signal
/// handling is off, the caller's handle decides. The app has the service's `state` and the
/// request metrics as app data, the metrics middleware, and the one JSON error shape for what no
/// handler answers: an unknown route (404) and a query string, path or JSON body the extractors
/// refuse (400 `bad_field`).
pub async fn serve<S: Service>(
    listener: std::net::TcpListener,
    workers: usize,
    state: web::Data<S>,
    routes: fn(&mut web::ServiceConfig),
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let http = web::Data::from(state.metrics().clone());
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(state.clone())
            .app_data(http.clone())
            .app_data(web::QueryConfig::default().error_handler(|e, req| refused("query string", &e, req)))
            .app_data(web::PathConfig::default().error_handler(|e, req| refused("path", &e, req)))
            .app_data(web::JsonConfig::default().error_handler(|e, req| match e {
                actix_web::error::JsonPayloadError::Overflow { limit }
                | actix_web::error::JsonPayloadError::OverflowKnownLength { limit, .. } => {
                    ApiError::TooLarge(limit).into()
                }
                e => refused("body", &e, req),
            }))
            .configure(routes)
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz::<S>))
            .route("/whoami", web::get().to(whoami::<S>))
            .route("/metrics", web::get().to(metrics::<S>))
            .default_service(web::to(not_found))
            .wrap(actix_web::middleware::from_fn(track))
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_GRACE_SECS)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let stopper = actix_web::rt::spawn(async move {
        shutdown.wait().await;
        handle.stop(true).await;
    });
    let served = server.await;
    stopper.abort();
    served
}

/// An extractor's refusal as a 400 `bad_field` that names the part and what was wrong with it.
fn refused(part: &str, e: &dyn std::error::Error, req: &HttpRequest) -> actix_web::Error {
    // The source is serde's own words ("invalid digit found in string"), without actix's prefix.
    let why = e.source().map_or_else(|| e.to_string(), ToString::to_string);
    let message = match part {
        "query string" => format!("bad query string {:?}: {why}", req.query_string()),
        "path" => format!("bad path {:?}: {why}", req.path()),
        _ => format!("bad {part}: {why}"),
    };
    ApiError::field(message).into()
}

/// `GET /healthz`: the process answers.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// `GET /readyz`: the service's own check.
async fn readyz<S: Service>(state: web::Data<S>) -> Result<HttpResponse, ApiError> {
    let mut body = state.ready().await?;
    body.insert("status".into(), "ready".into());
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /whoami`: which service and instance answered (the original lab showed load balancing
/// with it).
async fn whoami<S: Service>(state: web::Data<S>) -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({"service": S::NAME, "instance": state.instance(), "pid": std::process::id()}))
}

/// `GET /metrics`: the Prometheus text exposition of the service's registry.
async fn metrics<S: Service>(state: web::Data<S>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics().render())
}

/// The header the gateway stamps with the time it received a request (ns since the epoch, decimal);
/// order entry carries it into the command's trace, so the order's path starts at the edge.
pub const GATEWAY_TS_HEADER: &str = "x-gateway-ts";

/// The gateway's receive time from a request, if it has a well-formed one. It is a measurement
/// only (it never changes what an order does), so a malformed value is left out, not refused.
pub fn gateway_in(req: &HttpRequest) -> Option<crate::Timestamp> {
    let value = req.headers().get(GATEWAY_TS_HEADER)?.to_str().ok()?;
    value.parse::<u64>().ok().filter(|&ns| ns > 0).map(crate::Timestamp)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;
    use crate::http::error::Unavailable;

    struct Dummy {
        metrics: Arc<HttpMetrics>,
        ready: bool,
    }

    impl Service for Dummy {
        const NAME: &'static str = "dummy";

        fn instance(&self) -> &str {
            "dummy-1"
        }

        fn metrics(&self) -> &Arc<HttpMetrics> {
            &self.metrics
        }

        async fn ready(&self) -> Result<Map<String, Value>, ApiError> {
            if self.ready {
                Ok(Map::from_iter([("partitions".to_owned(), 3.into())]))
            } else {
                Err(ApiError::unavailable(Unavailable::Redis, "no Redis"))
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limit {
        #[allow(dead_code)]
        limit: Option<usize>,
    }

    fn routes(cfg: &mut web::ServiceConfig) {
        cfg.route("/items", web::get().to(|_: web::Query<Limit>| async { HttpResponse::Ok().finish() }))
            .route("/items/{n}", web::get().to(|_: web::Path<u32>| async { HttpResponse::Ok().finish() }));
    }

    /// Serves a dummy service on a free port: its base URL and the server's task.
    fn start(
        ready: bool,
        shutdown: &Shutdown,
    ) -> (String, actix_web::rt::task::JoinHandle<std::io::Result<()>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = web::Data::new(Dummy { metrics: Arc::new(HttpMetrics::new("dummy").unwrap()), ready });
        let server = actix_web::rt::spawn(serve(listener, 1, state, routes, shutdown.clone()));
        (base, server)
    }

    async fn get(url: String) -> (u16, String) {
        let r = reqwest::get(url).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    fn error_code(body: &str) -> String {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code: {body}")).to_owned()
    }

    #[actix_web::test]
    async fn serve_answers_the_common_endpoints_and_refusals_in_one_shape() {
        let shutdown = Shutdown::new();
        let (base, server) = start(true, &shutdown);
        let (status, body) = get(format!("{base}/items?limit=abc")).await;
        assert_eq!((status, error_code(&body).as_str()), (400, "bad_field"), "{body}");
        assert!(body.contains("limit=abc") && body.contains("invalid digit"), "{body}");
        let (status, body) = get(format!("{base}/items?limit=1&typo=2")).await;
        assert_eq!((status, error_code(&body).as_str()), (400, "bad_field"), "{body}");
        assert!(body.contains("typo"), "the message names the unknown field: {body}");
        let (status, body) = get(format!("{base}/items/minus-one")).await;
        assert_eq!((status, error_code(&body).as_str()), (400, "bad_field"), "{body}");
        let (status, body) = get(format!("{base}/nope")).await;
        assert_eq!((status, error_code(&body).as_str()), (404, "not_found"), "{body}");
        assert_eq!(get(format!("{base}/items?limit=5")).await.0, 200);
        let r = reqwest::Client::new().post(format!("{base}/items")).send().await.unwrap();
        let (status, body) = (r.status().as_u16(), r.text().await.unwrap());
        assert_eq!((status, error_code(&body).as_str()), (404, "not_found"), "a method no route has: {body}");

        let (status, body) = get(format!("{base}/healthz")).await;
        assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
        let (status, body) = get(format!("{base}/readyz")).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status, v), (200, json!({"status": "ready", "partitions": 3})));
        let (status, body) = get(format!("{base}/whoami")).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((status, &v["service"], &v["instance"]), (200, &json!("dummy"), &json!("dummy-1")));
        let (status, body) = get(format!("{base}/metrics")).await;
        assert_eq!(status, 200);
        assert!(
            body.contains(
                r#"http_requests_total{method="GET",route="/items",status="400",service="dummy"} 2"#
            ),
            "{body}"
        );

        shutdown.trigger();
        let stopped = actix_web::rt::time::timeout(Duration::from_secs(5), server).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "serve returns once its shutdown fires: {stopped:?}");
        assert!(reqwest::get(format!("{base}/healthz")).await.is_err(), "the port is closed");
    }

    #[actix_web::test]
    async fn readyz_answers_the_services_reason_as_a_503() {
        let shutdown = Shutdown::new();
        let (base, server) = start(false, &shutdown);
        let (status, body) = get(format!("{base}/readyz")).await;
        assert_eq!((status, error_code(&body).as_str()), (503, "redis_unavailable"), "{body}");
        shutdown.trigger();
        server.await.unwrap().unwrap();
    }
}

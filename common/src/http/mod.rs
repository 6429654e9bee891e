//! What every HTTP service shares (feature `http`): the request metrics of DESIGN.md §6 —
//! `http_requests_total{route,method,status}` and `http_request_duration_seconds{route}` — in a
//! registry the service adds its own metrics to, and the middleware that records them; the one
//! JSON error shape ([`error`]); and the validation of order bodies ([`validate`]), so the gateway
//! at the edge and order entry behind it check exactly the same things.
//!
//! A service registers `web::Data<HttpMetrics>` and wraps its app in
//! `actix_web::middleware::from_fn(common::http::track)` ([`serve`] does both for a service whose
//! routes are a `configure` function), and starts its logs with [`logging::init`].

pub mod error;
pub mod logging;
pub mod validate;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder};

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
pub async fn read_body(payload: web::Payload, limit: usize) -> Result<web::Bytes, error::ApiError> {
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(error::ApiError::field(format!("could not read the body: {e}"))),
        Err(_) => Err(error::ApiError::TooLarge(limit)),
    }
}

/// Unknown routes: 404 in the one error shape.
pub async fn not_found() -> Result<actix_web::HttpResponse, error::ApiError> {
    Err(error::ApiError::NotFound("no such route".into()))
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

/// Serves an app of `routes` on `listen` until SIGINT/SIGTERM (10 s for requests in flight): the
/// service's `state` and the request metrics as app data, the JSON 404, the metrics middleware.
/// The gateway and order entry are started this way.
pub async fn serve<S: Send + Sync + 'static>(
    listen: &str,
    workers: usize,
    state: web::Data<S>,
    metrics: std::sync::Arc<HttpMetrics>,
    routes: fn(&mut web::ServiceConfig),
) -> std::io::Result<()> {
    let http = web::Data::from(metrics);
    actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(state.clone())
            .app_data(http.clone())
            .configure(routes)
            .default_service(web::to(not_found))
            .wrap(actix_web::middleware::from_fn(track))
    })
    .workers(workers)
    .shutdown_timeout(10)
    .bind(listen)?
    .run()
    .await
}

/// The header the gateway stamps with the time it received a request (ns since the epoch, decimal);
/// order entry carries it into the command's trace, so the order's path starts at the edge.
pub const GATEWAY_TS_HEADER: &str = "x-gateway-ts";

/// The gateway's receive time from a request, if it has a well-formed one. It is a measurement
/// only (it never changes what an order does), so a malformed value is left out, not refused.
pub fn gateway_in(req: &actix_web::HttpRequest) -> Option<crate::Timestamp> {
    let value = req.headers().get(GATEWAY_TS_HEADER)?.to_str().ok()?;
    value.parse::<u64>().ok().filter(|&ns| ns > 0).map(crate::Timestamp)
}

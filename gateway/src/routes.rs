//! The public routes (DESIGN.md §5) but `/trade/<id>` (nginx sends that to the matcher): writes
//! are validated here and forwarded to the order-svc pool, reads go to the matcher front.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use common::http::error::ApiError;
use common::http::validate;
use common::http::{buckets, HttpMetrics};
use common::{NewOrder, OrderId, SymbolTable, Timestamp};
use prometheus::{Histogram, HistogramOpts};
use serde_json::json;

use crate::upstream::{Failure, Pool};

/// The gateway's metrics: the shared request metrics plus the upstream write latency.
pub struct Metrics {
    /// The registry and the request metrics (served by the middleware).
    pub http: Arc<HttpMetrics>,
    /// `upstream_write_seconds`: forward → order-svc's `202` (which waits for the broker's ack).
    pub ack: Histogram,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> prometheus::Result<Metrics> {
        let http = HttpMetrics::new("gateway")?;
        let ack = Histogram::with_opts(
            HistogramOpts::new("upstream_write_seconds", "Forwarded write to order-svc's 202")
                .buckets(buckets()),
        )?;
        http.registry.register(Box::new(ack.clone()))?;
        Ok(Metrics { http: Arc::new(http), ack })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.http.render()
    }
}

/// What every handler shares.
pub struct State {
    /// Symbols, for validation.
    pub table: SymbolTable,
    /// order-svc instances.
    pub writes: Arc<Pool>,
    /// The matcher front.
    pub reads: Arc<Pool>,
    /// This instance's name.
    pub instance: String,
    /// Largest accepted body.
    pub body_limit: usize,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Request-id counter.
    pub counter: AtomicU64,
}

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/place_order", web::post().to(place_order))
        .route("/api/v1/orders", web::post().to(v1_order))
        .route("/api/v1/orders", web::get().to(read))
        .route("/api/v1/orders/{order_id}", web::delete().to(cancel))
        .route("/api/v1/orders/{order_id}", web::get().to(read))
        .route("/api/v1/book/{symbol}", web::get().to(read))
        .route("/api/v1/trades", web::get().to(read))
        .route("/api/v1/symbols", web::get().to(read))
        .route("/healthz", web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }))
        .route("/readyz", web::get().to(readyz))
        .route("/whoami", web::get().to(whoami))
        .route("/metrics", web::get().to(metrics));
}

/// The caller's request id, or a new one; passed upstream and returned.
fn request_id(state: &State, req: &HttpRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(
            || format!("{}-{}", state.instance, state.counter.fetch_add(1, Ordering::Relaxed)),
            str::to_owned,
        )
}

fn relay(answer: Result<crate::upstream::Answer, Failure>, rid: &str) -> HttpResponse {
    match answer {
        Ok(a) => HttpResponse::build(StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY))
            .insert_header(("x-request-id", rid.to_owned()))
            .content_type("application/json")
            .body(a.body),
        Err(Failure::NoneReachable) => with_id(
            ApiError::Unavailable("no upstream instance is reachable; nothing was sent, retrying is safe".into()),
            rid,
        ),
        Err(Failure::NoAnswer(e)) => with_id(
            ApiError::Unavailable(format!(
                "the upstream did not answer ({e}); the outcome is unknown: look the order up by client_order_id, or resubmit it with the same client_order_id"
            )),
            rid,
        ),
    }
}

fn with_id(e: ApiError, rid: &str) -> HttpResponse {
    let mut r = actix_web::ResponseError::error_response(&e);
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(rid) {
        r.headers_mut().insert(actix_web::http::header::HeaderName::from_static("x-request-id"), v);
    }
    r
}

/// A write: the body is read and checked here with `check` (a refused one never leaves the
/// gateway), then sent to order-svc's `path` with the time it arrived here, so the order's path
/// starts at the edge.
async fn checked_write(
    state: &State,
    req: &HttpRequest,
    payload: web::Payload,
    path: &str,
    check: fn(&SymbolTable, &[u8]) -> Result<NewOrder, ApiError>,
) -> HttpResponse {
    let received = Timestamp::now();
    let rid = request_id(state, req);
    let checked = async {
        let bytes = common::http::read_body(payload, state.body_limit).await?;
        check(&state.table, &bytes)?;
        Ok::<_, ApiError>(bytes)
    };
    let bytes = match checked.await {
        Ok(bytes) => bytes,
        Err(e) => return with_id(e, &rid),
    };
    let started = Instant::now();
    let answer =
        state.writes.send(reqwest::Method::POST, path, Some(bytes.to_vec()), &rid, Some(received)).await;
    if answer.as_ref().is_ok_and(|a| a.status == 202) {
        state.metrics.ack.observe(started.elapsed().as_secs_f64());
    }
    relay(answer, &rid)
}

/// `POST /place_order`: the original lab's route, validated here, sent to order-svc's `/order`.
async fn place_order(state: web::Data<State>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let check = |table: &SymbolTable, bytes: &[u8]| validate::lab(table, &validate::parse(bytes)?);
    checked_write(&state, &req, payload, "/order", check).await
}

/// `POST /api/v1/orders`.
async fn v1_order(state: web::Data<State>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    let check = |table: &SymbolTable, bytes: &[u8]| validate::v1(table, &validate::parse(bytes)?);
    checked_write(&state, &req, payload, "/api/v1/orders", check).await
}

/// `DELETE /api/v1/orders/{order_id}`.
async fn cancel(state: web::Data<State>, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let received = Timestamp::now();
    let rid = request_id(&state, &req);
    if path.parse::<OrderId>().is_err() {
        return with_id(
            ApiError::field(format!("order_id must be a decimal u64, not {:?}", path.as_str())),
            &rid,
        );
    }
    let target = match req.uri().query() {
        Some(q) => format!("/api/v1/orders/{path}?{q}"),
        None => format!("/api/v1/orders/{path}"),
    };
    relay(state.writes.send(reqwest::Method::DELETE, &target, None, &rid, Some(received)).await, &rid)
}

/// Reads: the same path and query, at the matcher front.
async fn read(state: web::Data<State>, req: HttpRequest) -> HttpResponse {
    let rid = request_id(&state, &req);
    let target = match req.uri().query() {
        Some(q) => format!("{}?{q}", req.path()),
        None => req.path().to_owned(),
    };
    relay(state.reads.send(reqwest::Method::GET, &target, None, &rid, None).await, &rid)
}

async fn readyz(state: web::Data<State>) -> HttpResponse {
    if state.writes.any_healthy() && state.reads.any_healthy() {
        HttpResponse::Ok().json(json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(
            json!({"error": {"code": "upstream_unavailable", "message": "no healthy order-svc or matcher"}}),
        )
    }
}

async fn whoami(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({"service": "gateway", "instance": state.instance, "pid": std::process::id()}))
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.metrics.render())
}

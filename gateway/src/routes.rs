//! The public order routes (DESIGN.md §5): writes are authenticated, rate-limited and validated
//! here and forwarded to the order-svc pool with the caller's account; reads go to the matcher
//! front — an order only to its owner (anyone else gets the `404` of an order that does not
//! exist), the book, trades and symbols to anyone. The account routes are in
//! [`crate::accounts`]; `GET /ws` (market data over WebSocket) in [`crate::ws`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use common::http::error::{ApiError, Unavailable};
use common::http::validate;
use common::http::{buckets, HttpMetrics, Service};
use common::{NewOrder, SymbolTable, Timestamp};
use prometheus::{Histogram, HistogramOpts};
use serde_json::{Map, Value};

use crate::accounts::{caller, client_ip};
use crate::auth::{Auth, Caller};
use crate::limits::Limits;
use crate::upstream::{Failure, Method, Pool, UpstreamMetrics};

/// The gateway's metrics: the shared request metrics, the upstream write latency, and the
/// upstream pools' (the WebSocket feed registers its own in the same registry).
pub struct Metrics {
    /// The registry and the request metrics (served by the middleware).
    pub http: Arc<HttpMetrics>,
    /// `upstream_write_seconds`: forward → order-svc's `202` (which waits for the broker's ack).
    pub ack: Histogram,
    /// `gateway_upstream_*{pool}`: every pool's latency, failovers and failures.
    pub upstream: UpstreamMetrics,
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
        let upstream = UpstreamMetrics::new(&http.registry)?;
        Ok(Metrics { http: Arc::new(http), ack, upstream })
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
    /// Accounts: tokens, users, keys (or development mode).
    pub auth: Auth,
    /// Rate limits.
    pub limits: Limits,
    /// Peers whose `X-Real-IP` names the client (nginx).
    pub trusted_proxies: crate::accounts::TrustedProxies,
    /// Market data over WebSocket (`GET /ws`).
    pub ws: crate::ws::Hub,
    /// The system map's watcher (`GET /api/v1/system`).
    pub system: std::sync::Arc<crate::system::Watch>,
}

impl Service for State {
    const NAME: &'static str = "gateway";

    fn instance(&self) -> &str {
        &self.instance
    }

    fn metrics(&self) -> &Arc<HttpMetrics> {
        &self.metrics.http
    }

    /// Ready while some order entry instance and the matcher front look healthy. (The market-data
    /// feed's state is reported, not required: order entry works without it.)
    async fn ready(&self) -> Result<Map<String, Value>, ApiError> {
        if self.writes.any_healthy() && self.reads.any_healthy() {
            let feed = if self.ws.feed_up() { "up" } else { "down" };
            Ok(Map::from_iter([("ws_feed".to_owned(), Value::from(feed))]))
        } else {
            Err(ApiError::unavailable(Unavailable::Upstream, "no healthy order-svc or matcher"))
        }
    }
}

/// Registers the routes, the account routes too ([`common::http::serve`] adds `/healthz`, `/readyz`, `/whoami`, `/metrics`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/place_order", web::post().to(place_order))
        .route("/api/v1/orders", web::post().to(v1_order))
        .route("/api/v1/orders", web::get().to(order_by_client))
        .route("/api/v1/orders/{order_id}", web::delete().to(cancel))
        .route("/api/v1/orders/{order_id}", web::get().to(order))
        .route("/api/v1/orders/{order_id}", web::patch().to(amend))
        .route("/trade/{id}", web::get().to(trade))
        .route("/api/v1/book/{symbol}", web::get().to(read))
        .route("/api/v1/trades", web::get().to(read))
        .route("/api/v1/symbols", web::get().to(read))
        .route("/ws", web::get().to(crate::ws::upgrade))
        .route("/api/v1/system", web::get().to(crate::system::system))
        .configure(crate::accounts::configure)
        .configure(crate::admin::configure);
}

/// The caller's request id, or a new one; passed upstream and returned.
pub(crate) fn request_id(state: &State, req: &HttpRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(
            || format!("{}-{}", state.instance, state.counter.fetch_add(1, Ordering::Relaxed)),
            str::to_owned,
        )
}

/// An upstream's answer as it is, or a 503 that names the upstream (`order_svc_unavailable` for
/// writes, `matcher_unavailable` for reads) and says whether the outcome of a write is unknown.
pub(crate) fn relay(
    answer: Result<crate::upstream::Answer, Failure>,
    upstream: Unavailable,
    rid: &str,
) -> HttpResponse {
    let name = match upstream {
        Unavailable::OrderSvc => "order-svc",
        _ => "matcher",
    };
    match answer {
        Ok(a) => HttpResponse::build(StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY))
            .insert_header(("x-request-id", rid.to_owned()))
            .content_type("application/json")
            .body(a.body),
        Err(Failure::NoneReachable) => with_id(
            ApiError::unavailable(
                upstream,
                format!("no {name} instance is reachable; nothing was sent, retrying is safe"),
            ),
            rid,
        ),
        Err(Failure::NoAnswer(e)) if upstream == Unavailable::OrderSvc => with_id(
            ApiError::unavailable(upstream, format!(
                "{name} did not answer ({e}); the outcome is unknown: look the order up by client_order_id, or resubmit it with the same client_order_id"
            )),
            rid,
        ),
        Err(Failure::NoAnswer(e)) => {
            with_id(ApiError::unavailable(upstream, format!("{name} did not answer ({e})")), rid)
        }
    }
}

pub(crate) fn with_id(e: ApiError, rid: &str) -> HttpResponse {
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
        let who = caller(state, req).await?;
        let bytes = common::http::read_body(payload, state.body_limit).await?;
        let bytes = with_account(&who, &bytes)?;
        let order = check(&state.table, &bytes)?;
        state.limits.order(order.account.as_str(), client_ip(req))?;
        Ok::<_, ApiError>(bytes)
    };
    let bytes = match checked.await {
        Ok(bytes) => bytes,
        Err(e) => return with_id(e, &rid),
    };
    let started = Instant::now();
    let answer = state.writes.send(Method::POST, path, Some(bytes.to_vec()), &rid, Some(received)).await;
    if answer.as_ref().is_ok_and(|a| a.status == 202) {
        state.metrics.ack.observe(started.elapsed().as_secs_f64());
    }
    relay(answer, Unavailable::OrderSvc, &rid)
}

/// The body sent on: for a signed-in caller, with their account in it (a body that names one
/// itself is refused: the account is who you are, not what you say); in development mode, as it
/// came.
fn with_account(who: &Caller, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let Caller::User(user) = who else { return Ok(body.to_vec()) };
    let mut fields: Map<String, Value> = validate::parse(body)?;
    if fields.contains_key("account") {
        return Err(ApiError::field("account: leave it out; orders belong to the account you signed in as"));
    }
    fields.insert("account".into(), Value::String(user.clone()));
    serde_json::to_vec(&fields).map_err(|e| ApiError::field(e.to_string()))
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

/// The query string, refused if a signed-in caller names an account in it; with theirs added.
fn query_for(who: &Caller, req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let query = req.uri().query().filter(|q| !q.is_empty()).map(str::to_owned);
    let Caller::User(user) = who else { return Ok(query) };
    let names_account =
        query.as_deref().is_some_and(|q| q.split('&').any(|kv| kv.split('=').next() == Some("account")));
    if names_account {
        return Err(ApiError::field(
            "account: leave it out; you see the orders of the account you signed in as",
        ));
    }
    Ok(Some(match query {
        Some(q) => format!("{q}&account={user}"),
        None => format!("account={user}"),
    }))
}

/// The 404 of an order that is not there, or not the caller's: the same answer, so nobody learns
/// which ids exist.
fn no_order(id: &str) -> ApiError {
    ApiError::NotFound(format!("no order {id}"))
}

/// Reads order `id` from the matcher front: the answer for the caller (`200` only if the order
/// is theirs; someone else's is the `404` of an order that does not exist), whether it was
/// someone else's (for the gateway only: the caller cannot tell), and the order when it is theirs.
async fn owned_order_body(
    state: &State,
    who: &Caller,
    id: &str,
    rid: &str,
) -> (HttpResponse, bool, Option<Value>) {
    if let Err(e) = validate::order_id(id) {
        return (with_id(e, rid), false, None);
    }
    let answer = state.reads.send(Method::GET, &format!("/api/v1/orders/{id}"), None, rid, None).await;
    let order = match &answer {
        Ok(a) if a.status == 200 => serde_json::from_slice::<Value>(&a.body).ok(),
        _ => None,
    };
    if let (Caller::User(user), Some(o)) = (who, &order) {
        if o["account"].as_str() != Some(user.as_str()) {
            return (with_id(no_order(id), rid), true, None);
        }
    }
    (relay(answer, Unavailable::Matcher, rid), false, order)
}

/// How long a cancel or an amend waits, at most, for its order to be written by the matcher:
/// 10 + 20 + … + 640 ms, doubling.
const OWN_ORDER_WAIT: std::time::Duration = std::time::Duration::from_millis(640);

/// The caller's own order `id`, as the matcher front has it (in development mode anyone's), or
/// the answer to give instead: someone else's order is a `404`, as for a read. An order the matcher has not written yet — a cancel
/// sent right after the order's `202` — is waited for, briefly (the matcher writes within
/// milliseconds); an id that is still nowhere after that is a `404` too.
async fn wait_for_own_order(state: &State, who: &Caller, id: &str, rid: &str) -> Result<Value, HttpResponse> {
    let mut wait = std::time::Duration::from_millis(10);
    let (found, body) = loop {
        let (found, theirs, body) = owned_order_body(state, who, id, rid).await;
        if found.status() != StatusCode::NOT_FOUND || theirs || wait > OWN_ORDER_WAIT {
            break (found, body);
        }
        actix_web::rt::time::sleep(wait).await;
        wait *= 2;
    };
    match body {
        Some(order) if found.status() == StatusCode::OK => Ok(order),
        _ => Err(found),
    }
}

/// `PATCH /api/v1/orders/{order_id}` `{"price"?, "qty"?}`: cancel-replace of the caller's own open
/// limit order, sent to order-svc with the order's symbol and the caller's account. What the body
/// leaves out, the book keeps as the order has it when it applies the amend (so a price-only amend
/// never gives back quantity that traded meanwhile); `qty` is the new *open* quantity. A new price
/// or a larger quantity loses the order's place in the queue; a smaller one keeps it.
async fn amend(
    state: web::Data<State>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let received = Timestamp::now();
    let rid = request_id(&state, &req);
    let body = async {
        let who = caller(&state, &req).await?;
        state.limits.order(who.account(), client_ip(&req))?;
        let bytes = common::http::read_body(payload, state.body_limit).await?;
        let body: validate::V1Amend = validate::parse(&bytes)?;
        if body.price.is_none() && body.qty.is_none() {
            return Err(ApiError::field("give `price` and/or `qty` (the new open quantity)"));
        }
        let account = match (&who, body.account) {
            (Caller::User(_), Some(_)) => {
                return Err(ApiError::field(
                    "account: leave it out; you amend as the account you signed in as",
                ))
            }
            (Caller::User(user), None) => Some(user.clone()),
            (Caller::Anyone, account) => account,
        };
        Ok::<_, ApiError>((
            who,
            validate::V1Replace { symbol: String::new(), price: body.price, qty: body.qty, account },
        ))
    };
    let (who, mut replace) = match body.await {
        Ok(v) => v,
        Err(e) => return with_id(e, &rid),
    };
    let order = match wait_for_own_order(&state, &who, &path, &rid).await {
        Ok(order) => order,
        Err(r) => return r,
    };
    let status = order["status"].as_str().unwrap_or_default();
    if !common::OrderStatus::is_open_name(status) {
        let e = ApiError::Rule(format!("order {path} is {status}: only an open order can be amended"));
        return with_id(e, &rid);
    }
    order["symbol"].as_str().unwrap_or_default().clone_into(&mut replace.symbol);
    let bytes = match serde_json::to_vec(&replace) {
        Ok(b) => b,
        Err(e) => return with_id(ApiError::field(e.to_string()), &rid),
    };
    let started = Instant::now();
    let target = format!("/api/v1/orders/{path}");
    let answer = state.writes.send(Method::PATCH, &target, Some(bytes), &rid, Some(received)).await;
    if answer.as_ref().is_ok_and(|a| a.status == 202) {
        state.metrics.ack.observe(started.elapsed().as_secs_f64());
    }
    relay(answer, Unavailable::OrderSvc, &rid)
}

/// `DELETE /api/v1/orders/{order_id}`: the caller's own order only.
async fn cancel(state: web::Data<State>, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let received = Timestamp::now();
    let rid = request_id(&state, &req);
    let who = match caller(&state, &req).await {
        Ok(who) => who,
        Err(e) => return with_id(e, &rid),
    };
    let query = match query_for(&who, &req) {
        Ok(q) => q,
        Err(e) => return with_id(e, &rid),
    };
    if let Err(r) = state.limits.order(who.account(), client_ip(&req)) {
        return with_id(r.into(), &rid);
    }
    // Development mode leaves ownership to the book (`not_owner`).
    if matches!(who, Caller::User(_)) {
        if let Err(r) = wait_for_own_order(&state, &who, &path, &rid).await {
            return r;
        }
    } else if let Err(e) = validate::order_id(&path) {
        return with_id(e, &rid);
    }
    let target = match query {
        Some(q) => format!("/api/v1/orders/{path}?{q}"),
        None => format!("/api/v1/orders/{path}"),
    };
    let answer = state.writes.send(Method::DELETE, &target, None, &rid, Some(received)).await;
    relay(answer, Unavailable::OrderSvc, &rid)
}

/// `GET /api/v1/orders/{order_id}`: the caller's own order only.
async fn order(state: web::Data<State>, req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let rid = request_id(&state, &req);
    match caller(&state, &req).await {
        Ok(who) => owned_order_body(&state, &who, &path, &rid).await.0,
        Err(e) => with_id(e, &rid),
    }
}

/// `GET /api/v1/orders?symbol=…&client_order_id=…`: among the caller's own orders.
async fn order_by_client(state: web::Data<State>, req: HttpRequest) -> HttpResponse {
    let rid = request_id(&state, &req);
    let who = match caller(&state, &req).await {
        Ok(who) => who,
        Err(e) => return with_id(e, &rid),
    };
    let target = match query_for(&who, &req) {
        Ok(Some(q)) => format!("/api/v1/orders?{q}"),
        Ok(None) => "/api/v1/orders".to_owned(),
        Err(e) => return with_id(e, &rid),
    };
    let answer = state.reads.send(Method::GET, &target, None, &rid, None).await;
    relay(answer, Unavailable::Matcher, &rid)
}

/// `GET /trade/{id}`: the original lab's lookup, for the caller's account (the page polls it
/// with the session cookie only).
async fn trade(state: web::Data<State>, req: HttpRequest, id: web::Path<String>) -> HttpResponse {
    let rid = request_id(&state, &req);
    let who = match caller(&state, &req).await {
        Ok(who) => who,
        Err(e) => return with_id(e, &rid),
    };
    if id.is_empty()
        || id.len() > 32
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-~".contains(&b))
    {
        return with_id(ApiError::field("id must be 1-32 characters of A-Z a-z 0-9 . _ - ~"), &rid);
    }
    let target = format!("/trade/{id}?account={}", who.account());
    relay(state.reads.send(Method::GET, &target, None, &rid, None).await, Unavailable::Matcher, &rid)
}

/// Reads: the same path and query, at the matcher front.
async fn read(state: web::Data<State>, req: HttpRequest) -> HttpResponse {
    let rid = request_id(&state, &req);
    let target = match req.uri().query() {
        Some(q) => format!("{}?{q}", req.path()),
        None => req.path().to_owned(),
    };
    relay(state.reads.send(Method::GET, &target, None, &rid, None).await, Unavailable::Matcher, &rid)
}

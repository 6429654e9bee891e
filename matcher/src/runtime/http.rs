//! The matcher's HTTP front: reads from Redis (the book thread is never asked), in the shapes of
//! DESIGN.md §5: the original lab's `GET /trade/<id>` and the v1 reads; plus `/healthz`,
//! `/readyz`, `/whoami` and `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use common::http::HttpMetrics;
use common::SymbolTable;
use prometheus::{IntCounter, IntGauge};
use redis::AsyncCommands;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Config, Stop};

/// The matcher's metrics: the shared per-route request metrics plus the pipeline's.
pub struct Metrics {
    /// The registry and the request metrics (served by the middleware).
    pub http: Arc<HttpMetrics>,
    /// `matcher_commands_total`.
    pub commands: IntCounter,
    /// `matcher_trades_total`.
    pub trades: IntCounter,
    /// `matcher_consumed_total`.
    pub consumed: IntCounter,
    /// `matcher_ring_full_total`: pushes that found a ring full and waited.
    pub ring_full: IntCounter,
    /// `matcher_input_ring_occupancy`: commands waiting for the book thread.
    pub ring_in: IntGauge,
    /// `matcher_persisted_batches_total`.
    pub persisted_batches: IntCounter,
    /// `matcher_io_retries_total`.
    pub io_retries: IntCounter,
    /// `matcher_catch_up_remaining`: commands that were in the log at start and are not read yet.
    pub catch_up_remaining: IntGauge,
    /// `matcher_caught_up`: 1 once everything the log held at start has gone through the whole
    /// pipeline (replayed, or emitted and persisted); the matcher is ready only then.
    pub caught_up: IntGauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> prometheus::Result<Metrics> {
        let http = HttpMetrics::new("matcher")?;
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            http.registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let commands = counter("matcher_commands_total", "Commands applied by the book")?;
        let trades = counter("matcher_trades_total", "Fills produced by the book (replays included)")?;
        let consumed = counter("matcher_consumed_total", "Messages read from the orders topic")?;
        let ring_full = counter("matcher_ring_full_total", "Ring pushes that waited for space")?;
        let persisted_batches =
            counter("matcher_persisted_batches_total", "Output batches written to Redis and Kafka")?;
        let io_retries = counter("matcher_io_retries_total", "Redis or Kafka writes retried")?;
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            http.registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let ring_in = gauge("matcher_input_ring_occupancy", "Commands waiting for the book thread")?;
        let catch_up_remaining =
            gauge("matcher_catch_up_remaining", "Commands in the orders log at start not read yet")?;
        let caught_up =
            gauge("matcher_caught_up", "1 once what the log held at start has gone through the pipeline")?;
        Ok(Metrics {
            http: Arc::new(http),
            commands,
            trades,
            consumed,
            ring_full,
            ring_in,
            persisted_batches,
            io_retries,
            catch_up_remaining,
            caught_up,
        })
    }

    fn render(&self) -> String {
        self.http.render()
    }
}

struct State {
    redis: redis::aio::ConnectionManager,
    table: SymbolTable,
    instance: String,
    metrics: Arc<Metrics>,
}

fn error(status: actix_web::http::StatusCode, code: &str, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": message.into()}}))
}

fn unavailable(e: redis::RedisError) -> HttpResponse {
    error(actix_web::http::StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable", e.to_string())
}

/// `GET /trade/{id}`: the original lab's lookup, for the `anonymous` account.
async fn trade(state: web::Data<State>, id: web::Path<String>) -> HttpResponse {
    let mut redis = state.redis.clone();
    let found: Option<String> = match redis.get(format!("trade:anonymous:{id}")).await {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    match found.and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
        Some(trade) => {
            HttpResponse::Ok().json(json!({"found": true, "order_id": id.as_str(), "trade": trade}))
        }
        None => HttpResponse::Ok().json(json!({"found": false, "order_id": id.as_str()})),
    }
}

async fn order_json(
    redis: &mut redis::aio::ConnectionManager,
    id: &str,
) -> Result<Option<Value>, redis::RedisError> {
    let fields: std::collections::HashMap<String, String> = redis.hgetall(format!("order:{id}")).await?;
    if fields.is_empty() {
        return Ok(None);
    }
    let fills: std::collections::HashMap<String, String> = redis.hgetall(format!("fills:{id}")).await?;
    let mut fills: Vec<Value> = fills.values().filter_map(|f| serde_json::from_str(f).ok()).collect();
    fills.sort_by(|a, b| a["trade_id"].as_str().cmp(&b["trade_id"].as_str()));
    let get = |k: &str| fields.get(k).cloned().map_or(Value::Null, Value::String);
    let hop = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok()).map_or(Value::Null, Value::from);
    Ok(Some(json!({
        "order_id": id,
        "client_order_id": get("client_order_id"),
        "account": get("account"),
        "symbol": get("symbol"),
        "side": get("side"),
        "type": get("type"),
        "time_in_force": get("time_in_force"),
        "post_only": fields.get("post_only").map(|v| v == "true"),
        "price": get("price"),
        "qty": get("qty"),
        "filled_qty": get("filled_qty"),
        "status": get("status"),
        "reject_reason": get("reject_reason"),
        "fills": fills,
        "hops": {
            "gateway_ns": hop("hop_gateway_ns"),
            "published_ns": hop("hop_published_ns"),
            "consumed_ns": hop("hop_consumed_ns"),
            "matched_ns": hop("hop_matched_ns"),
            "persisted_ns": hop("hop_persisted_ns"),
        },
    })))
}

/// An order as JSON, or 404 / 503.
async fn order_response(redis: &mut redis::aio::ConnectionManager, id: &str) -> HttpResponse {
    match order_json(redis, id).await {
        Ok(Some(v)) => HttpResponse::Ok().json(v),
        Ok(None) => error(actix_web::http::StatusCode::NOT_FOUND, "not_found", format!("no order {id}")),
        Err(e) => unavailable(e),
    }
}

/// `GET /api/v1/orders/{order_id}`.
async fn order(state: web::Data<State>, id: web::Path<String>) -> HttpResponse {
    if id.parse::<u64>().is_err() {
        return error(
            actix_web::http::StatusCode::BAD_REQUEST,
            "bad_field",
            "order_id must be a decimal u64",
        );
    }
    let mut redis = state.redis.clone();
    order_response(&mut redis, &id).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ByClient {
    symbol: String,
    client_order_id: String,
    account: Option<String>,
}

/// `GET /api/v1/orders?symbol=…&client_order_id=…[&account=…]`.
async fn order_by_client(state: web::Data<State>, q: web::Query<ByClient>) -> HttpResponse {
    let account = q.account.clone().unwrap_or_else(|| common::ids::ANONYMOUS.to_owned());
    let mut redis = state.redis.clone();
    let id: Option<String> =
        match redis.get(format!("client:{account}:{}:{}", q.symbol, q.client_order_id)).await {
            Ok(v) => v,
            Err(e) => return unavailable(e),
        };
    let Some(id) = id else {
        return error(
            actix_web::http::StatusCode::NOT_FOUND,
            "not_found",
            "no order with that client_order_id",
        );
    };
    order_response(&mut redis, &id).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepthQuery {
    depth: Option<usize>,
}

/// `GET /api/v1/book/{symbol}?depth=N`.
async fn book(state: web::Data<State>, symbol: web::Path<String>, q: web::Query<DepthQuery>) -> HttpResponse {
    if state.table.lookup(&symbol).is_none() {
        return error(
            actix_web::http::StatusCode::BAD_REQUEST,
            "unknown_symbol",
            format!("unknown symbol {:?}; known symbols: {}", symbol.as_str(), state.table.names()),
        );
    }
    let depth = q.depth.unwrap_or(10).min(50);
    let mut redis = state.redis.clone();
    let snapshot: Option<String> = match redis.get(format!("book:{symbol}")).await {
        Ok(v) => v,
        Err(e) => return unavailable(e),
    };
    let mut v = snapshot
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .unwrap_or_else(|| json!({"symbol": symbol.as_str(), "sequence": 0, "bids": [], "asks": []}));
    for side in ["bids", "asks"] {
        if let Some(levels) = v[side].as_array_mut() {
            levels.truncate(depth);
        }
    }
    HttpResponse::Ok().json(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TradesQuery {
    symbol: String,
    limit: Option<usize>,
}

/// `GET /api/v1/trades?symbol=…&limit=N`: newest first.
async fn trades(state: web::Data<State>, q: web::Query<TradesQuery>) -> HttpResponse {
    if state.table.lookup(&q.symbol).is_none() {
        return error(
            actix_web::http::StatusCode::BAD_REQUEST,
            "unknown_symbol",
            format!("unknown symbol {:?}; known symbols: {}", q.symbol, state.table.names()),
        );
    }
    let limit = q.limit.unwrap_or(50).min(1000);
    let mut redis = state.redis.clone();
    let reply: redis::RedisResult<redis::streams::StreamRangeReply> =
        redis.xrevrange_count(format!("trades:{}", q.symbol), "+", "-", limit).await;
    let reply = match reply {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let rows: Vec<Value> = reply
        .ids
        .iter()
        .map(|entry| {
            let mut row = serde_json::Map::new();
            row.insert(
                "sequence".into(),
                json!(entry.id.split('-').next().and_then(|s| s.parse::<u64>().ok())),
            );
            for (k, v) in &entry.map {
                if let Ok(s) = redis::from_redis_value::<String>(v.clone()) {
                    row.insert(k.clone(), Value::String(s));
                }
            }
            Value::Object(row)
        })
        .collect();
    HttpResponse::Ok().json(json!({"symbol": q.symbol, "trades": rows}))
}

/// `GET /api/v1/symbols`.
async fn symbols(state: web::Data<State>) -> HttpResponse {
    let list: Vec<Value> = state
        .table
        .iter()
        .map(|(_, s)| {
            json!({
                "symbol": s.name,
                "tick": s.tick.to_string(),
                "lot": s.lot.to_string(),
                "band_bps": s.band_bps,
                "reference": s.price_decimal(s.reference).to_string(),
                "max_qty": s.qty_decimal(s.max_qty).to_string(),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"symbols": list}))
}

/// Ready once what the orders log held at start is through the pipeline (the book and the state
/// served here are current) and Redis answers.
async fn readyz(state: web::Data<State>) -> HttpResponse {
    if state.metrics.caught_up.get() == 0 {
        let left = state.metrics.catch_up_remaining.get();
        return error(
            actix_web::http::StatusCode::SERVICE_UNAVAILABLE,
            "catching_up",
            format!("rebuilding the book from the orders log: {left} commands to go"),
        );
    }
    let mut redis = state.redis.clone();
    match redis::cmd("PING").query_async::<String>(&mut redis).await {
        Ok(_) => HttpResponse::Ok().json(json!({"status": "ready"})),
        Err(e) => unavailable(e),
    }
}

/// Serves until SIGINT/SIGTERM or until another thread stops the matcher.
pub fn serve(config: &Config, table: SymbolTable, metrics: Arc<Metrics>, stop: Stop) -> anyhow::Result<()> {
    let config = config.clone();
    actix_web::rt::System::new().block_on(async move {
        let client = redis::Client::open(config.redis.as_str())?;
        let redis = redis::aio::ConnectionManager::new(client).await?;
        let state = web::Data::new(State {
            redis,
            table,
            instance: config.instance.clone(),
            metrics: metrics.clone(),
        });
        let http = web::Data::from(metrics.http.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(http.clone())
                .route("/trade/{id}", web::get().to(trade))
                .route("/api/v1/orders/{order_id}", web::get().to(order))
                .route("/api/v1/orders", web::get().to(order_by_client))
                .route("/api/v1/book/{symbol}", web::get().to(book))
                .route("/api/v1/trades", web::get().to(trades))
                .route("/api/v1/symbols", web::get().to(symbols))
                .route(
                    "/healthz",
                    web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }),
                )
                .route("/readyz", web::get().to(readyz))
                .route(
                    "/whoami",
                    web::get().to(|s: web::Data<State>| async move {
                        HttpResponse::Ok().json(
                            json!({"service": "matcher", "instance": s.instance, "pid": std::process::id()}),
                        )
                    }),
                )
                .route(
                    "/metrics",
                    web::get().to(|s: web::Data<State>| async move {
                        HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(s.metrics.render())
                    }),
                )
                .default_service(web::to(|| async {
                    error(actix_web::http::StatusCode::NOT_FOUND, "not_found", "no such route")
                }))
                .wrap(actix_web::middleware::from_fn(common::http::track))
        })
        .workers(1)
        .shutdown_timeout(5)
        .bind(&config.listen)?
        .run();
        // Another thread failing stops the front too.
        let handle = server.handle();
        actix_web::rt::spawn(async move {
            while !stop.stopped() {
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
            }
            handle.stop(true).await;
        });
        server.await?;
        Ok(())
    })
}

//! The matcher's HTTP front: reads from Redis (the book thread is never asked), in the shapes of
//! DESIGN.md §5: the original lab's `GET /trade/<id>` and the v1 reads. [`common::http::serve`]
//! adds `/healthz`, `/readyz` (ready once caught up with the log and Redis answers), `/whoami` and
//! `/metrics`, and every error is an [`ApiError`].

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use anyhow::Context as _;
use common::http::error::{ApiError, Unavailable};
use common::http::{HttpMetrics, Service};
use common::shutdown::Shutdown;
use common::{SymbolTable, TradeId};
use redis::AsyncCommands;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::config::Config;
use super::keys;
use super::metrics::Metrics;

/// What the front's handlers share.
pub struct Front {
    /// Where the I/O thread writes what the front reads.
    redis: redis::aio::ConnectionManager,
    /// Known symbols (an unknown one is a 400 that lists them) and their decimals.
    table: SymbolTable,
    /// This instance's name (`/whoami`).
    instance: String,
    /// The pipeline's metrics: readiness reads the catch-up gauges.
    metrics: Arc<Metrics>,
}

impl Front {
    /// The front's state over a Redis connection.
    pub fn new(
        redis: redis::aio::ConnectionManager,
        table: SymbolTable,
        instance: String,
        metrics: Arc<Metrics>,
    ) -> Front {
        Front { redis, table, instance, metrics }
    }
}

impl Service for Front {
    const NAME: &'static str = "matcher";

    fn instance(&self) -> &str {
        &self.instance
    }

    fn metrics(&self) -> &Arc<HttpMetrics> {
        &self.metrics.http
    }

    /// Ready once what the orders log held at start is through the pipeline (the book and the
    /// state served here are current) and Redis answers.
    async fn ready(&self) -> Result<Map<String, Value>, ApiError> {
        if self.metrics.caught_up.get() == 0 {
            let left = self.metrics.catch_up_remaining.get();
            return Err(ApiError::unavailable(
                Unavailable::CatchingUp,
                format!("rebuilding the book from the orders log: {left} commands to go"),
            ));
        }
        let mut redis = self.redis.clone();
        redis::cmd("PING").query_async::<String>(&mut redis).await.map_err(redis_down)?;
        Ok(Map::new())
    }
}

/// A failed Redis read: 503 `redis_unavailable`.
fn redis_down(e: redis::RedisError) -> ApiError {
    ApiError::unavailable(Unavailable::Redis, e.to_string())
}

/// An unknown symbol: 400 `unknown_symbol`, listing the known ones.
fn unknown_symbol(table: &SymbolTable, symbol: &str) -> ApiError {
    ApiError::BadRequest {
        code: "unknown_symbol",
        message: format!("unknown symbol {symbol:?}; known symbols: {}", table.names()),
    }
}

/// Registers the routes ([`common::http::serve`] adds `/healthz`, `/readyz`, `/whoami`, `/metrics`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/trade/{id}", web::get().to(trade))
        .route("/api/v1/orders/{order_id}", web::get().to(order))
        .route("/api/v1/orders", web::get().to(orders))
        .route("/api/v1/book/{symbol}", web::get().to(book))
        .route("/api/v1/trades", web::get().to(trades))
        .route("/api/v1/symbols", web::get().to(symbols));
}

/// `?account=…`: whose lookup (the gateway fills it in from the caller's credentials).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TradeQuery {
    account: Option<String>,
}

/// `GET /trade/{id}[?account=…]`: the original lab's lookup, for `account` (default
/// `anonymous`, as before accounts existed).
async fn trade(
    state: web::Data<Front>,
    id: web::Path<String>,
    q: web::Query<TradeQuery>,
) -> Result<HttpResponse, ApiError> {
    let account = q.account.as_deref().unwrap_or(common::ids::ANONYMOUS);
    let mut redis = state.redis.clone();
    let found: Option<String> = redis.get(keys::trade(account, &id)).await.map_err(redis_down)?;
    Ok(match found.and_then(|t| serde_json::from_str::<Value>(&t).ok()) {
        Some(trade) => {
            HttpResponse::Ok().json(json!({"found": true, "order_id": id.as_str(), "trade": trade}))
        }
        None => HttpResponse::Ok().json(json!({"found": false, "order_id": id.as_str()})),
    })
}

/// Type alias for one Redis hash as read.
type Fields = std::collections::HashMap<String, String>;

/// Reads orders `ids` (hash and fills each) in one pipelined round trip: each `None` if absent.
async fn orders_json(
    redis: &mut redis::aio::ConnectionManager,
    table: &SymbolTable,
    ids: &[String],
) -> Result<Vec<Option<Value>>, redis::RedisError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.hgetall(keys::order(id)).hgetall(keys::fills(id));
    }
    let replies: Vec<Fields> = pipe.query_async(redis).await?;
    Ok(ids.iter().zip(replies.chunks(2)).map(|(id, r)| order_value(table, id, &r[0], &r[1])).collect())
}

/// One order.
async fn order_json(
    redis: &mut redis::aio::ConnectionManager,
    table: &SymbolTable,
    id: &str,
) -> Result<Option<Value>, redis::RedisError> {
    Ok(orders_json(redis, table, &[id.to_owned()]).await?.pop().flatten())
}

/// An order's JSON from its `order:` and `fills:` hashes (`None`: no such order). `open_qty` is
/// what still rests: ordered minus filled while the order is open, else 0.
fn order_value(table: &SymbolTable, id: &str, fields: &Fields, fills: &Fields) -> Option<Value> {
    if fields.is_empty() {
        return None;
    }
    let mut fills: Vec<Value> = fills.values().filter_map(|f| serde_json::from_str(f).ok()).collect();
    in_trade_order(&mut fills);
    let get = |k: &str| fields.get(k).cloned().map_or(Value::Null, Value::String);
    let hop = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok()).map_or(Value::Null, Value::from);
    let status = fields.get("status").map_or("", String::as_str);
    let open = common::OrderStatus::is_open_name(status);
    let open_qty = table.lookup(fields.get("symbol").map_or("", String::as_str)).and_then(|sym| {
        let spec = table.get(sym)?;
        let lots = |k: &str| common::Decimal::parse(fields.get(k)?).ok()?.units_of(spec.lot).ok();
        let left = if open { (lots("qty")? - lots("filled_qty")?).max(0) } else { 0 };
        Some(common::Decimal::from_units(left, spec.lot)?.to_string())
    });
    Some(json!({
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
        "open_qty": open_qty,
        "status": get("status"),
        "entered_ns": fields.get("entered_ns").and_then(|v| v.parse::<u64>().ok()),
        "reject_reason": get("reject_reason"),
        "cancel_reason": get("cancel_reason"),
        "last_request_rejected": get("last_request_rejected"),
        "fills": fills,
        "hops": {
            "gateway_ns": hop("hop_gateway_ns"),
            "published_ns": hop("hop_published_ns"),
            "consumed_ns": hop("hop_consumed_ns"),
            "matched_ns": hop("hop_matched_ns"),
            "persisted_ns": hop("hop_persisted_ns"),
        },
    }))
}

/// Sorts an order's fills as they happened: by trade id as numbers — (command, fill index) — so
/// `99-0` comes before `100-0`, which a string sort put after. A fill without a readable trade id
/// goes last.
fn in_trade_order(fills: &mut [Value]) {
    fills.sort_by_key(|fill| {
        let id = fill["trade_id"].as_str().and_then(|id| id.parse::<TradeId>().ok());
        (id.is_none(), id)
    });
}

/// An order as JSON, or 404 / 503.
async fn order_response(
    redis: &mut redis::aio::ConnectionManager,
    table: &SymbolTable,
    id: &str,
) -> Result<HttpResponse, ApiError> {
    match order_json(redis, table, id).await.map_err(redis_down)? {
        Some(v) => Ok(HttpResponse::Ok().json(v)),
        None => Err(ApiError::NotFound(format!("no order {id}"))),
    }
}

/// `GET /api/v1/orders/{order_id}`.
async fn order(state: web::Data<Front>, id: web::Path<String>) -> Result<HttpResponse, ApiError> {
    if id.parse::<u64>().is_err() {
        return Err(ApiError::field("order_id must be a decimal u64"));
    }
    let mut redis = state.redis.clone();
    order_response(&mut redis, &state.table, &id).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrdersQuery {
    symbol: Option<String>,
    client_order_id: Option<String>,
    account: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
}

/// Most orders one list answer holds.
const LIST_MAX: usize = 500;

/// `GET /api/v1/orders?symbol=…&client_order_id=…[&account=…]`: one order by its client id; or,
/// without `client_order_id`, the account's orders, newest first:
/// `?status=open|all&symbol=…&limit=N` (`all` and 50 by default; `all` is the open orders and the
/// newest of the rest, as `orders:<account>` keeps them).
async fn orders(state: web::Data<Front>, q: web::Query<OrdersQuery>) -> Result<HttpResponse, ApiError> {
    let account = q.account.clone().unwrap_or_else(|| common::ids::ANONYMOUS.to_owned());
    if let Some(symbol) = q.symbol.as_deref() {
        if state.table.lookup(symbol).is_none() {
            return Err(unknown_symbol(&state.table, symbol));
        }
    }
    let mut redis = state.redis.clone();
    if let Some(cid) = q.client_order_id.as_deref() {
        let symbol =
            q.symbol.as_deref().ok_or_else(|| ApiError::field("symbol is required with client_order_id"))?;
        let id: Option<String> = redis.get(keys::client(&account, symbol, cid)).await.map_err(redis_down)?;
        let id = id.ok_or_else(|| ApiError::NotFound("no order with that client_order_id".into()))?;
        return order_response(&mut redis, &state.table, &id).await;
    }
    let open_only = match q.status.as_deref() {
        None | Some("all") => false,
        Some("open") => true,
        Some(other) => {
            return Err(ApiError::field(format!("status must be \"open\" or \"all\", not {other:?}")))
        }
    };
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > LIST_MAX {
        return Err(ApiError::field(format!("limit must be 1 to {LIST_MAX}")));
    }
    let mut ids: Vec<String> = redis.smembers(keys::open(&account)).await.map_err(redis_down)?;
    if !open_only {
        let recent: Vec<String> =
            redis.zrevrange(keys::recent(&account), 0, LIST_MAX as isize - 1).await.map_err(redis_down)?;
        ids.extend(recent);
    }
    let mut ids: Vec<(u64, String)> = ids.into_iter().filter_map(|id| Some((id.parse().ok()?, id))).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    // A bounded read: the newest ids (by log position) of a market maker's many.
    ids.truncate(2 * LIST_MAX);
    let ids: Vec<String> = ids.into_iter().map(|(_, id)| id).collect();
    let mut list: Vec<Value> = orders_json(&mut redis, &state.table, &ids)
        .await
        .map_err(redis_down)?
        .into_iter()
        .flatten()
        .filter(|o| q.symbol.as_deref().is_none_or(|s| o["symbol"] == s))
        .filter(|o| !open_only || o["status"].as_str().is_some_and(common::OrderStatus::is_open_name))
        .collect();
    // Newest first by when each entered the exchange (ids of two partitions do not compare).
    list.sort_by_key(|o| std::cmp::Reverse(o["entered_ns"].as_u64().unwrap_or(0)));
    list.truncate(limit);
    Ok(HttpResponse::Ok().json(json!({"orders": list})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DepthQuery {
    depth: Option<usize>,
}

/// `GET /api/v1/book/{symbol}?depth=N`.
async fn book(
    state: web::Data<Front>,
    symbol: web::Path<String>,
    q: web::Query<DepthQuery>,
) -> Result<HttpResponse, ApiError> {
    if state.table.lookup(&symbol).is_none() {
        return Err(unknown_symbol(&state.table, &symbol));
    }
    let depth = q.depth.unwrap_or(10).min(50);
    let mut redis = state.redis.clone();
    let snapshot: Option<String> = redis.get(keys::book(&symbol)).await.map_err(redis_down)?;
    let mut v = snapshot
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .unwrap_or_else(|| json!({"symbol": symbol.as_str(), "sequence": 0, "bids": [], "asks": []}));
    for side in ["bids", "asks"] {
        if let Some(levels) = v[side].as_array_mut() {
            levels.truncate(depth);
        }
    }
    Ok(HttpResponse::Ok().json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TradesQuery {
    symbol: String,
    limit: Option<usize>,
}

/// `GET /api/v1/trades?symbol=…&limit=N`: newest first.
async fn trades(state: web::Data<Front>, q: web::Query<TradesQuery>) -> Result<HttpResponse, ApiError> {
    if state.table.lookup(&q.symbol).is_none() {
        return Err(unknown_symbol(&state.table, &q.symbol));
    }
    let limit = q.limit.unwrap_or(50).min(1000);
    let mut redis = state.redis.clone();
    let reply: redis::streams::StreamRangeReply =
        redis.xrevrange_count(keys::trades(&q.symbol), "+", "-", limit).await.map_err(redis_down)?;
    let rows: Vec<Value> = reply
        .ids
        .iter()
        .map(|entry| {
            let mut row = serde_json::Map::new();
            row.insert("sequence".into(), json!(keys::stream_seq(&entry.id)));
            for (k, v) in &entry.map {
                if let Ok(s) = redis::from_redis_value::<String>(v.clone()) {
                    row.insert(k.clone(), Value::String(s));
                }
            }
            Value::Object(row)
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"symbol": q.symbol, "trades": rows})))
}

/// `GET /api/v1/symbols`: each configured symbol with its state as the book last reported it
/// (`symbol:<symbol>`: halted, reference price as last set by an operator). The symbols are
/// configuration: with Redis unreachable they are still listed, their state `null` (unknown).
async fn symbols(state: web::Data<Front>) -> HttpResponse {
    let mut pipe = redis::pipe();
    for (_, s) in state.table.iter() {
        pipe.hgetall(keys::symbol(&s.name));
    }
    let mut redis = state.redis.clone();
    let states: Option<Vec<Fields>> = match pipe.query_async(&mut redis).await {
        Ok(states) => Some(states),
        Err(e) => {
            tracing::warn!(error = %e, "symbols: no state from Redis");
            None
        }
    };
    let list: Vec<Value> = state
        .table
        .iter()
        .enumerate()
        .map(|(i, (_, s))| {
            let now = states.as_ref().and_then(|all| all.get(i));
            let reference = now
                .and_then(|f| f.get("reference").cloned())
                .unwrap_or_else(|| s.price_decimal(s.reference).to_string());
            json!({
                "symbol": s.name,
                "tick": s.tick.to_string(),
                "lot": s.lot.to_string(),
                "band_bps": s.band_bps,
                "reference": reference,
                "max_qty": s.qty_decimal(s.max_qty).to_string(),
                "halted": now.map(|f| f.get("halted").is_some_and(|h| h == "true")),
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"symbols": list}))
}

/// Serves the front on `config.listen` until `shutdown` fires. Needs an actix system.
pub async fn serve(
    config: &Config,
    table: SymbolTable,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(&config.listen)
        .with_context(|| format!("listening on {}", config.listen))?;
    let client = redis::Client::open(config.redis.as_str()).context("redis url")?;
    let redis = redis::aio::ConnectionManager::new_with_config(client, super::redis_config())
        .await
        .context("connecting to Redis")?;
    let front = web::Data::new(Front::new(redis, table, config.instance.clone(), metrics));
    common::http::serve(listener, 1, front, configure, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The front on a free port over a Redis nothing listens on (connected lazily: the routes
    /// tested here answer before they read it). Its base URL, handle and task.
    fn start() -> (String, Shutdown, actix_web::rt::task::JoinHandle<std::io::Result<()>>) {
        let nothing = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let client = redis::Client::open(format!("redis://{nothing}")).unwrap();
        let config = redis::aio::ConnectionManagerConfig::new().set_number_of_retries(0);
        let redis = redis::aio::ConnectionManager::new_lazy_with_config(client, config).unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let front = web::Data::new(Front::new(redis, SymbolTable::default(), "matcher-t".into(), metrics));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        let task = actix_web::rt::spawn(common::http::serve(listener, 1, front, configure, shutdown.clone()));
        (base, shutdown, task)
    }

    async fn get(url: String) -> (u16, Value) {
        let r = reqwest::get(url).await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    #[test]
    fn fills_sort_by_trade_id_as_numbers() {
        let mut fills: Vec<Value> = ["100-0", "bad", "99-1", "99-0", "7-12", "7-2"]
            .iter()
            .map(|id| json!({"trade_id": id}))
            .collect();
        in_trade_order(&mut fills);
        let ids: Vec<&str> = fills.iter().map(|f| f["trade_id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["7-2", "7-12", "99-0", "99-1", "100-0", "bad"]);
    }

    #[actix_web::test]
    async fn the_front_answers_every_error_as_json_and_stops_on_its_handle() {
        let (base, shutdown, task) = start();
        // actix's query extractor answered this in plain text (`Query deserialize error: …`).
        let (status, v) = get(format!("{base}/api/v1/trades?symbol=ABC&limit=abc")).await;
        assert_eq!((status, &v["error"]["code"]), (400, &"bad_field".into()), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("limit=abc"), "{v}");
        let (status, v) = get(format!("{base}/api/v1/book/ABC?depth=-1")).await;
        assert_eq!((status, &v["error"]["code"]), (400, &"bad_field".into()), "{v}");
        let (status, v) = get(format!("{base}/api/v1/trades?symbol=NOPE")).await;
        assert_eq!((status, &v["error"]["code"]), (400, &"unknown_symbol".into()), "{v}");
        let (status, v) = get(format!("{base}/api/v1/orders/x")).await;
        assert_eq!((status, &v["error"]["code"]), (400, &"bad_field".into()), "{v}");
        let (status, v) = get(format!("{base}/nope")).await;
        assert_eq!((status, &v["error"]["code"]), (404, &"not_found".into()), "{v}");
        let (status, v) = get(format!("{base}/readyz")).await;
        assert_eq!((status, &v["error"]["code"]), (503, &"catching_up".into()), "{v}");
        let (status, v) = get(format!("{base}/api/v1/trades?symbol=ABC")).await;
        assert_eq!((status, &v["error"]["code"]), (503, &"redis_unavailable".into()), "{v}");

        let (status, v) = get(format!("{base}/healthz")).await;
        assert_eq!((status, &v["status"]), (200, &"ok".into()));
        let (status, v) = get(format!("{base}/whoami")).await;
        assert_eq!((status, &v["service"], &v["instance"]), (200, &"matcher".into(), &"matcher-t".into()));
        // The symbols are configuration: listed without Redis, their state unknown.
        let (status, v) = get(format!("{base}/api/v1/symbols")).await;
        assert_eq!((status, &v["symbols"][0]["symbol"]), (200, &"ABC".into()), "{v}");
        assert_eq!(v["symbols"][0]["halted"], Value::Null, "{v}");
        let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
        for needle in [r#"matcher_caught_up{service="matcher"} 0"#, r#"route="/api/v1/trades",status="400""#]
        {
            assert!(metrics.contains(needle), "/metrics lacks {needle}:\n{metrics}");
        }

        shutdown.trigger();
        let stopped = actix_web::rt::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(stopped, Ok(Ok(Ok(())))), "serve returns once its handle fires: {stopped:?}");
    }
}

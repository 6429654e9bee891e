//! The HTTP routes: the original lab's `POST /order` and the v1 order routes; [`State`] is what
//! [`common::http::serve`] needs for the endpoints every service has (`/readyz` asks the broker).

use std::sync::Arc;

use actix::Addr;
use actix_web::{web, HttpRequest, HttpResponse};
use common::envelope::{encode_command_traced, Trace};
use common::http::{HttpMetrics, Service};
use common::{Account, Cancel, Command, CommandKind, NewOrder, OrderId, SymbolTable, Timestamp};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, Unavailable};
use crate::metrics::Metrics;
use crate::publisher::{BrokerError, CheckReady, Publish, Publisher};
use crate::validate;

/// What every handler shares.
pub struct State {
    /// The symbols and their limits.
    pub table: SymbolTable,
    /// The Kafka publisher actor.
    pub publisher: Addr<Publisher>,
    /// This instance's name (`/whoami`, `handled_by`).
    pub instance: String,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Largest accepted body, in bytes.
    pub body_limit: usize,
}

impl Service for State {
    const NAME: &'static str = "order-svc";

    fn instance(&self) -> &str {
        &self.instance
    }

    fn metrics(&self) -> &Arc<HttpMetrics> {
        &self.metrics.http
    }

    /// Ready when the broker answers and the `orders` topic exists; says how many partitions.
    async fn ready(&self) -> Result<Map<String, Value>, ApiError> {
        match self.publisher.send(CheckReady).await {
            Ok(Ok(partitions)) => Ok(Map::from_iter([("partitions".to_owned(), partitions.into())])),
            Ok(Err(e)) => Err(ApiError::unavailable(Unavailable::Broker, e)),
            Err(e) => Err(ApiError::unavailable(Unavailable::Broker, e.to_string())),
        }
    }
}

/// Registers the routes ([`common::http::serve`] adds `/healthz`, `/readyz`, `/whoami`, `/metrics`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/order", web::post().to(lab_order))
        .route("/place_order", web::post().to(lab_order))
        .route("/api/v1/orders", web::post().to(v1_order))
        .route("/api/v1/orders/{order_id}", web::delete().to(v1_cancel))
        .route("/api/v1/orders/{order_id}", web::patch().to(v1_replace))
        .route("/api/v1/admin", web::post().to(v1_admin));
}

/// Publishes a command and waits for the broker's acknowledgement.
async fn publish(
    state: &State,
    cmd: Command,
    trace: Trace,
    key: Option<String>,
    partition: Option<i32>,
) -> Result<OrderId, ApiError> {
    let kind = match cmd.kind {
        CommandKind::New(_) => "new_order",
        CommandKind::Cancel(_) => "cancel",
        CommandKind::Replace(_) => "replace",
        _ => "admin",
    };
    let payload = encode_command_traced(&cmd, trace, &state.table);
    match state.publisher.send(Publish { key, partition, payload }).await {
        Ok(Ok((id, took))) => {
            state.metrics.ack.observe(took.as_secs_f64());
            state.metrics.published.with_label_values(&[kind]).inc();
            Ok(id)
        }
        Ok(Err(e)) => {
            state.metrics.broker_error(e.kind());
            Err(ApiError::unavailable(Unavailable::Broker, e.to_string()))
        }
        Err(_) => {
            // The producer's owner is gone: as if the producer gave the message up.
            state.metrics.broker_error(BrokerError::Canceled);
            Err(ApiError::unavailable(
                Unavailable::Broker,
                "the publisher is not running; the outcome is unknown",
            ))
        }
    }
}

/// The trace a request brings: the gateway's receive time, when it came through one.
fn trace(req: &HttpRequest) -> Trace {
    Trace { gateway_in: common::http::gateway_in(req) }
}

async fn place(state: &State, req: &HttpRequest, order: NewOrder) -> Result<OrderId, ApiError> {
    let key = state.table.get(order.symbol).map(|s| s.name.clone());
    let cmd = Command { id: OrderId(0), ts: Timestamp::now(), kind: CommandKind::New(order) };
    publish(state, cmd, trace(req), key, None).await
}

/// `POST /order` (and `/place_order`): the original lab's order route and shapes.
async fn lab_order(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = common::http::read_body(payload, state.body_limit).await?;
    let lab: validate::LabOrder = validate::parse(&bytes)?;
    let order = validate::lab(&state.table, &lab)?;
    let id = place(&state, &req, order).await?;
    Ok(HttpResponse::Accepted().json(json!({
        "status": "received",
        "handled_by": state.instance,
        "order_id": id.to_string(),
        "order": {
            "id": lab.id,
            "symbol": lab.symbol,
            "price": lab.price.to_f64_lossy(),
            "qty": lab.qty.to_lab_json(),
            "side": order.side.as_str(),
            "account": order.account.as_str(),
        },
    })))
}

/// `POST /api/v1/orders`.
async fn v1_order(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = common::http::read_body(payload, state.body_limit).await?;
    let v1: validate::V1Order = validate::parse(&bytes)?;
    let order = validate::v1(&state.table, &v1)?;
    let id = place(&state, &req, order).await?;
    Ok(HttpResponse::Accepted().json(json!({
        "order_id": id.to_string(),
        "client_order_id": v1.client_order_id,
        "status": "accepted",
    })))
}

/// Who asks to cancel (until authentication exists).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelQuery {
    account: Option<String>,
}

/// `DELETE /api/v1/orders/{order_id}`: publishes a cancel to the partition the id encodes.
async fn v1_cancel(
    state: web::Data<State>,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<CancelQuery>,
) -> Result<HttpResponse, ApiError> {
    let order_id = validate::order_id(&path)?;
    let account = match query.account.as_deref() {
        Some(a) => Account::new(a).map_err(|e| ApiError::field(format!("account {e}")))?,
        None => Account::anonymous(),
    };
    let cmd = Command {
        id: OrderId(0),
        ts: Timestamp::now(),
        kind: CommandKind::Cancel(Cancel { order_id, account }),
    };
    let cancel_id = publish(&state, cmd, trace(&req), None, Some(i32::from(order_id.partition()))).await?;
    Ok(HttpResponse::Accepted().json(json!({
        "order_id": order_id.to_string(),
        "cancel_id": cancel_id.to_string(),
        "status": "cancel_requested",
    })))
}

/// `PATCH /api/v1/orders/{order_id}`: publishes a cancel-replace (new price, new open quantity) to
/// the partition the id encodes. The gateway adds the order's symbol and the caller's account.
async fn v1_replace(
    state: web::Data<State>,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let order_id = validate::order_id(&path)?;
    let bytes = common::http::read_body(payload, state.body_limit).await?;
    let body: validate::V1Replace = validate::parse(&bytes)?;
    let replace = validate::replace(&state.table, order_id, &body)?;
    let cmd = Command { id: OrderId(0), ts: Timestamp::now(), kind: CommandKind::Replace(replace) };
    let replace_id = publish(&state, cmd, trace(&req), None, Some(i32::from(order_id.partition()))).await?;
    Ok(HttpResponse::Accepted().json(json!({
        "order_id": order_id.to_string(),
        "replace_id": replace_id.to_string(),
        "status": "replace_requested",
    })))
}

/// `POST /api/v1/admin` `{"action", "symbol"?, "price"?, "account"?}`: publishes an admin command.
/// A symbol's command goes to the symbol's partition (keyed by it, like its orders); a
/// mass-cancel to every partition, since each matcher cancels what it holds. Who may ask is the
/// gateway's business (operators only).
async fn v1_admin(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let bytes = common::http::read_body(payload, state.body_limit).await?;
    let body: validate::V1Admin = validate::parse(&bytes)?;
    let kind = validate::admin(&state.table, &body)?;
    let command = |kind| Command { id: OrderId(0), ts: Timestamp::now(), kind };
    let ids = match kind {
        CommandKind::MassCancel { .. } => {
            let partitions = match state.publisher.send(CheckReady).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(ApiError::unavailable(Unavailable::Broker, e)),
                Err(e) => return Err(ApiError::unavailable(Unavailable::Broker, e.to_string())),
            };
            let mut ids = Vec::with_capacity(partitions);
            for p in 0..partitions {
                let p = i32::try_from(p).map_err(|_| ApiError::field("too many partitions"))?;
                match publish(&state, command(kind), trace(&req), None, Some(p)).await {
                    Ok(id) => ids.push(id),
                    Err(e) if p > 0 => {
                        return Err(ApiError::unavailable(Unavailable::Broker, format!(
                            "the mass-cancel reached partitions 0 to {} of {partitions}, then: {e}; sending it again is safe",
                            p - 1
                        )))
                    }
                    Err(e) => return Err(e),
                }
            }
            ids
        }
        _ => {
            let key = body.symbol.clone();
            vec![publish(&state, command(kind), trace(&req), key, None).await?]
        }
    };
    Ok(HttpResponse::Accepted().json(json!({
        "status": format!("{}_requested", body.action),
        "action": body.action,
        "command_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })))
}

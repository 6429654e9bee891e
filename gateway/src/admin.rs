//! The operators' routes: halt and resume a symbol, move its reference price, cancel every resting
//! order of an account — the admin commands the book has had from the start (DESIGN.md §2),
//! published to the `orders` topic through order-svc like any order.
//!
//! Only an operator may call them: the role is read from the user store on every call (a role
//! taken away works at once, without waiting for tokens to expire); a trader gets `403`, a caller
//! without credentials `401`. `./lab role <user> operator` grants the role. Every action — done or
//! refused by order-svc — is logged with who did it: in the gateway's log, and in the `admin:log`
//! stream (`GET /api/v1/admin/log`). In development mode (`--no-auth`) everyone is an operator and
//! the actions are only in the gateway's log.

use actix_web::{web, HttpRequest, HttpResponse};
use common::http::error::{ApiError, Unavailable};
use common::http::validate;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::accounts::{caller, redis_down, store};
use crate::auth::Caller;
use crate::routes::{relay, request_id, with_id, State};
use crate::upstream::Method;

/// Registers the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/admin/symbols/{symbol}/halt", web::post().to(halt))
        .route("/api/v1/admin/symbols/{symbol}/resume", web::post().to(resume))
        .route("/api/v1/admin/symbols/{symbol}/reference", web::post().to(reference))
        .route("/api/v1/admin/accounts/{account}/cancel-all", web::post().to(cancel_all))
        .route("/api/v1/admin/log", web::get().to(log));
}

/// The operator calling, or the 401 / 403 that says why not.
async fn operator(state: &State, req: &HttpRequest) -> Result<String, ApiError> {
    match caller(state, req).await? {
        Caller::Anyone => Ok(common::ids::ANONYMOUS.to_owned()),
        Caller::User(name) => match store(state)?.role(&name).await.map_err(redis_down)?.as_deref() {
            Some("operator") => Ok(name),
            _ => Err(ApiError::Forbidden(format!(
                "operators only: {name} is a trader (an operator is made with `./lab role {name} operator`)"
            ))),
        },
    }
}

/// One admin action by operator `who`: sends `command` to order-svc's `/api/v1/admin`, logs it
/// with the outcome, and relays order-svc's answer.
async fn act(state: &State, rid: String, who: String, command: Value, target: String) -> HttpResponse {
    let rid = &rid;
    let action = command["action"].as_str().unwrap_or_default().to_owned();
    let detail =
        command.get("price").map(|p| format!("price {}", p.as_str().unwrap_or_default())).unwrap_or_default();
    let answer = state
        .writes
        .send(Method::POST, "/api/v1/admin", Some(command.to_string().into_bytes()), rid, None)
        .await;
    let status = answer.as_ref().map_or_else(|e| format!("{e:?}"), |a| a.status.to_string());
    tracing::info!(operator = %who, %action, %target, %detail, %status, request_id = %rid, "admin action");
    if let Some(store) = &state.auth.store {
        let entry = [
            ("operator", who),
            ("action", action),
            ("target", target),
            ("detail", detail),
            ("status", status),
            ("request_id", rid.to_owned()),
        ];
        if let Err(e) = store.log_admin(&entry).await {
            tracing::error!(error = %e, "the admin log could not be written");
        }
    }
    relay(answer, Unavailable::OrderSvc, rid)
}

/// The operator calling, with the request id; or the answer that refuses the caller.
async fn checked(state: &State, req: &HttpRequest) -> Result<(String, String), HttpResponse> {
    let rid = request_id(state, req);
    match operator(state, req).await {
        Ok(who) => Ok((rid, who)),
        Err(e) => Err(with_id(e, &rid)),
    }
}

/// `POST /api/v1/admin/symbols/{symbol}/halt`: no new orders or replaces on it (cancels still work).
async fn halt(state: web::Data<State>, req: HttpRequest, symbol: web::Path<String>) -> HttpResponse {
    let (rid, who) = match checked(&state, &req).await {
        Ok(ok) => ok,
        Err(refused) => return refused,
    };
    let target = symbol.into_inner();
    act(&state, rid, who, json!({"action": "halt", "symbol": target}), target).await
}

/// `POST /api/v1/admin/symbols/{symbol}/resume`.
async fn resume(state: web::Data<State>, req: HttpRequest, symbol: web::Path<String>) -> HttpResponse {
    let (rid, who) = match checked(&state, &req).await {
        Ok(ok) => ok,
        Err(refused) => return refused,
    };
    let target = symbol.into_inner();
    act(&state, rid, who, json!({"action": "resume", "symbol": target}), target).await
}

/// `{"price": "100.00"}` (a decimal string or number, read exactly).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reference {
    price: common::Decimal,
}

/// `POST /api/v1/admin/symbols/{symbol}/reference` `{"price"}`: moves the price band's centre.
async fn reference(
    state: web::Data<State>,
    req: HttpRequest,
    symbol: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (rid, who) = match checked(&state, &req).await {
        Ok(ok) => ok,
        Err(refused) => return refused,
    };
    let body = match common::http::read_body(payload, state.body_limit).await {
        Ok(bytes) => validate::parse::<Reference>(&bytes),
        Err(e) => Err(e),
    };
    let price = match body {
        Ok(r) => r.price.to_string(),
        Err(e) => return with_id(e, &rid),
    };
    let target = symbol.into_inner();
    let command = json!({"action": "set_reference", "symbol": target, "price": price});
    act(&state, rid, who, command, target).await
}

/// `POST /api/v1/admin/accounts/{account}/cancel-all`: every resting order of the account, on
/// every symbol.
async fn cancel_all(state: web::Data<State>, req: HttpRequest, account: web::Path<String>) -> HttpResponse {
    let (rid, who) = match checked(&state, &req).await {
        Ok(ok) => ok,
        Err(refused) => return refused,
    };
    let target = account.into_inner();
    act(&state, rid, who, json!({"action": "mass_cancel", "account": target}), target).await
}

/// `?limit=N`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogQuery {
    limit: Option<usize>,
}

/// `GET /api/v1/admin/log?limit=N` (operators only): the newest actions first, 50 by default.
async fn log(
    state: web::Data<State>,
    req: HttpRequest,
    q: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    operator(&state, &req).await?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::field("limit must be 1 to 1000"));
    }
    let entries = store(&state)?.admin_log(limit).await.map_err(redis_down)?;
    Ok(HttpResponse::Ok().json(json!({"entries": entries})))
}

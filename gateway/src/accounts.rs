//! The account routes (DESIGN.md §5 "Auth"): the original lab's `POST /signup`, `POST /login`,
//! `GET /validate` with its exact shapes, their v1 twins under `/api/v1/auth/`, `POST /logout`,
//! the caller's own account (`/api/v1/auth/me`) and API keys (`/api/v1/auth/api-keys`).

use std::net::IpAddr;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use common::http::error::ApiError;
use common::http::{read_body, validate};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{rules, store::Store, Caller, Denied, COOKIE};
use crate::routes::State;

/// Registers the account routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/signup", web::post().to(signup_lab))
        .route("/login", web::post().to(login))
        .route("/validate", web::get().to(validate_token))
        .route("/logout", web::post().to(logout))
        .route("/api/v1/auth/signup", web::post().to(signup_v1))
        .route("/api/v1/auth/login", web::post().to(login))
        .route("/api/v1/auth/logout", web::post().to(logout))
        .route("/api/v1/auth/me", web::get().to(me))
        .route("/api/v1/auth/me", web::delete().to(delete_me))
        .route("/api/v1/auth/api-keys", web::post().to(create_key))
        .route("/api/v1/auth/api-keys", web::get().to(list_keys))
        .route("/api/v1/auth/api-keys/{key_id}", web::delete().to(revoke_key));
}

/// `{"username", "password"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

/// The client's address: the `X-Real-IP` a trusted proxy (nginx) set, else the peer's. Only
/// the configured proxies are believed (`--trusted-proxies`; by default this machine's loopback,
/// where `./lab up` runs nginx), so a remote client cannot name another address to slip past the
/// per-address limits.
pub fn client_ip(req: &HttpRequest) -> IpAddr {
    let peer = req.peer_addr().map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip());
    let trusted = req.app_data::<web::Data<State>>().is_some_and(|s| s.trusted_proxies.trusts(peer));
    let forwarded =
        req.headers().get("x-real-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    match forwarded {
        Some(ip) if trusted => ip,
        _ => peer,
    }
}

/// Which peers may tell the gateway the client's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustedProxies {
    /// Every peer (compose: only nginx reaches the gateways on its network).
    Any,
    /// These addresses only.
    Only(Vec<IpAddr>),
}

impl TrustedProxies {
    /// From `--trusted-proxies`: `any`, or addresses.
    pub fn parse(list: &[String]) -> anyhow::Result<TrustedProxies> {
        if list.iter().any(|v| v.trim() == "any") {
            return Ok(TrustedProxies::Any);
        }
        let ips = list.iter().map(|v| {
            v.trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("--trusted-proxies: {v:?} is not an address or `any`"))
        });
        Ok(TrustedProxies::Only(ips.collect::<anyhow::Result<_>>()?))
    }

    /// True if `peer` may name the client.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        match self {
            TrustedProxies::Any => true,
            TrustedProxies::Only(ips) => ips.contains(&peer),
        }
    }
}

/// What every account route answers in development mode.
fn accounts_off() -> ApiError {
    ApiError::NotFound("accounts are off (the gateway runs with --no-auth)".into())
}

pub(crate) fn store(state: &State) -> Result<&Store, ApiError> {
    state.auth.store.as_ref().ok_or_else(accounts_off)
}

fn tokens(state: &State) -> Result<&crate::auth::token::Tokens, ApiError> {
    state.auth.tokens.as_ref().ok_or_else(accounts_off)
}

fn bad_field(e: rules::Broken) -> ApiError {
    ApiError::field(e.message)
}

/// The caller, or the 401 / 503 that says why not.
pub async fn caller(state: &State, req: &HttpRequest) -> Result<Caller, ApiError> {
    state.auth.caller(req).await.map_err(denied)
}

/// A refusal as the API's error.
pub fn denied(d: Denied) -> ApiError {
    match d {
        Denied::Missing => ApiError::Unauthorized { code: "unauthorized", message: d.to_string() },
        Denied::Expired => ApiError::Unauthorized { code: "token_expired", message: d.to_string() },
        Denied::Invalid(_) => ApiError::Unauthorized { code: "unauthorized", message: d.to_string() },
        Denied::Store(e) => ApiError::unavailable(common::http::error::Unavailable::Redis, e.to_string()),
    }
}

/// A signed-in user (not development mode's `Anyone`).
async fn user(state: &State, req: &HttpRequest) -> Result<String, ApiError> {
    match caller(state, req).await? {
        Caller::User(u) => Ok(u),
        Caller::Anyone => Err(accounts_off()),
    }
}

pub(crate) fn redis_down(e: crate::auth::store::StoreError) -> ApiError {
    ApiError::unavailable(common::http::error::Unavailable::Redis, e.to_string())
}

/// Reads and checks a sign-up: the username as stored.
async fn new_user(state: &State, req: &HttpRequest, payload: web::Payload) -> Result<String, ApiError> {
    let store = store(state)?;
    let body = read_body(payload, state.body_limit).await?;
    let c: Credentials = validate::parse(&body)?;
    let name = rules::username(&c.username).map_err(bad_field)?;
    rules::password(&c.password, &name).map_err(bad_field)?;
    state.limits.login(&name, client_ip(req))?;
    if !store.create_user(&name, &c.password).await.map_err(redis_down)? {
        return Err(ApiError::BadRequest {
            code: "username_taken",
            message: format!("username {name:?} is taken"),
        });
    }
    tracing::info!(user = %name, "signed up");
    Ok(name)
}

/// `POST /signup`: the original lab's shape, `200 {"status": "created", "username"}`.
async fn signup_lab(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = new_user(&state, &req, payload).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "created", "username": name})))
}

/// `POST /api/v1/auth/signup`: `201 {"username"}`.
async fn signup_v1(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = new_user(&state, &req, payload).await?;
    Ok(HttpResponse::Created().json(json!({"username": name})))
}

/// `POST /login`, `POST /api/v1/auth/login`: `{"access_token", "token_type": "bearer",
/// "expires_in"}` and the session cookie; wrong name or password: `401` (the same for both).
async fn login(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let store = store(&state)?;
    let tokens = tokens(&state)?;
    let body = read_body(payload, state.body_limit).await?;
    let c: Credentials = validate::parse(&body)?;
    let name = c.username.trim().to_ascii_lowercase();
    let ip = client_ip(&req);
    state.limits.login(&name, ip)?;
    let Some(uid) = store.verify(&name, &c.password).await.map_err(redis_down)? else {
        state.limits.failed_login(&name, ip);
        tracing::warn!(user = %name, %ip, "failed login");
        return Err(ApiError::Unauthorized {
            code: "bad_credentials",
            message: "wrong username or password".into(),
        });
    };
    let (token, _) = tokens.issue(&name, &uid).map_err(|e| ApiError::field(e.to_string()))?;
    let ttl = tokens.ttl.as_secs();
    let cookie = Cookie::build(COOKIE, token.clone())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.auth.cookie_secure)
        .max_age(actix_web::cookie::time::Duration::seconds(ttl as i64))
        .finish();
    Ok(HttpResponse::Ok()
        .cookie(cookie)
        .json(json!({"access_token": token, "token_type": "bearer", "expires_in": ttl})))
}

/// `GET /validate`: the original lab's `{"ok": true, "decoded": {…}}`, or `401`.
async fn validate_token(state: web::Data<State>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let tokens = tokens(&state)?;
    let name = user(&state, &req).await?;
    let credential = crate::auth::credential(&req).unwrap_or_default();
    let decoded = match tokens.check(&credential) {
        Ok(claims) => json!(claims),
        Err(_) => json!({"sub": name, "api_key": true}),
    };
    Ok(HttpResponse::Ok().json(json!({"ok": true, "decoded": decoded})))
}

/// `POST /logout`: clears the session cookie. (A bearer token stays valid until it expires:
/// tokens are not stored, so there is nothing to revoke.)
async fn logout(state: web::Data<State>) -> HttpResponse {
    let mut gone = Cookie::build(COOKIE, "").path("/").http_only(true).same_site(SameSite::Strict).finish();
    gone.set_secure(state.auth.cookie_secure);
    gone.make_removal();
    HttpResponse::Ok().cookie(gone).json(json!({"status": "logged_out"}))
}

/// `GET /api/v1/auth/me`: `{"username", "role"}`.
async fn me(state: web::Data<State>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let name = user(&state, &req).await?;
    let role = store(&state)?.role(&name).await.map_err(redis_down)?.unwrap_or_default();
    Ok(HttpResponse::Ok().json(json!({"username": name, "role": role})))
}

/// `DELETE /api/v1/auth/me`: deletes the caller's account and keys; their tokens stop working.
async fn delete_me(state: web::Data<State>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let name = user(&state, &req).await?;
    store(&state)?.delete_user(&name).await.map_err(redis_down)?;
    tracing::info!(user = %name, "account deleted");
    Ok(HttpResponse::Ok().json(json!({"status": "deleted", "username": name})))
}

/// `{"label"}` (optional).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewKey {
    #[serde(default)]
    label: String,
}

/// `POST /api/v1/auth/api-keys`: `201 {"key_id", "api_key", "label"}`; the key is shown once.
async fn create_key(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let name = user(&state, &req).await?;
    let body = read_body(payload, state.body_limit).await?;
    let new: NewKey =
        if body.iter().all(u8::is_ascii_whitespace) { NewKey::default() } else { validate::parse(&body)? };
    if new.label.len() > 64 || new.label.chars().any(char::is_control) {
        return Err(ApiError::field("label must be at most 64 printable characters"));
    }
    let store = store(&state)?;
    let uid = store.uid(&name).await.map_err(redis_down)?.unwrap_or_default();
    let (id, key) = store.create_key(&name, &uid, &new.label).await.map_err(redis_down)?;
    tracing::info!(user = %name, key_id = %id, "API key created");
    Ok(HttpResponse::Created().json(json!({"key_id": id, "api_key": key, "label": new.label})))
}

/// `GET /api/v1/auth/api-keys`: the caller's keys (ids and labels, never the secrets).
async fn list_keys(state: web::Data<State>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let name = user(&state, &req).await?;
    let keys = store(&state)?.list_keys(&name).await.map_err(redis_down)?;
    Ok(HttpResponse::Ok().json(json!({"api_keys": keys})))
}

/// `DELETE /api/v1/auth/api-keys/{key_id}`: revokes one of the caller's keys (another user's is a
/// `404`, as if it did not exist).
async fn revoke_key(
    state: web::Data<State>,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = user(&state, &req).await?;
    if !store(&state)?.revoke_key(&name, &id).await.map_err(redis_down)? {
        return Err(ApiError::NotFound(format!("no API key {id}")));
    }
    tracing::info!(user = %name, key_id = %id.as_str(), "API key revoked");
    Ok(HttpResponse::Ok().json(json!({"status": "revoked", "key_id": id.as_str()})))
}

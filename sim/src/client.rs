//! The HTTP side: the public API through nginx (DESIGN.md §5), as a well-behaved client sees
//! it. [`Api::call`] sends one request and times it; [`classify`] turns an answer into what the
//! caller must do about it ([`Trouble`]: wait out a `429`, back off from a `5xx` or a refused
//! connection, sign in again after a `401`, leave a halted symbol alone, or give up on a refused
//! request); [`Api::sign_in`] is the start-up of an account (sign up, log in, replace this
//! program's API key); the `read_*` functions read the API's JSON into the core's ticks and
//! lots. Nothing here sleeps or retries: the maker decides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::metrics::Metrics;
use crate::quote::Market;

/// The label of the API keys this program makes; earlier ones are revoked at sign-in.
pub const KEY_LABEL: &str = "market-sim";

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One answer: the status, its JSON (`Null` if it had none) and `Retry-After`, if given.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body as JSON.
    pub body: Value,
    /// `Retry-After`, in seconds, on a `429` or `503`.
    pub retry_after: Option<Duration>,
}

impl Answer {
    /// The error's `code` (`""` if none).
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    /// The error's `message` (`""` if none).
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }

    /// True for a `2xx`.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What went wrong with a request, and so what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trouble {
    /// `429`: wait this long (`Retry-After`, else a second), then go on.
    RateLimited(Duration),
    /// No answer, a `5xx`, or nginx's `502`/`504`: back off and go on.
    Unavailable(String),
    /// `401`: the key or token is no good any more: sign in again.
    Unauthorized(String),
    /// The symbol is halted: leave it alone for a while.
    Halted(String),
    /// Another `4xx`: this request will not work as it is.
    Refused {
        /// The status.
        status: u16,
        /// The error's code.
        code: String,
        /// The error's message.
        message: String,
    },
}

impl Trouble {
    /// Its `sim_errors_total` kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Trouble::RateLimited(_) => "rate_limited",
            Trouble::Unavailable(_) => "unavailable",
            Trouble::Unauthorized(_) => "unauthorized",
            Trouble::Halted(_) => "halted",
            Trouble::Refused { .. } => "refused",
        }
    }
}

impl std::fmt::Display for Trouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trouble::RateLimited(d) => write!(f, "rate limited: retry in {:.1} s", d.as_secs_f64()),
            Trouble::Unavailable(m) => write!(f, "unavailable: {m}"),
            Trouble::Unauthorized(m) => write!(f, "unauthorized: {m}"),
            Trouble::Halted(m) => write!(f, "halted: {m}"),
            Trouble::Refused { status, code, message } => write!(f, "refused ({status} {code}): {message}"),
        }
    }
}

/// What an answer means: `Ok` for a `2xx`, else the [`Trouble`].
pub fn classify(a: &Answer) -> Result<(), Trouble> {
    let text = || {
        let (code, message) = (a.code(), a.message());
        if code.is_empty() && message.is_empty() {
            format!("HTTP {}", a.status)
        } else {
            format!("{code}: {message}")
        }
    };
    match a.status {
        200..=299 => Ok(()),
        429 => Err(Trouble::RateLimited(a.retry_after.unwrap_or(Duration::from_secs(1)))),
        401 => Err(Trouble::Unauthorized(text())),
        500..=599 => Err(Trouble::Unavailable(text())),
        _ if names_halt(a) => Err(Trouble::Halted(text())),
        status => {
            Err(Trouble::Refused { status, code: a.code().to_owned(), message: a.message().to_owned() })
        }
    }
}

/// True if a refusal says the symbol is halted.
fn names_halt(a: &Answer) -> bool {
    a.code().contains("halt") || a.message().to_ascii_lowercase().contains("halted")
}

/// True if an answer says the server has no such route or method (`PATCH` before it exists): a
/// `404` for the route (not for an order), a `405` or a `501`.
pub fn no_such_route(a: &Answer) -> bool {
    match a.status {
        405 | 501 => true,
        404 => a.message().contains("no such route") || a.message().contains("no such page"),
        _ => false,
    }
}

/// True if an amend or cancel was refused because the order is no longer open (filled or
/// canceled meanwhile): a `409`, a code that says so, or the gateway's `422` "only an open order
/// can be amended". The quote is gone; nothing is wrong.
pub fn not_open(a: &Answer) -> bool {
    a.status == 409
        || matches!(a.code(), "not_open" | "order_not_open" | "order_closed")
        || (a.status == 422 && a.message().contains("only an open order"))
}

/// `Retry-After` in whole seconds (an HTTP date is not expected here: `None`).
pub fn retry_after(header: Option<&str>) -> Option<Duration> {
    header.and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs)
}

/// An account's credential for order calls.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Key {
    /// Its id (to revoke it).
    pub key_id: String,
    /// The secret, `tlk_…`, sent as `Authorization: Bearer`.
    pub api_key: String,
}

impl std::fmt::Debug for Key {
    /// The id only: the secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

/// Why signing in did not work.
#[derive(Debug, PartialEq, Eq)]
pub enum SignInError {
    /// It never will as configured (wrong password, a name or password the rules refuse,
    /// accounts off): exit with this message.
    Fatal(String),
    /// Try again later.
    Transient(Trouble),
}

impl From<Trouble> for SignInError {
    fn from(t: Trouble) -> SignInError {
        SignInError::Transient(t)
    }
}

/// One symbol as `GET /api/v1/symbols` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolInfo {
    /// Its name.
    pub symbol: String,
    /// Price increment (decimal text).
    pub tick: String,
    /// Quantity increment.
    pub lot: String,
    /// The band's half-width in basis points.
    pub band_bps: u32,
    /// The reference price.
    pub reference: String,
    /// The largest quantity, if given.
    pub max_qty: Option<String>,
    /// Halted now (`None`: the API does not say).
    pub halted: Option<bool>,
}

/// The symbols of a `GET /api/v1/symbols` answer.
pub fn read_symbols(v: &Value) -> Result<Vec<SymbolInfo>, String> {
    let list = v["symbols"].as_array().ok_or_else(|| format!("no \"symbols\" list in {v}"))?;
    list.iter()
        .map(|s| {
            let text = |k: &str| match &s[k] {
                Value::String(t) => Some(t.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            let need = |k: &str| text(k).ok_or_else(|| format!("symbol without {k:?}: {s}"));
            Ok(SymbolInfo {
                symbol: need("symbol")?,
                tick: need("tick")?,
                lot: need("lot")?,
                band_bps: s["band_bps"]
                    .as_u64()
                    .and_then(|b| u32::try_from(b).ok())
                    .ok_or_else(|| format!("symbol without a whole band_bps: {s}"))?,
                reference: need("reference")?,
                max_qty: text("max_qty"),
                halted: s["halted"].as_bool(),
            })
        })
        .collect()
}

/// The newest trade in a `GET /api/v1/trades?limit=1` answer: its price in ticks and its
/// sequence number, if it has one (`None`: no trade yet, or a price that does not read).
pub fn read_last_trade(market: &Market, v: &Value) -> Option<(i64, Option<u64>)> {
    let trade = v["trades"].as_array()?.first()?;
    let price = market.ticks("price", trade["price"].as_str()?).ok()?;
    let sequence = trade["sequence"].as_u64().or_else(|| trade["sequence"].as_str()?.parse().ok());
    Some((price, sequence))
}

/// An order as `GET /api/v1/orders/{id}` shows it, as far as a quote cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderView {
    /// Still in the book (or about to be): at this price, with this much open.
    Open {
        /// Its price in ticks.
        price: i64,
        /// Quantity not yet filled, in lots.
        open_lots: u64,
    },
    /// Over: `filled`, `canceled` or `rejected` (with the reason, if any).
    Done {
        /// The status.
        status: String,
        /// `reject_reason`, if any.
        reason: Option<String>,
    },
}

/// Reads an order's status for a quote of `market`.
pub fn read_order(market: &Market, v: &Value) -> Result<OrderView, String> {
    let status = v["status"].as_str().ok_or_else(|| format!("order without a status: {v}"))?;
    match status {
        "filled" | "canceled" | "rejected" => Ok(OrderView::Done {
            status: status.to_owned(),
            reason: v["reject_reason"].as_str().filter(|r| !r.is_empty()).map(str::to_owned),
        }),
        _ => {
            let price =
                market.ticks("price", v["price"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
            let qty = market.lots("qty", v["qty"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
            let filled = match v["filled_qty"].as_str() {
                Some(f) if !f.is_empty() => market.lots("filled_qty", f).map_err(|e| e.to_string())?,
                _ => 0,
            };
            Ok(OrderView::Open { price, open_lots: qty.saturating_sub(filled) })
        }
    }
}

/// The open orders' ids in a `GET /api/v1/orders?status=open` answer (an entry without a status
/// counts as open: that is what was asked for).
pub fn read_open_orders(v: &Value) -> Option<Vec<String>> {
    let list = v["orders"].as_array()?;
    Some(
        list.iter()
            .filter(|o| o["status"].as_str().is_none_or(|s| !matches!(s, "filled" | "canceled" | "rejected")))
            .filter_map(|o| o["order_id"].as_str().map(str::to_owned))
            .collect(),
    )
}

/// The public API at one base URL (cheap to clone: one connection pool).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    metrics: Arc<Metrics>,
}

impl Api {
    /// A client for `base` (`http://127.0.0.1:8080`), timing its requests into `metrics`.
    pub fn new(base: &str, metrics: Arc<Metrics>) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(4)
            .user_agent(concat!("market-sim/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Api { http, base: base.trim_end_matches('/').to_owned(), metrics })
    }

    /// Sends one request (`kind` labels its latency); no answer at all is
    /// [`Trouble::Unavailable`]. The answer is not judged: see [`classify`].
    pub async fn call(
        &self,
        kind: &'static str,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, Trouble> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let started = Instant::now();
        let sent = req.send().await;
        let r = sent.map_err(|e| Trouble::Unavailable(describe(&e)))?;
        let status = r.status().as_u16();
        let retry = retry_after(r.headers().get("retry-after").and_then(|v| v.to_str().ok()));
        let bytes = r.bytes().await.map_err(|e| Trouble::Unavailable(describe(&e)))?;
        self.metrics.request.with_label_values(&[kind]).observe(started.elapsed().as_secs_f64());
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Answer { status, body, retry_after: retry })
    }

    /// A call whose answer must be a `2xx`.
    async fn ok(
        &self,
        kind: &'static str,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, Trouble> {
        let a = self.call(kind, method, path, bearer, body).await?;
        classify(&a).map(|()| a)
    }

    /// Signs `user` up (an existing account is fine), logs in, revokes the API keys this program
    /// made earlier for it, and makes a new one.
    pub async fn sign_in(&self, user: &str, password: &str) -> Result<Key, SignInError> {
        let creds = json!({"username": user, "password": password});
        let a = self.call("auth", Method::POST, "/api/v1/auth/signup", None, Some(&creds)).await?;
        match a.status {
            201 | 409 => {}
            400 if a.code() == "username_taken" => {}
            400 | 404 => {
                return Err(SignInError::Fatal(format!(
                    "signing up {user:?}: {} ({})",
                    a.message(),
                    a.code()
                )))
            }
            _ => classify(&a)?,
        }
        let a = self.call("auth", Method::POST, "/api/v1/auth/login", None, Some(&creds)).await?;
        if a.status == 401 {
            return Err(SignInError::Fatal(format!(
                "logging in as {user:?}: {} — the account exists with another password; give its password \
                 (--password-file / SIM_PASSWORD_FILE) or use other names (--maker-user, --taker-user)",
                a.message()
            )));
        }
        classify(&a)?;
        let token = a.body["access_token"]
            .as_str()
            .ok_or_else(|| Trouble::Unavailable(format!("login answered without a token: {}", a.body)))?
            .to_owned();
        let keys = self.ok("auth", Method::GET, "/api/v1/auth/api-keys", Some(&token), None).await?;
        for old in keys.body["api_keys"].as_array().into_iter().flatten() {
            if old["label"].as_str() == Some(KEY_LABEL) {
                if let Some(id) = old["key_id"].as_str() {
                    let path = format!("/api/v1/auth/api-keys/{id}");
                    let a = self.call("auth", Method::DELETE, &path, Some(&token), None).await?;
                    if a.status != 404 {
                        classify(&a)?;
                    }
                    tracing::debug!(user, key_id = id, "revoked an earlier key");
                }
            }
        }
        let body = json!({"label": KEY_LABEL});
        let a = self.ok("auth", Method::POST, "/api/v1/auth/api-keys", Some(&token), Some(&body)).await?;
        match (a.body["key_id"].as_str(), a.body["api_key"].as_str()) {
            (Some(id), Some(key)) => Ok(Key { key_id: id.to_owned(), api_key: key.to_owned() }),
            _ => Err(Trouble::Unavailable(format!("a new API key answered without one: {}", a.body)).into()),
        }
    }
}

/// A transport error in a few words, with its cause (`connection refused`, `timed out`).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str, message: &str) -> Answer {
        Answer { status, body: json!({"error": {"code": code, "message": message}}), retry_after: None }
    }

    fn abc() -> Market {
        Market::new("ABC", "0.01", "1", 1_000, "100.00", None).unwrap()
    }

    #[test]
    fn answers_are_classified_like_a_good_client_would() {
        assert_eq!(classify(&Answer { status: 202, body: Value::Null, retry_after: None }), Ok(()));
        let mut limited = answer(429, "rate_limited", "too many requests");
        assert_eq!(classify(&limited), Err(Trouble::RateLimited(Duration::from_secs(1))));
        limited.retry_after = Some(Duration::from_secs(3));
        assert_eq!(classify(&limited), Err(Trouble::RateLimited(Duration::from_secs(3))));
        let t = classify(&answer(503, "order_svc_unavailable", "no order-svc")).unwrap_err();
        assert_eq!(
            (t.kind(), t.to_string().as_str()),
            ("unavailable", "unavailable: order_svc_unavailable: no order-svc")
        );
        let t = classify(&Answer { status: 502, body: Value::Null, retry_after: None }).unwrap_err();
        assert_eq!(t, Trouble::Unavailable("HTTP 502".into()));
        assert_eq!(classify(&answer(401, "unauthorized", "x")).unwrap_err().kind(), "unauthorized");
        assert_eq!(classify(&answer(422, "symbol_halted", "ABC is halted")).unwrap_err().kind(), "halted");
        assert_eq!(classify(&answer(400, "bad_field", "symbol ABC is halted")).unwrap_err().kind(), "halted");
        assert_eq!(
            classify(&answer(422, "rule_violation", "price is not a multiple of 0.01")),
            Err(Trouble::Refused {
                status: 422,
                code: "rule_violation".into(),
                message: "price is not a multiple of 0.01".into()
            })
        );
    }

    #[test]
    fn a_missing_route_is_told_from_a_missing_order() {
        assert!(no_such_route(&answer(404, "not_found", "no such route")));
        assert!(no_such_route(&answer(405, "method_not_allowed", "method not allowed here")));
        assert!(no_such_route(&Answer { status: 405, body: Value::Null, retry_after: None }));
        assert!(!no_such_route(&answer(404, "not_found", "no order 12")));
        assert!(!no_such_route(&answer(400, "bad_field", "no such route")));
    }

    #[test]
    fn an_order_no_longer_open_is_told_apart() {
        let filled = answer(
            422,
            "rule_violation",
            "order 281474976710839 is filled: only an open order can be amended",
        );
        assert!(not_open(&filled));
        assert!(not_open(&answer(409, "conflict", "x")));
        assert!(not_open(&answer(400, "order_not_open", "x")));
        assert!(!not_open(&answer(422, "rule_violation", "price is not a multiple of 0.01")));
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        assert_eq!(retry_after(Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(Some(" 10 ")), Some(Duration::from_secs(10)));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn symbols_read_with_or_without_halted() {
        let v = json!({"symbols": [
            {"symbol": "ABC", "tick": "0.01", "lot": "1", "band_bps": 1000, "reference": "100.00", "max_qty": "1000000"},
            {"symbol": "XYZ", "tick": "0.5", "lot": "1", "band_bps": 1000, "reference": "2500", "halted": true},
        ]});
        let s = read_symbols(&v).unwrap();
        assert_eq!(s[0].symbol, "ABC");
        assert_eq!((s[0].max_qty.as_deref(), s[0].halted), (Some("1000000"), None));
        assert_eq!((s[1].max_qty.as_deref(), s[1].halted), (None, Some(true)));
        assert!(read_symbols(&json!({"nope": []})).is_err());
        assert!(read_symbols(&json!({"symbols": [{"symbol": "A", "tick": "1"}]})).is_err());
        assert!(read_symbols(
            &json!({"symbols": [{"symbol": "A", "tick": "1", "lot": "1", "band_bps": -1, "reference": "1"}]})
        )
        .is_err());
    }

    #[test]
    fn the_last_trade_reads_in_ticks() {
        let m = abc();
        let v = json!({"trades": [{"price": "100.07", "qty": "2", "sequence": 41}]});
        assert_eq!(read_last_trade(&m, &v), Some((10_007, Some(41))));
        assert_eq!(read_last_trade(&m, &json!({"trades": [{"price": "100.07"}]})), Some((10_007, None)));
        assert_eq!(read_last_trade(&m, &json!({"symbol": "ABC", "trades": []})), None);
        assert_eq!(read_last_trade(&m, &json!({"trades": [{"price": "1.005"}]})), None);
    }

    #[test]
    fn orders_read_as_open_or_done() {
        let m = abc();
        let v = json!({"status": "partially_filled", "price": "99.95", "qty": "7", "filled_qty": "2"});
        assert_eq!(read_order(&m, &v), Ok(OrderView::Open { price: 9_995, open_lots: 5 }));
        let v = json!({"status": "resting", "price": "99.95", "qty": "7", "filled_qty": null});
        assert_eq!(read_order(&m, &v), Ok(OrderView::Open { price: 9_995, open_lots: 7 }));
        let v = json!({"status": "rejected", "reject_reason": "halted", "price": "99.95", "qty": "7"});
        assert_eq!(
            read_order(&m, &v),
            Ok(OrderView::Done { status: "rejected".into(), reason: Some("halted".into()) })
        );
        let v = json!({"status": "filled", "reject_reason": null});
        assert_eq!(read_order(&m, &v), Ok(OrderView::Done { status: "filled".into(), reason: None }));
        assert!(read_order(&m, &json!({"price": "1"})).is_err());
        assert!(read_order(&m, &json!({"status": "resting", "price": "abc", "qty": "1"})).is_err());
    }

    #[test]
    fn open_orders_are_listed_by_id() {
        let v = json!({"orders": [
            {"order_id": "1", "status": "resting"},
            {"order_id": "2", "status": "filled"},
            {"order_id": "3"},
            {"status": "resting"},
        ]});
        assert_eq!(read_open_orders(&v), Some(vec!["1".to_owned(), "3".to_owned()]));
        assert_eq!(read_open_orders(&json!({"error": {}})), None);
    }
}

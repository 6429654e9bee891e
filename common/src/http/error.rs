//! The one error shape of every HTTP answer: `{"error": {"code": "...", "message": "..."}}`
//! (DESIGN.md §5), through actix's `ResponseError`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: not JSON, or a field missing, unknown, of the wrong type or out of range.
    #[error("{message}")]
    BadRequest {
        /// `malformed_json`, `bad_field`, `unknown_symbol`.
        code: &'static str,
        /// What was wrong, naming the field.
        message: String,
    },
    /// 401: no credentials, or ones that are not valid (answered with `WWW-Authenticate: Bearer`).
    #[error("{message}")]
    Unauthorized {
        /// `unauthorized`, `token_expired`, `bad_credentials`.
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// 403: a valid caller who may not do this (a trader on an operator's route).
    #[error("{0}")]
    Forbidden(String),
    /// 429: over a rate limit; try again after this long (answered with `Retry-After`).
    #[error("too many requests: try again in {} s", retry_after_secs(*.0))]
    TooMany(std::time::Duration),
    /// 404: no such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// 413: the body is larger than the limit.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// 422: a rule known at the edge: tick, lot, static limits.
    #[error("{0}")]
    Rule(String),
    /// 503: something the answer depends on is missing; the code says what. After a write was
    /// sent, the message says whether the outcome is unknown.
    #[error("{1}")]
    Unavailable(Unavailable, String),
}

/// What a `503` says is missing: each its own `code`, so a client (and a person reading a log)
/// knows which hop to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// `broker_unavailable`: order entry got no acknowledgement from the Kafka broker.
    Broker,
    /// `order_svc_unavailable`: the gateway reached no order entry instance, or one did not answer.
    OrderSvc,
    /// `matcher_unavailable`: the gateway reached no matcher front, or it did not answer.
    Matcher,
    /// `redis_unavailable`: the matcher front could not read Redis.
    Redis,
    /// `upstream_unavailable`: the gateway is not ready: no healthy order entry or matcher front.
    Upstream,
    /// `catching_up`: the matcher is not ready: it is rebuilding its book from the orders log.
    CatchingUp,
}

impl Unavailable {
    /// Every kind, for tests and docs.
    pub const ALL: [Unavailable; 6] = [
        Unavailable::Broker,
        Unavailable::OrderSvc,
        Unavailable::Matcher,
        Unavailable::Redis,
        Unavailable::Upstream,
        Unavailable::CatchingUp,
    ];

    /// The machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            Unavailable::Broker => "broker_unavailable",
            Unavailable::OrderSvc => "order_svc_unavailable",
            Unavailable::Matcher => "matcher_unavailable",
            Unavailable::Redis => "redis_unavailable",
            Unavailable::Upstream => "upstream_unavailable",
            Unavailable::CatchingUp => "catching_up",
        }
    }
}

impl ApiError {
    /// A 400 for a field.
    pub fn field(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest { code: "bad_field", message: message.into() }
    }

    /// A 503: `what` is missing.
    pub fn unavailable(what: Unavailable, message: impl Into<String>) -> ApiError {
        ApiError::Unavailable(what, message.into())
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::Unauthorized { code, .. } => code,
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TooMany(_) => "rate_limited",
            ApiError::NotFound(_) => "not_found",
            ApiError::TooLarge(_) => "body_too_large",
            ApiError::Rule(_) => "rule_violation",
            ApiError::Unavailable(what, _) => what.code(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Rule(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(..) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized { .. } => {
                r.insert_header(("www-authenticate", "Bearer"));
            }
            ApiError::TooMany(wait) => {
                r.insert_header(("retry-after", retry_after_secs(*wait).to_string()));
            }
            _ => {}
        }
        r.json(json!({"error": {"code": self.code(), "message": self.to_string()}}))
    }
}

/// Whole seconds to wait, rounded up, at least 1 (`Retry-After`).
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_millis() as u64).div_ceil(1000).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_missing_dependency_has_its_own_503_code() {
        let codes: std::collections::HashSet<_> = Unavailable::ALL.iter().map(|u| u.code()).collect();
        assert_eq!(codes.len(), Unavailable::ALL.len(), "{codes:?}");
        let e = ApiError::unavailable(Unavailable::OrderSvc, "no order entry instance is reachable");
        assert_eq!(e.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), "order_svc_unavailable");
        assert_eq!(ApiError::unavailable(Unavailable::Broker, "x").code(), "broker_unavailable");
    }

    #[actix_web::test]
    async fn refusals_carry_their_headers() {
        let r = ApiError::TooMany(std::time::Duration::from_millis(1500)).error_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers().get("retry-after").unwrap(), "2");
        let r =
            ApiError::Unauthorized { code: "token_expired", message: "log in again".into() }.error_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers().get("www-authenticate").unwrap(), "Bearer");
        let body = actix_web::body::to_bytes(r.into_body()).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "token_expired");
    }

    #[actix_web::test]
    async fn the_body_is_the_one_shape() {
        let r = ApiError::unavailable(Unavailable::Redis, "down").error_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = actix_web::body::to_bytes(r.into_body()).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({"error": {"code": "redis_unavailable", "message": "down"}}));
    }
}

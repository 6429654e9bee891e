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
    /// 404: no such route or resource.
    #[error("{0}")]
    NotFound(String),
    /// 413: the body is larger than the limit.
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    /// 422: a rule known at the edge: tick, lot, static limits.
    #[error("{0}")]
    Rule(String),
    /// 503: the broker did not acknowledge in time. The outcome is unknown.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// A 400 for a field.
    pub fn field(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest { code: "bad_field", message: message.into() }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } => code,
            ApiError::NotFound(_) => "not_found",
            ApiError::TooLarge(_) => "body_too_large",
            ApiError::Rule(_) => "rule_violation",
            ApiError::Unavailable(_) => "broker_unavailable",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Rule(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(json!({"error": {"code": self.code(), "message": self.to_string()}}))
    }
}

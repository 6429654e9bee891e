//! Accounts and authentication at the gateway (DESIGN.md §2 "Accounts", §5 "Auth").
//!
//! A caller proves who they are with a session token (JWT HS256, from `POST /login` or
//! `/api/v1/auth/login`) as `Authorization: Bearer <token>` or in the `session` cookie the login
//! sets (`HttpOnly`, `SameSite=Strict`: the original lab's page polls `GET /trade/<id>` without a
//! header), or with an API key (`Authorization: Bearer tlk_…`). The cookie counts only on reads
//! (`GET`, `HEAD`): a write needs the header, so another page on this site (another port of the
//! same host is the same *site* to `SameSite`) cannot place an order with a user's cookie. The
//! account of every order is the caller's username; the body never names it.
//!
//! Every user has a random `uid`, kept in the token and in each API key: a deleted user's tokens
//! and keys stop working at once (on the other gateways, once Redis's message reaches them:
//! [`cache`]), and stay dead if someone signs up under the same name.
//!
//! Without a secret the gateway refuses to start, unless started with `--no-auth` (development):
//! then every caller is the shared `anonymous` account, and the body's `account` is honoured, as
//! before accounts existed.
//!
//! # Layout
//! - [`rules`]: what a username and a password may be.
//! - [`token`]: issuing and checking JWTs.
//! - [`store`]: users and API keys in Redis.
//! - [`cache`]: what the gateway keeps of them between requests, and how a change reaches every
//!   gateway.

pub mod cache;
pub mod rules;
pub mod store;
pub mod token;

use actix_web::HttpRequest;

use self::store::{Store, StoreError};
use self::token::{TokenError, Tokens};

/// The session cookie's name.
pub const COOKIE: &str = "session";

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Development mode (`--no-auth`): everyone; the body may name an account.
    Anyone,
    /// A user (by token, cookie or API key).
    User(String),
}

impl Caller {
    /// The account the caller's orders belong to.
    pub fn account(&self) -> &str {
        match self {
            Caller::Anyone => common::ids::ANONYMOUS,
            Caller::User(u) => u,
        }
    }
}

/// Why a caller was not let in.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No credentials at all.
    #[error("sign in first: send `Authorization: Bearer <token or API key>` or the session cookie")]
    Missing,
    /// An expired token.
    #[error("the session has expired: log in again")]
    Expired,
    /// A token that is not ours, an unknown or revoked key, a deleted user.
    #[error("{0}")]
    Invalid(String),
    /// The user store is unreachable.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// The gateway's accounts: tokens and the user store, or neither in development mode.
pub struct Auth {
    /// Signs and checks tokens; `None`: `--no-auth`.
    pub tokens: Option<Tokens>,
    /// Users and keys; `None`: `--no-auth`.
    pub store: Option<Store>,
    /// Mark the cookie `Secure` (behind HTTPS).
    pub cookie_secure: bool,
}

/// The credential a request carries: the bearer token, else (on a read) the session cookie.
pub fn credential(req: &HttpRequest) -> Option<String> {
    let read = matches!(*req.method(), actix_web::http::Method::GET | actix_web::http::Method::HEAD);
    let bearer = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned());
    let cookie = || read.then(|| req.cookie(COOKIE).map(|c| c.value().to_owned())).flatten();
    bearer.or_else(cookie).filter(|t| !t.is_empty())
}

impl Auth {
    /// Development mode: no accounts.
    pub fn off() -> Auth {
        Auth { tokens: None, store: None, cookie_secure: false }
    }

    /// True when accounts are on.
    pub fn on(&self) -> bool {
        self.tokens.is_some()
    }

    /// Who is calling, or why they may not.
    pub async fn caller(&self, req: &HttpRequest) -> Result<Caller, Denied> {
        let (Some(tokens), Some(store)) = (&self.tokens, &self.store) else { return Ok(Caller::Anyone) };
        let credential = credential(req).ok_or(Denied::Missing)?;
        if credential.starts_with("tlk_") {
            return match store.key_user(&credential).await? {
                Some(user) => Ok(Caller::User(user)),
                None => Err(Denied::Invalid("unknown or revoked API key".into())),
            };
        }
        let claims = tokens.check(&credential).map_err(|e| match e {
            TokenError::Expired => Denied::Expired,
            TokenError::Invalid(why) => Denied::Invalid(format!("invalid session token ({why})")),
        })?;
        if store.uid(&claims.sub).await?.as_deref() != Some(claims.uid.as_str()) {
            return Err(Denied::Invalid(format!("user {:?} no longer exists", claims.sub)));
        }
        Ok(Caller::User(claims.sub))
    }
}

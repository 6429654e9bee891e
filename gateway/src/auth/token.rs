//! Session tokens: JWT HS256 with subject (the username), issued-at and expiry, signed with the
//! stack's secret. Only HS256 is accepted: a token that names another algorithm (`none`, RS256, …)
//! is refused before its signature is looked at, and expiry is checked with no leeway.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The username (the account).
    pub sub: String,
    /// The user's random id: a token outlives neither its user nor a later user of the same name.
    pub uid: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
}

/// Signs and checks tokens.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// How long a token lives.
    pub ttl: Duration,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Past its expiry.
    #[error("the token has expired")]
    Expired,
    /// Bad signature, wrong algorithm, malformed: not ours.
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Tokens {
    /// With `secret` (at least 32 bytes) and tokens living `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> anyhow::Result<Tokens> {
        anyhow::ensure!(secret.len() >= 32, "the JWT secret must be at least 32 bytes, not {}", secret.len());
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Ok(Tokens {
            encoding: EncodingKey::from_secret(secret)?,
            decoding: DecodingKey::from_secret(secret)?,
            validation,
            ttl,
        })
    }

    /// A token for `user` (whose uid is `uid`), valid for the ttl from now.
    pub fn issue(&self, user: &str, uid: &str) -> anyhow::Result<(String, Claims)> {
        let iat = now();
        let claims = Claims { sub: user.to_owned(), uid: uid.to_owned(), iat, exp: iat + self.ttl.as_secs() };
        Ok((encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?, claims))
    }

    /// The claims of a valid token.
    pub fn check(&self, token: &str) -> Result<Claims, TokenError> {
        match decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Err(TokenError::Expired)
            }
            Err(e) => Err(TokenError::Invalid(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        // base64url without padding, for hand-made tokens.
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    fn tokens() -> Tokens {
        Tokens::new(&[7u8; 32], Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn a_token_round_trips() {
        let t = tokens();
        let (token, claims) = t.issue("alice", "u1").unwrap();
        assert_eq!(t.check(&token), Ok(claims));
    }

    #[test]
    fn expired_forged_and_unsigned_tokens_are_refused() {
        let t = tokens();
        let past = Claims { sub: "alice".into(), uid: "u1".into(), iat: now() - 120, exp: now() - 60 };
        let expired =
            encode(&Header::new(Algorithm::HS256), &past, &EncodingKey::from_secret(&[7u8; 32]).unwrap())
                .unwrap();
        assert_eq!(t.check(&expired), Err(TokenError::Expired));

        let other = Tokens::new(&[8u8; 32], Duration::from_secs(60)).unwrap();
        let (forged, _) = other.issue("alice", "u1").unwrap();
        assert!(matches!(t.check(&forged), Err(TokenError::Invalid(_))), "another secret's signature");

        let claims = format!(r#"{{"sub":"alice","uid":"u1","iat":{},"exp":{}}}"#, now(), now() + 60);
        let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims.as_bytes()));
        assert!(matches!(t.check(&none), Err(TokenError::Invalid(_))), "alg none");
        let fresh = Claims { sub: "alice".into(), uid: "u1".into(), iat: now(), exp: now() + 60 };
        let hs512 =
            encode(&Header::new(Algorithm::HS512), &fresh, &EncodingKey::from_secret(&[7u8; 32]).unwrap())
                .unwrap();
        assert!(matches!(t.check(&hs512), Err(TokenError::Invalid(_))), "another algorithm");
        assert!(matches!(t.check("garbage"), Err(TokenError::Invalid(_))));
        assert!(Tokens::new(b"short", Duration::from_secs(1)).is_err(), "a short secret is refused");
    }
}

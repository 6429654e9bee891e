//! Users and API keys in Redis (DESIGN.md §2, §4):
//! - `user:<name>`: a hash — `password` (argon2id PHC string, OWASP parameters: 19 MiB, 2 passes,
//!   1 lane), `uid` (random: tokens and keys carry it, so they die with the user and do not come
//!   back for a later user of the same name), `created_ms`, `role` (`trader`; `operator` is
//!   granted with a `./lab` command).
//! - `apikey:<id>`: a hash — `user`, `uid`, `sha256` (of the key's secret), `label`, `created_ms`.
//! - `apikeys:<name>`: the set of a user's key ids.
//! - `admin:log`: a stream of operator actions (`ts_ms`, `operator`, `action`, `target`, `detail`,
//!   `status`, `request_id`), the newest ~[`ADMIN_LOG_KEPT`] kept.
//!
//! An API key is `tlk_<id>_<secret>` (8 and 24 random bytes, hex): shown once, stored as the
//! SHA-256 of its secret. A fast hash is right here, unlike for passwords: the secret is 192
//! random bits, so there is nothing to guess. Password hashing runs on actix's blocking pool.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use sha2::{Digest, Sha256};

use super::cache::{self, Cache, Key, Lookup, CHANNEL};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis did not answer.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Hashing failed (it does not, for valid parameters), or the blocking pool is gone.
    #[error("password hashing: {0}")]
    Hash(String),
}

/// One API key, as listed (never its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// Its id (the part of the key after `tlk_`).
    pub key_id: String,
    /// The user's label for it.
    pub label: String,
    /// When it was made, ms since the epoch.
    pub created_ms: u64,
}

/// About how many operator actions `admin:log` keeps.
pub const ADMIN_LOG_KEPT: usize = 10_000;

/// The users and keys.
#[derive(Clone)]
pub struct Store {
    redis: ConnectionManager,
    /// What lookups keep between requests ([`super::cache`]).
    cache: Arc<Cache>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> Result<String, StoreError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(|e| StoreError::Hash(e.to_string()))?;
    Ok(hex(&buf))
}

fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

/// Equal strings, compared in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A PHC string of a password no one has: verified against when the user does not exist, so a
/// login takes as long for an unknown name as for a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"no such user, no such password")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl Store {
    /// Connects to Redis, and follows the user store's changes ([`cache::follow`]) on a task of
    /// the caller's runtime: lookups are kept while that subscription stands.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        let client = redis::Client::open(url)?;
        // Fail fast while Redis is away (a `503` within a second, not after ~9 s of the default
        // reconnect retries, measured by the fault harness); the next request tries again.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_connection_timeout(Some(std::time::Duration::from_millis(500)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)));
        let redis = ConnectionManager::new_with_config(client.clone(), config).await?;
        let cache = Arc::new(Cache::new());
        tokio::spawn(cache::follow(cache.clone(), client));
        Ok(Store { redis, cache })
    }

    /// Creates `name` with `password`: false if the name is taken.
    pub async fn create_user(&self, name: &str, password: &str) -> Result<bool, StoreError> {
        let uid = random_hex(16)?;
        let password = password.to_owned();
        let phc = actix_web::web::block(move || {
            Argon2::default().hash_password(password.as_bytes()).map(|h| h.to_string())
        })
        .await
        .map_err(|e| StoreError::Hash(e.to_string()))?
        .map_err(|e| StoreError::Hash(e.to_string()))?;
        let mut r = self.redis.clone();
        let key = format!("user:{name}");
        let created: bool = r.hset_nx(&key, "password", &phc).await?;
        if created {
            let fields = [("uid", uid), ("created_ms", now_ms().to_string()), ("role", "trader".into())];
            let _: () = r.hset_multiple(&key, &fields).await?;
        }
        Ok(created)
    }

    /// The user's uid if `name` exists and `password` is theirs.
    pub async fn verify(&self, name: &str, password: &str) -> Result<Option<String>, StoreError> {
        let mut r = self.redis.clone();
        let (stored, uid): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(format!("user:{name}"))
            .arg("password")
            .arg("uid")
            .query_async(&mut r)
            .await?;
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| dummy_hash().to_owned());
        let password = password.to_owned();
        let ok = actix_web::web::block(move || {
            PasswordHash::new(&phc)
                .is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
        })
        .await
        .map_err(|e| StoreError::Hash(e.to_string()))?;
        Ok(uid.filter(|_| known && ok))
    }

    /// The user's uid while the user exists (a deleted user's tokens stop working at once:
    /// [`super::cache`]).
    pub async fn uid(&self, name: &str) -> Result<Option<String>, StoreError> {
        let stamp = match self.cache.uid(name) {
            Lookup::Hit(uid) => return Ok(Some(uid)),
            Lookup::Miss(stamp) => stamp,
        };
        let mut r = self.redis.clone();
        let uid: Option<String> = r.hget(format!("user:{name}"), "uid").await?;
        if let Some(uid) = &uid {
            self.cache.keep_uid(stamp, name, uid);
        }
        Ok(uid)
    }

    /// API key `id`, if it exists.
    async fn key(&self, id: &str) -> Result<Option<Key>, StoreError> {
        let stamp = match self.cache.key(id) {
            Lookup::Hit(key) => return Ok(Some(key)),
            Lookup::Miss(stamp) => stamp,
        };
        let mut r = self.redis.clone();
        let mut f: HashMap<String, String> = r.hgetall(format!("apikey:{id}")).await?;
        let (Some(user), Some(sha256), Some(uid)) = (f.remove("user"), f.remove("sha256"), f.remove("uid"))
        else {
            return Ok(None);
        };
        let key = Key { user, uid, sha256 };
        self.cache.keep_key(stamp, id, key.clone());
        Ok(Some(key))
    }

    /// A user's role (`trader`, `operator`), if the user exists.
    pub async fn role(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut r = self.redis.clone();
        let fields: HashMap<String, String> = r.hgetall(format!("user:{name}")).await?;
        Ok((!fields.is_empty()).then(|| fields.get("role").cloned().unwrap_or_else(|| "trader".into())))
    }

    /// Appends an operator action to `admin:log`.
    pub async fn log_admin(&self, entry: &[(&str, String)]) -> Result<(), StoreError> {
        let mut r = self.redis.clone();
        let mut fields = vec![("ts_ms", now_ms().to_string())];
        fields.extend(entry.iter().map(|(k, v)| (*k, v.clone())));
        let opts =
            redis::streams::StreamAddOptions::default().trim(redis::streams::StreamTrimStrategy::maxlen(
                redis::streams::StreamTrimmingMode::Approx,
                ADMIN_LOG_KEPT,
            ));
        let _: Option<String> = r.xadd_options("admin:log", "*", &fields, &opts).await?;
        Ok(())
    }

    /// The newest `limit` operator actions, newest first.
    pub async fn admin_log(&self, limit: usize) -> Result<Vec<HashMap<String, String>>, StoreError> {
        let mut r = self.redis.clone();
        let reply: redis::streams::StreamRangeReply = r.xrevrange_count("admin:log", "+", "-", limit).await?;
        Ok(reply
            .ids
            .iter()
            .map(|e| {
                e.map
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), redis::from_redis_value(v.clone()).ok()?)))
                    .collect()
            })
            .collect())
    }

    /// Deletes a user and every key of theirs.
    pub async fn delete_user(&self, name: &str) -> Result<(), StoreError> {
        let mut r = self.redis.clone();
        let ids: Vec<String> = r.smembers(format!("apikeys:{name}")).await?;
        let mut p = redis::pipe();
        // Each deletion is published with it, in the same transaction: every gateway drops what it
        // kept of them (`super::cache`).
        p.atomic().del(format!("user:{name}")).del(format!("apikeys:{name}"));
        p.publish(CHANNEL, format!("user:{name}")).ignore();
        for id in ids {
            p.del(format!("apikey:{id}")).publish(CHANNEL, format!("apikey:{id}")).ignore();
        }
        let _: () = p.query_async(&mut r).await?;
        // This gateway forgets at once, whenever the message comes.
        self.cache.forget(&format!("user:{name}"));
        Ok(())
    }

    /// A new key for `user`, whose uid is `uid`: (its id, the key itself, shown once).
    pub async fn create_key(
        &self,
        user: &str,
        uid: &str,
        label: &str,
    ) -> Result<(String, String), StoreError> {
        let (id, secret) = (random_hex(8)?, random_hex(24)?);
        let mut r = self.redis.clone();
        let mut p = redis::pipe();
        p.atomic()
            .hset_multiple(
                format!("apikey:{id}"),
                &[
                    ("user", user.to_owned()),
                    ("uid", uid.to_owned()),
                    ("sha256", sha256_hex(&secret)),
                    ("label", label.to_owned()),
                    ("created_ms", now_ms().to_string()),
                ],
            )
            .sadd(format!("apikeys:{user}"), &id);
        let _: () = p.query_async(&mut r).await?;
        Ok((id.clone(), format!("tlk_{id}_{secret}")))
    }

    /// A user's keys.
    pub async fn list_keys(&self, user: &str) -> Result<Vec<KeyInfo>, StoreError> {
        let mut r = self.redis.clone();
        let ids: Vec<String> = r.smembers(format!("apikeys:{user}")).await?;
        let mut keys = Vec::new();
        for id in ids {
            let f: HashMap<String, String> = r.hgetall(format!("apikey:{id}")).await?;
            if f.get("user").is_some_and(|u| u == user) {
                keys.push(KeyInfo {
                    key_id: id,
                    label: f.get("label").cloned().unwrap_or_default(),
                    created_ms: f.get("created_ms").and_then(|v| v.parse().ok()).unwrap_or(0),
                });
            }
        }
        keys.sort_by_key(|k| k.created_ms);
        Ok(keys)
    }

    /// Revokes one of `user`'s keys: false if they have no such key.
    pub async fn revoke_key(&self, user: &str, id: &str) -> Result<bool, StoreError> {
        let mut r = self.redis.clone();
        let owner: Option<String> = r.hget(format!("apikey:{id}"), "user").await?;
        if owner.as_deref() != Some(user) {
            return Ok(false);
        }
        let mut p = redis::pipe();
        p.atomic()
            .del(format!("apikey:{id}"))
            .srem(format!("apikeys:{user}"), id)
            .publish(CHANNEL, format!("apikey:{id}"))
            .ignore();
        let _: () = p.query_async(&mut r).await?;
        self.cache.forget(&format!("apikey:{id}"));
        Ok(true)
    }

    /// The user a key belongs to, if it is a live key of a live user.
    pub async fn key_user(&self, key: &str) -> Result<Option<String>, StoreError> {
        let Some((id, secret)) = key.strip_prefix("tlk_").and_then(|k| k.split_once('_')) else {
            return Ok(None);
        };
        if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let Some(key) = self.key(id).await? else { return Ok(None) };
        if !same(&key.sha256, &sha256_hex(secret)) || self.uid(&key.user).await? != Some(key.uid) {
            return Ok(None);
        }
        Ok(Some(key.user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_to_argon2id_with_owasp_parameters() {
        let phc = Argon2::default().hash_password(b"correct horse").unwrap().to_string();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let h = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &h).is_ok());
        assert!(Argon2::default().verify_password(b"correct hors", &h).is_err());
        assert!(PasswordHash::new(dummy_hash()).is_ok());
    }

    #[test]
    fn key_secrets_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd") && !same("abc", "ab"));
        assert_eq!(sha256_hex("").len(), 64);
        assert_eq!(random_hex(8).unwrap().len(), 16);
    }
}

//! What a gateway remembers of the user store between requests, and how it learns to forget.
//!
//! Every order used to cost a Redis round trip before it left the gateway: the check that the
//! token's user still exists (`HGET user:<name> uid`), and for an API key also the key itself
//! (`HGETALL apikey:<id>`). The answers hardly ever change, so the gateway keeps them here.
//!
//! What makes that safe is that nothing kept outlives a change: every change that could make a
//! kept answer wrong (a user deleted, a key revoked) publishes the key it changed on
//! [`CHANNEL`] in the same `MULTI` as the change itself, and every gateway follows the channel
//! ([`follow`]) and drops what it names. Answers are kept only while the subscription stands: when
//! it is lost (Redis restarted, or the connection broke), everything kept is dropped and every
//! lookup goes to Redis again, as before, until the gateway has subscribed anew. A lookup that
//! read Redis while an invalidation arrived does not keep its (maybe stale) answer: each lookup
//! that misses carries the generation it started in, and every invalidation starts a new one.
//!
//! So a deleted user's tokens and a revoked key stop working on the gateway that made the change
//! at once, and on the others as soon as Redis's message reaches them (a loopback hop).
//! Only positive answers are kept (a user who does not exist is looked up every time), and at
//! most [`MAX_KEPT`] of each kind: past that, everything is dropped and kept anew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;

/// The Redis channel the changes are published on: `user:<name>` or `apikey:<id>`.
pub const CHANNEL: &str = "auth:changed";

/// Most users (and, separately, keys) kept; past that the kind is dropped whole and kept anew.
pub const MAX_KEPT: usize = 100_000;

/// How long a gateway waits before subscribing again after losing the subscription.
const RESUBSCRIBE: Duration = Duration::from_millis(250);

/// An API key as kept: its owner, the owner's uid when the key was made, the secret's SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The user the key acts for.
    pub user: String,
    /// That user's uid (a later user of the same name is someone else).
    pub uid: String,
    /// SHA-256 of the key's secret, hex.
    pub sha256: String,
}

/// A lookup's outcome: the kept answer, or the generation to hand back with Redis's answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    /// Kept, and still true.
    Hit(T),
    /// Not kept: ask Redis, then [`Cache::keep_uid`] / [`Cache::keep_key`] with this stamp.
    Miss(Stamp),
}

/// The generation a missed lookup started in: its answer is kept only if none began since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp(u64);

/// The kept answers (see the module's documentation).
#[derive(Default)]
pub struct Cache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Subscribed to [`CHANNEL`]: answers may be kept and used.
    live: bool,
    /// Bumped by every invalidation and every change of `live`.
    generation: u64,
    /// User name → uid, of users that exist.
    uids: HashMap<String, String>,
    /// API key id → the key, of keys that exist.
    keys: HashMap<String, Key>,
}

impl Inner {
    fn lookup<T: Clone>(&self, map: &HashMap<String, T>, k: &str) -> Lookup<T> {
        match map.get(k) {
            Some(v) if self.live => Lookup::Hit(v.clone()),
            _ => Lookup::Miss(Stamp(self.generation)),
        }
    }

    /// Whether an answer read since `stamp` may be kept.
    fn may_keep(&self, stamp: Stamp) -> bool {
        self.live && stamp.0 == self.generation
    }

    fn forget_all(&mut self) {
        self.generation += 1;
        self.uids.clear();
        self.keys.clear();
    }
}

/// Inserts into `map`, dropping it whole first when it is full.
fn keep<T>(map: &mut HashMap<String, T>, k: &str, v: T) {
    if map.len() >= MAX_KEPT && !map.contains_key(k) {
        map.clear();
    }
    map.insert(k.to_owned(), v);
}

impl Cache {
    /// An empty cache that keeps nothing until [`Cache::set_live`] (see [`follow`]).
    pub fn new() -> Cache {
        Cache::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The uid of user `name`, if kept.
    pub fn uid(&self, name: &str) -> Lookup<String> {
        let inner = self.lock();
        inner.lookup(&inner.uids, name)
    }

    /// Keeps `name`'s uid as Redis gave it to a lookup that missed at `stamp`.
    pub fn keep_uid(&self, stamp: Stamp, name: &str, uid: &str) {
        let mut inner = self.lock();
        if inner.may_keep(stamp) {
            keep(&mut inner.uids, name, uid.to_owned());
        }
    }

    /// The API key `id`, if kept.
    pub fn key(&self, id: &str) -> Lookup<Key> {
        let inner = self.lock();
        inner.lookup(&inner.keys, id)
    }

    /// Keeps key `id` as Redis gave it to a lookup that missed at `stamp`.
    pub fn keep_key(&self, stamp: Stamp, id: &str, key: Key) {
        let mut inner = self.lock();
        if inner.may_keep(stamp) {
            keep(&mut inner.keys, id, key);
        }
    }

    /// Drops what a message on [`CHANNEL`] names (`user:<name>`, `apikey:<id>`; anything else
    /// drops everything: a change this gateway does not understand may concern anything).
    pub fn forget(&self, changed: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        if let Some(name) = changed.strip_prefix("user:") {
            inner.uids.remove(name);
        } else if let Some(id) = changed.strip_prefix("apikey:") {
            inner.keys.remove(id);
        } else {
            inner.forget_all();
        }
    }

    /// Subscribed (`true`): answers may be kept from now on. Not (`false`): everything kept is
    /// dropped and nothing is kept. Either way, lookups in flight keep nothing.
    pub fn set_live(&self, live: bool) {
        let mut inner = self.lock();
        inner.forget_all();
        inner.live = live;
    }

    /// How many users and keys are kept.
    pub fn kept(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.uids.len(), inner.keys.len())
    }
}

/// Follows [`CHANNEL`] on `client`'s Redis forever, keeping `cache` live while subscribed.
pub async fn follow(cache: Arc<Cache>, client: redis::Client) {
    let mut lost = false;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(CHANNEL).await {
                Ok(()) => {
                    cache.set_live(true);
                    if lost {
                        tracing::info!("following the user store's changes again: caching callers");
                    }
                    let mut messages = pubsub.on_message();
                    while let Some(msg) = messages.next().await {
                        match msg.get_payload::<String>() {
                            Ok(changed) => cache.forget(&changed),
                            Err(_) => cache.forget(""),
                        }
                    }
                    cache.set_live(false);
                    tracing::warn!("lost the user store's change feed: every caller is looked up in Redis");
                }
                Err(e) => tracing::debug!(error = %e, "cannot subscribe to the user store's changes"),
            },
            Err(e) => tracing::debug!(error = %e, "cannot connect to follow the user store's changes"),
        }
        lost = true;
        tokio::time::sleep(RESUBSCRIBE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> Key {
        Key { user: user.into(), uid: "u1".into(), sha256: "h".into() }
    }

    fn miss<T: std::fmt::Debug>(l: Lookup<T>) -> Stamp {
        match l {
            Lookup::Miss(s) => s,
            Lookup::Hit(v) => panic!("a hit: {v:?}"),
        }
    }

    #[test]
    fn nothing_is_kept_until_subscribed_and_everything_goes_when_the_subscription_does() {
        let c = Cache::new();
        let stamp = miss(c.uid("alice"));
        c.keep_uid(stamp, "alice", "u1");
        assert_eq!(c.kept(), (0, 0), "not subscribed: nothing kept");

        c.set_live(true);
        let stamp = miss(c.uid("alice"));
        c.keep_uid(stamp, "alice", "u1");
        let stamp = miss(c.key("k1"));
        c.keep_key(stamp, "k1", key("alice"));
        assert_eq!(c.uid("alice"), Lookup::Hit("u1".into()));
        assert_eq!(c.key("k1"), Lookup::Hit(key("alice")));

        c.set_live(false);
        assert_eq!(c.kept(), (0, 0));
        assert!(matches!(c.uid("alice"), Lookup::Miss(_)));
    }

    #[test]
    fn a_change_drops_what_it_names_and_nothing_else() {
        let c = Cache::new();
        c.set_live(true);
        for name in ["alice", "bob"] {
            let stamp = miss(c.uid(name));
            c.keep_uid(stamp, name, "u");
            let stamp = miss(c.key(name));
            c.keep_key(stamp, name, key(name));
        }
        c.forget("user:alice");
        assert!(matches!(c.uid("alice"), Lookup::Miss(_)));
        assert_eq!(c.uid("bob"), Lookup::Hit("u".into()));
        assert_eq!(c.key("alice"), Lookup::Hit(key("alice")), "a user's name is not a key id");
        c.forget("apikey:bob");
        assert!(matches!(c.key("bob"), Lookup::Miss(_)));
        assert_eq!(c.kept(), (1, 1));
        c.forget("something new");
        assert_eq!(c.kept(), (0, 0), "a change not understood drops everything");
    }

    #[test]
    fn an_answer_read_across_a_change_is_not_kept() {
        let c = Cache::new();
        c.set_live(true);
        // alice is looked up; before Redis's answer comes back, she is deleted elsewhere.
        let stamp = miss(c.uid("alice"));
        c.forget("user:alice");
        c.keep_uid(stamp, "alice", "u-old");
        assert!(matches!(c.uid("alice"), Lookup::Miss(_)), "the stale answer was kept");
        // Any change counts, not only one about alice: the generation is the cache's.
        let stamp = miss(c.key("k"));
        c.forget("user:bob");
        c.keep_key(stamp, "k", key("alice"));
        assert_eq!(c.kept(), (0, 0));
        // A subscription lost and regained in between counts too.
        let stamp = miss(c.uid("carol"));
        c.set_live(false);
        c.set_live(true);
        c.keep_uid(stamp, "carol", "u");
        assert_eq!(c.kept(), (0, 0));
    }

    #[test]
    fn a_full_cache_starts_over_instead_of_growing() {
        let c = Cache::new();
        c.set_live(true);
        for i in 0..MAX_KEPT {
            let name = format!("u{i}");
            let stamp = miss(c.uid(&name));
            c.keep_uid(stamp, &name, "x");
        }
        assert_eq!(c.kept().0, MAX_KEPT);
        let stamp = miss(c.uid("one-more"));
        c.keep_uid(stamp, "one-more", "x");
        assert_eq!(c.kept().0, 1, "dropped whole, then kept the new one");
        assert_eq!(c.uid("one-more"), Lookup::Hit("x".into()));
    }
}

//! Who owns which `orders` partition when matchers share them (`--share-partitions`): leases in
//! Redis, renewed by their holder, taken over by another matcher once they expire.
//!
//! Why not the broker's consumer-group rebalance? It is the Kafka way, and it worked in our tests
//! against Tansu 0.6 only some of the time: with two members the group rebalanced over and over
//! (each member's partitions revoked and assigned again every 1–3 s, both alive), and after one
//! member was killed its partition was once left assigned to it for good (the survivor got only
//! its own back), so nothing matched that partition. Leases need nothing from the broker but a
//! plain assign, and their rules fit in a page:
//!
//! - Every matcher says it is alive (its score in the sorted set `matchers:<group>:alive` is the
//!   time of its last round; members older than the lease time are dropped) and counts the
//!   living; its fair share is the partitions divided by them, rounded up.
//! - A lease is `lease:<group>:orders:<partition>` = the holder's instance name, expiring after
//!   `--lease-ms` unless renewed (every sixth of it). A matcher takes a free partition while it
//!   holds fewer than its share, and hands one back (after writing and committing all it read of
//!   it) while it holds more — so a matcher that comes back gets its share again.
//! - A lease found taken by someone else, or not renewed in time, is given up at once. A matcher
//!   that cannot reach Redis gives up all its partitions two thirds into the lease, before any
//!   other could take them over (no two writers); and its I/O thread writes nothing of a shared
//!   partition past that point (a matcher whose renewals stall stops, and its supervisor starts
//!   it again). So with shared partitions a Redis outage
//!   longer than that stops matching until Redis is back; a matcher alone (the default) owns
//!   every partition and never asks.
//!
//! [`decide`] is the pure rule; [`Leases`] runs it against Redis.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// What to do with the partitions after one look at the leases.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Held by someone else now, or not renewed: give up at once.
    pub lost: Vec<i32>,
    /// Held, but more than the fair share: hand back (after writing them out).
    pub release: Vec<i32>,
    /// Free and under the fair share: try to take.
    pub take: Vec<i32>,
}

/// The rule. `holders[p]`: who holds partition `p`'s lease (`None`: free); `held`: what this
/// matcher believes it holds; `renewed`: the held leases its renewal kept; `alive`: matchers
/// alive (itself included).
pub fn decide(
    me: &str,
    holders: &[Option<String>],
    held: &BTreeSet<i32>,
    renewed: &BTreeSet<i32>,
    alive: usize,
) -> Decision {
    let partitions = holders.len();
    let share = partitions.div_ceil(alive.max(1));
    let mut d = Decision::default();
    for &p in held {
        let mine = holders.get(p as usize).and_then(Option::as_deref) == Some(me);
        if !mine || !renewed.contains(&p) {
            d.lost.push(p);
        }
    }
    let keeping = held.len() - d.lost.len();
    if keeping > share {
        // The highest first: which one does not matter, only that all agree it moves.
        let mut kept: Vec<i32> = held.iter().copied().filter(|p| !d.lost.contains(p)).collect();
        kept.sort_unstable();
        d.release = kept.split_off(share);
    } else {
        let free = (0..partitions as i32).filter(|&p| holders[p as usize].is_none() && !held.contains(&p));
        d.take = free.take(share - keeping).collect();
    }
    d
}

/// Lease-keeping against Redis.
pub struct Leases {
    /// This matcher's instance name: the lease's value.
    me: String,
    /// The key prefix (the consumer group).
    group: String,
    /// The `orders` partitions.
    partitions: i32,
    /// How long a lease lasts unless renewed.
    ttl: Duration,
    /// Redis.
    client: redis::Client,
    /// The connection, while it works.
    conn: Option<redis::Connection>,
    /// The last time Redis answered a whole round.
    last_ok: Instant,
    /// The last round.
    last_round: Option<Instant>,
    /// The leases held.
    held: BTreeSet<i32>,
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Renews a lease only if it is still ours.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// Deletes a lease only if it is still ours.
const RELEASE: &str =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

impl Leases {
    /// Leases of `partitions` partitions for instance `me` of `group`, in the Redis at `url`.
    pub fn new(url: &str, group: &str, me: &str, partitions: i32, ttl: Duration) -> anyhow::Result<Leases> {
        Ok(Leases {
            me: me.to_owned(),
            group: group.to_owned(),
            partitions,
            ttl,
            client: redis::Client::open(url)?,
            conn: None,
            last_ok: Instant::now(),
            last_round: None,
            held: BTreeSet::new(),
        })
    }

    fn lease(&self, p: i32) -> String {
        format!("lease:{}:orders:{p}", self.group)
    }

    /// Time for a round (a sixth of the lease time since the last)?
    pub fn due(&self, now: Instant) -> bool {
        self.last_round.is_none_or(|t| now.duration_since(t) >= self.ttl / 6)
    }

    /// One round: says it is alive, renews what it holds, and decides. Partitions in `take` are
    /// already leased to us; those in `release` are still ours until [`Leases::release`]. A round
    /// that fails half-way still reports what it found lost and what it took.
    pub fn round(&mut self, now: Instant) -> Decision {
        self.last_round = Some(now);
        let mut d = Decision::default();
        match self.try_round(&mut d) {
            Ok(()) => self.last_ok = now,
            Err(e) => {
                self.conn = None;
                d.release.clear();
                if now.duration_since(self.last_ok) >= self.ttl * 2 / 3 && !self.held.is_empty() {
                    tracing::warn!(error = %e, "cannot reach Redis to renew the partition leases: giving them up");
                    d.lost.extend(std::mem::take(&mut self.held));
                    d.take.clear();
                } else {
                    tracing::debug!(error = %e, "lease round failed");
                }
            }
        }
        d
    }

    /// When the leases renewed by the last good round stop being safe to write under: two thirds
    /// into them (Unix ms).
    pub fn good_until_ms(&self) -> u64 {
        let since = self.last_ok.elapsed();
        let left = (self.ttl * 2 / 3).saturating_sub(since);
        unix_ms() + left.as_millis() as u64
    }

    fn try_round(&mut self, d: &mut Decision) -> redis::RedisResult<()> {
        if self.conn.is_none() {
            let conn = self.client.get_connection_with_timeout(Duration::from_millis(500))?;
            conn.set_read_timeout(Some(Duration::from_millis(500)))?;
            conn.set_write_timeout(Some(Duration::from_millis(500)))?;
            self.conn = Some(conn);
        }
        let ttl = self.ttl.as_millis() as u64;
        let alive_key = format!("matchers:{}:alive", self.group);
        let leases: Vec<String> = (0..self.partitions).map(|p| self.lease(p)).collect();
        let me = self.me.clone();
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Io, "no connection")))?;
        // The living: a sorted set scored by each one's last round (not KEYS: Redis holds
        // millions of order keys).
        let now_ms = unix_ms();
        let (_, _, alive): ((), (), usize) = redis::pipe()
            .cmd("ZADD")
            .arg(&alive_key)
            .arg(now_ms)
            .arg(&me)
            .cmd("ZREMRANGEBYSCORE")
            .arg(&alive_key)
            .arg(0)
            .arg(now_ms.saturating_sub(ttl))
            .cmd("ZCARD")
            .arg(&alive_key)
            .query(conn)?;
        let mut renewed = BTreeSet::new();
        for &p in &self.held {
            let kept: i64 = redis::cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(&leases[p as usize])
                .arg(&me)
                .arg(ttl)
                .query(conn)?;
            if kept == 1 {
                renewed.insert(p);
            }
        }
        let holders: Vec<Option<String>> = redis::cmd("MGET").arg(&leases).query(conn)?;
        let decided = decide(&me, &holders, &self.held, &renewed, alive);
        for p in &decided.lost {
            self.held.remove(p);
        }
        d.lost = decided.lost;
        d.release = decided.release;
        // Take what is free: a lease set only if nobody holds it.
        for &p in &decided.take {
            let set: Option<String> = redis::cmd("SET")
                .arg(&leases[p as usize])
                .arg(&me)
                .arg("NX")
                .arg("PX")
                .arg(ttl)
                .query(conn)?;
            if set.is_some() {
                self.held.insert(p);
                d.take.push(p);
            }
        }
        Ok(())
    }

    /// Hands partition `p`'s lease back (once everything read of it is written and committed).
    pub fn release(&mut self, p: i32) {
        self.held.remove(&p);
        let key = self.lease(p);
        let me = self.me.clone();
        if let Some(conn) = self.conn.as_mut() {
            let released: redis::RedisResult<i64> =
                redis::cmd("EVAL").arg(RELEASE).arg(1).arg(&key).arg(&me).query(conn);
            if let Err(e) = released {
                tracing::warn!(partition = p, error = %e, "could not release the lease (it expires by itself)");
            }
        }
    }

    /// Hands every lease back and says it is gone (a clean stop: the others need not wait for
    /// the leases to expire).
    pub fn release_all(&mut self) {
        for p in self.held.clone() {
            self.release(p);
        }
        let (key, me) = (format!("matchers:{}:alive", self.group), self.me.clone());
        if let Some(conn) = self.conn.as_mut() {
            let _: redis::RedisResult<i64> = redis::cmd("ZREM").arg(key).arg(me).query(conn);
        }
    }

    /// Forgets partition `p`'s lease without releasing it: it expires by itself (a hand-over that
    /// could not finish must not let another take the partition early).
    pub fn abandon(&mut self, p: i32) {
        self.held.remove(&p);
    }

    /// The leases held.
    pub fn held(&self) -> &BTreeSet<i32> {
        &self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ps: &[i32]) -> BTreeSet<i32> {
        ps.iter().copied().collect()
    }

    fn holders(hs: &[Option<&str>]) -> Vec<Option<String>> {
        hs.iter().map(|h| h.map(str::to_owned)).collect()
    }

    #[test]
    fn alone_a_matcher_takes_every_free_partition() {
        let d = decide("a", &holders(&[None, None]), &set(&[]), &set(&[]), 1);
        assert_eq!(d, Decision { take: vec![0, 1], ..Decision::default() });
    }

    #[test]
    fn a_second_matcher_gets_its_share_from_the_first() {
        // Both alive: a holds both, so it hands one back; b takes nothing while nothing is free.
        let d = decide("a", &holders(&[Some("a"), Some("a")]), &set(&[0, 1]), &set(&[0, 1]), 2);
        assert_eq!(d, Decision { release: vec![1], ..Decision::default() });
        let d = decide("b", &holders(&[Some("a"), Some("a")]), &set(&[]), &set(&[]), 2);
        assert_eq!(d, Decision::default());
        // Once it is free, b takes it.
        let d = decide("b", &holders(&[Some("a"), None]), &set(&[]), &set(&[]), 2);
        assert_eq!(d, Decision { take: vec![1], ..Decision::default() });
    }

    #[test]
    fn a_dead_matcher_s_partitions_are_taken_once_its_lease_expires() {
        // b died: its lease still stands (not expired), a only counts itself alive.
        let d = decide("a", &holders(&[Some("a"), Some("b")]), &set(&[0]), &set(&[0]), 1);
        assert_eq!(d, Decision::default(), "taken only when free");
        let d = decide("a", &holders(&[Some("a"), None]), &set(&[0]), &set(&[0]), 1);
        assert_eq!(d, Decision { take: vec![1], ..Decision::default() });
    }

    #[test]
    fn a_lease_someone_else_holds_or_that_was_not_renewed_is_lost() {
        let d = decide("a", &holders(&[Some("b"), Some("a")]), &set(&[0, 1]), &set(&[0, 1]), 2);
        assert_eq!(d.lost, [0]);
        let d = decide("a", &holders(&[Some("a"), Some("a")]), &set(&[0, 1]), &set(&[1]), 2);
        assert_eq!(d.lost, [0], "the renewal did not keep it");
        assert!(d.release.is_empty() && d.take.is_empty());
    }

    #[test]
    fn three_matchers_two_partitions_one_waits() {
        let d = decide("c", &holders(&[Some("a"), Some("b")]), &set(&[]), &set(&[]), 3);
        assert_eq!(d, Decision::default());
        let d = decide("a", &holders(&[Some("a"), Some("b")]), &set(&[0]), &set(&[0]), 3);
        assert_eq!(d, Decision::default(), "a share of one is kept");
    }
}

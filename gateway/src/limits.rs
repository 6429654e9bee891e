//! Rate limits (the `governor` crate: GCRA, keyed, lock-free): order entry per account and per
//! client IP, logins per client IP, and failed logins per username and address — after a burst of
//! wrong passwords from one address a username is refused there (even with the right one) until
//! its allowance refills, which turns a password guesser into a few guesses a minute without
//! letting one address lock a user out everywhere. Every refusal is a `429` with
//! `Retry-After`. Keys that stop coming are forgotten ([`Limits::forget_idle`], every minute), so
//! memory is bounded by the recently active accounts, addresses and names.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// The configured allowances.
#[derive(Clone, Debug)]
pub struct Config {
    /// Orders (new, cancel) per second per account; bursts of twice that.
    pub orders_per_account: u32,
    /// Orders per second per client address.
    pub orders_per_ip: u32,
    /// Login and sign-up attempts per minute per client address.
    pub logins_per_ip: u32,
    /// Failed logins per username per minute before the name is refused for a while.
    pub failed_logins_per_user: u32,
    /// Accounts with their own orders-per-second allowance (`perf` raises its own).
    pub account_overrides: Vec<(String, u32)>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            orders_per_account: 200,
            orders_per_ip: 2_000,
            logins_per_ip: 60,
            failed_logins_per_user: 5,
            account_overrides: Vec::new(),
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN)
}

/// Refused: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl From<RetryAfter> for common::http::error::ApiError {
    /// A `429` with `Retry-After`.
    fn from(r: RetryAfter) -> Self {
        common::http::error::ApiError::TooMany(r.0)
    }
}

/// Every limiter of a gateway.
pub struct Limits {
    orders_per_account: DefaultKeyedRateLimiter<String>,
    overrides: HashMap<String, DefaultKeyedRateLimiter<String>>,
    orders_per_ip: DefaultKeyedRateLimiter<IpAddr>,
    logins_per_ip: DefaultKeyedRateLimiter<IpAddr>,
    failed_logins: DefaultKeyedRateLimiter<(String, IpAddr)>,
    /// (username, address) pairs refused until then (their failed-login allowance ran out).
    locked: Mutex<HashMap<(String, IpAddr), Instant>>,
    clock: DefaultClock,
}

impl Limits {
    /// Limiters for `c`.
    pub fn new(c: &Config) -> Limits {
        let per_second = |n: u32| Quota::per_second(nz(n)).allow_burst(nz(n.saturating_mul(2)));
        let per_minute = |n: u32| Quota::per_minute(nz(n)).allow_burst(nz(n));
        Limits {
            orders_per_account: RateLimiter::keyed(per_second(c.orders_per_account)),
            overrides: c
                .account_overrides
                .iter()
                .map(|(a, n)| (a.clone(), RateLimiter::keyed(per_second(*n))))
                .collect(),
            orders_per_ip: RateLimiter::keyed(per_second(c.orders_per_ip)),
            logins_per_ip: RateLimiter::keyed(per_minute(c.logins_per_ip)),
            failed_logins: RateLimiter::keyed(per_minute(c.failed_logins_per_user)),
            locked: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        l: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), RetryAfter> {
        l.check_key(key).map_err(|not_until| RetryAfter(not_until.wait_time_from(self.clock.now())))
    }

    /// One order from `account` at `ip`.
    pub fn order(&self, account: &str, ip: IpAddr) -> Result<(), RetryAfter> {
        self.check(&self.orders_per_ip, &ip)?;
        let key = account.to_owned();
        match self.overrides.get(account) {
            Some(l) => self.check(l, &key),
            None => self.check(&self.orders_per_account, &key),
        }
    }

    /// One login or sign-up attempt from `ip` for `user`: refused while the name is locked.
    pub fn login(&self, user: &str, ip: IpAddr) -> Result<(), RetryAfter> {
        self.check(&self.logins_per_ip, &ip)?;
        let locked = self.locked.lock().unwrap_or_else(|p| p.into_inner());
        match locked.get(&(user.to_owned(), ip)) {
            Some(&until) if until > Instant::now() => Err(RetryAfter(until - Instant::now())),
            _ => Ok(()),
        }
    }

    /// A wrong password for `user` from `ip`: once that allowance is spent, the name is locked
    /// for that address until it refills.
    pub fn failed_login(&self, user: &str, ip: IpAddr) {
        let key = (user.to_owned(), ip);
        if let Err(RetryAfter(wait)) = self.check(&self.failed_logins, &key) {
            let mut locked = self.locked.lock().unwrap_or_else(|p| p.into_inner());
            locked.insert(key, Instant::now() + wait.max(Duration::from_secs(1)));
        }
    }

    /// Forgets keys whose allowance is full again and locks that have passed.
    pub fn forget_idle(&self) {
        self.orders_per_account.retain_recent();
        self.orders_per_ip.retain_recent();
        self.logins_per_ip.retain_recent();
        self.failed_logins.retain_recent();
        self.overrides.values().for_each(|l| l.retain_recent());
        let now = Instant::now();
        self.locked.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn an_account_gets_its_burst_then_waits_and_overrides_raise_it() {
        let l = Limits::new(&Config {
            orders_per_account: 5,
            account_overrides: vec![("perf".into(), 1000)],
            ..Config::default()
        });
        let ok = (0..20).filter(|_| l.order("alice", IP).is_ok()).count();
        assert_eq!(ok, 10, "a burst of twice the rate");
        let wait = l.order("alice", IP).unwrap_err();
        assert!(
            wait.0 <= Duration::from_millis(200) && common::http::error::retry_after_secs(wait.0) == 1,
            "{wait:?}"
        );
        assert!(l.order("bob", IP).is_ok(), "per account");
        assert_eq!((0..100).filter(|_| l.order("perf", IP).is_ok()).count(), 100);
    }

    #[test]
    fn wrong_passwords_lock_the_name_for_a_while() {
        let l = Limits::new(&Config { failed_logins_per_user: 3, ..Config::default() });
        for _ in 0..3 {
            assert!(l.login("alice", IP).is_ok());
            l.failed_login("alice", IP);
        }
        assert!(l.login("alice", IP).is_ok(), "three wrong passwords are allowed");
        l.failed_login("alice", IP);
        let wait = l.login("alice", IP).unwrap_err();
        assert!(wait.0 > Duration::from_secs(1), "locked for a while: {wait:?}");
        assert!(l.login("bob", IP).is_ok(), "only that name");
        let elsewhere = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
        assert!(l.login("alice", elsewhere).is_ok(), "only from that address");
        l.forget_idle();
        assert!(l.login("alice", IP).is_err(), "a lock outlives forget_idle");
    }

    #[test]
    fn logins_per_address() {
        let l = Limits::new(&Config { logins_per_ip: 4, ..Config::default() });
        assert_eq!((0..10).filter(|i| l.login(&format!("u{i}"), IP).is_ok()).count(), 4);
    }
}

//! Wake-ups: how a consumer stops fetching while nothing flows, yet sees the next record at once.
//!
//! Stock Tansu holds every fetch for the consumer's `fetch.wait.max.ms`, data or not (DESIGN.md
//! §1; `broker/`'s build answers one as soon as its topic is written), so against it a
//! latency-critical consumer has to fetch every few milliseconds — and at rest
//! those empty fetches were the stack's whole CPU (the broker at 60 % of a core with no order
//! flowing). So a consumer [dozes](Doze): after a spell with nothing read it gives up its
//! partitions (librdkafka stops fetching) and waits on a UDP socket instead; whoever writes to its
//! topic sends a [wake-up](Waker) there once the broker has acknowledged the write, and the
//! consumer takes its partitions again at the offsets after the last records it read. A wake-up is a hint, not the data: the consumer still reads
//! everything from the log, and if a datagram is lost it resumes on its own after
//! [`Doze::recheck`] anyway. Each recheck that finds nothing doubles the wait before the next, up
//! to [`Doze::longest`]: the longer the silence, the rarer the fetches (each costs the broker about a
//! dozen SQL statements), while a wake-up or a record brings it back to [`Doze::recheck`].
//!
//! A service listens on the UDP port of the same number as its HTTP port (the two are separate
//! port spaces), so a wake-up needs no address of its own in the stack's plan.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest wait between a dozing consumer's rechecks that the stack's consumers back off to
/// ([`Doze::backing_off_to`]): a lost wake-up after a long silence costs at most this much.
pub const LONGEST_RECHECK: Duration = Duration::from_secs(4);

/// The datagram: its content does not matter, only its arrival.
const PING: &[u8] = b"wake";

/// At most one wake-up per target in this long, however many writes are acknowledged.
const COALESCE: Duration = Duration::from_millis(1);

/// How often a target whose name did not resolve is looked up again.
const RESOLVE_AGAIN: Duration = Duration::from_secs(5);

/// Sends wake-ups to a fixed list of `host:port` targets. Cheap to call on every acknowledged
/// write: one `sendto` per target at most every millisecond, and nothing if there are no targets.
pub struct Waker {
    socket: UdpSocket,
    targets: Mutex<Vec<Target>>,
    /// When the last wake-up went, in ns since `start` (0: never).
    last: AtomicU64,
    start: Instant,
}

struct Target {
    name: String,
    addr: Option<SocketAddr>,
    looked_up: Instant,
}

impl Target {
    fn new(name: &str, now: Instant) -> Target {
        Target { name: name.to_owned(), addr: lookup(name), looked_up: now }
    }

    fn resolve(&mut self, now: Instant) -> Option<SocketAddr> {
        if self.addr.is_none() && now.duration_since(self.looked_up) >= RESOLVE_AGAIN {
            self.looked_up = now;
            self.addr = lookup(&self.name);
        }
        self.addr
    }
}

fn lookup(name: &str) -> Option<SocketAddr> {
    name.to_socket_addrs().ok().and_then(|mut a| a.next())
}

impl Waker {
    /// A waker for `targets` (`host:port` each); `None` when there are none. A name that does not
    /// resolve yet (a container not started) is looked up again every few seconds.
    pub fn new(targets: &[String]) -> std::io::Result<Option<Waker>> {
        if targets.is_empty() {
            return Ok(None);
        }
        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
        socket.set_nonblocking(true)?;
        let now = Instant::now();
        let targets = targets.iter().map(|name| Target::new(name, now)).collect();
        Ok(Some(Waker { socket, targets: Mutex::new(targets), last: AtomicU64::new(0), start: now }))
    }

    /// Tells every target that there is something to read. Never blocks; a failed send is dropped
    /// (the target resumes on its own after [`Doze::recheck`]).
    pub fn wake(&self) {
        let now = Instant::now();
        let ns = (now.duration_since(self.start).as_nanos() as u64).max(1);
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && ns.saturating_sub(last) < COALESCE.as_nanos() as u64 {
            return;
        }
        if self.last.compare_exchange(last, ns, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return; // another thread is sending this one
        }
        let Ok(mut targets) = self.targets.lock() else { return };
        for t in targets.iter_mut() {
            if let Some(addr) = t.resolve(now) {
                if self.socket.send_to(PING, addr).is_err() {
                    t.addr = None; // look it up again: a container may have moved
                }
            }
        }
    }
}

/// The receiving end: a UDP socket a dozing consumer waits on.
pub struct Listener {
    socket: UdpSocket,
}

impl Listener {
    /// Listens on `addr` (`host:port`, UDP).
    pub fn bind(addr: &str) -> std::io::Result<Listener> {
        Ok(Listener { socket: UdpSocket::bind(addr)? })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Waits up to `timeout` for a wake-up and takes any others already queued; true if one came.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut buf = [0u8; 16];
        let timeout = timeout.max(Duration::from_micros(1));
        if self.socket.set_nonblocking(false).is_err() || self.socket.set_read_timeout(Some(timeout)).is_err()
        {
            std::thread::sleep(timeout);
            return false;
        }
        if self.socket.recv(&mut buf).is_err() {
            return false;
        }
        // Wake-ups sent while the consumer was fetching anyway: one is enough.
        if self.socket.set_nonblocking(true).is_ok() {
            while self.socket.recv(&mut buf).is_ok() {}
        }
        true
    }
}

/// When a consumer pauses and resumes: pure state, driven by the caller's clock.
///
/// Two idle spells: after a wake-up or a read (records are flowing) it stays awake for
/// [`Doze::idle`], long enough that a slow fetch under load is not mistaken for silence (each
/// pause drops the fetch in flight, and pausing under load made a slow broker slower); after a
/// recheck that found nothing it goes back to sleep after [`Doze::peek`].
#[derive(Debug)]
pub struct Doze {
    /// Pause after this long with nothing read, once records have flowed.
    pub idle: Duration,
    /// Pause after this long with nothing read, after a recheck.
    pub peek: Duration,
    /// While paused, resume after this long even without a wake-up (a lost datagram costs at most
    /// this much latency, or up to [`Doze::longest`] after a long silence).
    pub recheck: Duration,
    /// The longest wait between rechecks: each recheck that found nothing doubles the wait, from
    /// [`Doze::recheck`] up to this.
    pub longest: Duration,
    /// The wait before the next recheck.
    interval: Duration,
    /// Awake for a recheck, nothing read yet.
    peeking: bool,
    last_read: Instant,
    spell: Duration,
    paused_at: Option<Instant>,
}

impl Doze {
    /// Awake, as of `now`; rechecks every `recheck` while paused (see [`Doze::backing_off_to`]).
    pub fn new(idle: Duration, peek: Duration, recheck: Duration, now: Instant) -> Doze {
        Doze {
            idle,
            peek,
            recheck,
            longest: recheck,
            interval: recheck,
            peeking: false,
            last_read: now,
            spell: idle,
            paused_at: None,
        }
    }

    /// Rechecks that find nothing double the wait before the next, up to `longest`.
    pub fn backing_off_to(self, longest: Duration) -> Doze {
        Doze { longest: longest.max(self.recheck), ..self }
    }

    /// Something was read at `now`.
    pub fn read(&mut self, now: Instant) {
        self.last_read = now;
        self.spell = self.idle;
        self.peeking = false;
        self.interval = self.recheck;
    }

    /// The wait before the next recheck, once paused.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Is it paused?
    pub fn paused(&self) -> bool {
        self.paused_at.is_some()
    }

    /// Awake and idle long enough: the caller pauses its partitions and calls [`Doze::pause`].
    pub fn should_pause(&self, now: Instant) -> bool {
        self.paused_at.is_none() && now.duration_since(self.last_read) >= self.spell
    }

    /// Record the pause. After a recheck that found nothing, the next one waits twice as long
    /// (up to [`Doze::longest`]).
    pub fn pause(&mut self, now: Instant) {
        if std::mem::take(&mut self.peeking) {
            self.interval = (self.interval * 2).min(self.longest);
        }
        self.paused_at = Some(now);
    }

    /// Paused and either woken or due for its recheck: the caller resumes and calls
    /// [`Doze::resume`].
    pub fn should_resume(&self, now: Instant, woken: bool) -> bool {
        self.paused_at.is_some_and(|at| woken || now.duration_since(at) >= self.interval)
    }

    /// Record the resume: awake for [`Doze::idle`] from `now` if `woken` (and rechecks back to
    /// [`Doze::recheck`]: something is being written), else for [`Doze::peek`].
    pub fn resume(&mut self, now: Instant, woken: bool) {
        self.paused_at = None;
        self.last_read = now;
        self.spell = if woken { self.idle } else { self.peek };
        self.peeking = !woken;
        if woken {
            self.interval = self.recheck;
        }
    }

    /// How long a paused consumer may wait for a wake-up before its recheck is due (at most
    /// `cap`, so the caller can do its other chores).
    pub fn wait_for(&self, now: Instant, cap: Duration) -> Duration {
        match self.paused_at {
            Some(at) => self.interval.saturating_sub(now.duration_since(at)).min(cap),
            None => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn dozes_after_idle_and_wakes_on_a_wake_up_or_the_recheck() {
        let t0 = Instant::now();
        let mut d = Doze::new(200 * MS, 20 * MS, 1000 * MS, t0);
        assert!(!d.should_pause(t0 + 199 * MS), "awake for the long spell at first");
        d.read(t0 + 100 * MS);
        assert!(!d.should_pause(t0 + 299 * MS), "a read restarts the idle spell");
        assert!(d.should_pause(t0 + 300 * MS));
        d.pause(t0 + 300 * MS);
        assert!(d.paused() && !d.should_pause(t0 + 400 * MS), "paused once");
        assert!(!d.should_resume(t0 + 800 * MS, false));
        assert_eq!(d.wait_for(t0 + 800 * MS, 50 * MS), 50 * MS);
        assert_eq!(d.wait_for(t0 + 1280 * MS, 50 * MS), 20 * MS, "until the recheck");
        assert!(d.should_resume(t0 + 301 * MS, true), "a wake-up resumes at once");
        assert!(d.should_resume(t0 + 1300 * MS, false), "the recheck resumes without one");
        // A recheck peeks: back to sleep after the short spell if nothing came.
        d.resume(t0 + 1300 * MS, false);
        assert!(!d.paused() && !d.should_pause(t0 + 1319 * MS) && d.should_pause(t0 + 1320 * MS));
        assert!(!d.should_resume(t0 + 2000 * MS, true), "not paused: nothing to resume");
        // A read during the peek means records flow: the long spell again.
        d.read(t0 + 1310 * MS);
        assert!(!d.should_pause(t0 + 1500 * MS) && d.should_pause(t0 + 1510 * MS));
        // So does a wake-up.
        d.pause(t0 + 1510 * MS);
        d.resume(t0 + 1600 * MS, true);
        assert!(!d.should_pause(t0 + 1799 * MS) && d.should_pause(t0 + 1800 * MS));
    }

    #[test]
    fn empty_rechecks_back_off_and_a_read_or_a_wake_up_resets_them() {
        let t0 = Instant::now();
        let mut d = Doze::new(200 * MS, 20 * MS, 1000 * MS, t0).backing_off_to(4000 * MS);
        d.pause(t0);
        assert_eq!(d.interval(), 1000 * MS, "the first pause is not a recheck");
        let mut at = t0;
        // Each empty recheck doubles the wait, up to the longest.
        for want in [2000, 4000, 4000] {
            at += d.interval();
            assert!(!d.should_resume(at - MS, false) && d.should_resume(at, false));
            d.resume(at, false);
            at += 20 * MS;
            assert!(d.should_pause(at));
            d.pause(at);
            assert_eq!(d.interval(), want * MS);
            assert_eq!(d.wait_for(at, 10_000 * MS), want * MS);
        }
        // A recheck that reads something: records flow again, back to the first wait.
        at += d.interval();
        d.resume(at, false);
        d.read(at + 5 * MS);
        d.pause(at + 205 * MS);
        assert_eq!(d.interval(), 1000 * MS);
        // Backed off again, a wake-up resets it too, even if nothing is read after it.
        d.resume(at + 1205 * MS, false);
        d.pause(at + 1225 * MS);
        assert_eq!(d.interval(), 2000 * MS);
        d.resume(at + 1300 * MS, true);
        d.pause(at + 1500 * MS);
        assert_eq!(d.interval(), 1000 * MS);
        // Without backing off, the wait stays the recheck.
        let mut plain = Doze::new(200 * MS, 20 * MS, 1000 * MS, t0);
        plain.pause(t0);
        plain.resume(t0 + 1000 * MS, false);
        plain.pause(t0 + 1020 * MS);
        assert_eq!(plain.interval(), 1000 * MS);
    }

    #[test]
    fn a_wake_up_reaches_the_listener_and_repeats_coalesce() {
        let listener = Listener::bind("127.0.0.1:0").unwrap();
        assert!(!listener.wait(5 * MS), "nothing sent yet");
        let target = listener.local_addr().unwrap().to_string();
        let waker = Waker::new(&[target]).unwrap().unwrap();
        for _ in 0..100 {
            waker.wake();
        }
        assert!(listener.wait(1000 * MS));
        // The burst was one datagram (within a millisecond) or a few; after the drain none is left.
        assert!(!listener.wait(5 * MS), "the queued ones were taken with the first");
        std::thread::sleep(2 * MS);
        waker.wake();
        assert!(listener.wait(1000 * MS), "a later write wakes again");
    }

    #[test]
    fn no_targets_no_waker_and_an_unresolvable_target_is_dropped_quietly() {
        assert!(Waker::new(&[]).unwrap().is_none());
        let w = Waker::new(&["no-such-host.invalid:9".to_owned()]).unwrap().unwrap();
        w.wake(); // nothing to send to, nothing panics
        assert!(Listener::bind("not an address").is_err());
    }
}

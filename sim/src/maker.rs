//! The loop: signs both accounts in, learns the symbols, cancels what an earlier run left, then
//! on a steady schedule (`rate` ticks a second, one tick at a time) takes one symbol in turn,
//! walks its mid, and does one action for it — a crossing IOC from the taker with probability
//! `cross_prob`, else the one [`next_step`] names (place a missing quote, or move one that sits
//! at no wanted price) — plus at most one read: the status of the quote whose check is due (a quote is
//! checked every [`CHECK_EVERY`], soon after a cross hit it), the symbol's last trade price
//! (every [`CENTER_EVERY`] and after a cross), or the symbol list (every [`SYMBOLS_EVERY`]: which
//! symbols are halted, and an operator's new reference price). The band's centre is whichever
//! of the last trade and the listed reference changed last.
//!
//! Trouble is handled as a good client does: a `429` waits its `Retry-After`,
//! no answer or a `5xx` backs off (0.5 s doubling to 10 s, reset by the next answer), a `401`
//! signs in again, a halted symbol is left alone until the symbol list says it trades again
//! (for [`HALT_PAUSE`] where the list does not say), a refused action pauses its symbol for
//! [`REFUSED_PAUSE`]. Only a password that cannot log in, or no symbol that can be
//! quoted, ends it with an error. When the shutdown fires, the tick in flight gets a moment to
//! finish and the resting quotes are canceled, best-effort, within [`STOP_BUDGET`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use common::shutdown::Shutdown;
use common::Side;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::MissedTickBehavior;

use crate::client::{self, classify, Answer, Api, Key, OrderView, SignInError, Trouble};
use crate::metrics::Metrics;
use crate::quote::{cross, next_step, Backoff, Cross, Live, Market, Rng, Shape, Step};
use crate::{Config, Readiness};

/// How often a resting quote's status is read.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How soon after a cross the quote it hit is read.
pub const CHECK_AFTER_CROSS: Duration = Duration::from_millis(500);
/// How often a symbol's last trade price (the band's centre) is read.
pub const CENTER_EVERY: Duration = Duration::from_secs(30);
/// How often the symbol list (halts, reference prices) is read.
pub const SYMBOLS_EVERY: Duration = Duration::from_secs(15);
/// How long a halted symbol is left alone where the symbol list does not say whether it is.
pub const HALT_PAUSE: Duration = Duration::from_secs(30);
/// How long a symbol whose action was refused is left alone.
pub const REFUSED_PAUSE: Duration = Duration::from_secs(10);
/// A quote the API does not know (`404`) this long after its `202` is taken as gone.
pub const UNKNOWN_AFTER: Duration = Duration::from_secs(10);
/// The longest `Retry-After` honoured as given.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// What stopping may take: the tick in flight, then canceling the quotes.
pub const STOP_BUDGET: Duration = Duration::from_secs(2);
/// How often a line of totals is logged.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Which account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    /// Rests the quotes.
    Maker,
    /// Crosses them (a maker's own cross would be stopped by self-trade prevention).
    Taker,
}

/// Whether the exchange takes `PATCH /api/v1/orders/{id}` (cancel-replace).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Patch {
    /// Not tried yet.
    Unknown,
    /// It does.
    Works,
    /// It does not: cancel, then place anew.
    Missing,
}

/// A read [`Maker::maintain`] may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    /// The symbol list.
    Symbols,
    /// Book `i`'s last trade.
    Center(usize),
    /// Book `i`'s quote in `slot`.
    Check(usize, usize),
}

/// One symbol's quoting state.
struct Book {
    /// Increments, band, limits.
    market: Market,
    /// Where the quotes go around the mid.
    shape: Shape,
    /// The mid, in ticks.
    mid: i64,
    /// The band's centre as last read (the last trade, or the reference before one).
    center: i64,
    /// The sequence number of the last trade taken as the centre: an older one does not move it.
    last_trade: Option<u64>,
    /// The reference the symbol list showed last: a change (an operator's) moves the centre.
    listed_reference: i64,
    /// The symbol list says it is halted.
    halted: bool,
    /// The quotes as believed resting, in [`Shape::targets`] order.
    slots: Vec<Option<Live>>,
    /// When each quote was placed (a `404` soon after is the matcher not having written it yet).
    placed: Vec<Instant>,
    /// When each quote's status is next read.
    check_at: Vec<Instant>,
    /// When the centre is next read.
    center_at: Instant,
    /// Left alone until then (an action was refused; halted, where the list does not say).
    paused_until: Option<Instant>,
}

impl Book {
    fn new(market: Market, shape: Shape, now: Instant) -> Book {
        let n = 2 * shape.levels;
        Book {
            mid: market.reference,
            center: market.reference,
            last_trade: None,
            listed_reference: market.reference,
            halted: false,
            market,
            shape,
            slots: vec![None; n],
            placed: vec![now; n],
            check_at: vec![now; n],
            center_at: now + CENTER_EVERY,
            paused_until: None,
        }
    }

    fn side(slot: usize) -> Side {
        if slot.is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    /// Not to be quoted now: halted, or paused.
    fn paused(&self, now: Instant) -> bool {
        self.halted || self.paused_until.is_some_and(|t| t > now)
    }

    /// A new band centre: the mid comes inside its room.
    fn recenter(&mut self, center: i64) {
        self.center = center;
        self.mid = self.shape.clamp_mid(&self.market, self.mid, center);
    }

    /// Both sides have a quote.
    fn two_sided(&self) -> bool {
        let has = |side| self.slots.iter().enumerate().any(|(i, s)| s.is_some() && Book::side(i) == side);
        has(Side::Buy) && has(Side::Sell)
    }

    fn resting(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

/// A new limit order of ours, before it is sent ([`Maker::new_order`]).
struct Ticket {
    side: Side,
    /// A taker's cross (IOC); else a maker's quote (GTC, post-only).
    ioc: bool,
    /// In ticks.
    price: i64,
    lots: u64,
}

/// Client order ids unique across runs (the exchange remembers recent ones): `sim-<run>-<n>`,
/// the run being the start time in hex milliseconds — at most 32 characters of the id alphabet.
struct Ids {
    run: String,
    n: u64,
}

impl Ids {
    fn new() -> Ids {
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Ids { run: format!("{ms:x}"), n: 0 }
    }

    fn next(&mut self) -> String {
        self.n += 1;
        format!("sim-{}-{}", self.run, self.n)
    }
}

/// The simulator's state while it runs.
pub struct Maker {
    config: Config,
    api: Api,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    shutdown: Shutdown,
    rng: Rng,
    books: Vec<Book>,
    /// The book the next tick takes (round robin).
    next: usize,
    maker: Key,
    taker: Key,
    ids: Ids,
    patch: Patch,
    backoff: Backoff,
    /// The symbol list says whether a symbol is halted.
    halt_field: bool,
    /// When the symbol list is next read.
    symbols_at: Instant,
}

impl Maker {
    /// A maker for `config`, not signed in yet.
    pub fn new(
        config: Config,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Maker> {
        let api = Api::new(&config.url, metrics.clone())?;
        Ok(Maker {
            rng: Rng::new(config.seed),
            config,
            api,
            metrics,
            readiness,
            shutdown,
            books: Vec::new(),
            next: 0,
            maker: Key::default(),
            taker: Key::default(),
            ids: Ids::new(),
            patch: Patch::Unknown,
            backoff: Backoff::new(),
            halt_field: false,
            symbols_at: Instant::now() + SYMBOLS_EVERY,
        })
    }

    /// Runs until the shutdown fires (then cancels its quotes), or fails for good.
    pub async fn run(mut self) -> anyhow::Result<()> {
        if !self.start().await? {
            return Ok(());
        }
        let period = Duration::from_secs_f64(1.0 / self.config.rate);
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut summary_at = Instant::now() + SUMMARY_EVERY;
        let shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.wait() => break,
            }
            {
                let tick = self.tick();
                tokio::pin!(tick);
                tokio::select! {
                    r = &mut tick => r?,
                    _ = shutdown.wait() => {
                        if let Ok(r) = tokio::time::timeout(STOP_BUDGET / 2, &mut tick).await {
                            r?;
                        }
                        break;
                    }
                }
            }
            if Instant::now() >= summary_at {
                summary_at += SUMMARY_EVERY;
                self.summary();
            }
        }
        self.stop().await;
        Ok(())
    }

    /// Signs in, learns the symbols, cancels leftovers. False if the shutdown fired meanwhile.
    async fn start(&mut self) -> anyhow::Result<bool> {
        tracing::info!(url = %self.config.url, maker = %self.config.maker_user, taker = %self.config.taker_user,
            rate = self.config.rate, levels = self.config.levels, cross_prob = self.config.cross_prob,
            seed = self.config.seed, "market-sim starting");
        self.readiness.set(false, "signing in");
        if !self.sign_in(Who::Maker).await? || !self.sign_in(Who::Taker).await? {
            return Ok(false);
        }
        self.readiness.set(false, "reading the symbols");
        if !self.load_books().await? {
            return Ok(false);
        }
        self.cancel_leftovers().await?;
        self.readiness.set(false, "placing the first quotes");
        Ok(!self.shutdown.is_triggered())
    }

    fn user(&self, who: Who) -> &str {
        match who {
            Who::Maker => &self.config.maker_user,
            Who::Taker => &self.config.taker_user,
        }
    }

    fn key(&self, who: Who) -> &str {
        match who {
            Who::Maker => &self.maker.api_key,
            Who::Taker => &self.taker.api_key,
        }
    }

    /// Sleeps, unless the shutdown fires first: false then.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.shutdown.wait() => false,
        }
    }

    /// Signs `who` in (again), retrying transient trouble; false if the shutdown fired first.
    async fn sign_in(&mut self, who: Who) -> anyhow::Result<bool> {
        loop {
            let user = self.user(who).to_owned();
            match self.api.sign_in(&user, &self.config.password).await {
                Ok(key) => {
                    tracing::info!(user = %user, key_id = %key.key_id, "signed in with a new API key");
                    self.backoff.reset();
                    match who {
                        Who::Maker => self.maker = key,
                        Who::Taker => self.taker = key,
                    }
                    return Ok(true);
                }
                Err(SignInError::Fatal(message)) => bail!(message),
                Err(SignInError::Transient(t)) => {
                    self.metrics.error(t.kind());
                    let wait = match t {
                        Trouble::RateLimited(d) => d.min(MAX_RETRY_AFTER),
                        _ => self.backoff.fail(),
                    };
                    tracing::warn!(user = %user, wait_s = wait.as_secs_f64(), "signing in: {t}; retrying");
                    if !self.sleep(wait).await {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// A request that must succeed before going on (start-up reads): transient trouble is waited
    /// out; `None` if the shutdown fired, else the answer (a `2xx`, or a `4xx` to judge).
    async fn read_until_answered(&mut self, path: &str, who: Option<Who>) -> anyhow::Result<Option<Answer>> {
        loop {
            let key = who.map(|w| self.key(w).to_owned());
            let trouble = match self.api.call("read", Method::GET, path, key.as_deref(), None).await {
                Err(t) => t,
                Ok(a) => match classify(&a) {
                    Ok(()) | Err(Trouble::Refused { .. } | Trouble::Halted(_)) => {
                        self.backoff.reset();
                        return Ok(Some(a));
                    }
                    Err(t) => t,
                },
            };
            if !self.trouble(who.unwrap_or(Who::Maker), trouble).await? {
                return Ok(None);
            }
        }
    }

    /// Learns the symbols (all, or `--symbols`) and each one's mid. False if the shutdown fired.
    async fn load_books(&mut self) -> anyhow::Result<bool> {
        let Some(answer) = self.read_until_answered("/api/v1/symbols", None).await? else { return Ok(false) };
        if !answer.ok() {
            bail!(
                "GET /api/v1/symbols: {}",
                classify(&answer).err().map(|t| t.to_string()).unwrap_or_default()
            );
        }
        let listed =
            client::read_symbols(&answer.body).map_err(|e| anyhow::anyhow!("GET /api/v1/symbols: {e}"))?;
        let wanted: Vec<client::SymbolInfo> = match &self.config.symbols {
            None => listed,
            Some(names) => {
                let known = listed.iter().map(|s| s.symbol.as_str()).collect::<Vec<_>>().join(", ");
                names
                    .iter()
                    .map(|n| {
                        listed.iter().find(|s| &s.symbol == n).cloned().ok_or_else(|| {
                            anyhow::anyhow!("--symbols: the exchange has no symbol {n:?}; it lists {known}")
                        })
                    })
                    .collect::<anyhow::Result<_>>()?
            }
        };
        let now = Instant::now();
        for s in wanted {
            let built =
                Market::new(&s.symbol, &s.tick, &s.lot, s.band_bps, &s.reference, s.max_qty.as_deref())
                    .and_then(|m| {
                        Shape::new(&m, self.config.levels, self.config.spread_bps, self.config.walk_bps)
                            .map(|sh| (m, sh))
                    });
            let (market, shape) = match built {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!("not quoting {}: {e}", s.symbol);
                    continue;
                }
            };
            let mut book = Book::new(market, shape, now);
            self.halt_field |= s.halted.is_some();
            if s.halted == Some(true) {
                tracing::info!(symbol = %s.symbol, "halted: not quoting it until it trades again");
                book.halted = true;
            }
            self.books.push(book);
            let i = self.books.len() - 1;
            if !self.read_center(i).await? {
                return Ok(false);
            }
            let b = &self.books[i];
            tracing::info!(symbol = %b.market.symbol, mid = %b.market.price_text(b.mid),
                half_spread_ticks = b.shape.half_spread, step_ticks = b.shape.step, walk_ticks = b.shape.walk,
                band_bps = b.market.band_bps, "quoting");
        }
        if self.books.is_empty() {
            bail!("no symbol can be quoted (see the errors above)");
        }
        Ok(true)
    }

    /// Reads symbol `i`'s last trade price: the band's centre, and the mid's start. False if the
    /// shutdown fired.
    async fn read_center(&mut self, i: usize) -> anyhow::Result<bool> {
        let path = format!("/api/v1/trades?symbol={}&limit=1", self.books[i].market.symbol);
        let Some(answer) = self.read_until_answered(&path, None).await? else { return Ok(false) };
        self.take_trade(i, &answer);
        Ok(true)
    }

    /// A `GET /api/v1/trades?limit=1` answer for symbol `i`: a trade newer than the last one
    /// taken moves the band's centre to its price.
    fn take_trade(&mut self, i: usize, answer: &Answer) {
        let b = &mut self.books[i];
        let Some((price, sequence)) =
            answer.ok().then(|| client::read_last_trade(&b.market, &answer.body)).flatten()
        else {
            return;
        };
        if sequence.is_none() || sequence != b.last_trade {
            b.last_trade = sequence;
            b.recenter(price);
        }
    }

    /// A `GET /api/v1/symbols` answer: halts and resumes, and a listed reference that changed
    /// (an operator moved it) as the band's new centre.
    fn take_symbols(&mut self, answer: &Answer) {
        let Ok(listed) = client::read_symbols(&answer.body) else { return };
        for b in &mut self.books {
            let Some(s) = listed.iter().find(|s| s.symbol == b.market.symbol) else { continue };
            if let Some(halted) = s.halted {
                if halted != b.halted {
                    match halted {
                        true => {
                            tracing::info!(symbol = %s.symbol, "halted: not quoting it until it trades again")
                        }
                        false => tracing::info!(symbol = %s.symbol, "trading again: quoting it"),
                    }
                    b.halted = halted;
                    if !halted {
                        b.paused_until = None;
                    }
                }
            }
            if let Ok(reference) = b.market.ticks("reference", &s.reference) {
                if reference != b.listed_reference {
                    tracing::info!(symbol = %s.symbol, reference = %s.reference, "a new reference price: the band moved");
                    b.listed_reference = reference;
                    b.recenter(reference);
                }
            }
        }
    }

    /// A symbol seems halted: an order was refused for it now (`now`), or one sent earlier was
    /// rejected (perhaps before a resume). Where the symbol list says whether a symbol is halted,
    /// it is read at once and decides (a refusal now stops quoting until then); else the symbol
    /// is left alone for [`HALT_PAUSE`].
    fn seems_halted(&mut self, i: usize, now: bool) {
        self.metrics.error("halted");
        if self.halt_field {
            self.books[i].halted |= now;
            self.symbols_at = Instant::now();
        } else {
            self.books[i].paused_until = Some(Instant::now() + HALT_PAUSE);
        }
    }

    /// Cancels the maker's open orders an earlier run left, if the exchange can list them.
    async fn cancel_leftovers(&mut self) -> anyhow::Result<()> {
        let Some(a) = self.read_until_answered("/api/v1/orders?status=open", Some(Who::Maker)).await? else {
            return Ok(());
        };
        let ids = if a.ok() { client::read_open_orders(&a.body) } else { None };
        let Some(ids) = ids else {
            tracing::info!(status = a.status, code = a.code(),
                "the exchange cannot list open orders (GET /api/v1/orders?status=open): quotes an earlier run \
                 left behind (if it did not stop cleanly) stay in the book");
            return Ok(());
        };
        let mut canceled = 0;
        for id in &ids {
            let path = format!("/api/v1/orders/{id}");
            if let Some(a) = self.order_call(Who::Maker, "cancel", Method::DELETE, &path, None).await? {
                if a.ok() {
                    canceled += 1;
                    self.metrics.action("cancel");
                }
            }
        }
        tracing::info!(open = ids.len(), canceled, "canceled what an earlier run left open");
        Ok(())
    }

    /// What to do about trouble: wait, back off or sign in again. False if the shutdown fired.
    async fn trouble(&mut self, who: Who, t: Trouble) -> anyhow::Result<bool> {
        self.metrics.error(t.kind());
        match t {
            Trouble::RateLimited(d) => {
                let d = d.min(MAX_RETRY_AFTER);
                tracing::warn!(wait_s = d.as_secs_f64(), "rate limited: waiting");
                Ok(self.sleep(d).await)
            }
            Trouble::Unavailable(m) => {
                let d = self.backoff.fail();
                tracing::warn!(wait_s = d.as_secs_f64(), "the exchange is unavailable ({m}): backing off");
                Ok(self.sleep(d).await)
            }
            Trouble::Unauthorized(m) => {
                tracing::warn!(user = self.user(who), "unauthorized ({m}): signing in again");
                self.sign_in(who).await
            }
            Trouble::Halted(_) | Trouble::Refused { .. } => Ok(true),
        }
    }

    /// An order call as `who`. Trouble for the loop (429, 5xx, no answer, 401) is handled here
    /// and gives `None`; otherwise the answer: a `2xx`, or a `4xx` for the caller to judge.
    async fn order_call(
        &mut self,
        who: Who,
        kind: &'static str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Option<Answer>> {
        let key = self.key(who).to_owned();
        let trouble = match self.api.call(kind, method, path, Some(&key), body).await {
            Err(t) => t,
            Ok(a) => match classify(&a) {
                Ok(()) | Err(Trouble::Refused { .. } | Trouble::Halted(_)) => {
                    self.backoff.reset();
                    return Ok(Some(a));
                }
                Err(t) => t,
            },
        };
        self.trouble(who, trouble).await?;
        Ok(None)
    }

    /// A refused action on symbol `i`: a halted symbol is left alone (see
    /// [`Maker::seems_halted`]), anything else for [`REFUSED_PAUSE`].
    fn refused(&mut self, i: usize, what: &str, a: &Answer) {
        let b = &mut self.books[i];
        match classify(a) {
            Err(Trouble::Halted(m)) => {
                tracing::info!(symbol = %b.market.symbol, "{what}: halted ({m}); leaving it alone");
                self.seems_halted(i, true);
            }
            other => {
                self.metrics.error("refused");
                let why = other.err().map(|t| t.to_string()).unwrap_or_else(|| format!("HTTP {}", a.status));
                tracing::warn!(symbol = %b.market.symbol, "{what}: {why}; leaving it alone for {} s", REFUSED_PAUSE.as_secs());
                b.paused_until = Some(Instant::now() + REFUSED_PAUSE);
            }
        }
    }

    /// The next book to act on (round robin, skipping paused ones).
    fn pick(&mut self, now: Instant) -> Option<usize> {
        let n = self.books.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let b = &mut self.books[i];
            if b.paused(now) {
                continue;
            }
            if b.paused_until.take().is_some() {
                tracing::info!(symbol = %b.market.symbol, "quoting again");
            }
            self.next = (i + 1) % n;
            return Some(i);
        }
        None
    }

    /// One tick: one action on the next symbol, then at most one read.
    async fn tick(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        if let Some(i) = self.pick(now) {
            let b = &mut self.books[i];
            b.mid = b.shape.walk(&b.market, b.mid, b.center, &mut self.rng);
            let targets = b.shape.targets(b.mid);
            let crossing = if self.config.cross_prob > 0.0 && self.rng.chance(self.config.cross_prob) {
                cross(&targets, &b.slots, &mut self.rng)
            } else {
                None
            };
            match crossing {
                Some(c) => self.cross(i, c).await?,
                None => match next_step(&targets, &b.slots) {
                    Step::Place { slot, price } => self.place(i, slot, price).await?,
                    Step::Amend { slot, price } => self.amend(i, slot, price).await?,
                    Step::Idle => {}
                },
            }
        }
        self.maintain().await?;
        self.metrics.quotes.set(self.books.iter().map(Book::resting).sum::<usize>() as i64);
        if !self.readiness.is_ready() {
            let now = Instant::now();
            let active: Vec<&Book> = self.books.iter().filter(|b| !b.paused(now)).collect();
            if !active.is_empty() && active.iter().all(|b| b.two_sided()) {
                let names: Vec<&str> = active.iter().map(|b| b.market.symbol.as_str()).collect();
                tracing::info!(symbols = %names.join(","), "ready: quoting both sides");
                self.readiness.set(true, &names.join(","));
            }
        }
        Ok(())
    }

    /// Sends a new limit order on symbol `i` as `who` (`what` names the action in metrics and
    /// logs): a quote rests post-only (GTC), a cross is IOC. The answer if the exchange took it;
    /// `None` after trouble or a refusal, both handled here.
    async fn new_order(
        &mut self,
        i: usize,
        who: Who,
        what: &'static str,
        t: &Ticket,
    ) -> anyhow::Result<Option<Answer>> {
        let b = &self.books[i];
        let body = json!({
            "client_order_id": self.ids.next(),
            "symbol": b.market.symbol,
            "side": t.side.as_str(),
            "type": "limit",
            "time_in_force": if t.ioc { "ioc" } else { "gtc" },
            "post_only": !t.ioc,
            "price": b.market.price_text(t.price),
            "qty": b.market.qty_text(t.lots),
        });
        let Some(a) = self.order_call(who, what, Method::POST, "/api/v1/orders", Some(&body)).await? else {
            return Ok(None);
        };
        if !a.ok() {
            self.refused(i, what, &a);
            return Ok(None);
        }
        Ok(Some(a))
    }

    /// Places quote `slot` of symbol `i` at `price` ticks.
    async fn place(&mut self, i: usize, slot: usize, price: i64) -> anyhow::Result<()> {
        let lots = self.books[i].market.random_lots(&mut self.rng);
        let ticket = Ticket { side: Book::side(slot), ioc: false, price, lots };
        let Some(a) = self.new_order(i, Who::Maker, "place", &ticket).await? else { return Ok(()) };
        let Some(order_id) = a.body["order_id"].as_str() else {
            tracing::warn!(answer = %a.body, "a placed order's answer has no order_id");
            return Ok(());
        };
        let now = Instant::now();
        let b = &mut self.books[i];
        tracing::debug!(symbol = %b.market.symbol, side = Book::side(slot).as_str(), price = %b.market.price_text(price),
            lots, order_id, "placed");
        b.slots[slot] = Some(Live { order_id: order_id.to_owned(), price, lots });
        b.placed[slot] = now;
        b.check_at[slot] = now + CHECK_EVERY;
        self.metrics.action("place");
        Ok(())
    }

    /// Moves quote `slot` of symbol `i` to `price`: `PATCH` (cancel-replace), or, where the
    /// exchange has none, cancel and place anew.
    async fn amend(&mut self, i: usize, slot: usize, price: i64) -> anyhow::Result<()> {
        let Some(live) = self.books[i].slots[slot].clone() else { return Ok(()) };
        if self.patch != Patch::Missing {
            let b = &self.books[i];
            let lots = b.market.random_lots(&mut self.rng);
            let body = json!({"price": b.market.price_text(price), "qty": b.market.qty_text(lots)});
            let path = format!("/api/v1/orders/{}", live.order_id);
            let Some(a) = self.order_call(Who::Maker, "amend", Method::PATCH, &path, Some(&body)).await?
            else {
                return Ok(());
            };
            if a.ok() {
                if self.patch == Patch::Unknown {
                    tracing::info!("amending quotes with PATCH /api/v1/orders/{{id}} (cancel-replace)");
                    self.patch = Patch::Works;
                }
                self.books[i].slots[slot] = Some(Live { order_id: live.order_id, price, lots });
                self.metrics.action("amend");
                return Ok(());
            }
            if client::no_such_route(&a) {
                tracing::warn!(
                    status = a.status,
                    code = a.code(),
                    "the exchange has no PATCH /api/v1/orders/{{id}}: amending by cancel + new order instead"
                );
                self.patch = Patch::Missing;
            } else if a.status == 404 || client::not_open(&a) {
                // Filled or canceled meanwhile: the slot is free.
                tracing::debug!(order_id = %live.order_id, "amend: the quote is no longer open");
                self.books[i].slots[slot] = None;
                return Ok(());
            } else {
                self.refused(i, "amend", &a);
                self.books[i].check_at[slot] = Instant::now();
                return Ok(());
            }
        }
        if self.cancel(i, slot).await? {
            self.place(i, slot, price).await?;
        }
        Ok(())
    }

    /// Cancels quote `slot` of symbol `i`: true once the slot is free.
    async fn cancel(&mut self, i: usize, slot: usize) -> anyhow::Result<bool> {
        let Some(live) = self.books[i].slots[slot].clone() else { return Ok(true) };
        let path = format!("/api/v1/orders/{}", live.order_id);
        let Some(a) = self.order_call(Who::Maker, "cancel", Method::DELETE, &path, None).await? else {
            return Ok(false);
        };
        if a.ok() || a.status == 404 || client::not_open(&a) {
            if a.ok() {
                self.metrics.action("cancel");
            }
            self.books[i].slots[slot] = None;
            return Ok(true);
        }
        self.refused(i, "cancel", &a);
        Ok(false)
    }

    /// The taker crosses quote `c.slot` of symbol `i` with an IOC.
    async fn cross(&mut self, i: usize, c: Cross) -> anyhow::Result<()> {
        let ticket = Ticket { side: c.side, ioc: true, price: c.price, lots: c.lots };
        if self.new_order(i, Who::Taker, "cross", &ticket).await?.is_none() {
            return Ok(());
        }
        let b = &mut self.books[i];
        tracing::debug!(symbol = %b.market.symbol, side = c.side.as_str(), price = %b.market.price_text(c.price),
            lots = c.lots, "crossed");
        let soon = Instant::now() + CHECK_AFTER_CROSS;
        b.check_at[c.slot] = b.check_at[c.slot].min(soon);
        b.center_at = b.center_at.min(soon + CHECK_AFTER_CROSS);
        self.metrics.action("cross");
        Ok(())
    }

    /// At most one read: the most overdue of the symbol list, the centre reads and the quote
    /// checks.
    async fn maintain(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let mut due: Option<(Instant, Read)> = None;
        let mut consider = |at: Instant, read: Read| {
            if at <= now && due.is_none_or(|(d, _)| at < d) {
                due = Some((at, read));
            }
        };
        consider(self.symbols_at, Read::Symbols);
        for (i, b) in self.books.iter().enumerate().filter(|(_, b)| !b.paused(now)) {
            consider(b.center_at, Read::Center(i));
            for (slot, live) in b.slots.iter().enumerate() {
                if live.is_some() {
                    consider(b.check_at[slot], Read::Check(i, slot));
                }
            }
        }
        match due.map(|(_, read)| read) {
            None => Ok(()),
            Some(Read::Symbols) => {
                self.symbols_at = now + SYMBOLS_EVERY;
                let Some(a) =
                    self.order_call(Who::Maker, "read", Method::GET, "/api/v1/symbols", None).await?
                else {
                    return Ok(());
                };
                if a.ok() {
                    self.take_symbols(&a);
                }
                Ok(())
            }
            Some(Read::Center(i)) => {
                self.books[i].center_at = now + CENTER_EVERY;
                let path = format!("/api/v1/trades?symbol={}&limit=1", self.books[i].market.symbol);
                let Some(a) = self.order_call(Who::Maker, "read", Method::GET, &path, None).await? else {
                    return Ok(());
                };
                self.take_trade(i, &a);
                Ok(())
            }
            Some(Read::Check(i, slot)) => self.check(i, slot).await,
        }
    }

    /// Reads quote `slot` of symbol `i`: still resting (with what open), or gone (the slot frees).
    async fn check(&mut self, i: usize, slot: usize) -> anyhow::Result<()> {
        let Some(live) = self.books[i].slots[slot].clone() else { return Ok(()) };
        let now = Instant::now();
        self.books[i].check_at[slot] = now + CHECK_EVERY;
        let path = format!("/api/v1/orders/{}", live.order_id);
        let Some(a) = self.order_call(Who::Maker, "check", Method::GET, &path, None).await? else {
            return Ok(());
        };
        if a.status == 404 {
            let b = &mut self.books[i];
            if now.duration_since(b.placed[slot]) >= UNKNOWN_AFTER {
                tracing::warn!(symbol = %b.market.symbol, order_id = %live.order_id, "a quote the exchange does not know: placing anew");
                b.slots[slot] = None;
            } else {
                b.check_at[slot] = now + Duration::from_secs(1);
            }
            return Ok(());
        }
        if !a.ok() {
            self.refused(i, "check", &a);
            return Ok(());
        }
        let b = &mut self.books[i];
        match client::read_order(&b.market, &a.body) {
            Ok(OrderView::Open { price, open_lots }) if open_lots > 0 => {
                b.slots[slot] = Some(Live { order_id: live.order_id, price, lots: open_lots });
            }
            Ok(OrderView::Open { .. }) => b.slots[slot] = None,
            Ok(OrderView::Done { status, reason }) => {
                b.slots[slot] = None;
                if status == "rejected" {
                    self.metrics.error("rejected");
                    let reason = reason.unwrap_or_default();
                    tracing::info!(symbol = %b.market.symbol, order_id = %live.order_id, reason, "a quote was rejected");
                    match reason.as_str() {
                        "halted" => self.seems_halted(i, false),
                        // The market is elsewhere: read where it is.
                        "price_band" | "post_only_would_take" => {
                            b.center_at = now;
                            self.symbols_at = now;
                        }
                        _ => {}
                    }
                } else {
                    tracing::debug!(symbol = %b.market.symbol, order_id = %live.order_id, status, "a quote is gone");
                }
            }
            Err(e) => {
                tracing::warn!(symbol = %b.market.symbol, order_id = %live.order_id, "reading a quote: {e}");
            }
        }
        Ok(())
    }

    /// A line of totals.
    fn summary(&self) {
        let m = &self.metrics;
        tracing::info!(
            place = m.actions_of("place"),
            amend = m.actions_of("amend"),
            cancel = m.actions_of("cancel"),
            cross = m.actions_of("cross"),
            errors = m.errors_total(),
            resting = self.books.iter().map(Book::resting).sum::<usize>(),
            "totals"
        );
    }

    /// Cancels every resting quote, concurrently, within what is left of [`STOP_BUDGET`].
    async fn stop(&mut self) {
        let ids: Vec<String> =
            self.books.iter().flat_map(|b| b.slots.iter().flatten().map(|l| l.order_id.clone())).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for id in &ids {
            let (api, key, path) =
                (self.api.clone(), self.maker.api_key.clone(), format!("/api/v1/orders/{id}"));
            tasks.spawn(async move { api.call("cancel", Method::DELETE, &path, Some(&key), None).await });
        }
        let (mut canceled, mut gone) = (0u64, 0u64);
        let all = async {
            while let Some(done) = tasks.join_next().await {
                match done {
                    Ok(Ok(a)) if a.ok() => canceled += 1,
                    Ok(Ok(a)) if a.status == 404 => gone += 1,
                    _ => {}
                }
            }
        };
        let finished = tokio::time::timeout(STOP_BUDGET, all).await.is_ok();
        self.metrics.actions.with_label_values(&["cancel"]).inc_by(canceled);
        self.summary();
        if finished {
            tracing::info!(quotes = ids.len(), canceled, gone, "stopped: quotes canceled");
        } else {
            tracing::warn!(
                quotes = ids.len(),
                canceled,
                gone,
                "stopped: not every cancel was answered in time"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_order_ids_are_unique_and_fit_the_alphabet() {
        let mut ids = Ids::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        // Sixteen digits of counter still fit: ten billion years at the fastest rate.
        ids.n = 9_999_999_999_999_998;
        let longest = ids.next();
        for id in [a, b, longest] {
            assert!(id.len() <= 32, "{id}");
            assert!(id.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-~".contains(&c)), "{id}");
        }
    }

    #[test]
    fn books_know_their_sides() {
        let m = Market::new("ABC", "0.01", "1", 1_000, "100.00", None).unwrap();
        let s = Shape::new(&m, 2, 10, 2).unwrap();
        let mut b = Book::new(m, s, Instant::now());
        assert_eq!((Book::side(0), Book::side(1), Book::side(2)), (Side::Buy, Side::Sell, Side::Buy));
        assert!(!b.two_sided());
        b.slots[2] = Some(Live { order_id: "1".into(), price: 9_990, lots: 1 });
        assert!(!b.two_sided());
        b.slots[1] = Some(Live { order_id: "2".into(), price: 10_005, lots: 1 });
        assert!(b.two_sided());
        assert_eq!(b.resting(), 2);
    }
}

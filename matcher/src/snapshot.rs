//! Book snapshots (DESIGN.md §3 "Snapshots"): what a book's state is, how it is written to a
//! file, and how the newest good file is found again. Recovery loads the newest valid snapshot,
//! restores its books ([`crate::Engine::restore_all`]) and replays each partition of the `orders`
//! log from the snapshot's offset instead of from the beginning.
//!
//! # Logical images, not memory dumps
//! A [`BookImage`] holds a book's state as the rules see it: resting orders by level, best first,
//! in queue order; the ended client ids of the duplicate window, oldest first; the sequence
//! number, reference price and halt flag. Slab slots, hash-table layout, interned account ids and
//! free lists are not in it: they do not change what the book does, and leaving them out lets the
//! in-memory layout change without invalidating old snapshots. A book restored from an image
//! emits, for the same commands, byte-identical events (`tests/snapshot.rs` checks it).
//! Configuration — band width, tick, capacities — is not state: a restored book takes it from
//! the running configuration. The symbol's name travels with the image, so a reordered symbol
//! table is refused rather than mapped onto the wrong book.
//!
//! # File format, version 1
//! Little-endian throughout; `str` is a `u8` length (1–32) and that many ASCII bytes (an account
//! or client order id).
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `TLSNAP\0\0` |
//! | 4 | `u32` format version ([`VERSION`]); these first 12 bytes never change meaning |
//! | 8 | `u64` payload length *n* |
//! | *n* | payload, below |
//! | 4 | `u32` CRC-32 (IEEE, as zlib and gzip) of every byte before it |
//!
//! Payload:
//! - `u32` partition count, then per partition, ascending: `i32` partition, `i64` next offset to
//!   replay from.
//! - `u32` book count, then per book, by (partition, symbol): `i32` partition, `u32` symbol id,
//!   `u32` name length and the name (UTF-8), `u64` sequence number, `i64` reference price, `u8`
//!   halted (0 or 1); the bids, then the asks, each as `u32` level count and per level, best
//!   first: `i64` price, `u32` order count, per order in queue order: `u64` exchange id, `str`
//!   account, `str` client order id, `u64` open quantity, `u8` flags (bit 0: post-only; the
//!   others zero); then `u32` window length and per ended id, oldest first: `str` account, `str`
//!   client order id.
//! - `u64` length and the opaque `extra` bytes (the runtime's own state, carried as is).
//!
//! [`encode`] is deterministic: the same state gives the same bytes. [`decode`] never panics
//! and trusts nothing: a wrong magic, an unknown version, a short file, a checksum mismatch or a
//! payload that breaks a rule above or an image invariant ([`BookImage::check`]) is an `Err`.
//! A later version changes the version number, and `decode` learns to read both.
//!
//! # Files
//! [`write()`] names a file `snapshot-<unix ms, 13 digits>-<counter, 6 digits>-<partitions>.tlsnap`
//! and writes it atomically (temporary file, fsync, rename, fsync of the directory), so a crash
//! leaves either the whole file or none. The partition tag (`p0.3`, or a hash when the list is
//! long) keeps instances that share a directory apart; they own disjoint partitions. [`prune`]
//! keeps the newest few of each partition; [`load_newest`] tries the newest first and skips, with
//! the reason, every file that is not a valid snapshot.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Account, ClientOrderId, OrderId, Price, Qty, ShortStr, Side, SymbolId};

use crate::book::MAX_ORDER_QTY;

/// The first bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"TLSNAP\0\0";

/// The format version [`encode`] writes and [`decode`] reads.
pub const VERSION: u32 = 1;

/// Magic, version and payload length.
const HEADER: usize = 8 + 4 + 8;

/// The checksum after the payload.
const TRAILER: usize = 4;

/// One resting order in a [`BookImage`]; its side and price are its level's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderImage {
    /// Its exchange id.
    pub id: OrderId,
    /// Its owner.
    pub account: Account,
    /// Its owner's handle: taken while the order is open.
    pub client_order_id: ClientOrderId,
    /// Its open quantity, 1 to [`MAX_ORDER_QTY`] lots.
    pub leaves: Qty,
    /// Post-only: a replace that would cross is refused.
    pub post_only: bool,
}

/// The orders resting at one price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LevelImage {
    /// The price.
    pub price: Price,
    /// Its orders in time priority, the next to trade first; never empty.
    pub orders: Vec<OrderImage>,
}

/// One book's state, logically ([module docs](self)): everything that decides what the book does
/// next and what it shows, nothing of how it is laid out in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BookImage {
    /// The book's symbol index.
    pub symbol: SymbolId,
    /// The symbol's configured name: restoring checks it against the running configuration.
    pub name: String,
    /// The last event sequence number used: the next event is `seq + 1`.
    pub seq: u64,
    /// The price band's centre: the last trade price, or the configured or admin-set reference.
    pub reference: Price,
    /// Whether new orders and replaces are refused.
    pub halted: bool,
    /// Buy levels, best (highest) first.
    pub bids: Vec<LevelImage>,
    /// Sell levels, best (lowest) first.
    pub asks: Vec<LevelImage>,
    /// Ended client ids still in the duplicate window, oldest (next to leave) first. The ids of
    /// open orders are taken too; they are implied by the resting orders.
    pub window: Vec<(Account, ClientOrderId)>,
}

impl BookImage {
    /// Every resting order with its side and price: bids then asks, best level first, queue order.
    pub fn orders(&self) -> impl Iterator<Item = (Side, Price, &OrderImage)> + '_ {
        side_orders(Side::Buy, &self.bids).chain(side_orders(Side::Sell, &self.asks))
    }

    /// Checks that the image could be a book's: levels at positive prices, strictly best first,
    /// none empty; open quantities within 1..=[`MAX_ORDER_QTY`]; not crossed; order ids unique;
    /// client ids unique among open orders and the window. Needs no configuration ([`decode`]
    /// runs it; [`crate::Engine::restore`] also checks the image against the configuration).
    pub fn check(&self) -> Result<(), SnapshotError> {
        let symbol = self.symbol.0;
        let invalid = |what: String| Err(SnapshotError::Invalid(format!("symbol {symbol}: {what}")));
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        for (side, levels) in [(Side::Buy, &self.bids), (Side::Sell, &self.asks)] {
            let mut previous: Option<Price> = None;
            for level in levels {
                let price = level.price;
                if price.0 <= 0 {
                    return invalid(format!("{} level at price {}", side.as_str(), price.0));
                }
                let worse = |p: Price| match side {
                    Side::Buy => price < p,
                    Side::Sell => price > p,
                };
                if previous.is_some_and(|p| !worse(p)) {
                    return invalid(format!(
                        "{} levels not strictly best first at {}",
                        side.as_str(),
                        price.0
                    ));
                }
                previous = Some(price);
                if level.orders.is_empty() || u32::try_from(level.orders.len()).is_err() {
                    return invalid(format!(
                        "{} level {} has {} orders",
                        side.as_str(),
                        price.0,
                        level.orders.len()
                    ));
                }
                for o in &level.orders {
                    if o.leaves.is_zero() || o.leaves > MAX_ORDER_QTY {
                        return invalid(format!("order {} has {} lots open", o.id.0, o.leaves.0));
                    }
                    if !ids.insert(o.id) {
                        return invalid(format!("order {} rests twice", o.id.0));
                    }
                    if !keys.insert((o.account, o.client_order_id)) {
                        return invalid(format!("client id {}/{} open twice", o.account, o.client_order_id));
                    }
                }
            }
        }
        if let (Some(bid), Some(ask)) = (self.bids.first(), self.asks.first()) {
            if bid.price >= ask.price {
                return invalid(format!("crossed: bid {} >= ask {}", bid.price.0, ask.price.0));
            }
        }
        for (account, id) in &self.window {
            if !keys.insert((*account, *id)) {
                return invalid(format!("client id {account}/{id} taken twice (window)"));
            }
        }
        Ok(())
    }
}

/// One side's orders with their side and price, best level first, queue order.
fn side_orders(side: Side, levels: &[LevelImage]) -> impl Iterator<Item = (Side, Price, &OrderImage)> + '_ {
    levels.iter().flat_map(move |l| l.orders.iter().map(move |o| (side, l.price, o)))
}

/// What one snapshot file holds: the books of some partitions and where their replay resumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Partition → the next offset of the `orders` log to replay, for every partition covered.
    /// [`encode`] sorts them; a partition may appear once.
    pub offsets: Vec<(i32, i64)>,
    /// The books, each with the partition its symbol lives in (which must be in `offsets`).
    /// [`encode`] sorts them by (partition, symbol); a symbol may appear once.
    pub books: Vec<(i32, BookImage)>,
    /// Opaque bytes carried as they are: the runtime's own state at the same point (the I/O
    /// thread's projection).
    pub extra: Vec<u8>,
}

/// Why a snapshot could not be read or restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotError {
    /// The file does not start with [`MAGIC`]: not a snapshot.
    BadMagic,
    /// A format version this build cannot read.
    UnknownVersion(u32),
    /// The file ends before its header or payload and checksum do.
    Truncated,
    /// The bytes are not the ones written: the checksum does not match.
    Checksum {
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// Well-formed bytes that break a rule of the format, or an image that cannot be a book (or
    /// not this engine's): says which rule.
    Invalid(String),
    /// Reading the file failed.
    Io(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::BadMagic => f.write_str("not a snapshot file (bad magic bytes)"),
            SnapshotError::UnknownVersion(v) => write!(f, "unknown snapshot format version {v}"),
            SnapshotError::Truncated => f.write_str("snapshot file is truncated"),
            SnapshotError::Checksum { stored, computed } => {
                write!(f, "snapshot checksum mismatch: stored {stored:08x}, computed {computed:08x}")
            }
            SnapshotError::Invalid(why) => write!(f, "invalid snapshot: {why}"),
            SnapshotError::Io(why) => write!(f, "cannot read snapshot: {why}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

fn invalid<T>(why: impl Into<String>) -> Result<T, SnapshotError> {
    Err(SnapshotError::Invalid(why.into()))
}

// ---- CRC-32 ------------------------------------------------------------------------------------

/// The CRC-32 (IEEE 802.3, reflected polynomial `0xEDB88320`) table, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 of `bytes`, as zlib's `crc32` computes it. A byte at a time: a snapshot of a few
/// megabytes takes milliseconds, and needs no dependency.
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, &b| CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8))
}

// ---- encoding ----------------------------------------------------------------------------------

/// Appends little-endian fields.
struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.bytes(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    /// A count: every list of the format is far below 2^32 entries (a `u32` would not count a
    /// level's orders otherwise), so saturating here only ever turns a broken state into a
    /// file [`decode`] refuses.
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &ShortStr) {
        let s = s.as_str().as_bytes();
        // A `ShortStr` holds at most 32 bytes.
        self.u8(s.len() as u8);
        self.bytes(s);
    }
}

/// The snapshot as a file's bytes ([module docs](self)). Deterministic: partitions and books
/// are written sorted, so the same state always gives the same bytes.
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(4096));
    w.bytes(&MAGIC);
    w.u32(VERSION);
    w.u64(0); // the payload length, filled in below
    let mut offsets = snapshot.offsets.clone();
    offsets.sort_unstable();
    w.count(offsets.len());
    for (partition, offset) in offsets {
        w.i32(partition);
        w.i64(offset);
    }
    let mut books: Vec<&(i32, BookImage)> = snapshot.books.iter().collect();
    books.sort_by_key(|(partition, book)| (*partition, book.symbol.0));
    w.count(books.len());
    for (partition, book) in books {
        w.i32(*partition);
        w.u32(book.symbol.0);
        w.count(book.name.len());
        w.bytes(book.name.as_bytes());
        w.u64(book.seq);
        w.i64(book.reference.0);
        w.u8(u8::from(book.halted));
        for levels in [&book.bids, &book.asks] {
            w.count(levels.len());
            for level in levels {
                w.i64(level.price.0);
                w.count(level.orders.len());
                for o in &level.orders {
                    w.u64(o.id.0);
                    w.str(&o.account);
                    w.str(&o.client_order_id);
                    w.u64(o.leaves.0);
                    w.u8(u8::from(o.post_only));
                }
            }
        }
        w.count(book.window.len());
        for (account, id) in &book.window {
            w.str(account);
            w.str(id);
        }
    }
    w.u64(snapshot.extra.len() as u64);
    w.bytes(&snapshot.extra);
    let mut bytes = w.0;
    let payload = (bytes.len() - HEADER) as u64;
    bytes[12..HEADER].copy_from_slice(&payload.to_le_bytes());
    let crc = crc32(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

// ---- decoding ----------------------------------------------------------------------------------

/// Reads little-endian fields from a payload whose checksum matched: running out means the
/// writer broke the format, so it is [`SnapshotError::Invalid`], not `Truncated`.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        match self.pos.checked_add(n).and_then(|end| self.bytes.get(self.pos..end)) {
            Some(b) => {
                self.pos += n;
                Ok(b)
            }
            None => invalid(format!("payload ends inside a field at byte {}", self.pos)),
        }
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        self.array().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Result<u64, SnapshotError> {
        self.array().map(u64::from_le_bytes)
    }
    fn i32(&mut self) -> Result<i32, SnapshotError> {
        self.array().map(i32::from_le_bytes)
    }
    fn i64(&mut self) -> Result<i64, SnapshotError> {
        self.array().map(i64::from_le_bytes)
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    /// A count of entries at least `min` bytes each: never more than the rest of the payload
    /// could hold, so a bad count cannot make a huge allocation.
    fn count(&mut self, min: usize) -> Result<usize, SnapshotError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min) > self.remaining() {
            return invalid(format!("a count of {n} at byte {} exceeds the payload", self.pos - 4));
        }
        Ok(n)
    }
    fn str(&mut self) -> Result<ShortStr, SnapshotError> {
        let len = usize::from(self.u8()?);
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes).ok().map(ShortStr::new) {
            Some(Ok(s)) => Ok(s),
            _ => invalid(format!("not an id at byte {}", self.pos - len)),
        }
    }
    fn flag(&mut self, what: &str) -> Result<bool, SnapshotError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => invalid(format!("{what} is {v}, not 0 or 1")),
        }
    }
}

/// Reads a snapshot file's bytes. Never panics, whatever the bytes: each way they can be wrong
/// is a [`SnapshotError`] ([module docs](self)).
pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    if bytes.len() < MAGIC.len() {
        return Err(if MAGIC.starts_with(bytes) {
            SnapshotError::Truncated
        } else {
            SnapshotError::BadMagic
        });
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let Some(header) = bytes.get(..HEADER) else { return Err(SnapshotError::Truncated) };
    let mut r = Reader { bytes: header, pos: MAGIC.len() };
    let version = r.u32()?;
    if version != VERSION {
        return Err(SnapshotError::UnknownVersion(version));
    }
    let payload = r.u64()?;
    let total = usize::try_from(payload).ok().and_then(|n| n.checked_add(HEADER + TRAILER));
    let Some(total) = total.filter(|&total| total <= bytes.len()) else {
        return Err(SnapshotError::Truncated);
    };
    if bytes.len() > total {
        return invalid(format!("{} bytes after the checksum", bytes.len() - total));
    }
    let body = &bytes[..total - TRAILER];
    let mut stored = [0; TRAILER];
    stored.copy_from_slice(&bytes[total - TRAILER..]);
    let (stored, computed) = (u32::from_le_bytes(stored), crc32(body));
    if stored != computed {
        return Err(SnapshotError::Checksum { stored, computed });
    }
    let mut r = Reader { bytes: &body[HEADER..], pos: 0 };
    let snapshot = payload_v1(&mut r)?;
    if r.remaining() != 0 {
        return invalid(format!("{} bytes after the payload's last field", r.remaining()));
    }
    Ok(snapshot)
}

/// Version 1's payload.
fn payload_v1(r: &mut Reader<'_>) -> Result<Snapshot, SnapshotError> {
    let n = r.count(12)?;
    let mut offsets: Vec<(i32, i64)> = Vec::with_capacity(n);
    for _ in 0..n {
        let (partition, offset) = (r.i32()?, r.i64()?);
        if offsets.last().is_some_and(|&(last, _)| last >= partition) {
            return invalid(format!("partition {partition} out of order or repeated"));
        }
        offsets.push((partition, offset));
    }
    let n = r.count(41)?;
    let mut books: Vec<(i32, BookImage)> = Vec::with_capacity(n);
    let mut symbols = HashSet::with_capacity(n);
    for _ in 0..n {
        let partition = r.i32()?;
        let symbol = SymbolId(r.u32()?);
        if books.last().is_some_and(|(last, b)| (*last, b.symbol.0) >= (partition, symbol.0)) {
            return invalid(format!("book of symbol {} out of order", symbol.0));
        }
        if !symbols.insert(symbol) {
            return invalid(format!("symbol {} in two partitions", symbol.0));
        }
        if offsets.binary_search_by_key(&partition, |&(p, _)| p).is_err() {
            return invalid(format!("symbol {}'s partition {partition} has no offset", symbol.0));
        }
        let len = r.count(1)?;
        let name = match std::str::from_utf8(r.take(len)?) {
            Ok(name) => name.to_owned(),
            Err(_) => return invalid(format!("symbol {}'s name is not UTF-8", symbol.0)),
        };
        let (seq, reference, halted) = (r.u64()?, Price(r.i64()?), r.flag("halted")?);
        let (bids, asks) = (levels(r)?, levels(r)?);
        let n = r.count(4)?;
        let mut window = Vec::with_capacity(n);
        for _ in 0..n {
            window.push((r.str()?, r.str()?));
        }
        let book = BookImage { symbol, name, seq, reference, halted, bids, asks, window };
        book.check()?;
        books.push((partition, book));
    }
    let len = r.u64()?;
    let Some(len) = usize::try_from(len).ok().filter(|&len| len <= r.remaining()) else {
        return invalid(format!("extra of {len} bytes exceeds the payload"));
    };
    let extra = r.take(len)?.to_vec();
    Ok(Snapshot { offsets, books, extra })
}

/// One side's levels.
fn levels(r: &mut Reader<'_>) -> Result<Vec<LevelImage>, SnapshotError> {
    let n = r.count(12)?;
    let mut levels = Vec::with_capacity(n);
    for _ in 0..n {
        let price = Price(r.i64()?);
        let n = r.count(21)?;
        let mut orders = Vec::with_capacity(n);
        for _ in 0..n {
            let (id, account, client_order_id, leaves) =
                (OrderId(r.u64()?), r.str()?, r.str()?, Qty(r.u64()?));
            let post_only = r.flag("an order's flags")?;
            orders.push(OrderImage { id, account, client_order_id, leaves, post_only });
        }
        levels.push(LevelImage { price, orders });
    }
    Ok(levels)
}

// ---- files ---------------------------------------------------------------------------------------

/// Snapshot file names start with this.
const PREFIX: &str = "snapshot-";

/// And end with this.
const SUFFIX: &str = ".tlsnap";

/// Temporary files end with this; they are never read.
const TMP: &str = ".tmp";

/// A temporary file this much older than now is a crashed writer's: [`prune`] removes it.
const STALE_TMP: Duration = Duration::from_secs(600);

/// Tells apart files one process writes within the same millisecond.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The partition tag of a file name: `p` and the partitions, dot-separated (`p0.3.7`), or, when
/// that would make a long name, `h` and the CRC-32 of the list.
fn tag(snapshot: &Snapshot) -> String {
    let mut partitions: Vec<i32> = snapshot.offsets.iter().map(|&(p, _)| p).collect();
    partitions.sort_unstable();
    partitions.dedup();
    let list: Vec<String> = partitions.iter().map(i32::to_string).collect();
    let tag = format!("p{}", list.join("."));
    if tag.len() <= 64 {
        return tag;
    }
    let bytes: Vec<u8> = partitions.iter().flat_map(|p| p.to_le_bytes()).collect();
    format!("h{:08x}", crc32(&bytes))
}

/// A snapshot file's name parsed: (unix ms, counter, tag); `None` for any other file.
fn parse_name(name: &str) -> Option<(u64, u64, &str)> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    let mut parts = rest.splitn(3, '-');
    let ms = parts.next()?.parse().ok()?;
    let counter = parts.next()?.parse().ok()?;
    let tag = parts.next()?;
    Some((ms, counter, tag))
}

/// The snapshot files in `dir`, oldest first.
fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some((ms, counter, tag)) = name.to_str().and_then(parse_name) {
            files.push(((ms, counter, tag.to_owned()), entry.path()));
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, path)| path).collect())
}

/// Writes `snapshot` into `dir` (created if missing) as a new file, atomically: a temporary
/// file is written and fsynced, renamed to its final name, and the directory fsynced, so the
/// file is either complete or absent after a crash. Returns its path. Names sort by time, so
/// the newest is last ([module docs](self)).
pub fn write(dir: &Path, snapshot: &Snapshot) -> io::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let bytes = encode(snapshot);
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed) % 1_000_000;
    let name = format!("{PREFIX}{ms:013}-{counter:06}-{}{SUFFIX}", tag(snapshot));
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.{}{TMP}", std::process::id()));
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Deletes old snapshot files in `dir`, keeping the newest `keep` of every partition (a file
/// whose tag is a hash counts as its own partition); also deletes temporary files left by a
/// writer that crashed. Returns what it deleted. It reads no file, so a corrupt newest file
/// counts as one of the `keep`: keep at least 2. Missing `dir`: nothing to do.
pub fn prune(dir: &Path, keep: usize) -> io::Result<Vec<PathBuf>> {
    let files = match list(dir) {
        Ok(files) => files,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut kept: HashMap<String, usize> = HashMap::new();
    let mut removed = Vec::new();
    for path in files.into_iter().rev() {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some((_, _, tag)) = parse_name(name) else { continue };
        let covers: Vec<String> = match tag.strip_prefix('p') {
            Some(list) if !list.is_empty() => list.split('.').map(|p| format!("p{p}")).collect(),
            _ => vec![tag.to_owned()],
        };
        if covers.iter().any(|p| kept.get(p).copied().unwrap_or(0) < keep) {
            for p in covers {
                *kept.entry(p).or_default() += 1;
            }
        } else if remove(&path)? {
            removed.push(path);
        }
    }
    let now = SystemTime::now();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let ours = name.to_str().is_some_and(|n| n.starts_with(&format!(".{PREFIX}")) && n.ends_with(TMP));
        if !ours {
            continue;
        }
        let stale = entry.metadata()?.modified()?;
        if now.duration_since(stale).is_ok_and(|age| age > STALE_TMP) && remove(&entry.path())? {
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// Deletes a file; `false` if it was gone already (another instance pruning the same directory).
fn remove(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A snapshot [`load_newest`] found, and its file.
pub type Loaded = (PathBuf, Snapshot);

/// A file [`load_newest`] passed over, and why.
pub type Skipped = (PathBuf, SnapshotError);

/// The newest snapshot in `dir` that decodes and that `wants` accepts (say, one that covers
/// the partitions this instance owns), with its path; and every file skipped because it could
/// not be read or decoded, newest first, with the reason (for the log). Files `wants` turns down
/// are passed over silently. A missing `dir` is a first start: nothing, no error.
pub fn load_newest(dir: &Path, wants: impl Fn(&Snapshot) -> bool) -> (Option<Loaded>, Vec<Skipped>) {
    let mut skipped = Vec::new();
    let files = match list(dir) {
        Ok(files) => files,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (None, skipped),
        Err(e) => {
            skipped.push((dir.to_path_buf(), SnapshotError::Io(e.to_string())));
            return (None, skipped);
        }
    };
    for path in files.into_iter().rev() {
        match fs::read(&path).map_err(|e| SnapshotError::Io(e.to_string())).and_then(|b| decode(&b)) {
            Ok(snapshot) if wants(&snapshot) => return (Some((path, snapshot)), skipped),
            Ok(_) => {}
            Err(e) => skipped.push((path, e)),
        }
    }
    (None, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ShortStr {
        ShortStr::new(s).unwrap()
    }

    fn order(n: u64, account: &str, client: &str, leaves: u64) -> OrderImage {
        OrderImage {
            id: OrderId(n),
            account: id(account),
            client_order_id: id(client),
            leaves: Qty(leaves),
            post_only: n.is_multiple_of(2),
        }
    }

    fn image() -> BookImage {
        BookImage {
            symbol: SymbolId(0),
            name: "ABC".into(),
            seq: 42,
            reference: Price(100),
            halted: false,
            bids: vec![
                LevelImage { price: Price(99), orders: vec![order(1, "a", "c1", 5), order(2, "b", "c1", 3)] },
                LevelImage { price: Price(98), orders: vec![order(3, "a", "c2", 1)] },
            ],
            asks: vec![LevelImage { price: Price(101), orders: vec![order(4, "anonymous", "x", 7)] }],
            window: vec![(id("a"), id("c0")), (id("b"), id("c9"))],
        }
    }

    fn snapshot() -> Snapshot {
        let mut other = image();
        other.symbol = SymbolId(1);
        other.name = "DEF".into();
        other.halted = true;
        Snapshot {
            offsets: vec![(3, 7), (0, 120)],
            books: vec![(3, other), (0, image())],
            extra: b"projection".to_vec(),
        }
    }

    /// The payload's first byte: flipping bytes there and re-sealing the checksum reaches the
    /// payload's own checks.
    fn reseal(bytes: &mut [u8]) {
        let n = bytes.len() - TRAILER;
        let crc = crc32(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
    }

    fn invalid_containing(bytes: &[u8], what: &str) {
        match decode(bytes) {
            Err(SnapshotError::Invalid(why)) => assert!(why.contains(what), "{why:?} lacks {what:?}"),
            other => panic!("expected Invalid({what}), got {other:?}"),
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn round_trips_sorted_and_deterministic() {
        let s = snapshot();
        let bytes = encode(&s);
        assert_eq!(&bytes[..8], b"TLSNAP\0\0");
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), VERSION);
        let back = decode(&bytes).unwrap();
        let mut sorted = s.clone();
        sorted.offsets.sort_unstable();
        sorted.books.sort_by_key(|(p, b)| (*p, b.symbol.0));
        assert_eq!(back, sorted);
        assert_eq!(encode(&back), bytes, "same state, same bytes");
        assert_eq!(decode(&encode(&Snapshot::default())).unwrap(), Snapshot::default());
    }

    #[test]
    fn header_errors() {
        let bytes = encode(&snapshot());
        assert_eq!(decode(b""), Err(SnapshotError::Truncated));
        assert_eq!(decode(b"TLS"), Err(SnapshotError::Truncated));
        assert_eq!(decode(b"PK\x03\x04 zip"), Err(SnapshotError::BadMagic));
        assert_eq!(decode(b"{\"v\": 1, \"type\": \"snapshot\"}"), Err(SnapshotError::BadMagic));
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert_eq!(decode(&v2), Err(SnapshotError::UnknownVersion(2)));
        assert_eq!(decode(&bytes[..15]), Err(SnapshotError::Truncated));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), Err(SnapshotError::Truncated));
        let mut long = bytes.clone();
        long.push(0);
        invalid_containing(&long, "after the checksum");
        let mut huge = bytes.clone();
        huge[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(decode(&huge), Err(SnapshotError::Truncated));
        let mut flipped = bytes.clone();
        flipped[HEADER + 5] ^= 1;
        assert!(matches!(decode(&flipped), Err(SnapshotError::Checksum { .. })));
    }

    /// Payloads that pass the checksum but break the format's rules or an image invariant.
    #[test]
    fn payload_errors() {
        let encode_with = |edit: &dyn Fn(&mut Snapshot)| {
            let mut s = snapshot();
            edit(&mut s);
            encode(&s)
        };
        invalid_containing(&encode_with(&|s| s.offsets.push((0, 1))), "partition 0 out of order");
        invalid_containing(&encode_with(&|s| s.books[0].0 = 5), "has no offset");
        invalid_containing(&encode_with(&|s| s.books[0].1.symbol = SymbolId(0)), "symbol 0 in two");
        invalid_containing(&encode_with(&|s| s.books[1].1.bids.swap(0, 1)), "not strictly best first");
        invalid_containing(&encode_with(&|s| s.books[1].1.asks[0].price = Price(99)), "crossed");
        invalid_containing(&encode_with(&|s| s.books[1].1.bids[0].orders.clear()), "has 0 orders");
        invalid_containing(&encode_with(&|s| s.books[1].1.bids[0].orders[0].leaves = Qty(0)), "0 lots");
        invalid_containing(
            &encode_with(&|s| s.books[1].1.bids[1].orders[0].leaves = Qty((1 << 32) + 1)),
            "lots open",
        );
        invalid_containing(&encode_with(&|s| s.books[1].1.asks[0].orders[0].id = OrderId(1)), "rests twice");
        invalid_containing(
            &encode_with(&|s| s.books[1].1.bids[1].orders[0].client_order_id = id("c1")),
            "open twice",
        );
        invalid_containing(&encode_with(&|s| s.books[1].1.window.push((id("a"), id("c2")))), "(window)");
        invalid_containing(&encode_with(&|s| s.books[1].1.bids[1].price = Price(0)), "at price 0");

        // Hand-made bad bytes, with the checksum re-sealed.
        let bytes = encode(&snapshot());
        let mut name = bytes.clone();
        let at = name.windows(3).position(|w| w == b"ABC").unwrap();
        name[at] = 0xFF;
        reseal(&mut name);
        invalid_containing(&name, "not UTF-8");
        let mut halted = bytes.clone();
        halted[at + 3 + 16] = 2; // after the name: seq, reference, then halted
        reseal(&mut halted);
        invalid_containing(&halted, "halted is 2");
        let mut count = bytes.clone();
        count[HEADER..HEADER + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        reseal(&mut count);
        invalid_containing(&count, "exceeds the payload");
        let mut bad_id = bytes.clone();
        let at = bad_id.windows(2).position(|w| w == b"c1").unwrap();
        bad_id[at] = b':';
        reseal(&mut bad_id);
        invalid_containing(&bad_id, "not an id");
        let mut short = bytes[..bytes.len() - TRAILER - 3].to_vec();
        let payload = (short.len() - HEADER) as u64;
        short[12..HEADER].copy_from_slice(&payload.to_le_bytes());
        short.extend([0; TRAILER]);
        reseal(&mut short);
        assert!(matches!(decode(&short), Err(SnapshotError::Invalid(_))), "{:?}", decode(&short));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_an_error() {
        let bytes = encode(&snapshot());
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "a prefix of {n} bytes decoded");
        }
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode(&b).is_err(), "bit {i} flipped decoded");
        }
    }

    proptest::proptest! {
        /// Arbitrary bytes, with or without a valid header and checksum around them, never panic.
        #[test]
        fn random_bytes_never_panic(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
            framed in proptest::bool::ANY,
        ) {
            let mut bytes = body.clone();
            if framed {
                bytes = MAGIC.to_vec();
                bytes.extend(VERSION.to_le_bytes());
                bytes.extend((body.len() as u64).to_le_bytes());
                bytes.extend(&body);
                bytes.extend(crc32(&bytes).to_le_bytes());
            }
            let _ = decode(&bytes);
        }

        /// Random edits of a valid snapshot's payload, re-sealed so they reach the payload checks.
        #[test]
        fn edited_payloads_never_panic(
            edits in proptest::collection::vec((proptest::num::usize::ANY, proptest::num::u8::ANY), 1..6),
        ) {
            let mut bytes = encode(&snapshot());
            let payload = bytes.len() - HEADER - TRAILER;
            for (at, value) in edits {
                bytes[HEADER + at % payload] = value;
            }
            reseal(&mut bytes);
            if let Ok(s) = decode(&bytes) {
                for (_, book) in &s.books {
                    proptest::prop_assert!(book.check().is_ok());
                }
            }
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tlsnap-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn load_newest_skips_a_corrupt_newest_file_and_uses_the_older_one() {
        let dir = temp_dir("load");
        assert_eq!(load_newest(&dir, |_| true), (None, vec![]), "no directory yet: a first start");
        let mut old = snapshot();
        old.extra = b"old".to_vec();
        let old_path = write(&dir, &old).unwrap();
        let new_path = write(&dir, &snapshot()).unwrap();
        assert!(new_path > old_path, "{new_path:?} sorts after {old_path:?}");
        let (found, skipped) = load_newest(&dir, |_| true);
        assert_eq!(found.map(|(p, s)| (p, s.extra)), Some((new_path.clone(), b"projection".to_vec())));
        assert!(skipped.is_empty());

        // Corrupt the newest: one byte of its payload.
        let mut bytes = fs::read(&new_path).unwrap();
        bytes[HEADER + 1] ^= 0x10;
        fs::write(&new_path, &bytes).unwrap();
        // A truncated one, newer still, and files that are not snapshots.
        let truncated = dir.join("snapshot-9999999999998-000000-p0.3.tlsnap");
        fs::write(&truncated, &encode(&snapshot())[..30]).unwrap();
        let future = dir.join("snapshot-9999999999999-000000-p0.3.tlsnap");
        let mut v9 = encode(&snapshot());
        v9[8] = 9;
        fs::write(&future, v9).unwrap();
        fs::write(dir.join("notes.txt"), "not a snapshot").unwrap();
        fs::write(dir.join(".snapshot-9999999999999-000001-p0.tlsnap.1.tmp"), "half").unwrap();

        let (found, skipped) = load_newest(&dir, |_| true);
        assert_eq!(found.map(|(p, s)| (p, s.extra)), Some((old_path.clone(), b"old".to_vec())));
        let reasons: Vec<_> = skipped.iter().map(|(p, e)| (p.clone(), e.clone())).collect();
        assert_eq!(reasons[0], (future, SnapshotError::UnknownVersion(9)));
        assert_eq!(reasons[1], (truncated, SnapshotError::Truncated));
        assert_eq!(reasons[2].0, new_path);
        assert!(matches!(reasons[2].1, SnapshotError::Checksum { .. }));
        assert_eq!(reasons.len(), 3);

        // `wants` turning every snapshot down: none found, only the bad ones reported.
        let (found, skipped) = load_newest(&dir, |s| s.offsets.iter().any(|&(p, _)| p == 9));
        assert!(found.is_none());
        assert_eq!(skipped.len(), 3);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prune_keeps_the_newest_of_every_partition() {
        let dir = temp_dir("prune");
        let covering = |partitions: &[i32]| Snapshot {
            offsets: partitions.iter().map(|&p| (p, 1)).collect(),
            ..Snapshot::default()
        };
        // Instance A owns 0 and 1, instance B owns 2; later A hands 1 over to B.
        let a = [write(&dir, &covering(&[0, 1])).unwrap(), write(&dir, &covering(&[0, 1])).unwrap()];
        let b = [write(&dir, &covering(&[2])).unwrap(), write(&dir, &covering(&[2])).unwrap()];
        let a2 = write(&dir, &covering(&[0])).unwrap();
        let b2 = write(&dir, &covering(&[1, 2])).unwrap();
        assert!(a[0].to_str().unwrap().ends_with("-p0.1.tlsnap"), "{:?}", a[0]);
        let removed = prune(&dir, 1).unwrap();
        // Partition 0's newest is a2, 1's and 2's b2: everything else goes.
        let mut want = vec![a[0].clone(), a[1].clone(), b[0].clone(), b[1].clone()];
        want.sort();
        let mut got = removed.clone();
        got.sort();
        assert_eq!(got, want);
        assert!(a2.exists() && b2.exists());
        assert_eq!(prune(&dir, 1).unwrap(), Vec::<PathBuf>::new());
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(prune(&dir, 1).unwrap(), Vec::<PathBuf>::new(), "no directory: nothing to do");
    }

    #[test]
    fn long_partition_lists_get_a_hashed_tag() {
        let many = Snapshot { offsets: (0..64).map(|p| (p, 0)).collect(), ..Snapshot::default() };
        let tag = tag(&many);
        assert!(tag.starts_with('h') && tag.len() == 9, "{tag}");
        assert_eq!(
            parse_name(&format!("snapshot-0000000000001-000002-{tag}.tlsnap")),
            Some((1, 2, tag.as_str()))
        );
        assert_eq!(parse_name("snapshot-x-000002-p0.tlsnap"), None);
    }
}

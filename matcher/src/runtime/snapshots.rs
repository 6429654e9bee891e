//! Book snapshots in the running matcher (DESIGN.md §3): taken by the book thread, written by
//! another thread once everything before them is persisted, loaded on start.
//!
//! - **Taking** ([`Taker`]): every `--snapshot-every` commands, between two commands, the book
//!   thread images the books it has touched ([`crate::Book::image`]) with the next offset of each
//!   partition, hands the images over a channel and pushes a marker into the I/O ring. That
//!   pause is the only one matching takes (`matcher_snapshot_pause_seconds`); it grows with the
//!   open orders and the duplicate windows, not with history. One snapshot is in flight at a time.
//! - **Writing** ([`Writer`]): the I/O thread meets the marker after it has written every output
//!   of the commands before it — so a snapshot never covers a command whose outputs are not
//!   persisted, and recovery from it loses none — adds its own projection (open orders' filled
//!   quantities, levels) and hands the whole to a short-lived thread that encodes it, writes it
//!   atomically and prunes old files ([`crate::snapshot`]).
//! - **Loading** ([`restore`]): on start, the newest file that decodes and restores; a corrupt,
//!   truncated or unknown-version file is logged and skipped (an older one is used, or the log
//!   from its start), never trusted. The consumer then starts each partition at the snapshot's
//!   offset instead of the beginning; below the group's committed offset it still replays.
//!
//! Where: files under `--snapshot-dir` (the run directory's `snapshots/` under `./lab up`), not
//! Redis. Redis is the read side, with retention, and may be down while a matcher restarts; a
//! file is local, atomic (rename) and survives a Redis wipe. Matchers that share the directory
//! tag their files by partition, so one that takes over a partition finds its snapshot.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use common::{Event, OrderId, SymbolTable};

use super::config::Config;
use super::metrics::Metrics;
use super::ownership::{Ownership, Reset};
use super::projection::Projection;
use crate::book::{Book, Capacity};
use crate::engine::Engine;
use crate::snapshot::{self, BookImage, Snapshot};

/// Snapshot files kept per partition (the newest may be the one a crash cut short).
pub const KEEP: usize = 3;

/// What the book thread took: the books it touched and where each partition stands.
#[derive(Debug)]
pub struct Taken {
    /// Partition → the next offset (every command below it is in the images).
    pub offsets: Vec<(i32, i64)>,
    /// Each touched book with the partition its commands come from.
    pub books: Vec<(i32, BookImage)>,
    /// Each partition's ownership generation when the images were taken: a partition given up
    /// since is left out of the file (the I/O thread dropped its outputs, so the images may
    /// cover commands nobody wrote).
    pub generations: Vec<(i32, u64)>,
}

/// The book thread's side: counts commands, knows each book's partition, takes the images.
#[derive(Debug)]
pub struct Taker {
    /// Commands between snapshots.
    every: u64,
    /// Commands since the last snapshot.
    since: u64,
    /// Per partition: the next offset (`-1`: nothing read from it yet).
    next: Vec<i64>,
    /// Per symbol: the partition its commands come from (`-1`: none yet).
    partition_of: Vec<i32>,
    /// To the I/O thread (`None`: no snapshots are taken).
    tx: Option<Sender<Taken>>,
    /// A snapshot is on its way to disk: no new one until it is written.
    busy: Arc<AtomicBool>,
    /// Which partitions are ours: only their books are imaged.
    owner: Arc<Ownership>,
    /// Per partition: the ownership generation its books were rebuilt under (taken over); they
    /// are current while it is the partition's generation now. `u64::MAX`: never.
    generations: Vec<u64>,
}

impl Taker {
    /// A taker for `symbols` books, resuming where `restored` left off (if it did).
    fn new(
        every: u64,
        symbols: usize,
        restored: Option<&Restored>,
        tx: Option<Sender<Taken>>,
        busy: Arc<AtomicBool>,
        owner: Arc<Ownership>,
    ) -> Taker {
        let mut taker = Taker {
            every: every.max(1),
            since: 0,
            next: Vec::new(),
            partition_of: vec![-1; symbols],
            tx,
            busy,
            // Alone, every partition is ours at generation 0 from the start.
            generations: vec![
                if owner.is_shared() { u64::MAX } else { 0 };
                super::ownership::MAX_PARTITIONS as usize
            ],
            owner,
        };
        if let Some(r) = restored {
            for &(p, next) in &r.offsets {
                taker.advance(p, next);
            }
            for &(symbol, p) in &r.partitions {
                if let Some(slot) = taker.partition_of.get_mut(symbol as usize) {
                    *slot = p;
                }
            }
        }
        taker
    }

    /// Records that `next` is now the next offset of partition `p`.
    fn advance(&mut self, p: i32, next: i64) {
        let Ok(i) = usize::try_from(p) else { return };
        if i >= self.next.len() {
            self.next.resize(i + 1, -1);
        }
        self.next[i] = self.next[i].max(next);
    }

    /// The book thread applied command `id`, whose events are `events`.
    #[inline]
    pub fn applied(&mut self, id: OrderId, events: &[Event]) {
        let p = i32::from(id.partition());
        self.advance(p, id.offset() as i64 + 1);
        for e in events {
            if let Some(slot) = e.symbol.and_then(|s| self.partition_of.get_mut(s.0 as usize)) {
                *slot = p;
            }
        }
        self.since += 1;
    }

    /// Who owns what.
    pub fn owner(&self) -> &Arc<Ownership> {
        &self.owner
    }

    /// Time for a snapshot (and none in flight)?
    #[inline]
    pub fn due(&self) -> bool {
        self.since >= self.every && self.tx.is_some() && !self.busy.load(Ordering::Acquire)
    }

    /// True if a command was applied since the last snapshot (a final one on a drain is worth it).
    pub fn pending(&self) -> bool {
        self.since > 0 && self.tx.is_some() && !self.busy.load(Ordering::Acquire)
    }

    /// Partition `p` was taken over: its books become `images` (a snapshot's, or none: empty
    /// books), every book it held before is emptied, and its next offset is `start`. Returns the
    /// partition's symbols, old and new. `images` were checked by the consumer (a restore that
    /// fails here leaves those books empty, and says so).
    #[cold]
    #[allow(clippy::too_many_arguments)]
    pub fn reset(
        &mut self,
        p: i32,
        images: &[BookImage],
        start: Option<i64>,
        generation: u64,
        engine: &mut Engine,
        table: &common::SymbolTable,
        capacity: Capacity,
    ) -> Vec<u32> {
        let mut symbols: Vec<u32> =
            self.partition_of.iter().enumerate().filter(|(_, &q)| q == p).map(|(s, _)| s as u32).collect();
        for image in images {
            if !symbols.contains(&image.symbol.0) {
                symbols.push(image.symbol.0);
            }
        }
        for &s in &symbols {
            let id = common::SymbolId(s);
            if let Some(spec) = table.get(id) {
                let _ = engine.restore(&Book::new(id, spec, capacity).image());
            }
            if let Some(slot) = self.partition_of.get_mut(s as usize) {
                *slot = p;
            }
        }
        if let Err(e) = engine.restore_all(images) {
            tracing::error!(partition = p, error = %e, "a checked snapshot did not restore: its books stay empty");
        }
        if let Ok(i) = usize::try_from(p) {
            if i >= self.next.len() {
                self.next.resize(i + 1, -1);
            }
            self.next[i] = start.unwrap_or(-1);
        }
        if let Some(g) = usize::try_from(p).ok().and_then(|i| self.generations.get_mut(i)) {
            *g = generation;
        }
        symbols
    }

    /// True if partition `p` is ours and its books current: rebuilt under its generation now,
    /// and at a known offset (a partition taken over with no snapshot has none until its first
    /// command, and a file whose book has no offset would not decode).
    fn current(&self, p: i32) -> bool {
        let rebuilt = usize::try_from(p).ok().and_then(|i| self.generations.get(i)).copied();
        let offset = usize::try_from(p).ok().and_then(|i| self.next.get(i)).copied().unwrap_or(-1);
        self.owner.owns(p) && rebuilt == Some(self.owner.generation(p)) && offset >= 0
    }

    /// Images the touched books and hands them to the I/O thread; the caller then pushes the
    /// marker. False if the I/O thread is gone.
    pub fn take(&mut self, engine: &Engine) -> bool {
        let current = |p: i32| self.current(p);
        let books = engine
            .books()
            .iter()
            .filter_map(|b| {
                let p = *self.partition_of.get(b.symbol().0 as usize)?;
                (p >= 0 && current(p)).then(|| (p, b.image()))
            })
            .collect();
        let offsets = self
            .next
            .iter()
            .enumerate()
            .filter(|&(p, &n)| n >= 0 && current(p as i32))
            .map(|(p, &n)| (p as i32, n))
            .collect();
        let generations = (0..self.next.len() as i32).map(|p| (p, self.owner.generation(p))).collect();
        self.since = 0;
        let Some(tx) = &self.tx else { return false };
        self.busy.store(true, Ordering::Release);
        tx.send(Taken { offsets, books, generations }).is_ok()
    }
}

/// The I/O thread's side: on each marker, the projection joins the images and a thread writes
/// them.
#[derive(Debug)]
pub struct Writer {
    /// The directory.
    dir: PathBuf,
    /// From the book thread.
    rx: Receiver<Taken>,
    /// Cleared once the file is written (or failed).
    busy: Arc<AtomicBool>,
    /// The thread writing the last one.
    thread: Option<JoinHandle<()>>,
    /// Who owns what: partitions given up since the images were taken are left out.
    owner: Arc<Ownership>,
}

impl Writer {
    /// At the marker, with everything before it persisted: writes the snapshot (in the
    /// background).
    pub fn marker(&mut self, projection: &Projection, metrics: &Arc<Metrics>) {
        let Ok(taken) = self.rx.try_recv() else {
            tracing::error!("a snapshot marker without its images; skipped");
            return;
        };
        self.finish();
        let owner = &self.owner;
        let still = |p: &i32| {
            taken.generations.iter().any(|(q, g)| q == p && *g == owner.generation(*p) && owner.owns(*p))
        };
        let offsets: Vec<(i32, i64)> = taken.offsets.into_iter().filter(|(p, _)| still(p)).collect();
        if offsets.is_empty() {
            self.busy.store(false, Ordering::Release);
            return;
        }
        let books = taken.books.into_iter().filter(|(p, _)| still(p)).collect();
        let snapshot = Snapshot { offsets, books, extra: projection.encode() };
        let (dir, busy, metrics) = (self.dir.clone(), self.busy.clone(), metrics.clone());
        let spawned = std::thread::Builder::new().name("snapshot".into()).spawn(move || {
            let started = std::time::Instant::now();
            match snapshot::write(&dir, &snapshot) {
                Ok(path) => {
                    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                    metrics.snapshots_written.inc();
                    metrics.snapshot_bytes.set(bytes as i64);
                    tracing::info!(
                        path = %path.display(),
                        bytes,
                        offsets = ?snapshot.offsets,
                        ms = started.elapsed().as_millis() as u64,
                        "snapshot written"
                    );
                    if let Err(e) = snapshot::prune(&dir, KEEP) {
                        tracing::warn!(error = %e, "could not prune old snapshots");
                    }
                }
                Err(e) => {
                    metrics.snapshot_failures.inc();
                    tracing::warn!(dir = %dir.display(), error = %e, "could not write a snapshot");
                }
            }
            busy.store(false, Ordering::Release);
        });
        match spawned {
            Ok(handle) => self.thread = Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the snapshot writer");
                self.busy.store(false, Ordering::Release);
            }
        }
    }

    /// Waits for the snapshot being written, if any.
    pub fn finish(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The two halves, sharing the channel and the in-flight flag (no writer without a directory:
/// the taker then only keeps track of partitions).
pub fn pair(
    config: &Config,
    symbols: usize,
    restored: Option<&Restored>,
    owner: Arc<Ownership>,
) -> (Taker, Option<Writer>) {
    let busy = Arc::new(AtomicBool::new(false));
    let Some(dir) = config.snapshot_dir.clone() else {
        return (Taker::new(config.snapshot_every, symbols, restored, None, busy, owner), None);
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let taker = Taker::new(config.snapshot_every, symbols, restored, Some(tx), busy.clone(), owner.clone());
    (taker, Some(Writer { dir, rx, busy, thread: None, owner }))
}

/// Partition `p`'s newest snapshot in `dir` that restores: where to start reading it and what to
/// rebuild it from; `None` (every bad file passed over is logged): from the log's start.
pub fn for_partition(
    dir: &std::path::Path,
    p: i32,
    table: &SymbolTable,
    capacity: Capacity,
) -> Option<Reset> {
    let (loaded, skipped) = snapshot::load_newest(dir, |s| s.offsets.iter().any(|(q, _)| *q == p));
    for (path, error) in &skipped {
        tracing::warn!(path = %path.display(), %error, "snapshot skipped: not trusted");
    }
    let (path, snap) = loaded?;
    let start = snap.offsets.iter().find(|(q, _)| *q == p)?.1;
    let books: Vec<BookImage> = snap.books.into_iter().filter(|(q, _)| *q == p).map(|(_, b)| b).collect();
    let checked =
        Engine::new(table, capacity).restore_all(books.iter()).map_err(|e| e.to_string()).and_then(|()| {
            let windows = books.iter().map(|b| (b.symbol, b.window.as_slice()));
            Projection::restore(&snap.extra, windows, capacity.client_window).map(|_| ())
        });
    if let Err(error) = checked {
        tracing::warn!(path = %path.display(), partition = p, %error, "snapshot does not fit: replaying the partition from its start");
        return None;
    }
    tracing::info!(path = %path.display(), partition = p, start, books = books.len(), "partition taken over from a snapshot");
    Some(Reset { books, projection: Some(snap.extra), start: Some(start), ..Reset::default() })
}

/// What a matcher starts from when a snapshot restored.
pub struct Restored {
    /// The file.
    pub path: PathBuf,
    /// The books, restored.
    pub engine: Engine,
    /// The I/O thread's projection, restored.
    pub projection: Projection,
    /// Partition → where the consumer starts reading.
    pub offsets: Vec<(i32, i64)>,
    /// Symbol index → its partition, for the books in the snapshot.
    pub partitions: Vec<(u32, i32)>,
}

/// The newest snapshot in `--snapshot-dir` that decodes and restores, or `None` (replay the log
/// from its start). Every file passed over is logged with why.
pub fn restore(config: &Config, table: &SymbolTable) -> Option<Restored> {
    let dir = config.snapshot_dir.as_ref()?;
    let (loaded, skipped) = snapshot::load_newest(dir, |_| true);
    for (path, error) in &skipped {
        tracing::warn!(path = %path.display(), %error, "snapshot skipped: not trusted");
    }
    let Some((path, snap)) = loaded else {
        tracing::info!(dir = %dir.display(), "no usable snapshot: replaying the orders log from its start");
        return None;
    };
    let mut engine = Engine::new(table, config.capacity);
    let restored =
        engine.restore_all(snap.books.iter().map(|(_, b)| b)).map_err(|e| e.to_string()).and_then(|()| {
            let windows = snap.books.iter().map(|(_, b)| (b.symbol, b.window.as_slice()));
            Projection::restore(&snap.extra, windows, config.capacity.client_window)
        });
    match restored {
        Ok(projection) => {
            let partitions = snap.books.iter().map(|(p, b)| (b.symbol.0, *p)).collect();
            tracing::info!(
                path = %path.display(),
                offsets = ?snap.offsets,
                books = snap.books.len(),
                open_orders = engine.resting_orders(),
                "restored the books from a snapshot; replaying the log from its offsets"
            );
            Some(Restored { path, engine, projection, offsets: snap.offsets, partitions })
        }
        Err(error) => {
            tracing::warn!(
                path = %path.display(),
                %error,
                "snapshot does not fit this matcher's configuration: replaying the orders log from its start"
            );
            None
        }
    }
}

/// Partition → offset, from a snapshot's list.
pub fn offsets(restored: Option<&Restored>) -> HashMap<i32, i64> {
    restored.map(|r| r.offsets.iter().copied().collect()).unwrap_or_default()
}

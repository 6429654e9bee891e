//! The book thread: pinned to a core, it pops commands, applies them to the [`Engine`] and
//! pushes the events, then a `Done` marker, into the I/O thread's ring. No allocation, no logging,
//! no formatting here: only the rings, the book, two clock reads per command (before the book,
//! and after: the `matched` hop) and the metrics, whose children were resolved before the loop
//! (atomic adds and stores, one histogram observe; the gauges of a book only when a command
//! touched it).
//!
//! Every `--snapshot-every` commands it also images the books for a snapshot, between two
//! commands ([`super::snapshots`]): that pause allocates and is measured
//! (`matcher_snapshot_pause_seconds`); it is the one exception to the rules above. A drain ends
//! with one more, so a clean restart replays nothing.

use std::thread::Thread;

use common::{EventKind, Qty, SymbolTable};

use super::config::Config;
use super::metrics::{seconds, CommandType, Metrics};
use super::ring::{now_ns, push_wait, Hops, Idle, Input, Output, Stop};
use super::snapshots::Taker;
use crate::engine::Engine;

/// Runs `engine` (empty, or restored from a snapshot) until `stop`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    config: &Config,
    table: &SymbolTable,
    mut engine: Engine,
    mut taker: Taker,
    mut input: rtrb::Consumer<Input>,
    mut output: rtrb::Producer<Output>,
    io: Thread,
    stop: &Stop,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    if let Some(core) = config.pin_core {
        let pinned = core_affinity::get_core_ids()
            .and_then(|ids| ids.into_iter().find(|c| c.id == core))
            .is_some_and(core_affinity::set_for_current);
        tracing::info!(core, pinned, "book thread");
    }
    let gauges = metrics.book_gauges(table);
    // A book restored from a snapshot shows at once.
    for (book, g) in engine.books().iter().zip(&gauges) {
        g.set(book);
    }
    let mut events = Vec::with_capacity(4096);
    let mut idle = Idle::new(config.spin);
    while !stop.stopped() {
        let Ok(item) = input.pop() else {
            // The consumer left (a drain) and everything it pushed is done: the I/O thread sees
            // this thread's ring abandoned in turn.
            if input.is_abandoned() && input.is_empty() {
                if taker.pending() {
                    snapshot(&mut taker, &engine, &mut output, &io, stop, metrics);
                }
                break;
            }
            // A snapshot that came due while the one before was still being written: taken now the
            // book is idle, not left for a next command that may be long in coming (a quiet book
            // kept its last commands out of every snapshot until then).
            if taker.due() {
                snapshot(&mut taker, &engine, &mut output, &io, stop, metrics);
                io.unpark();
            }
            idle.wait();
            continue;
        };
        idle.reset();
        // `started`: when the book took the command (0: it never reached the book).
        let (id, replay, mut hops, kind, started) = match item {
            Input::Cmd { cmd, replay, hops } => {
                events.clear();
                let started = now_ns();
                engine.apply(&cmd, &mut events);
                (cmd.id, replay, hops, CommandType::of(&cmd.kind), started)
            }
            Input::CaughtUp => {
                push(&mut output, Output::CaughtUp, &io, stop, metrics);
                io.unpark();
                continue;
            }
            Input::Reset { partition, token } => {
                let (images, start, generation) = taker.owner().take_books(token);
                let symbols =
                    taker.reset(partition, &images, start, generation, &mut engine, table, config.capacity);
                for &s in &symbols {
                    if let (Some(book), Some(g)) = (engine.book(common::SymbolId(s)), gauges.get(s as usize))
                    {
                        g.set(book);
                    }
                }
                taker.owner().set_symbols(token, symbols);
                push(&mut output, Output::Reset { partition, token }, &io, stop, metrics);
                io.unpark();
                continue;
            }
            Input::Bad { id, reason, replay } => {
                events.clear();
                events.push(common::Event {
                    cmd: id,
                    index: 0,
                    symbol: None,
                    seq: 0,
                    ts: common::Timestamp(0),
                    kind: EventKind::Rejected {
                        order_id: id,
                        account: common::Account::anonymous(),
                        client_order_id: None,
                        reason,
                        qty: Qty::ZERO,
                    },
                });
                (id, replay, Hops::default(), CommandType::Malformed, 0)
            }
        };
        hops.matched = now_ns();
        // The wall clock, so the end is the `matched` stamp (one read fewer than a monotonic pair;
        // a clock step shows as one outlier, never a negative time).
        if started > 0 {
            metrics.book_command.observe(seconds(hops.matched.saturating_sub(started)));
        }
        metrics.command(kind);
        // The books this command changed are those its events name (one, or each in turn for a
        // mass-cancel): their gauges are set once per run of events.
        let mut touched = None;
        for event in &events {
            match event.kind {
                EventKind::Fill { .. } => metrics.trades.inc(),
                EventKind::Rejected { reason, .. } => metrics.reject(reason),
                _ => {}
            }
            if let Some(symbol) = event.symbol.filter(|s| touched != Some(*s)) {
                touched = Some(symbol);
                if let (Some(book), Some(g)) = (engine.book(symbol), gauges.get(symbol.0 as usize)) {
                    g.set(book);
                }
            }
            push(&mut output, Output::Event { event: *event, replay }, &io, stop, metrics);
        }
        push(&mut output, Output::Done { id, replay, hops }, &io, stop, metrics);
        taker.applied(id, &events);
        if taker.due() {
            snapshot(&mut taker, &engine, &mut output, &io, stop, metrics);
        }
        io.unpark();
        metrics.ring_in.set(input.slots() as i64);
    }
    Ok(())
}

/// Takes a snapshot's images and marks the place in the I/O ring.
#[cold]
fn snapshot(
    taker: &mut Taker,
    engine: &Engine,
    output: &mut rtrb::Producer<Output>,
    io: &Thread,
    stop: &Stop,
    metrics: &Metrics,
) {
    let started = std::time::Instant::now();
    if taker.take(engine) {
        push(output, Output::Snapshot, io, stop, metrics);
    }
    metrics.snapshot_pause.observe(started.elapsed().as_secs_f64());
}

/// Pushes into the I/O ring, spinning while it is full (this thread is pinned: it does not yield).
#[inline]
fn push(ring: &mut rtrb::Producer<Output>, item: Output, io: &Thread, stop: &Stop, metrics: &Metrics) {
    push_wait(ring, item, io, std::hint::spin_loop, stop, &metrics.ring_full);
}

#[cfg(test)]
pub(crate) mod tests {
    use common::{
        Account, ClientOrderId, Command, CommandKind, NewOrder, OrderId, OrderType, Price, RejectReason,
    };
    use common::{Side, SymbolId, TimeInForce, Timestamp};

    use super::*;
    use crate::book::Capacity;

    /// A configuration for tests: no broker, Redis or listener named.
    pub(crate) fn config() -> Config {
        Config {
            listen: String::new(),
            instance: String::new(),
            brokers: String::new(),
            group: String::new(),
            orders_topic: String::new(),
            trades_topic: String::new(),
            events_topic: String::new(),
            redis: String::new(),
            pin_core: None,
            spin: 0,
            ring: 64,
            capacity: Capacity { orders: 64, levels: 16, client_window: 64 },
            fetch_wait_ms: 2,
            commit_interval_ms: 100,
            linger_ms: 1.0,
            wake_listen: None,
            wake: vec![],
            retention_secs: 0,
            snapshot_dir: None,
            snapshot_every: 1,
            share_partitions: false,
            lease_ms: 3_000,
        }
    }

    /// A buy of one lot of `ABC` at `price` ticks, at offset `offset`.
    fn buy(offset: u64, price: i64) -> Input {
        let order = NewOrder {
            symbol: SymbolId(0),
            account: Account::new("a").unwrap(),
            client_order_id: ClientOrderId::new(&format!("c{offset}")).unwrap(),
            side: Side::Buy,
            order_type: OrderType::Limit,
            tif: TimeInForce::Gtc,
            post_only: false,
            price: Some(Price(price)),
            qty: Qty(1),
        };
        let cmd =
            Command { id: OrderId::new(0, offset).unwrap(), ts: Timestamp(1), kind: CommandKind::New(order) };
        Input::Cmd { cmd, replay: false, hops: Hops::default() }
    }

    #[test]
    fn a_snapshot_due_while_the_last_is_written_is_taken_once_the_book_is_idle() {
        let dir = std::env::temp_dir().join(format!("trading-lab-book-thread-{}", std::process::id()));
        let config = Config { snapshot_dir: Some(dir.clone()), snapshot_every: 2, ..config() };
        let table = SymbolTable::default();
        let metrics = std::sync::Arc::new(Metrics::new().unwrap());
        let (mut to_book, from_consumer) = rtrb::RingBuffer::<Input>::new(16);
        let (to_io, mut from_book) = rtrb::RingBuffer::<Output>::new(64);
        let owner = std::sync::Arc::new(crate::runtime::ownership::Ownership::all());
        let (taker, writer) = crate::runtime::snapshots::pair(&config, table.len(), None, owner);
        let mut writer = writer.expect("a directory: a writer");
        let engine = Engine::new(&table, config.capacity);
        let stop = Stop::default();
        // The I/O thread's side: counts what the book thread pushed (commands done, snapshot
        // markers) until `want` holds or `wait` has passed.
        let mut seen = (0, 0);
        let mut until =
            |from_book: &mut rtrb::Consumer<Output>, want: &dyn Fn((usize, usize)) -> bool, wait| {
                let deadline = std::time::Instant::now() + wait;
                while !want(seen) && std::time::Instant::now() < deadline {
                    match from_book.pop() {
                        Ok(Output::Done { .. }) => seen.0 += 1,
                        Ok(Output::Snapshot) => seen.1 += 1,
                        Ok(_) => {}
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
                    }
                }
                seen
            };
        std::thread::scope(|s| {
            let io = std::thread::current();
            let book =
                s.spawn(|| run(&config, &table, engine, taker, from_consumer, to_io, io, &stop, &metrics));
            // A failed assertion below stops the book thread too: the scope ends, the test fails.
            let _stop = crate::runtime::ring::StopOnPanic(stop.clone());
            for offset in 1..=4 {
                to_book.push(buy(offset, 9_990 - offset as i64)).unwrap();
            }
            // Two commands: a snapshot, whose file is "being written" until the marker below;
            // two more: due again, while the first is still in flight.
            let (long, short) = (std::time::Duration::from_secs(5), std::time::Duration::from_millis(200));
            assert_eq!(until(&mut from_book, &|(done, _)| done == 4, long), (4, 1));
            assert_eq!(until(&mut from_book, &|_| false, short).1, 1, "not while the last is in flight");
            writer.marker(&crate::runtime::projection::Projection::default(), &metrics);
            writer.finish();
            // No command follows: the idle book takes it.
            assert_eq!(until(&mut from_book, &|(_, snapshots)| snapshots == 2, long), (4, 2));
            stop.stop();
            book.join().unwrap().unwrap();
        });
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_book_thread_counts_commands_rejects_and_each_touched_book() {
        let table = SymbolTable::default();
        let metrics = Metrics::new().unwrap();
        let (mut to_book, from_consumer) = rtrb::RingBuffer::<Input>::new(16);
        let (to_io, mut from_book) = rtrb::RingBuffer::<Output>::new(64);
        // Two orders rest at two prices; one is outside ABC's ±10 % band (100.00); one never decoded.
        for input in [
            buy(1, 9_990),
            buy(2, 9_980),
            buy(3, 20_000),
            Input::Bad { id: OrderId::new(0, 4).unwrap(), reason: RejectReason::Malformed, replay: false },
        ] {
            to_book.push(input).unwrap();
        }
        // The consumer is gone: the thread finishes the ring and returns.
        drop(to_book);
        let engine = Engine::new(&table, config().capacity);
        let (thread, stop) = (std::thread::current(), Stop::default());
        let owner = std::sync::Arc::new(crate::runtime::ownership::Ownership::all());
        let (taker, _) = crate::runtime::snapshots::pair(&config(), table.len(), None, owner);
        run(&config(), &table, engine, taker, from_consumer, to_io, thread, &stop, &metrics).unwrap();

        let count = |t: CommandType| metrics.commands[t as usize].get();
        assert_eq!(
            (count(CommandType::New), count(CommandType::Malformed), count(CommandType::Cancel)),
            (3, 1, 0)
        );
        let rejects = |r: RejectReason| metrics.rejects[r as usize].get();
        assert_eq!((rejects(RejectReason::PriceBand), rejects(RejectReason::Malformed)), (1, 1));
        assert_eq!(metrics.rejects.iter().map(|c| c.get()).sum::<u64>(), 2);
        assert_eq!(metrics.resting.with_label_values(&["ABC"]).get(), 2);
        assert_eq!(metrics.levels.with_label_values(&["ABC", "buy"]).get(), 2);
        assert_eq!(metrics.levels.with_label_values(&["ABC", "sell"]).get(), 0);
        assert_eq!(metrics.resting.with_label_values(&["DEF"]).get(), 0);
        assert_eq!(
            metrics.book_command.get_sample_count(),
            3,
            "the malformed message never reached the book"
        );
        let mut done = 0;
        while let Ok(out) = from_book.pop() {
            if let Output::Done { hops, .. } = out {
                assert!(hops.matched > 0);
                done += 1;
            }
        }
        assert_eq!(done, 4);
    }
}

//! Property tests: thousands of random command streams through the real engine and the oracle.
//! After every command the two must have emitted identical events and hold identical books, and
//! the engine's invariants must hold: never crossed, quantity conserved, FIFO within a level,
//! index and levels in agreement, sequence numbers gap-free. A second engine fed the same stream
//! must produce byte-identical JSON.
//!
//! `PROPTEST_CASES` sets the number of streams (default 2,000; CI lowers it to bound its time).

mod support;

use std::collections::HashMap;

use common::envelope::encode_event;
use common::{
    Account, Cancel, ClientOrderId, Command, CommandKind, Event, EventKind, NewOrder, OrderId, OrderType,
    Price, Qty, Replace, Side, SymbolId, SymbolTable, TimeInForce, Timestamp,
};
use matcher::{Capacity, Engine};
use proptest::prelude::*;
use support::oracle::Oracle;
use support::{acct, cid};

/// A command before ids are known: targets are indexes into the commands sent so far.
#[derive(Clone, Debug)]
enum Op {
    New {
        symbol: u32,
        account: usize,
        client: u8,
        side: Side,
        market: bool,
        tif: u8,
        post_only: bool,
        offset: i64,
        qty: u64,
    },
    Cancel {
        target: usize,
        own: bool,
        account: usize,
    },
    Replace {
        target: usize,
        own: bool,
        account: usize,
        offset: i64,
        qty: u64,
        /// 1: keep the price, 2: keep the quantity, else give both.
        keep: u8,
    },
    Halt {
        symbol: u32,
        halt: bool,
    },
    MassCancel {
        account: usize,
    },
    SetReference {
        symbol: u32,
        offset: i64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let side = prop_oneof![Just(Side::Buy), Just(Side::Sell)];
    // Mostly near the reference, sometimes far outside the ±10 % band.
    let offset = prop_oneof![20 => -12i64..=12, 1 => prop_oneof![Just(-2_000i64), Just(2_000i64)]];
    let new =
        (
            0u32..2,
            0usize..3,
            0u8..8,
            side,
            prop::bool::weighted(0.1),
            0u8..10,
            prop::bool::weighted(0.15),
            offset.clone(),
            1u64..8,
        )
            .prop_map(|(symbol, account, client, side, market, tif, post_only, offset, qty)| {
                Op::New { symbol, account, client, side, market, tif, post_only, offset, qty }
            });
    prop_oneof![
        60 => new,
        25 => (any::<usize>(), prop::bool::weighted(0.9), 0usize..3)
            .prop_map(|(target, own, account)| Op::Cancel { target, own, account }),
        10 => (any::<usize>(), prop::bool::weighted(0.9), 0usize..3, offset, 0u64..8, 0u8..5).prop_map(
            |(target, own, account, offset, qty, keep)| Op::Replace { target, own, account, offset, qty, keep }
        ),
        1 => (0u32..3, any::<bool>()).prop_map(|(symbol, halt)| Op::Halt { symbol, halt }),
        1 => (0usize..3).prop_map(|account| Op::MassCancel { account }),
        1 => (0u32..3, -15i64..=15).prop_map(|(symbol, offset)| Op::SetReference { symbol, offset }),
    ]
}

const REFERENCE: [i64; 3] = [10_000, 1_000, 5_000];

fn account(i: usize) -> Account {
    [Account::anonymous(), acct("alice"), acct("bob")][i % 3]
}

/// Client id `n`: short, or (odd `n`) longer than the 12 bytes the book keeps inline, with the
/// same first 12 bytes as every other long one, so only the rest tells them apart.
fn client_id(n: u8) -> ClientOrderId {
    if n.is_multiple_of(2) {
        cid(&format!("c{n}"))
    } else {
        cid(&format!("long-client-{n}"))
    }
}

/// Turns ops into commands, resolving targets against the orders sent so far.
fn commands(ops: &[Op]) -> Vec<Command> {
    let mut sent: Vec<(OrderId, SymbolId, Account)> = Vec::new();
    let mut out = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let id = OrderId::new((i % 3) as u16, i as u64 + 1).unwrap();
        let pick = |target: usize| sent.get(target % sent.len().max(1)).copied();
        let kind = match *op {
            Op::New { symbol, account: a, client, side, market, tif, post_only, offset, qty } => {
                let symbol_id = SymbolId(symbol);
                sent.push((id, symbol_id, account(a)));
                let tif = match tif {
                    0..=5 => TimeInForce::Gtc,
                    6..=7 => TimeInForce::Ioc,
                    _ => TimeInForce::Fok,
                };
                CommandKind::New(NewOrder {
                    symbol: symbol_id,
                    account: account(a),
                    client_order_id: client_id(client),
                    side,
                    order_type: if market { OrderType::Market } else { OrderType::Limit },
                    tif,
                    post_only,
                    price: (!market).then_some(Price(REFERENCE[symbol as usize] + offset)),
                    qty: Qty(qty),
                })
            }
            Op::Cancel { target, own, account: a } => {
                let (order_id, _, owner) = pick(target).unwrap_or((OrderId(12345), SymbolId(0), account(a)));
                CommandKind::Cancel(Cancel { order_id, account: if own { owner } else { account(a) } })
            }
            Op::Replace { target, own, account: a, offset, qty, keep } => {
                let (order_id, symbol, owner) =
                    pick(target).unwrap_or((OrderId(12345), SymbolId(0), account(a)));
                CommandKind::Replace(Replace {
                    symbol,
                    order_id,
                    account: if own { owner } else { account(a) },
                    price: (keep != 1).then(|| Price(REFERENCE[symbol.0 as usize] + offset)),
                    qty: (keep != 2).then_some(Qty(qty)),
                })
            }
            Op::Halt { symbol, halt: true } => CommandKind::Halt { symbol: SymbolId(symbol) },
            Op::Halt { symbol, halt: false } => CommandKind::Resume { symbol: SymbolId(symbol) },
            Op::MassCancel { account: a } => CommandKind::MassCancel { account: account(a) },
            Op::SetReference { symbol, offset } => CommandKind::SetReference {
                symbol: SymbolId(symbol),
                price: Price(REFERENCE[symbol as usize] + offset),
            },
        };
        out.push(Command { id, ts: Timestamp(1_700_000_000_000_000_000 + i as u64), kind });
    }
    out
}

/// Two symbols with bands (ABC, DEF) and one without (XYZ's band set to 0), so both paths run.
fn table() -> SymbolTable {
    let mut specs: Vec<_> = SymbolTable::default().iter().map(|(_, s)| s.clone()).collect();
    specs[1].reference = Price(REFERENCE[1]);
    specs[2].reference = Price(REFERENCE[2]);
    specs[2].band_bps = 0;
    SymbolTable::new(specs)
}

/// ABC alone: an engine with one book finds its orders by id (at their homes in the slab) and
/// only the rest through the order index.
fn one_symbol() -> SymbolTable {
    SymbolTable::new(vec![table().get(SymbolId(0)).expect("ABC").clone()])
}

/// `op` aimed at symbol 0.
fn on_symbol_0(op: Op) -> Op {
    match op {
        Op::New { account, client, side, market, tif, post_only, offset, qty, .. } => {
            Op::New { symbol: 0, account, client, side, market, tif, post_only, offset, qty }
        }
        Op::Halt { halt, .. } => Op::Halt { symbol: 0, halt },
        Op::SetReference { offset, .. } => Op::SetReference { symbol: 0, offset },
        other => other,
    }
}

/// Quantity bookkeeping from the events alone.
#[derive(Default)]
struct Ledger {
    submitted: i128,
    filled: i128,
    canceled: i128,
    rejected: i128,
}

fn run(table: &SymbolTable, cmds: &[Command], window: usize) -> Result<Vec<u8>, TestCaseError> {
    // Small on purpose: the slab and tables grow; the ladder's ring covers two ticks, so most
    // levels sit in its overflow and move in and out of the ring as the best price changes.
    let capacity = Capacity { orders: 8, levels: 2, client_window: window };
    let mut engine = Engine::new(table, capacity);
    let mut oracle = Oracle::new(table, window);
    let (mut got, mut want) = (Vec::new(), Vec::new());
    let mut seqs: HashMap<SymbolId, u64> = HashMap::new();
    let mut ledger = Ledger::default();
    let mut bytes = Vec::new();
    for cmd in cmds {
        let before = match cmd.kind {
            CommandKind::Replace(r) => engine.order(r.order_id).map(|(_, o)| o.leaves.0),
            _ => None,
        };
        got.clear();
        want.clear();
        engine.apply(cmd, &mut got);
        oracle.apply(cmd, &mut want);
        prop_assert_eq!(&got, &want, "events differ after {:?}", cmd);
        engine.validate().map_err(|e| TestCaseError::fail(format!("after {cmd:?}: {e}")))?;
        for (symbol, _) in table.iter() {
            for side in [Side::Buy, Side::Sell] {
                prop_assert_eq!(
                    engine.book(symbol).unwrap().orders(side),
                    oracle.orders(symbol, side),
                    "book differs after {:?}",
                    cmd
                );
            }
        }
        for (i, e) in got.iter().enumerate() {
            prop_assert_eq!(e.index as usize, i);
            prop_assert_eq!((e.cmd, e.ts), (cmd.id, cmd.ts));
            if let Some(symbol) = e.symbol {
                let last = seqs.entry(symbol).or_insert(0);
                prop_assert_eq!(e.seq, *last + 1, "sequence gap on {:?}", symbol);
                *last = e.seq;
            } else {
                prop_assert_eq!(e.seq, 0);
            }
            account_for(&mut ledger, e, before);
            bytes.extend(encode_event(e, table));
            bytes.push(b'\n');
        }
        let resting: i128 = engine.books().iter().map(|b| i128::from(b.resting_qty())).sum();
        prop_assert_eq!(
            ledger.submitted,
            ledger.filled + resting + ledger.canceled + ledger.rejected,
            "quantity not conserved after {:?}",
            cmd
        );
    }
    Ok(bytes)
}

fn account_for(ledger: &mut Ledger, e: &Event, leaves_before: Option<u64>) {
    match e.kind {
        EventKind::Accepted { qty, .. } => ledger.submitted += i128::from(qty.0),
        EventKind::Rejected { qty, .. } => {
            ledger.submitted += i128::from(qty.0);
            ledger.rejected += i128::from(qty.0);
        }
        // Each fill takes its quantity out of two orders.
        EventKind::Fill { qty, .. } => ledger.filled += 2 * i128::from(qty.0),
        EventKind::Canceled { qty, .. } => ledger.canceled += i128::from(qty.0),
        // A replace changes what was submitted by the change in open quantity.
        EventKind::Replaced { qty, .. } => {
            ledger.submitted += i128::from(qty.0) - i128::from(leaves_before.unwrap_or(0));
        }
        EventKind::Level { .. } | EventKind::Status { .. } => {}
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn engine_matches_the_oracle(ops in prop::collection::vec(op(), 1..300), window in 0usize..6) {
        let cmds = commands(&ops);
        let first = run(&table(), &cmds, window)?;
        let second = run(&table(), &cmds, window)?;
        prop_assert!(first == second, "the same stream gave different bytes");
    }

    /// One book alone in its engine: orders at their homes and orders in the index (their homes
    /// were taken: the slab is small, so homes come round every 32 ids) must behave alike.
    #[test]
    fn a_book_alone_matches_the_oracle(ops in prop::collection::vec(op(), 1..300), window in 0usize..6) {
        let ops: Vec<Op> = ops.into_iter().map(on_symbol_0).collect();
        let cmds = commands(&ops);
        let first = run(&one_symbol(), &cmds, window)?;
        let second = run(&one_symbol(), &cmds, window)?;
        prop_assert!(first == second, "the same stream gave different bytes");
    }
}

/// The properties above are only as strict as the build: the book's `debug_assert!`s (level
/// totals, `Ladder`) and integer overflow checks must be armed where they run. `cargo test` uses
/// the workspace's `profile.dev`, which keeps both on; this fails if a profile change turns them off.
#[test]
fn the_property_tests_run_with_debug_assertions_and_overflow_checks() {
    let asserted = std::panic::catch_unwind(|| debug_assert!(std::hint::black_box(false)));
    assert!(asserted.is_err(), "debug assertions are off in this test build");
    let zero: u64 = std::hint::black_box(0);
    let wrapped = std::panic::catch_unwind(|| zero - 1);
    assert!(wrapped.is_err(), "overflow checks are off in this test build");
}

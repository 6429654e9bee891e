//! One test per matching rule, each run against the real engine and the oracle alike.

mod support;

use common::{CommandKind, EventKind, NewOrder, OrderType, Price, Qty, Side, TimeInForce};
use support::*;

use Side::{Buy, Sell};

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_crossing_order_trades_at_the_resting_price() {
    for mut f in both(16) {
        let s = f.order(limit(Sell, 10_000, 5));
        assert_eq!(f.said(), lines(&["accepted 1", "level sell 10000 5/1"]));
        let b = f.order(limit(Buy, 10_100, 5));
        assert_eq!(
            f.said(),
            lines(&[
                "accepted 2",
                "fill#0 5x10000 maker 1 (0 left) taker 2 (0 left)",
                "level sell 10000 0/0"
            ])
        );
        assert_eq!((s.offset(), b.offset()), (1, 2));
        assert!(f.book(Buy).is_empty() && f.book(Sell).is_empty());
    }
}

#[test]
fn better_prices_match_first_then_earlier_orders() {
    for mut f in both(16) {
        f.order(limit(Sell, 10_002, 1)); // 1
        f.order(limit(Sell, 10_001, 1)); // 2
        f.order(limit(Sell, 10_001, 1)); // 3
        f.order(limit(Sell, 10_000, 1)); // 4
        f.order(limit(Buy, 10_001, 3)); // 5
        assert_eq!(
            f.said(),
            lines(&[
                "accepted 5",
                "fill#0 1x10000 maker 4 (0 left) taker 5 (2 left)",
                "level sell 10000 0/0",
                "fill#1 1x10001 maker 2 (0 left) taker 5 (1 left)",
                "fill#2 1x10001 maker 3 (0 left) taker 5 (0 left)",
                "level sell 10001 0/0",
            ]),
            "{}",
            f.m.name()
        );
        assert_eq!(f.book(Sell), vec![(1, 10_002, 1)]);
    }
}

#[test]
fn partial_fills_leave_the_rest_resting() {
    for mut f in both(16) {
        f.order(limit(Sell, 10_000, 3));
        f.order(limit(Buy, 10_000, 5));
        assert_eq!(
            f.said(),
            lines(&[
                "accepted 2",
                "fill#0 3x10000 maker 1 (0 left) taker 2 (2 left)",
                "level sell 10000 0/0",
                "level buy 10000 2/1",
            ])
        );
        f.order(limit(Sell, 10_000, 1));
        assert_eq!(f.said()[1], "fill#0 1x10000 maker 2 (1 left) taker 3 (0 left)");
        assert_eq!(f.book(Buy), vec![(2, 10_000, 1)]);
    }
}

#[test]
fn market_orders_sweep_within_the_band_and_never_rest() {
    for mut f in both(16) {
        f.order(limit(Sell, 10_000, 1));
        f.order(limit(Sell, 11_000, 1)); // the band's edge (reference 100.00 ± 10 %)
        f.order(limit(Sell, 10_500, 1));
        f.order(market(Buy, 5));
        assert_eq!(
            f.said(),
            lines(&[
                "accepted 4",
                "fill#0 1x10000 maker 1 (0 left) taker 4 (4 left)",
                "level sell 10000 0/0",
                "fill#1 1x10500 maker 3 (0 left) taker 4 (3 left)",
                "level sell 10500 0/0",
                // the last trade moved the reference to 105.00: the band now reaches 115.50
                "fill#2 1x11000 maker 2 (0 left) taker 4 (2 left)",
                "level sell 11000 0/0",
                "canceled 4 2 unfilled",
            ])
        );
        // Nothing to trade against: accepted, then canceled in full.
        f.order(market(Sell, 2));
        assert_eq!(f.said(), lines(&["accepted 5", "canceled 5 2 unfilled"]));
    }
}

#[test]
fn a_market_order_stops_at_the_band_edge() {
    for mut f in both(16) {
        f.order(limit(Sell, 10_900, 1));
        // Move the reference down: the band becomes 85.50 .. 104.50; the ask at 109.00 is outside.
        f.send(CommandKind::SetReference { symbol: ABC, price: Price(9_500) });
        f.order(market(Buy, 1));
        assert_eq!(f.said(), lines(&["accepted 3", "canceled 3 1 unfilled"]));
        assert_eq!(f.book(Sell).len(), 1);
    }
}

#[test]
fn ioc_remainders_are_canceled() {
    for mut f in both(16) {
        f.order(limit(Sell, 10_000, 2));
        f.order(NewOrder { tif: TimeInForce::Ioc, ..limit(Buy, 10_000, 5) });
        assert_eq!(
            f.said(),
            lines(&[
                "accepted 2",
                "fill#0 2x10000 maker 1 (0 left) taker 2 (3 left)",
                "level sell 10000 0/0",
                "canceled 2 3 unfilled",
            ])
        );
        assert!(f.book(Buy).is_empty());
    }
}

#[test]
fn fok_fills_in_full_or_is_rejected_untouched() {
    for mut f in both(16) {
        f.order(limit(Sell, 10_000, 2));
        f.order(limit(Sell, 10_001, 2));
        f.order(NewOrder { tif: TimeInForce::Fok, ..limit(Buy, 10_001, 5) });
        assert_eq!(f.said(), lines(&["rejected 3 fok_unfillable"]));
        assert_eq!(f.book(Sell).len(), 2);
        f.order(NewOrder { tif: TimeInForce::Fok, ..limit(Buy, 10_000, 3) });
        assert_eq!(f.said(), lines(&["rejected 4 fok_unfillable"]), "only 2 at or below 100.00");
        f.order(NewOrder { tif: TimeInForce::Fok, ..limit(Buy, 10_001, 4) });
        assert_eq!(f.said().len(), 5, "{:?}", f.said());
        assert!(f.book(Sell).is_empty());
    }
}

#[test]
fn fok_does_not_count_liquidity_that_self_trade_prevention_would_cancel() {
    for mut f in both(16) {
        let alice = acct("alice");
        f.order(NewOrder { account: alice, ..limit(Sell, 10_000, 2) });
        f.order(limit(Sell, 10_000, 1));
        f.order(NewOrder { account: alice, tif: TimeInForce::Fok, ..limit(Buy, 10_000, 3) });
        assert_eq!(f.said(), lines(&["rejected 3 fok_unfillable"]));
        assert_eq!(f.book(Sell).len(), 2, "a rejected FOK cancels nothing");
    }
}

#[test]
fn post_only_rests_or_is_rejected() {
    for mut f in both(16) {
        f.order(limit(Sell, 10_000, 1));
        f.order(NewOrder { post_only: true, ..limit(Buy, 10_000, 1) });
        assert_eq!(f.said(), lines(&["rejected 2 post_only_would_take"]));
        f.order(NewOrder { post_only: true, ..limit(Buy, 9_999, 1) });
        assert_eq!(f.said(), lines(&["accepted 3", "level buy 9999 1/1"]));
    }
}

#[test]
fn impossible_orders_are_rejected_as_invalid() {
    let bad = [
        NewOrder { qty: Qty(0), ..limit(Buy, 10_000, 1) },
        NewOrder { qty: Qty(matcher::MAX_ORDER_QTY.0 + 1), ..limit(Buy, 10_000, 1) },
        NewOrder { price: None, ..limit(Buy, 10_000, 1) },
        NewOrder { price: Some(Price(0)), ..limit(Buy, 10_000, 1) },
        NewOrder { price: Some(Price(-5)), ..limit(Buy, 10_000, 1) },
        NewOrder { price: Some(Price(10_000)), ..market(Buy, 1) },
        NewOrder { post_only: true, ..market(Buy, 1) },
        NewOrder { post_only: true, tif: TimeInForce::Ioc, ..limit(Buy, 10_000, 1) },
        NewOrder { post_only: true, tif: TimeInForce::Fok, ..limit(Buy, 10_000, 1) },
    ];
    for mut f in both(16) {
        for o in bad {
            let id = f.order(o);
            assert_eq!(f.said(), vec![format!("rejected {} invalid_order", id.offset())], "{o:?}");
        }
        assert!(f.book(Buy).is_empty());
    }
}

#[test]
fn cancel_removes_and_refuses_unknown_or_foreign_orders() {
    for mut f in both(16) {
        let a = f.order(limit(Buy, 9_990, 4));
        f.order(limit(Buy, 9_990, 1));
        f.cancel(a);
        assert_eq!(f.said(), lines(&["canceled 1 4 requested", "level buy 9990 1/1"]));
        f.cancel(a);
        assert_eq!(f.said(), lines(&["rejected 1 unknown_order"]));
        assert_eq!(f.events[0].seq, 0, "no symbol, no sequence number");
        let alice = f.order(NewOrder { account: acct("alice"), ..limit(Sell, 10_100, 1) });
        f.cancel(alice);
        assert_eq!(f.said(), vec![format!("rejected {} not_owner", alice.offset())]);
        assert_eq!(f.book(Sell).len(), 1);
    }
}

#[test]
fn replace_down_keeps_priority_and_up_or_repriced_loses_it() {
    for mut f in both(16) {
        let a = f.order(limit(Buy, 9_990, 5));
        let b = f.order(limit(Buy, 9_990, 5));
        f.replace(a, 9_990, 3);
        assert_eq!(f.said(), lines(&["replaced 1 3x9990 kept=true", "level buy 9990 8/2"]));
        assert_eq!(f.book(Buy), vec![(1, 9_990, 3), (2, 9_990, 5)]);
        f.replace(a, 9_990, 3);
        assert_eq!(f.said(), lines(&["replaced 1 3x9990 kept=true"]), "no change, no level update");
        f.replace(a, 9_990, 4);
        assert_eq!(
            f.said(),
            lines(&["replaced 1 4x9990 kept=false", "level buy 9990 5/1", "level buy 9990 9/2"])
        );
        assert_eq!(f.book(Buy), vec![(2, 9_990, 5), (1, 9_990, 4)]);
        f.replace(b, 9_991, 5);
        assert_eq!(
            f.said(),
            lines(&["replaced 2 5x9991 kept=false", "level buy 9990 4/1", "level buy 9991 5/1"])
        );
        assert_eq!(f.book(Buy), vec![(2, 9_991, 5), (1, 9_990, 4)]);
    }
}

#[test]
fn what_a_replace_leaves_out_is_what_the_order_has_when_the_book_applies_it() {
    for mut f in both(16) {
        let a = f.order(limit(Sell, 10_000, 5));
        f.order(limit(Buy, 10_000, 3)); // 3 of a's 5 trade: 2 open
        f.amend(a, Some(10_001), None);
        assert_eq!(
            f.said(),
            lines(&["replaced 1 2x10001 kept=false", "level sell 10000 0/0", "level sell 10001 2/1"]),
            "a price-only amend keeps the open quantity as it is now, not as it was when sent"
        );
        f.amend(a, None, Some(1));
        assert_eq!(f.said(), lines(&["replaced 1 1x10001 kept=true", "level sell 10001 1/1"]));
        f.amend(a, None, None);
        assert_eq!(f.said(), lines(&["replaced 1 1x10001 kept=true"]), "nothing to change");
        assert_eq!(f.book(Sell), vec![(1, 10_001, 1)]);
    }
}

#[test]
fn a_replace_that_crosses_trades_and_a_post_only_one_is_refused() {
    for mut f in both(16) {
        let s = f.order(limit(Sell, 10_000, 2));
        let b = f.order(limit(Buy, 9_990, 3));
        let p = f.order(NewOrder { post_only: true, ..limit(Buy, 9_980, 1) });
        f.replace(p, 10_000, 1);
        assert_eq!(f.said(), vec![format!("rejected {} post_only_would_take", p.offset())]);
        f.replace(b, 10_000, 3);
        let said = f.said();
        assert_eq!(
            said,
            vec![
                "replaced 2 3x10000 kept=false".to_string(),
                "level buy 9990 0/0".into(),
                format!("fill#0 2x10000 maker {} (0 left) taker 2 (1 left)", s.offset()),
                "level sell 10000 0/0".into(),
                "level buy 10000 1/1".into(),
            ]
        );
        // The replace command's id names the trade; the order keeps its own id.
        assert_eq!(f.events[2].trade_id().unwrap().cmd.offset(), 5);
    }
}

#[test]
fn replace_is_refused_outside_the_band_when_halted_for_others_and_for_unknown_orders() {
    for mut f in both(16) {
        let a = f.order(limit(Buy, 9_990, 5));
        f.replace(a, 8_999, 5);
        assert_eq!(f.said(), lines(&["rejected 1 price_band"]));
        f.replace(a, 9_990, 0);
        assert_eq!(f.said(), lines(&["rejected 1 invalid_order"]));
        f.send(CommandKind::Replace(common::Replace {
            symbol: ABC,
            order_id: a,
            account: acct("mallory"),
            price: Some(Price(9_990)),
            qty: Some(Qty(1)),
        }));
        assert_eq!(f.said(), lines(&["rejected 1 not_owner"]));
        f.send(CommandKind::Replace(common::Replace {
            symbol: DEF,
            order_id: a,
            account: common::Account::anonymous(),
            price: Some(Price(9_990)),
            qty: Some(Qty(1)),
        }));
        assert_eq!(f.said(), lines(&["rejected 1 unknown_order"]), "wrong symbol for that order");
        f.send(CommandKind::Halt { symbol: ABC });
        f.replace(a, 9_990, 1);
        assert_eq!(f.said(), lines(&["rejected 1 halted"]));
        f.replace(common::OrderId::new(0, 999).unwrap(), 9_990, 1);
        assert_eq!(f.said(), lines(&["rejected 999 unknown_order"]));
        assert_eq!(f.book(Buy), vec![(1, 9_990, 5)]);
    }
}

#[test]
fn self_trade_prevention_cancels_the_resting_order_and_goes_on() {
    for mut f in both(16) {
        let alice = acct("alice");
        f.order(NewOrder { account: alice, ..limit(Sell, 10_000, 2) }); // 1
        f.order(NewOrder { account: acct("bob"), ..limit(Sell, 10_000, 2) }); // 2
        f.order(NewOrder { account: alice, ..limit(Buy, 10_000, 3) }); // 3
        assert_eq!(
            f.said(),
            lines(&[
                "accepted 3",
                "canceled 1 2 self_trade",
                "fill#0 2x10000 maker 2 (0 left) taker 3 (1 left)",
                "level sell 10000 0/0",
                "level buy 10000 1/1",
            ])
        );
    }
}

#[test]
fn the_anonymous_account_is_exempt_from_self_trade_prevention() {
    for mut f in both(16) {
        f.order(limit(Sell, 10_000, 2));
        f.order(limit(Buy, 10_000, 2));
        assert_eq!(f.said()[1], "fill#0 2x10000 maker 1 (0 left) taker 2 (0 left)");
    }
}

#[test]
fn the_price_band_follows_the_reference_and_the_last_trade() {
    for mut f in both(16) {
        for (side, price, ok) in
            [(Buy, 8_999, false), (Buy, 9_000, true), (Sell, 11_000, true), (Sell, 11_001, false)]
        {
            let id = f.order(limit(side, price, 1));
            let want = if ok { "accepted" } else { "rejected" };
            assert!(f.said()[0].starts_with(want), "{side:?} {price}: {:?}", f.said());
            if ok {
                f.cancel(id);
            }
        }
        f.send(CommandKind::SetReference { symbol: ABC, price: Price(20_000) });
        assert_eq!(f.said(), lines(&["status halted=false ref=20000"]));
        f.order(limit(Sell, 21_000, 1));
        assert_eq!(f.said()[0], "accepted 8");
        f.order(limit(Buy, 21_000, 1)); // trades at 210.00: the band is now 189.00 .. 231.00
        f.order(limit(Buy, 18_899, 1));
        assert_eq!(f.said()[0], "rejected 10 price_band");
        f.order(limit(Buy, 18_900, 1));
        assert_eq!(f.said()[0], "accepted 11");
        f.send(CommandKind::SetReference { symbol: ABC, price: Price(0) });
        assert_eq!(f.said(), lines(&["rejected 12 invalid_order"]));
    }
}

#[test]
fn unknown_symbols_are_rejected_without_a_sequence_number() {
    for mut f in both(16) {
        let id = f.order(NewOrder { symbol: common::SymbolId(99), ..limit(Buy, 1, 1) });
        assert_eq!(f.said(), vec![format!("rejected {} unknown_symbol", id.offset())]);
        assert_eq!((f.events[0].symbol, f.events[0].seq), (None, 0));
        for kind in [
            CommandKind::Halt { symbol: common::SymbolId(99) },
            CommandKind::Resume { symbol: common::SymbolId(99) },
            CommandKind::SetReference { symbol: common::SymbolId(99), price: Price(1) },
        ] {
            let id = f.send(kind);
            assert_eq!(f.said(), vec![format!("rejected {} unknown_symbol", id.offset())]);
        }
    }
}

#[test]
fn a_halted_symbol_refuses_new_orders_but_accepts_cancels() {
    for mut f in both(16) {
        let a = f.order(limit(Buy, 9_990, 1));
        f.send(CommandKind::Halt { symbol: ABC });
        assert_eq!(f.said(), lines(&["status halted=true ref=10000"]));
        f.order(limit(Buy, 9_990, 1));
        assert_eq!(f.said(), lines(&["rejected 3 halted"]));
        f.order(NewOrder { symbol: DEF, ..limit(Buy, 1_000, 1) });
        assert_eq!(f.said()[0], "accepted 4", "other symbols trade on");
        f.cancel(a);
        assert_eq!(f.said(), lines(&["canceled 1 1 requested", "level buy 9990 0/0"]));
        f.send(CommandKind::Resume { symbol: ABC });
        assert_eq!(f.said(), lines(&["status halted=false ref=10000"]));
        f.order(limit(Buy, 9_990, 1));
        assert_eq!(f.said()[0], "accepted 7");
    }
}

#[test]
fn a_mass_cancel_takes_only_the_orders_that_came_in_on_its_partition() {
    for mut f in both(16) {
        let alice = acct("alice");
        f.order(NewOrder { account: alice, ..limit(Buy, 9_990, 1) }); // 1, partition 0
                                                                      // The copy produced to partition 1 finds none of alice's orders there.
        f.send_on(1, CommandKind::MassCancel { account: alice });
        assert_eq!(f.said(), Vec::<String>::new());
        // The copy on partition 0 takes them.
        f.send_on(0, CommandKind::MassCancel { account: alice });
        assert_eq!(f.said(), lines(&["canceled 1 1 mass_cancel", "level buy 9990 0/0"]));
    }
}

#[test]
fn mass_cancel_removes_one_accounts_orders_on_every_symbol() {
    for mut f in both(16) {
        let alice = acct("alice");
        f.order(NewOrder { account: alice, ..limit(Buy, 9_990, 1) }); // 1
        f.order(limit(Buy, 9_990, 2)); // 2
        f.order(NewOrder { account: alice, ..limit(Buy, 9_995, 3) }); // 3
        f.order(NewOrder { account: alice, ..limit(Sell, 10_010, 4) }); // 4
        f.order(NewOrder { account: alice, symbol: DEF, ..limit(Sell, 1_000, 5) }); // 5
        f.send(CommandKind::MassCancel { account: alice });
        assert_eq!(
            f.said(),
            lines(&[
                "canceled 3 3 mass_cancel",
                "level buy 9995 0/0",
                "canceled 1 1 mass_cancel",
                "level buy 9990 2/1",
                "canceled 4 4 mass_cancel",
                "level sell 10010 0/0",
                "canceled 5 5 mass_cancel",
                "level sell 1000 0/0",
            ])
        );
        assert_eq!(f.book(Buy), vec![(2, 9_990, 2)]);
        assert_eq!(f.events[6].symbol, Some(DEF));
    }
}

#[test]
fn duplicate_client_ids_are_rejected_while_open_and_in_the_recent_window() {
    for mut f in both(2) {
        let o = |c: &str| NewOrder { client_order_id: cid(c), ..limit(Buy, 9_990, 1) };
        f.order(o("x")); // 1, open
        f.order(o("x"));
        assert_eq!(f.said(), lines(&["rejected 2 duplicate_client_order_id"]));
        f.order(NewOrder { account: acct("alice"), ..o("x") });
        assert_eq!(f.said()[0], "accepted 3", "another account may use the same id");
        f.order(NewOrder { symbol: DEF, price: Some(Price(1_000)), ..o("x") });
        assert_eq!(f.said()[0], "accepted 4", "so may another symbol");
        f.cancel(common::OrderId::new(0, 1).unwrap()); // "x" ends: now in the recent window
        f.order(o("x"));
        assert_eq!(f.said(), lines(&["rejected 6 duplicate_client_order_id"]));
        // Two more ended orders push "x" out of a window of two.
        for c in ["y", "z"] {
            let id = f.order(NewOrder { tif: TimeInForce::Ioc, ..o(c) });
            assert!(f.said().last().unwrap().starts_with(&format!("canceled {}", id.offset())));
        }
        f.order(o("x"));
        assert_eq!(f.said()[0], "accepted 9");
    }
}

#[test]
fn a_command_applied_twice_does_not_make_a_second_order() {
    for f in both(16) {
        let mut m = f.m;
        let cmd = common::Command {
            id: common::OrderId::new(0, 7).unwrap(),
            ts: common::Timestamp(1),
            kind: CommandKind::New(NewOrder { client_order_id: cid("a"), ..limit(Buy, 9_990, 1) }),
        };
        let mut out = Vec::new();
        m.apply(&cmd, &mut out);
        out.clear();
        let mut again = cmd;
        if let CommandKind::New(o) = &mut again.kind {
            o.client_order_id = cid("b");
        }
        m.apply(&again, &mut out);
        assert_eq!(out.iter().map(describe).collect::<Vec<_>>(), lines(&["rejected 7 duplicate_order_id"]));
        assert_eq!(m.orders(ABC, Buy).len(), 1);
    }
}

#[test]
fn events_are_numbered_per_symbol_and_per_command() {
    for mut f in both(16) {
        f.order(limit(Sell, 10_000, 1));
        f.order(NewOrder { symbol: DEF, ..limit(Sell, 1_000, 1) });
        f.order(limit(Buy, 10_000, 1));
        let seqs: Vec<u64> = f.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5], "ABC had 2 events before; DEF's don't count");
        let idx: Vec<u32> = f.events.iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![0, 1, 2]);
        assert!(f.events.iter().all(|e| e.cmd.offset() == 3 && e.ts.0 == 1_003));
        let EventKind::Fill { fill, .. } = f.events[1].kind else { panic!() };
        assert_eq!(fill, 0);
    }
}

#[test]
fn depth_reports_the_top_levels_with_their_sequence() {
    let table = common::SymbolTable::default();
    let mut e = matcher::Engine::new(&table, matcher::Capacity::default());
    let mut out = Vec::new();
    for (i, (side, price, qty)) in
        [(Buy, 9_990, 1), (Buy, 9_995, 2), (Buy, 9_990, 3), (Sell, 10_010, 4), (Sell, 10_005, 5)]
            .into_iter()
            .enumerate()
    {
        let o = NewOrder { client_order_id: cid(&format!("d{i}")), ..limit(side, price, qty) };
        let cmd = common::Command {
            id: common::OrderId::new(0, i as u64).unwrap(),
            ts: common::Timestamp(0),
            kind: CommandKind::New(o),
        };
        e.apply(&cmd, &mut out);
    }
    let book = e.book(ABC).unwrap();
    let d = book.depth(1);
    assert_eq!(d.bids, vec![(Price(9_995), Qty(2))]);
    assert_eq!(d.asks, vec![(Price(10_005), Qty(5))]);
    assert_eq!(d.seq, 10);
    let d = book.depth(10);
    assert_eq!(d.bids, vec![(Price(9_995), Qty(2)), (Price(9_990), Qty(4))]);
    assert_eq!(book.best_bid(), Some((Price(9_995), Qty(2))));
    assert_eq!(book.best_ask(), Some((Price(10_005), Qty(5))));
    let (symbol, order) = e.order(common::OrderId::new(0, 3).unwrap()).unwrap();
    assert_eq!((symbol, order.side, order.leaves), (ABC, Sell, Qty(4)));
    assert_eq!(e.resting_orders(), 5);
    let _ = OrderType::Limit;
}

#[test]
fn canceled_and_replaced_events_say_the_order_s_side_and_price() {
    for mut f in both(16) {
        let alice = acct("alice");
        // Resting, then repriced (replaced), then canceled.
        let id = f.order(NewOrder { account: alice, ..limit(Sell, 10_010, 4) });
        f.send(CommandKind::Replace(common::Replace {
            order_id: id,
            symbol: ABC,
            account: alice,
            price: Some(Price(10_020)),
            qty: None,
        }));
        let replaced = f.events.iter().find_map(|e| match e.kind {
            EventKind::Replaced { side, price, .. } => Some((side, price)),
            _ => None,
        });
        assert_eq!(replaced, Some((Sell, Price(10_020))));
        f.send(CommandKind::Cancel(common::Cancel { order_id: id, account: alice }));
        let canceled = |f: &Fixture| {
            f.events.iter().find_map(|e| match e.kind {
                EventKind::Canceled { side, price, .. } => Some((side, price)),
                _ => None,
            })
        };
        assert_eq!(canceled(&f), Some((Sell, Some(Price(10_020)))));
        // An IOC remainder has its limit; a market order's has none.
        f.order(NewOrder { tif: TimeInForce::Ioc, ..limit(Buy, 9_990, 1) });
        assert_eq!(canceled(&f), Some((Buy, Some(Price(9_990)))));
        f.order(market(Buy, 1));
        assert_eq!(canceled(&f), Some((Buy, None)));
    }
}

#[test]
fn qty_at_reads_one_level_without_a_depth_snapshot() {
    let table = common::SymbolTable::default();
    let mut engine = matcher::Engine::new(&table, matcher::Capacity::default());
    let mut out = Vec::new();
    for (offset, (side, price, qty)) in
        [(Buy, 9_990, 2), (Buy, 9_990, 3), (Buy, 9_980, 1), (Sell, 10_010, 4)].into_iter().enumerate()
    {
        let cmd = common::Command {
            id: common::OrderId::new(0, offset as u64 + 1).unwrap(),
            ts: common::Timestamp(1),
            kind: CommandKind::New(NewOrder {
                client_order_id: cid(&format!("q{offset}")),
                ..limit(side, price, qty)
            }),
        };
        engine.apply(&cmd, &mut out);
    }
    let book = engine.book(ABC).unwrap();
    assert_eq!(book.qty_at(Buy, Price(9_990)), Qty(5));
    assert_eq!(book.qty_at(Buy, Price(9_980)), Qty(1));
    assert_eq!(book.qty_at(Sell, Price(10_010)), Qty(4));
    assert_eq!(book.qty_at(Sell, Price(9_990)), Qty::ZERO, "the other side");
    assert_eq!(book.qty_at(Buy, Price(9_985)), Qty::ZERO, "between levels");
    let depth = book.depth(10);
    for (price, qty) in depth.bids {
        assert_eq!(book.qty_at(Buy, price), qty);
    }
}

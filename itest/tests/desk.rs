//! What the desk and the operators use, through nginx on the real stack: amending an order
//! (cancel-replace), the caller's order lists, the operators' routes (refused to traders, logged
//! with who did it, and obeyed by the book), and the live system map seeing a process die and
//! come back.

use std::time::Duration;

use itest::{wait_until, Service, Stack};
use serde_json::{json, Value};

fn send(r: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = r.send().expect("request");
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn place(svc: &Service, client: &str, side: &str, price: &str, qty: &str) -> String {
    let body = json!({"client_order_id": client, "symbol": "ABC", "side": side, "type": "limit", "price": price, "qty": qty});
    let (status, v) = send(svc.client().post(svc.url("/api/v1/orders")).json(&body));
    assert_eq!(status, 202, "{v}");
    v["order_id"].as_str().expect("an order id").to_owned()
}

/// The order once `done` says it is settled.
fn order_when(svc: &Service, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let settled = wait_until(what, Duration::from_secs(10), || {
        last = send(svc.client().get(svc.url(&format!("/api/v1/orders/{id}")))).1;
        done(&last)
    });
    settled.unwrap_or_else(|e| panic!("{e:#}: {last}"));
    last
}

fn list(svc: &Service, query: &str) -> Vec<Value> {
    let (status, v) = send(svc.client().get(svc.url(&format!("/api/v1/orders?{query}"))));
    assert_eq!(status, 200, "{v}");
    v["orders"].as_array().expect("orders").clone()
}

fn ids(orders: &[Value]) -> Vec<&str> {
    orders.iter().filter_map(|o| o["order_id"].as_str()).collect()
}

#[test]
fn amend_list_admin_and_the_system_map() {
    let mut s = Stack::start(2, 2, true);
    let alice = s.as_user("nginx", "alice");
    let bob = s.as_user("nginx", "bob");

    // Amend: a new price, then a smaller open quantity; the order shows both.
    let a1 = place(&alice, "a1", "buy", "99.00", "5");
    order_when(&alice, &a1, "a1 rests", |o| o["status"] == "resting");
    let patch = |svc: &Service, id: &str, body: Value| {
        send(svc.client().patch(svc.url(&format!("/api/v1/orders/{id}"))).json(&body))
    };
    let (status, v) = patch(&alice, &a1, json!({"price": "98.50"}));
    assert_eq!((status, &v["status"]), (202, &"replace_requested".into()), "{v}");
    order_when(&alice, &a1, "a1 at 98.50", |o| o["price"] == "98.50" && o["open_qty"] == "5");
    assert_eq!(patch(&alice, &a1, json!({"qty": "2"})).0, 202);
    order_when(&alice, &a1, "a1 with 2 open", |o| o["open_qty"] == "2" && o["qty"] == "2");
    // Refusals: bob's amend of alice's order, off-tick, unknown fields, nothing to change.
    assert_eq!(patch(&bob, &a1, json!({"price": "98"})).0, 404);
    let (status, v) = patch(&alice, &a1, json!({"price": "98.001"}));
    assert_eq!((status, &v["error"]["code"]), (422, &"rule_violation".into()), "{v}");
    let (status, v) = patch(&alice, &a1, json!({"price": "98", "side": "sell"}));
    assert!(status == 400 && v["error"]["message"].as_str().unwrap().contains("side"), "{v}");
    assert_eq!(patch(&alice, &a1, json!({})).0, 400);
    let (status, v) = patch(&alice, &a1, json!({"price": "98", "account": "bob"}));
    assert!(status == 400 && v["error"]["message"].as_str().unwrap().contains("account"), "{v}");
    assert_eq!(patch(&alice, "nope", json!({"qty": "1"})).0, 400);
    assert_eq!(send(alice.client().patch(alice.url(&format!("/api/v1/orders/{a1}"))).body("{")).0, 400);

    // A price-only amend keeps the open quantity the order has when the book applies it: what
    // traded meanwhile is not given back.
    let a3 = place(&alice, "a3", "sell", "105.00", "5");
    order_when(&alice, &a3, "a3 rests", |o| o["status"] == "resting");
    place(&bob, "b0", "buy", "105.00", "3");
    order_when(&alice, &a3, "a3 partly filled", |o| o["status"] == "partially_filled");
    assert_eq!(patch(&alice, &a3, json!({"price": "105.50"})).0, 202);
    let o = order_when(&alice, &a3, "a3 repriced", |o| o["price"] == "105.50");
    assert_eq!((&o["open_qty"], &o["filled_qty"], &o["qty"]), (&"2".into(), &"3".into(), &"5".into()), "{o}");
    assert_eq!(send(alice.client().delete(alice.url(&format!("/api/v1/orders/{a3}")))).0, 202);
    order_when(&alice, &a3, "a3 canceled", |o| o["status"] == "canceled");

    // Lists: open orders, then all of them, each user's own only.
    let a2 = place(&alice, "a2", "buy", "97.00", "1");
    order_when(&alice, &a2, "a2 rests", |o| o["status"] == "resting");
    assert_eq!(ids(&list(&alice, "status=open")), [a2.as_str(), a1.as_str()], "newest first");
    assert_eq!(send(alice.client().delete(alice.url(&format!("/api/v1/orders/{a2}")))).0, 202);
    order_when(&alice, &a2, "a2 canceled", |o| o["status"] == "canceled");
    assert_eq!(ids(&list(&alice, "status=open")), [a1.as_str()]);
    assert_eq!(ids(&list(&alice, "status=all&symbol=ABC")), [a2.as_str(), a3.as_str(), a1.as_str()]);
    assert!(list(&alice, "symbol=XYZ").is_empty());
    let bobs = list(&bob, "status=all");
    assert!(bobs.iter().all(|o| o["account"] == "bob") && !bobs.is_empty(), "bob sees only his: {bobs:?}");
    let (status, v) = send(alice.client().get(alice.url("/api/v1/orders?status=maybe")));
    assert_eq!(status, 400, "{v}");
    assert_eq!(send(alice.client().get(alice.url("/api/v1/orders?limit=0"))).0, 400);
    // An amend of an order that is over is refused at the edge, saying why.
    let (status, v) = patch(&alice, &a2, json!({"qty": "1"}));
    assert!(status == 422 && v["error"]["message"].as_str().unwrap().contains("canceled"), "{v}");

    // Admin: refused without credentials and to a trader; an operator's halt stops new orders.
    let halt = "/api/v1/admin/symbols/ABC/halt";
    assert_eq!(send(itest::http().post(alice.url(halt))).0, 401);
    let (status, v) = send(bob.client().post(bob.url(halt)));
    assert_eq!((status, &v["error"]["code"]), (403, &"forbidden".into()), "{v}");
    let unknown = s.grant("carol-op", "operator").expect_err("carol has not signed up yet");
    assert!(unknown.to_string().contains("no user"), "{unknown:#}");
    let carol = s.as_user("nginx", "carol-op");
    s.grant("carol-op", "operator").expect("granted");
    let (status, v) = send(carol.client().post(carol.url(halt)));
    assert_eq!((status, &v["status"]), (202, &"halt_requested".into()), "{v}");
    let halted = |want: bool| {
        wait_until("the symbol's state", Duration::from_secs(10), || {
            let v = send(bob.client().get(bob.url("/api/v1/symbols"))).1;
            v["symbols"]
                .as_array()
                .is_some_and(|l| l.iter().any(|x| x["symbol"] == "ABC" && x["halted"] == want))
        })
        .expect("the symbol's state shows");
    };
    halted(true);
    let b1 = place(&bob, "b1", "sell", "101.00", "1");
    let o = order_when(&bob, &b1, "b1 refused", |o| o["status"] == "rejected");
    assert_eq!(o["reject_reason"], "halted", "{o}");
    assert_eq!(
        ids(&list(&bob, "status=all&limit=1")),
        [b1.as_str()],
        "a refused order lists by when it came"
    );
    let (status, v) = send(
        carol
            .client()
            .post(carol.url("/api/v1/admin/symbols/ABC/reference"))
            .json(&json!({"price": "100.5"})),
    );
    assert_eq!((status, &v["status"]), (202, &"set_reference_requested".into()), "{v}");
    let (status, v) = send(
        carol.client().post(carol.url("/api/v1/admin/symbols/ABC/reference")).json(&json!({"price": "x"})),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(send(carol.client().post(carol.url("/api/v1/admin/symbols/NOPE/halt"))).0, 400);
    assert_eq!(send(carol.client().post(carol.url("/api/v1/admin/symbols/ABC/resume"))).0, 202);
    halted(false);
    let b2 = place(&bob, "b2", "sell", "101.00", "1");
    order_when(&bob, &b2, "b2 rests", |o| o["status"] == "resting");
    // Mass-cancel: every resting order of alice's goes, bob's stays.
    let (status, v) = send(carol.client().post(carol.url("/api/v1/admin/accounts/alice/cancel-all")));
    assert_eq!((status, &v["status"]), (202, &"mass_cancel_requested".into()), "{v}");
    order_when(&alice, &a1, "a1 mass-canceled", |o| o["status"] == "canceled");
    assert!(list(&alice, "status=open").is_empty());
    assert_eq!(ids(&list(&bob, "status=open")), [b2.as_str()]);
    // The log names who did what, newest first; traders may not read it.
    let (status, v) = send(carol.client().get(carol.url("/api/v1/admin/log?limit=10")));
    assert_eq!(status, 200, "{v}");
    let entries = v["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
    let want = ["mass_cancel", "resume", "halt", "set_reference", "halt"];
    assert_eq!(actions, want, "every action, the one order-svc refused too (NOPE), newest first: {v}");
    assert_eq!(entries[2]["status"], "400", "{v}");
    assert!(entries.iter().all(|e| e["operator"] == "carol-op"), "{v}");
    assert_eq!(send(bob.client().get(bob.url("/api/v1/admin/log"))).0, 403);
    // Taken away, the role stops working at once.
    s.grant("carol-op", "trader").unwrap();
    assert_eq!(send(carol.client().post(carol.url(halt))).0, 403);

    // The system map, through nginx: every process up; a killed order-svc goes down, then back.
    let node = |name: &str| {
        let v = send(itest::http().get(alice.url("/api/v1/system"))).1;
        v["nodes"]
            .as_array()
            .and_then(|l| l.iter().find(|n| n["name"] == name).cloned())
            .unwrap_or(Value::Null)
    };
    let names =
        ["nginx", "gateway-1", "gateway-2", "order-svc-1", "order-svc-2", "matcher", "broker", "redis"];
    wait_until("every process up on the map", Duration::from_secs(10), || {
        names.iter().all(|n| node(n)["up"] == true && node(n)["ready"] == true)
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}", send(itest::http().get(alice.url("/api/v1/system"))).1));
    // Rates come from two rounds' counters.
    wait_until("a request rate", Duration::from_secs(10), || node("gateway-1")["rps"].as_f64().is_some())
        .unwrap_or_else(|e| panic!("{e:#}: {}", node("gateway-1")));
    assert_eq!(node("order-svc-1")["instance"], "order-svc-1");
    s.kill("order-svc-2");
    // Each gateway watches on its own and nginx takes turns: judge one answer at a time.
    wait_until("order-svc-2 down on the map, saying why", Duration::from_secs(10), || {
        let n = node("order-svc-2");
        n["up"] == false && n["error"].as_str().is_some_and(|e| e.contains("refused"))
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}", node("order-svc-2")));
    s.start_again("order-svc-2");
    wait_until("order-svc-2 back", Duration::from_secs(10), || node("order-svc-2")["up"] == true).unwrap();
}

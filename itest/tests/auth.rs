//! Accounts through a real gateway, Redis and the rest of the stack: who may do what, and every
//! way of being refused — no credentials, an expired token, a forged signature, `alg: none`, the
//! token of a deleted user, another user's order (read, cancel, by client id), an account named in
//! the body or query, bad usernames and passwords, a password guesser, an order flood — and API
//! keys from creation to revocation.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use itest::{http, password_of, wait_until, Service, Stack};
use serde_json::{json, Value};

fn stack() -> Stack {
    Stack::start(1, 1, false)
}

fn send(r: reqwest::blocking::RequestBuilder) -> (u16, Value) {
    let r = r.send().expect("request");
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn order(client: &str, side: &str, price: &str) -> Value {
    json!({"client_order_id": client, "symbol": "ABC", "side": side, "type": "limit", "price": price, "qty": "1"})
}

fn place(svc: &Service, body: &Value) -> (u16, Value) {
    send(svc.client().post(svc.url("/api/v1/orders")).json(body))
}

/// Places orders through `who` (client ids `<prefix>-1`, `-2`, …) until one is refused, for at
/// most two seconds; returns the last answer. A change made through another gateway reaches this
/// one with Redis's message, a loopback hop that may land just after this gateway's next request,
/// not before it (`gateway/src/auth/cache.rs`).
fn refused_after_a_hop(who: &Service, prefix: &str) -> (u16, Value) {
    let mut n = 0;
    let mut last = (0, Value::Null);
    let _ = wait_until("the change to reach the other gateway", Duration::from_secs(2), || {
        n += 1;
        last = place(who, &order(&format!("{prefix}-{n}"), "buy", "90"));
        last.0 == 401
    });
    last
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    uid: &'a str,
    iat: u64,
    exp: u64,
}

/// Runs `redis-cli` against the stack's Redis: its answer.
fn redis_cli(s: &Stack, args: &[&str]) -> String {
    let port = s.sup.plan().redis.rsplit(':').next().unwrap().to_owned();
    let out = Command::new("redis-cli").args(["-p", &port]).args(args).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A user's uid, straight from Redis (`user:<name>`), to sign tokens by hand.
fn uid_of(s: &Stack, user: &str) -> String {
    redis_cli(s, &["HGET", &format!("user:{user}"), "uid"])
}

fn sign(secret: &[u8], alg: jsonwebtoken::Algorithm, claims: &Claims) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, &key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A request with `token` as the bearer credential: its status and error code.
fn refused(g: &Service, token: &str) -> (u16, String, bool) {
    let r = http()
        .post(g.url("/api/v1/orders"))
        .bearer_auth(token)
        .json(&order("x", "buy", "90"))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let challenge = r.headers().get("www-authenticate").is_some();
    let v: Value = r.json().unwrap_or(Value::Null);
    (status, v["error"]["code"].as_str().unwrap_or_default().to_owned(), challenge)
}

#[test]
fn only_a_valid_token_of_a_living_user_gets_in() {
    let s = stack();
    let g = s.svc("gateway-1");
    let secret = std::fs::read_to_string(s.dir.path().join("jwt.secret")).unwrap().trim().to_owned();

    let (status, v) = send(http().post(g.url("/api/v1/orders")).json(&order("x", "buy", "90")));
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("unauthorized")), "no credentials: {v}");
    let (status, v) = send(http().get(g.url("/api/v1/orders/1")));
    assert_eq!(status, 401, "reads of orders need one too: {v}");
    let (status, _) = send(http().get(g.url("/api/v1/book/ABC")));
    assert_eq!(status, 200, "the book is public");

    itest::signup(&g, "alice");
    let uid = uid_of(&s, "alice");
    assert_eq!(uid.len(), 32, "a uid: {uid:?}");
    let expired = sign(
        secret.as_bytes(),
        jsonwebtoken::Algorithm::HS256,
        &Claims { sub: "alice", uid: &uid, iat: now() - 100, exp: now() - 10 },
    );
    assert_eq!(refused(&g, &expired), (401, "token_expired".into(), true));
    let forged = sign(
        &[9u8; 32],
        jsonwebtoken::Algorithm::HS256,
        &Claims { sub: "alice", uid: &uid, iat: now(), exp: now() + 60 },
    );
    assert_eq!(refused(&g, &forged), (401, "unauthorized".into(), true), "another secret");
    let other_alg = sign(
        secret.as_bytes(),
        jsonwebtoken::Algorithm::HS384,
        &Claims { sub: "alice", uid: &uid, iat: now(), exp: now() + 60 },
    );
    assert_eq!(refused(&g, &other_alg).0, 401, "HS384 with the right secret is still not HS256");
    let claims = format!(r#"{{"sub":"alice","uid":"{uid}","iat":{},"exp":{}}}"#, now(), now() + 60);
    let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), b64(claims.as_bytes()));
    assert_eq!(refused(&g, &none).0, 401, "alg none");
    assert_eq!(refused(&g, "tlk_0123456789abcdef_nope").0, 401, "an unknown API key");
    // The real secret and algorithm do get in: the refusals above were about the token.
    let good = sign(
        secret.as_bytes(),
        jsonwebtoken::Algorithm::HS256,
        &Claims { sub: "alice", uid: &uid, iat: now(), exp: now() + 60 },
    );
    let r = http()
        .post(g.url("/api/v1/orders"))
        .bearer_auth(&good)
        .json(&order("ok-1", "buy", "90"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);

    // A deleted user's token stops working at once.
    let carol = s.as_user("gateway-1", "carol");
    assert_eq!(place(&carol, &order("c-1", "buy", "90")).0, 202);
    let (status, v) = send(carol.client().delete(carol.url("/api/v1/auth/me")));
    assert_eq!((status, v["status"].as_str()), (200, Some("deleted")), "{v}");
    let (status, v) = place(&carol, &order("c-2", "buy", "90"));
    assert_eq!(status, 401, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("no longer exists"), "{v}");
    let creds = json!({"username": "carol", "password": password_of("carol")});
    assert_eq!(send(http().post(g.url("/login")).json(&creds)).0, 401, "and cannot log in");
    // Someone signs up as carol again: the old carol's token stays dead.
    itest::signup(&g, "carol");
    assert_eq!(place(&carol, &order("c-3", "buy", "90")).0, 401, "a new carol is another user");
}

#[test]
fn an_account_sees_and_cancels_only_its_own_orders() {
    let s = stack();
    let (alice, bob) = (s.as_user("gateway-1", "alice"), s.as_user("gateway-1", "bob"));
    let (status, placed) = place(&alice, &order("a-1", "buy", "95"));
    assert_eq!(status, 202, "{placed}");
    let id = placed["order_id"].as_str().unwrap().to_owned();
    let mut mine = Value::Null;
    wait_until("resting", Duration::from_secs(30), || {
        mine = send(alice.client().get(alice.url(&format!("/api/v1/orders/{id}")))).1;
        mine["status"] == "resting"
    })
    .unwrap();
    assert_eq!(mine["account"], "alice", "the order's account is the token's subject");

    // To bob, alice's order is exactly an order that does not exist.
    let (status, theirs) = send(bob.client().get(bob.url(&format!("/api/v1/orders/{id}"))));
    let nowhere_id = (id.parse::<u64>().unwrap() + 1_000_000).to_string();
    let (nowhere_status, nowhere) = send(bob.client().get(bob.url(&format!("/api/v1/orders/{nowhere_id}"))));
    assert_eq!((status, nowhere_status), (404, 404), "{theirs} {nowhere}");
    assert_eq!(theirs["error"]["code"], nowhere["error"]["code"]);
    assert_eq!(
        theirs["error"]["message"].as_str().unwrap().replace(&id, "ID"),
        nowhere["error"]["message"].as_str().unwrap().replace(&nowhere_id, "ID")
    );
    let (status, _) = send(bob.client().delete(bob.url(&format!("/api/v1/orders/{id}"))));
    assert_eq!(status, 404, "bob cannot cancel it");
    let (status, _) = send(bob.client().delete(bob.url(&format!("/api/v1/orders/{nowhere_id}"))));
    assert_eq!(status, 404, "nor an order that does not exist");
    let (status, _) = send(bob.client().get(bob.url("/api/v1/orders?symbol=ABC&client_order_id=a-1")));
    assert_eq!(status, 404, "nor find it by its client id");
    let (status, by_client) =
        send(alice.client().get(alice.url("/api/v1/orders?symbol=ABC&client_order_id=a-1")));
    assert_eq!((status, by_client["order_id"].as_str()), (200, Some(id.as_str())));
    // A trade of alice's, looked up by her and by bob under the same client id.
    assert_eq!(place(&alice, &order("a-t", "buy", "97")).0, 202);
    assert_eq!(place(&s.as_user("gateway-1", "carol"), &order("c-t", "sell", "97")).0, 202);
    wait_until("alice's trade", Duration::from_secs(30), || {
        send(alice.client().get(alice.url("/trade/a-t"))).1["found"] == true
    })
    .unwrap();
    let (_, t) = send(bob.client().get(bob.url("/trade/a-t")));
    assert_eq!(t["found"], false, "bob does not see alice's trade: {t}");

    // Naming an account is refused: you are who you signed in as.
    let mut spoof = order("a-2", "buy", "95");
    spoof["account"] = "alice".into();
    let (status, v) = place(&bob, &spoof);
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_field")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().starts_with("account"), "{v}");
    let lab = json!({"id": "l-1", "symbol": "ABC", "price": 95, "qty": 1, "account": "alice"});
    assert_eq!(send(bob.client().post(bob.url("/place_order")).json(&lab)).0, 400);
    let (status, _) =
        send(bob.client().get(bob.url("/api/v1/orders?symbol=ABC&client_order_id=a-1&account=alice")));
    assert_eq!(status, 400);

    // A cancel sent right after the order's 202 finds it (the gateway waits for the matcher).
    let (_, quick) = place(&alice, &order("a-q", "buy", "94"));
    let quick = quick["order_id"].as_str().unwrap().to_owned();
    let (status, v) = send(alice.client().delete(alice.url(&format!("/api/v1/orders/{quick}"))));
    assert_eq!(status, 202, "{v}");
    wait_until("quick cancel", Duration::from_secs(30), || {
        send(alice.client().get(alice.url(&format!("/api/v1/orders/{quick}")))).1["status"] == "canceled"
    })
    .unwrap();

    // The order is still alice's, still resting; she can cancel it.
    let (status, _) = send(alice.client().delete(alice.url(&format!("/api/v1/orders/{id}"))));
    assert_eq!(status, 202);
    wait_until("canceled", Duration::from_secs(30), || {
        send(alice.client().get(alice.url(&format!("/api/v1/orders/{id}")))).1["status"] == "canceled"
    })
    .unwrap();
}

#[test]
fn api_keys_are_shown_once_work_as_bearer_and_stop_when_revoked() {
    let s = stack();
    let alice = s.as_user("gateway-1", "alice");
    let (status, key) =
        send(alice.client().post(alice.url("/api/v1/auth/api-keys")).json(&json!({"label": "bot"})));
    assert_eq!(status, 201, "{key}");
    let secret = key["api_key"].as_str().unwrap().to_owned();
    let key_id = key["key_id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(&format!("tlk_{key_id}_")), "{secret}");
    let (_, list) = send(alice.client().get(alice.url("/api/v1/auth/api-keys")));
    assert_eq!(list["api_keys"][0]["key_id"], key_id.as_str());
    assert_eq!(list["api_keys"][0]["label"], "bot");
    assert!(!list.to_string().contains(&secret[key_id.len() + 5..]), "the secret is never listed: {list}");

    let bot = Service { token: Some(secret.clone()), ..s.svc("gateway-1") };
    let (status, placed) = place(&bot, &order("k-1", "buy", "90"));
    assert_eq!(status, 202, "{placed}");
    let id = placed["order_id"].as_str().unwrap();
    let mut seen = Value::Null;
    wait_until("the key's order", Duration::from_secs(30), || {
        seen = send(alice.client().get(alice.url(&format!("/api/v1/orders/{id}")))).1;
        seen["status"] == "resting"
    })
    .unwrap();
    assert_eq!(seen["account"], "alice", "a key acts for its owner");

    let bob = s.as_user("gateway-1", "bob");
    let (status, _) = send(bob.client().delete(bob.url(&format!("/api/v1/auth/api-keys/{key_id}"))));
    assert_eq!(status, 404, "bob cannot revoke alice's key");
    assert_eq!(place(&bot, &order("k-2", "buy", "90")).0, 202, "still alive");
    let (status, _) = send(alice.client().delete(alice.url(&format!("/api/v1/auth/api-keys/{key_id}"))));
    assert_eq!(status, 200);
    assert_eq!(place(&bot, &order("k-3", "buy", "90")).0, 401, "revoked");
    let forged = format!("tlk_{key_id}_{}", "0".repeat(48));
    assert_eq!(refused(&s.svc("gateway-1"), &forged).0, 401, "a guessed secret");
}

/// A gateway keeps who a caller is between requests (no Redis round trip per order), and a
/// deletion or revocation made through one gateway reaches the other with Redis's message (a
/// loopback hop): it is published in the same transaction, and each gateway drops what the
/// message names. Without the subscription (Redis gone) nothing is kept: orders are refused until
/// Redis is back.
#[test]
fn a_gateway_keeps_callers_and_forgets_them_when_another_gateway_deletes_them() {
    let mut s = Stack::start(1, 2, false);
    let on = |g: &str, who: &Service| Service { token: who.token.clone(), ..s.svc(g) };

    // The cache is in use: a user removed behind the gateways' backs (no message) still gets in
    // on the gateway that knew them, until the message comes.
    let erin = s.as_user("gateway-1", "erin");
    let erin2 = on("gateway-2", &erin);
    wait_until("both gateways to follow the user store", Duration::from_secs(10), || {
        redis_cli(&s, &["PUBSUB", "NUMSUB", "auth:changed"]).ends_with("\n2")
    })
    .unwrap();
    assert_eq!(place(&erin2, &order("e-warm", "buy", "90")).0, 202);
    assert_eq!(redis_cli(&s, &["DEL", "user:erin"]), "1");
    assert_eq!(place(&erin2, &order("e-1", "buy", "90")).0, 202, "kept: Redis was not asked");
    assert_eq!(redis_cli(&s, &["PUBLISH", "auth:changed", "user:erin"]), "2", "both gateways follow");
    let (status, v) = place(&erin2, &order("e-2", "buy", "90"));
    assert_eq!(status, 401, "the message dropped erin: {v}");

    // Deleted through gateway-1: refused on gateway-2 as soon as the message arrives.
    let dave = s.as_user("gateway-1", "dave");
    let dave2 = on("gateway-2", &dave);
    assert_eq!(place(&dave2, &order("d-1", "buy", "90")).0, 202);
    assert_eq!(place(&dave2, &order("d-2", "buy", "90")).0, 202);
    let (status, v) = send(dave.client().delete(dave.url("/api/v1/auth/me")));
    assert_eq!((status, v["status"].as_str()), (200, Some("deleted")), "{v}");
    let (status, v) = refused_after_a_hop(&dave2, "d-3");
    assert_eq!(status, 401, "deleted on gateway-1, still let in on gateway-2: {v}");

    // A key revoked through gateway-1: refused on gateway-2 as soon as the message arrives.
    let frank = s.as_user("gateway-1", "frank");
    let (status, key) =
        send(frank.client().post(frank.url("/api/v1/auth/api-keys")).json(&json!({"label": "bot"})));
    assert_eq!(status, 201, "{key}");
    let bot2 = Service { token: key["api_key"].as_str().map(str::to_owned), ..s.svc("gateway-2") };
    assert_eq!(place(&bot2, &order("f-1", "buy", "90")).0, 202);
    assert_eq!(place(&bot2, &order("f-2", "buy", "90")).0, 202);
    let key_id = key["key_id"].as_str().unwrap();
    let (status, _) = send(frank.client().delete(frank.url(&format!("/api/v1/auth/api-keys/{key_id}"))));
    assert_eq!(status, 200);
    let (status, v) = refused_after_a_hop(&bot2, "f-3");
    assert_eq!(status, 401, "revoked on gateway-1, still let in on gateway-2: {v}");

    // Redis gone: the subscription with it, so nothing kept is trusted.
    let frank2 = on("gateway-2", &frank);
    assert_eq!(place(&frank2, &order("f-4", "buy", "90")).0, 202);
    s.kill("redis");
    wait_until("gateway-2 to stop trusting what it kept", Duration::from_secs(5), || {
        place(&frank2, &order("f-5", "buy", "90")).0 == 503
    })
    .unwrap();
    s.start_again("redis");
    // What was kept before the outage is gone for good: frank, removed without a message once
    // Redis is back, is refused (an answer kept from before would let him in).
    redis_cli(&s, &["DEL", "user:frank"]);
    let mut last = (0, Value::Null);
    let back = wait_until("gateway-2 to answer from Redis again", Duration::from_secs(20), || {
        last = place(&frank2, &order("f-6", "buy", "90"));
        last.0 != 503
    });
    assert!(back.is_ok() && last.0 == 401, "{last:?}");
}

#[test]
fn bad_usernames_and_passwords_are_refused_naming_the_field() {
    let s = stack();
    let g = s.svc("gateway-1");
    let cases = [
        (json!({"username": "ab", "password": "long enough pw"}), "username"),
        (json!({"username": "bad name", "password": "long enough pw"}), "username"),
        (json!({"username": "anonymous", "password": "long enough pw"}), "username"),
        (json!({"username": "x".repeat(33), "password": "long enough pw"}), "username"),
        (json!({"username": "dave", "password": "short"}), "password"),
        (json!({"username": "dave", "password": "DAVE"}), "password"),
        (json!({"username": "dave", "password": "x".repeat(200)}), "password"),
    ];
    for (body, field) in cases {
        for path in ["/signup", "/api/v1/auth/signup"] {
            let (status, v) = send(http().post(g.url(path)).json(&body));
            assert_eq!(status, 400, "{path} {body}: {v}");
            assert!(v["error"]["message"].as_str().unwrap().starts_with(field), "{path} {body}: {v}");
        }
    }
    let (status, v) = send(http().post(g.url("/signup")).json(&json!({"username": "dave"})));
    assert_eq!(status, 400, "a missing password: {v}");
    let (status, v) = send(
        http()
            .post(g.url("/signup"))
            .json(&json!({"username": "dave", "password": "long enough pw", "admin": true})),
    );
    assert_eq!(status, 400, "an unknown field: {v}");
    let (status, v) = send(http().post(g.url("/login")).body("{nope"));
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("malformed_json")));
    let (status, v) = send(
        http()
            .post(g.url("/api/v1/auth/signup"))
            .json(&json!({"username": " Dave ", "password": "long enough pw"})),
    );
    assert_eq!((status, v["username"].as_str()), (201, Some("dave")));
    let (status, v) = send(
        http()
            .post(g.url("/api/v1/auth/signup"))
            .json(&json!({"username": "DAVE", "password": "another long pw"})),
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("username_taken")),
        "names are case-insensitive"
    );
}

#[test]
fn a_password_guesser_and_an_order_flood_are_slowed_down() {
    let s = Stack::start_with_gateway_args(
        1,
        1,
        false,
        &["--rate-failed-logins", "3", "--rate-orders-per-account", "1"],
    );
    let g = s.svc("gateway-1");
    itest::signup(&g, "erin");
    let wrong = json!({"username": "erin", "password": "not her password"});
    for i in 0..4 {
        let (status, v) = send(http().post(g.url("/login")).json(&wrong));
        assert_eq!((status, v["error"]["code"].as_str()), (401, Some("bad_credentials")), "guess {i}: {v}");
    }
    // The name is locked: even the right password waits.
    let right = json!({"username": "erin", "password": password_of("erin")});
    let r = http().post(g.url("/login")).json(&right).send().unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let wait: u64 = r.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let v: Value = r.json().unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    // Another name from the same address is not locked.
    let frank = s.as_user("gateway-1", "frank");

    // One order a second, bursts of two: of ten sent at once, at most two plus one a second pass.
    let started = std::time::Instant::now();
    let codes: Vec<u16> = (0..10).map(|i| place(&frank, &order(&format!("f-{i}"), "buy", "90")).0).collect();
    let allowed = 2 + started.elapsed().as_secs() as usize + 1;
    let passed = codes.iter().filter(|&&c| c == 202).count();
    assert!(passed >= 2 && passed <= allowed, "{passed} passed in {:?}: {codes:?}", started.elapsed());
    assert_eq!(passed + codes.iter().filter(|&&c| c == 429).count(), codes.len(), "{codes:?}");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(place(&frank, &order("f-later", "buy", "90")).0, 202, "the allowance refills");
}

#[test]
fn a_gateway_without_a_secret_refuses_to_start() {
    let out = Command::new(itest::our_binary("gateway"))
        .args(["--listen", &format!("127.0.0.1:{}", itest::free_port())])
        .env_remove("JWT_SECRET")
        .env_remove("JWT_SECRET_FILE")
        .env_remove("GATEWAY_NO_AUTH")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no session-token secret") && err.contains("--no-auth"), "{err}");
    let dir = itest::TempDir::new();
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "too short").unwrap();
    let out = Command::new(itest::our_binary("gateway"))
        .args(["--listen", &format!("127.0.0.1:{}", itest::free_port()), "--jwt-secret-file"])
        .arg(&short)
        .env_remove("JWT_SECRET")
        .env_remove("GATEWAY_NO_AUTH")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32 bytes"));
}

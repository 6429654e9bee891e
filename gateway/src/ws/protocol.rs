//! The WebSocket protocol's words (gateway/WEBSOCKET.md): what a client may send ([`Op`]), the
//! channels it may name ([`Channel`]), and the server's messages, each built once as JSON text
//! and shared by every session that gets it. Pure: no sockets, no Kafka.

use actix_web::web::Bytes;
use bytestring::ByteString;
use common::{Decimal, SymbolId, SymbolTable};
use serde::Deserialize;
use serde_json::{json, Value};

/// A channel a session can subscribe to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `book:<SYM>`: a depth snapshot with its sequence, then level updates.
    Book(SymbolId),
    /// `trades:<SYM>`: every trade of the symbol.
    Trades(SymbolId),
    /// `orders`: the caller's own order events (needs a signed-in caller).
    Orders,
}

/// Why a channel name was refused: an error `code` and its message.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `bad_channel`, `unknown_symbol`, `auth_required`, `bad_request`, ….
    pub code: &'static str,
    /// What was wrong, for a person.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { code, message: message.into() }
    }
}

impl Channel {
    /// Reads `book:ABC`, `trades:ABC` or `orders`.
    pub fn parse(name: &str, table: &SymbolTable) -> Result<Channel, Refusal> {
        if name == "orders" {
            return Ok(Channel::Orders);
        }
        let (kind, symbol) = name.split_once(':').unwrap_or((name, ""));
        let make: fn(SymbolId) -> Channel = match kind {
            "book" => Channel::Book,
            "trades" => Channel::Trades,
            _ => {
                return Err(Refusal::new(
                    "bad_channel",
                    format!(
                        "no channel {name:?}: the channels are book:<SYMBOL>, trades:<SYMBOL> and orders"
                    ),
                ))
            }
        };
        match table.lookup(symbol) {
            Some(id) => Ok(make(id)),
            None => Err(Refusal::new(
                "unknown_symbol",
                format!("unknown symbol {symbol:?} in {name:?}; the symbols are {}", table.names()),
            )),
        }
    }

    /// Its name on the wire.
    pub fn name(self, table: &SymbolTable) -> String {
        let symbol = |id: SymbolId| table.get(id).map_or("?", |s| s.name.as_str()).to_owned();
        match self {
            Channel::Book(id) => format!("book:{}", symbol(id)),
            Channel::Trades(id) => format!("trades:{}", symbol(id)),
            Channel::Orders => "orders".to_owned(),
        }
    }
}

/// What a client sends: `{"op": "subscribe", "channel": "book:ABC"}` and friends. `id`, if given,
/// comes back in the answer.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Start getting a channel (a book starts with a snapshot).
    Subscribe {
        /// The channel's name.
        channel: String,
        /// The client's tag for the answer.
        #[serde(default)]
        id: Option<Value>,
    },
    /// Stop getting a channel.
    Unsubscribe {
        /// The channel's name.
        channel: String,
        /// The client's tag for the answer.
        #[serde(default)]
        id: Option<Value>,
    },
    /// An application-level ping (browsers cannot send WebSocket pings): answered with `pong`.
    Ping {
        /// The client's tag for the answer.
        #[serde(default)]
        id: Option<Value>,
    },
    /// Test hook (`--ws-test-hooks` only): stop reading this session's queue for `ms`.
    DebugPause {
        /// How long.
        ms: u64,
    },
    /// Test hook (`--ws-test-hooks` only): leave out this session's next update of a book.
    DebugSkip {
        /// The book channel.
        channel: String,
    },
}

impl Op {
    /// Reads one client message; the error is the message for an `error` frame.
    pub fn parse(text: &str) -> Result<Op, Refusal> {
        serde_json::from_str(text).map_err(|e| {
            Refusal::new(
                "bad_request",
                format!("{e}; send {{\"op\": \"subscribe\" | \"unsubscribe\", \"channel\": \"book:ABC\"}} or {{\"op\": \"ping\"}}"),
            )
        })
    }
}

/// A frame's text, shared by every session that sends it (a `ByteString` clone is a reference
/// count, not a copy).
pub fn frame(v: &Value) -> ByteString {
    // Serialising a `Value` cannot fail.
    ByteString::from(serde_json::to_string(v).unwrap_or_default())
}

/// A frame from text that is already JSON.
pub fn frame_text(text: String) -> ByteString {
    ByteString::from(text)
}

/// The first message of every session.
pub fn welcome(
    instance: &str,
    account: Option<&str>,
    feed_up: bool,
    heartbeat: u64,
    idle: u64,
    queue: usize,
) -> ByteString {
    frame(&json!({
        "type": "welcome",
        "instance": instance,
        "account": account,
        "feed": if feed_up { "up" } else { "down" },
        "heartbeat_secs": heartbeat,
        "idle_timeout_secs": idle,
        "queue": queue,
    }))
}

/// `subscribed` / `unsubscribed`.
pub fn ack(kind: &str, channel: &str, id: Option<Value>) -> ByteString {
    let mut v = json!({"type": kind, "channel": channel});
    if let Some(id) = id {
        v["id"] = id;
    }
    frame(&v)
}

/// An `error` frame, naming the channel it concerns if any.
pub fn error(refusal: &Refusal, channel: Option<&str>, id: Option<Value>) -> ByteString {
    let mut v = json!({"type": "error", "code": refusal.code, "message": refusal.message});
    if let Some(c) = channel {
        v["channel"] = c.into();
    }
    if let Some(id) = id {
        v["id"] = id;
    }
    frame(&v)
}

/// `{"type": "heartbeat", "ts": <ns>}`.
pub fn heartbeat(ts_ns: u64) -> ByteString {
    frame(&json!({"type": "heartbeat", "ts": ts_ns}))
}

/// `{"type": "pong"}`.
pub fn pong(id: Option<Value>) -> ByteString {
    let mut v = json!({"type": "pong"});
    if let Some(id) = id {
        v["id"] = id;
    }
    frame(&v)
}

/// `{"type": "status", "feed": "up" | "down"}`.
pub fn status(up: bool) -> ByteString {
    frame(&json!({"type": "status", "feed": if up { "up" } else { "down" }}))
}

/// `{"type": "overflow", ...}`: the session's queue overflowed; what it was dropped from.
pub fn overflow(channels: &[String], closing: bool) -> ByteString {
    let message = if closing {
        "too slow: the queue overflowed again; closing"
    } else {
        "your queue overflowed and messages were dropped: each book gets a fresh snapshot; trades and \
         orders missed in between are at GET /api/v1/trades and GET /api/v1/orders"
    };
    frame(&json!({"type": "overflow", "channels": channels, "message": message, "closing": closing}))
}

/// A price level as the wire shows it: `["100.00", "5"]`.
pub fn level(price: Decimal, qty: Decimal) -> Value {
    json!([price.to_string(), qty.to_string()])
}

/// Bytes of a frame (tests).
pub fn bytes(f: &ByteString) -> Bytes {
    f.as_bytes().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_parse_and_print() {
        let t = SymbolTable::default();
        let abc = t.lookup("ABC").unwrap();
        assert_eq!(Channel::parse("book:ABC", &t), Ok(Channel::Book(abc)));
        assert_eq!(Channel::parse("trades:ABC", &t), Ok(Channel::Trades(abc)));
        assert_eq!(Channel::parse("orders", &t), Ok(Channel::Orders));
        assert_eq!(Channel::Book(abc).name(&t), "book:ABC");
        assert_eq!(Channel::parse("book:NOPE", &t).unwrap_err().code, "unknown_symbol");
        assert!(Channel::parse("book:NOPE", &t).unwrap_err().message.contains("ABC, DEF, XYZ"));
        assert_eq!(Channel::parse("book:abc", &t).unwrap_err().code, "unknown_symbol");
        for bad in ["candles:ABC", "book", "", "orders:ABC", "ABC"] {
            let code = Channel::parse(bad, &t).unwrap_err().code;
            assert!(code == "bad_channel" || code == "unknown_symbol", "{bad}: {code}");
        }
        assert_eq!(Channel::parse("level2:ABC", &t).unwrap_err().code, "bad_channel");
    }

    #[test]
    fn ops_parse_strictly() {
        assert_eq!(
            Op::parse(r#"{"op":"subscribe","channel":"book:ABC","id":7}"#),
            Ok(Op::Subscribe { channel: "book:ABC".into(), id: Some(json!(7)) })
        );
        assert_eq!(Op::parse(r#"{"op":"ping"}"#), Ok(Op::Ping { id: None }));
        for bad in [r#"{"op":"subscribe"}"#, r#"{"op":"explode"}"#, "not json", r#"{"op":"ping","x":1}"#] {
            assert_eq!(Op::parse(bad).unwrap_err().code, "bad_request", "{bad}");
        }
    }

    #[test]
    fn frames_are_json() {
        let v: Value =
            serde_json::from_slice(&bytes(&ack("subscribed", "book:ABC", Some(json!("a"))))).unwrap();
        assert_eq!(v, json!({"type": "subscribed", "channel": "book:ABC", "id": "a"}));
        let e = error(&Refusal::new("auth_required", "sign in"), Some("orders"), None);
        let v: Value = serde_json::from_slice(&bytes(&e)).unwrap();
        assert_eq!(v["code"], "auth_required");
        assert_eq!(v["channel"], "orders");
    }
}

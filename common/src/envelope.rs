//! The versioned JSON envelope of every Kafka message: `{"v": 1, "type": "...", ...}`.
//!
//! Decimals are strings on the wire (exact in any JSON reader), ids are strings, symbols are
//! names. Readers ignore unknown fields, so a newer writer can add some. Decoding reads the header
//! (`v`, `type`) first and then the body as a plain struct, so decimals are parsed from their text
//! (serde's internally-tagged enums would buffer numbers through `f64`).

use serde::{Deserialize, Serialize};

use crate::command::{Cancel, Command, CommandKind, NewOrder, Replace};
use crate::decimal::{Decimal, FieldError};
use crate::event::{CancelReason, Event, EventKind, RejectReason};
use crate::ids::{Account, ClientOrderId, OrderId, SymbolId, TradeId};
use crate::num::{OrderType, Price, Qty, Side, TimeInForce, Timestamp};
use crate::symbol::{SymbolSpec, SymbolTable};

/// The envelope version this code writes and reads.
pub const VERSION: u32 = 1;

/// Why a message could not be turned into a command.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or a field of the wrong shape.
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
    /// An envelope version this code does not read.
    #[error("unsupported envelope version {0}")]
    Version(u32),
    /// A `type` this code does not know.
    #[error("unknown message type {0:?}")]
    Type(String),
    /// A symbol that is not configured.
    #[error("unknown symbol {0:?}")]
    UnknownSymbol(String),
    /// A decimal that is not on the symbol's tick or lot.
    #[error(transparent)]
    Field(#[from] FieldError),
}

impl DecodeError {
    /// The reject reason the book's output reports for a message it could not apply.
    pub fn reject_reason(&self) -> RejectReason {
        match self {
            DecodeError::UnknownSymbol(_) => RejectReason::UnknownSymbol,
            _ => RejectReason::Malformed,
        }
    }
}

/// What travels with a command for measurement only: the book never sees it, and a message
/// without it is as valid as one with it (an optional header field, `gateway_ts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// When the gateway received the request (ns since the epoch); `None` when the order came to
    /// order entry directly.
    pub gateway_in: Option<Timestamp>,
}

/// The fields every message starts with.
#[derive(Deserialize)]
struct Header<'a> {
    v: u32,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    gateway_ts: Option<Timestamp>,
}

/// A body with the envelope's `v`, `type` (and trace, if any) in front.
#[derive(Serialize)]
struct Tagged<'a, T> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway_ts: Option<Timestamp>,
    #[serde(flatten)]
    body: T,
}

fn to_json<T: Serialize>(kind: &str, trace: Trace, body: T) -> Vec<u8> {
    // Serializing these plain structs to a Vec cannot fail.
    serde_json::to_vec(&Tagged { v: VERSION, kind, gateway_ts: trace.gateway_in, body }).unwrap_or_default()
}

fn default_account() -> Account {
    Account::anonymous()
}

/// `new_order` on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireNewOrder {
    /// When order entry published it (ns since the epoch).
    pub ts: Timestamp,
    /// Symbol name.
    pub symbol: String,
    /// Owner; absent means `anonymous`.
    #[serde(default = "default_account")]
    pub account: Account,
    /// The client's handle.
    pub client_order_id: ClientOrderId,
    /// Buy or sell.
    pub side: Side,
    /// Limit or market.
    pub order_type: OrderType,
    /// GTC, IOC or FOK.
    pub time_in_force: TimeInForce,
    /// Post-only.
    #[serde(default)]
    pub post_only: bool,
    /// Limit price; absent for market orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    /// Quantity.
    pub qty: Decimal,
}

/// `cancel` on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireCancel {
    /// When order entry published it.
    pub ts: Timestamp,
    /// The order to cancel.
    pub order_id: OrderId,
    /// Who asks.
    #[serde(default = "default_account")]
    pub account: Account,
}

/// `replace` on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireReplace {
    /// When order entry published it.
    pub ts: Timestamp,
    /// The order's symbol (to read the decimals).
    pub symbol: String,
    /// The order to change.
    pub order_id: OrderId,
    /// Who asks.
    #[serde(default = "default_account")]
    pub account: Account,
    /// New price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    /// New open quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qty: Option<Decimal>,
}

/// `halt`, `resume` on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireSymbolAdmin {
    /// When it was published.
    pub ts: Timestamp,
    /// The symbol.
    pub symbol: String,
}

/// `mass_cancel` on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireMassCancel {
    /// When it was published.
    pub ts: Timestamp,
    /// Whose orders.
    pub account: Account,
}

/// `set_reference` on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireSetReference {
    /// When it was published.
    pub ts: Timestamp,
    /// The symbol.
    pub symbol: String,
    /// The new reference price.
    pub price: Decimal,
}

fn symbol_of<'t>(table: &'t SymbolTable, name: &str) -> Result<(SymbolId, &'t SymbolSpec), DecodeError> {
    let id = table.lookup(name).ok_or_else(|| DecodeError::UnknownSymbol(name.to_owned()))?;
    let spec = table.get(id).ok_or_else(|| DecodeError::UnknownSymbol(name.to_owned()))?;
    Ok((id, spec))
}

/// Reads a command from a Kafka message; `id` is where the message sits in the log.
pub fn decode_command(bytes: &[u8], id: OrderId, table: &SymbolTable) -> Result<Command, DecodeError> {
    decode_command_traced(bytes, id, table).map(|(cmd, _)| cmd)
}

/// [`decode_command`], with the message's [`Trace`].
pub fn decode_command_traced(
    bytes: &[u8],
    id: OrderId,
    table: &SymbolTable,
) -> Result<(Command, Trace), DecodeError> {
    let header: Header = serde_json::from_slice(bytes)?;
    let trace = Trace { gateway_in: header.gateway_ts };
    if header.v != VERSION {
        return Err(DecodeError::Version(header.v));
    }
    let (ts, kind) = match header.kind.as_ref() {
        "new_order" => {
            let w: WireNewOrder = serde_json::from_slice(bytes)?;
            let (symbol, spec) = symbol_of(table, &w.symbol)?;
            let price = w.price.map(|p| spec.price("price", p)).transpose()?;
            let qty = spec.qty("qty", w.qty)?;
            let order = NewOrder {
                symbol,
                account: w.account,
                client_order_id: w.client_order_id,
                side: w.side,
                order_type: w.order_type,
                tif: w.time_in_force,
                post_only: w.post_only,
                price,
                qty,
            };
            (w.ts, CommandKind::New(order))
        }
        "cancel" => {
            let w: WireCancel = serde_json::from_slice(bytes)?;
            (w.ts, CommandKind::Cancel(Cancel { order_id: w.order_id, account: w.account }))
        }
        "replace" => {
            let w: WireReplace = serde_json::from_slice(bytes)?;
            let (symbol, spec) = symbol_of(table, &w.symbol)?;
            let replace = Replace {
                symbol,
                order_id: w.order_id,
                account: w.account,
                price: w.price.map(|p| spec.price("price", p)).transpose()?,
                qty: w.qty.map(|q| spec.qty("qty", q)).transpose()?,
            };
            (w.ts, CommandKind::Replace(replace))
        }
        "halt" | "resume" => {
            let w: WireSymbolAdmin = serde_json::from_slice(bytes)?;
            let (symbol, _) = symbol_of(table, &w.symbol)?;
            let kind = if header.kind == "halt" {
                CommandKind::Halt { symbol }
            } else {
                CommandKind::Resume { symbol }
            };
            (w.ts, kind)
        }
        "mass_cancel" => {
            let w: WireMassCancel = serde_json::from_slice(bytes)?;
            (w.ts, CommandKind::MassCancel { account: w.account })
        }
        "set_reference" => {
            let w: WireSetReference = serde_json::from_slice(bytes)?;
            let (symbol, spec) = symbol_of(table, &w.symbol)?;
            (w.ts, CommandKind::SetReference { symbol, price: spec.price("price", w.price)? })
        }
        other => return Err(DecodeError::Type(other.to_owned())),
    };
    Ok((Command { id, ts, kind }, trace))
}

fn spec_name(table: &SymbolTable, symbol: SymbolId) -> (&str, Option<&SymbolSpec>) {
    match table.get(symbol) {
        Some(spec) => (spec.name.as_str(), Some(spec)),
        None => ("", None),
    }
}

/// Writes a command as a Kafka message (what order entry publishes).
///
/// Panics if the command names a symbol the table does not have: order entry only builds
/// commands for symbols it validated.
pub fn encode_command(cmd: &Command, table: &SymbolTable) -> Vec<u8> {
    encode_command_traced(cmd, Trace::default(), table)
}

/// [`encode_command`] with a [`Trace`] in the header.
pub fn encode_command_traced(cmd: &Command, trace: Trace, table: &SymbolTable) -> Vec<u8> {
    let spec = |symbol: SymbolId| table.get(symbol).expect("command for a configured symbol");
    match cmd.kind {
        CommandKind::New(o) => {
            let s = spec(o.symbol);
            let body = WireNewOrder {
                ts: cmd.ts,
                symbol: s.name.clone(),
                account: o.account,
                client_order_id: o.client_order_id,
                side: o.side,
                order_type: o.order_type,
                time_in_force: o.tif,
                post_only: o.post_only,
                price: o.price.map(|p| s.price_decimal(p)),
                qty: s.qty_decimal(o.qty),
            };
            to_json("new_order", trace, body)
        }
        CommandKind::Cancel(c) => {
            to_json("cancel", trace, WireCancel { ts: cmd.ts, order_id: c.order_id, account: c.account })
        }
        CommandKind::Replace(r) => {
            let s = spec(r.symbol);
            let body = WireReplace {
                ts: cmd.ts,
                symbol: s.name.clone(),
                order_id: r.order_id,
                account: r.account,
                price: r.price.map(|p| s.price_decimal(p)),
                qty: r.qty.map(|q| s.qty_decimal(q)),
            };
            to_json("replace", trace, body)
        }
        CommandKind::Halt { symbol } => {
            to_json("halt", trace, WireSymbolAdmin { ts: cmd.ts, symbol: spec(symbol).name.clone() })
        }
        CommandKind::Resume { symbol } => {
            to_json("resume", trace, WireSymbolAdmin { ts: cmd.ts, symbol: spec(symbol).name.clone() })
        }
        CommandKind::MassCancel { account } => {
            to_json("mass_cancel", trace, WireMassCancel { ts: cmd.ts, account })
        }
        CommandKind::SetReference { symbol, price } => {
            let s = spec(symbol);
            to_json(
                "set_reference",
                trace,
                WireSetReference { ts: cmd.ts, symbol: s.name.clone(), price: s.price_decimal(price) },
            )
        }
    }
}

/// The fields every event carries on the wire.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireEventHeader {
    /// `"<cmd>-<index>"`: unique and stable across replays.
    pub event_id: String,
    /// The causing command's log position.
    pub cmd: OrderId,
    /// Symbol name (empty when the event names none).
    pub symbol: String,
    /// Per-symbol sequence number (0 when no symbol).
    pub seq: u64,
    /// The causing command's time.
    pub ts: Timestamp,
}

/// An event's body on the wire; `type` says which.
#[derive(Serialize, Debug)]
#[serde(untagged)]
enum WireEventBody {
    Accepted {
        order_id: OrderId,
        account: Account,
        client_order_id: ClientOrderId,
        side: Side,
        order_type: OrderType,
        time_in_force: TimeInForce,
        post_only: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        price: Option<Decimal>,
        qty: Decimal,
    },
    Rejected {
        order_id: OrderId,
        account: Account,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_order_id: Option<ClientOrderId>,
        reason: RejectReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        qty: Option<Decimal>,
    },
    Fill {
        trade_id: TradeId,
        maker_order_id: OrderId,
        taker_order_id: OrderId,
        taker_side: Side,
        price: Decimal,
        qty: Decimal,
        maker_leaves: Decimal,
        taker_leaves: Decimal,
        maker_account: Account,
        maker_client_order_id: ClientOrderId,
        taker_account: Account,
        taker_client_order_id: ClientOrderId,
    },
    Canceled {
        order_id: OrderId,
        side: Side,
        #[serde(skip_serializing_if = "Option::is_none")]
        price: Option<Decimal>,
        qty: Decimal,
        reason: CancelReason,
    },
    Replaced {
        order_id: OrderId,
        side: Side,
        price: Decimal,
        qty: Decimal,
        priority_kept: bool,
    },
    Level {
        side: Side,
        price: Decimal,
        qty: Decimal,
        orders: u32,
    },
    Status {
        halted: bool,
        reference: Decimal,
    },
}

#[derive(Serialize)]
struct WireEvent<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(flatten)]
    header: WireEventHeader,
    #[serde(flatten)]
    body: WireEventBody,
}

/// The wire name of an event's type.
pub fn event_type(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Accepted { .. } => "accepted",
        EventKind::Rejected { .. } => "rejected",
        EventKind::Fill { .. } => "fill",
        EventKind::Canceled { .. } => "canceled",
        EventKind::Replaced { .. } => "replaced",
        EventKind::Level { .. } => "level",
        EventKind::Status { .. } => "status",
    }
}

/// Writes an event as a Kafka message (the `order-events` and `trades` topics).
pub fn encode_event(event: &Event, table: &SymbolTable) -> Vec<u8> {
    let (name, spec) = match event.symbol {
        Some(symbol) => spec_name(table, symbol),
        None => ("", None),
    };
    // Without a spec (only rejects that name no symbol), amounts are written as raw units.
    let price = |p: Price| spec.map_or(Decimal::from_int(p.0), |s| s.price_decimal(p));
    let qty = |q: Qty| spec.map_or(Decimal { mantissa: i128::from(q.0), scale: 0 }, |s| s.qty_decimal(q));
    let body = match event.kind {
        EventKind::Accepted {
            order_id,
            account,
            client_order_id,
            side,
            order_type,
            tif,
            post_only,
            price: p,
            qty: q,
        } => WireEventBody::Accepted {
            order_id,
            account,
            client_order_id,
            side,
            order_type,
            time_in_force: tif,
            post_only,
            price: p.map(price),
            qty: qty(q),
        },
        EventKind::Rejected { order_id, account, client_order_id, reason, qty: q } => {
            WireEventBody::Rejected {
                order_id,
                account,
                client_order_id,
                reason,
                qty: (!q.is_zero()).then(|| qty(q)),
            }
        }
        EventKind::Fill {
            fill,
            maker,
            taker,
            taker_side,
            price: p,
            qty: q,
            maker_leaves,
            taker_leaves,
            maker_account,
            maker_client_order_id,
            taker_account,
            taker_client_order_id,
        } => WireEventBody::Fill {
            trade_id: TradeId { cmd: event.cmd, index: fill },
            maker_order_id: maker,
            taker_order_id: taker,
            taker_side,
            price: price(p),
            qty: qty(q),
            maker_leaves: qty(maker_leaves),
            taker_leaves: qty(taker_leaves),
            maker_account,
            maker_client_order_id,
            taker_account,
            taker_client_order_id,
        },
        EventKind::Canceled { order_id, side, price: p, qty: q, reason } => {
            WireEventBody::Canceled { order_id, side, price: p.map(price), qty: qty(q), reason }
        }
        EventKind::Replaced { order_id, side, price: p, qty: q, priority_kept } => {
            WireEventBody::Replaced { order_id, side, price: price(p), qty: qty(q), priority_kept }
        }
        EventKind::Level { side, price: p, qty: q, orders } => {
            WireEventBody::Level { side, price: price(p), qty: qty(q), orders }
        }
        EventKind::Status { halted, reference } => {
            WireEventBody::Status { halted, reference: price(reference) }
        }
    };
    let header = WireEventHeader {
        event_id: format!("{}-{}", event.cmd, event.index),
        cmd: event.cmd,
        symbol: name.to_owned(),
        seq: event.seq,
        ts: event.ts,
    };
    let wire = WireEvent { v: VERSION, kind: event_type(&event.kind), header, body };
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// Most bytes one `order-events` message packs (a pack is closed before it would pass this).
pub const PACK_BYTES: usize = 64 * 1024;

/// Adds an encoded event to a pack of events (an `order-events` message): one JSON object per
/// line, in order. A pack of one event is exactly that event's JSON, as one message per event
/// used to be. `false`: `pack` has room for no more (it is not empty and would pass
/// [`PACK_BYTES`]); start another.
///
/// Why packs: each Kafka record costs the native broker (Tansu on sqlite) an `INSERT` and, for
/// every reader, one more query when fetched, each parsed anew. `order-events` carries ~2–3 events
/// per command and has two readers (the gateways), so one message per event made it most of the
/// broker's work (DESIGN.md §1, README *Under load*).
pub fn pack_event(pack: &mut Vec<u8>, encoded: &[u8]) -> bool {
    if pack.is_empty() {
        pack.extend_from_slice(encoded);
        return true;
    }
    if pack.len() + 1 + encoded.len() > PACK_BYTES {
        return false;
    }
    pack.push(b'\n');
    pack.extend_from_slice(encoded);
    true
}

/// The events of an `order-events` message, in order (one JSON object per line; JSON escapes
/// every newline inside a string, so a line is always a whole event). Blank lines are skipped.
pub fn unpack_events(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    message.split(|&b| b == b'\n').filter(|line| !line.iter().all(u8::is_ascii_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_holds_its_events_in_order_and_one_event_is_the_event_itself() {
        let t = table();
        let abc = t.lookup("ABC").unwrap();
        let level = |seq: u64| {
            let kind = EventKind::Level { side: Side::Buy, price: Price(10_000), qty: Qty(seq), orders: 1 };
            encode_event(
                &Event { cmd: id(seq), index: 0, symbol: Some(abc), seq, ts: Timestamp(seq), kind },
                &t,
            )
        };
        let mut pack = Vec::new();
        assert!(pack_event(&mut pack, &level(1)));
        assert_eq!(pack, level(1), "a pack of one is the event's own JSON");
        for seq in 2..=4 {
            assert!(pack_event(&mut pack, &level(seq)));
        }
        let got: Vec<&[u8]> = unpack_events(&pack).collect();
        let want: Vec<Vec<u8>> = (1..=4).map(level).collect();
        assert_eq!(got, want.iter().map(Vec::as_slice).collect::<Vec<_>>());
        // A string with a newline in it stays on its line (JSON escapes it).
        let odd = serde_json::to_vec(&serde_json::json!({"event_id": "1-0", "note": "a\nb"})).unwrap();
        let mut two = odd.clone();
        assert!(pack_event(&mut two, &odd));
        assert_eq!(unpack_events(&two).count(), 2);
        assert_eq!(unpack_events(b"\n \n").count(), 0, "blank lines are no events");
    }

    #[test]
    fn a_full_pack_refuses_the_next_event_but_never_the_first() {
        let big = vec![b'x'; PACK_BYTES - 10];
        let mut pack = Vec::new();
        assert!(pack_event(&mut pack, &big));
        assert!(pack_event(&mut pack, b"123456789"), "exactly full");
        assert!(!pack_event(&mut pack, b"1"));
        assert_eq!(pack.len(), PACK_BYTES);
        let mut alone = Vec::new();
        assert!(
            pack_event(&mut alone, &vec![b'y'; PACK_BYTES * 2]),
            "an event bigger than a pack goes alone"
        );
    }

    fn table() -> SymbolTable {
        SymbolTable::default()
    }

    fn id(offset: u64) -> OrderId {
        OrderId::new(0, offset).unwrap()
    }

    #[test]
    fn every_command_round_trips() {
        let t = table();
        let abc = t.lookup("ABC").unwrap();
        let alice = Account::new("alice").unwrap();
        let kinds = [
            CommandKind::New(NewOrder {
                symbol: abc,
                account: alice,
                client_order_id: ClientOrderId::new("c-1").unwrap(),
                side: Side::Sell,
                order_type: OrderType::Limit,
                tif: TimeInForce::Gtc,
                post_only: true,
                price: Some(Price(10_005)),
                qty: Qty(7),
            }),
            CommandKind::New(NewOrder {
                symbol: abc,
                account: Account::anonymous(),
                client_order_id: ClientOrderId::new("m").unwrap(),
                side: Side::Buy,
                order_type: OrderType::Market,
                tif: TimeInForce::Ioc,
                post_only: false,
                price: None,
                qty: Qty(1),
            }),
            CommandKind::Cancel(Cancel { order_id: id(3), account: alice }),
            CommandKind::Replace(Replace {
                symbol: abc,
                order_id: id(3),
                account: alice,
                price: Some(Price(9_999)),
                qty: Some(Qty(2)),
            }),
            CommandKind::Replace(Replace {
                symbol: abc,
                order_id: id(3),
                account: alice,
                price: None,
                qty: Some(Qty(1)),
            }),
            CommandKind::Replace(Replace {
                symbol: abc,
                order_id: id(3),
                account: alice,
                price: Some(Price(1)),
                qty: None,
            }),
            CommandKind::Halt { symbol: abc },
            CommandKind::Resume { symbol: abc },
            CommandKind::MassCancel { account: alice },
            CommandKind::SetReference { symbol: abc, price: Price(10_100) },
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let cmd = Command { id: id(i as u64), ts: Timestamp(1_700_000_000_000_000_000 + i as u64), kind };
            let bytes = encode_command(&cmd, &t);
            let text = String::from_utf8(bytes.clone()).unwrap();
            assert!(text.starts_with("{\"v\":1,\"type\":"), "{text}");
            assert_eq!(decode_command(&bytes, cmd.id, &t).unwrap(), cmd, "{text}");
            assert!(!text.contains("gateway_ts"), "no trace, no field: {text}");
            // With a trace: the same command, and the trace back.
            let trace = Trace { gateway_in: Some(Timestamp(1_600_000_000_000_000_000 + i as u64)) };
            let bytes = encode_command_traced(&cmd, trace, &t);
            assert_eq!(decode_command_traced(&bytes, cmd.id, &t).unwrap(), (cmd, trace));
            assert_eq!(decode_command(&bytes, cmd.id, &t).unwrap(), cmd, "a reader that ignores it");
        }
    }

    #[test]
    fn a_trace_is_optional_and_must_be_a_number() {
        let t = table();
        let msg = br#"{"v":1,"type":"cancel","ts":1,"order_id":"1"}"#;
        assert_eq!(decode_command_traced(msg, id(1), &t).unwrap().1, Trace::default());
        let msg = br#"{"v":1,"type":"cancel","gateway_ts":"soon","ts":1,"order_id":"1"}"#;
        assert!(matches!(decode_command_traced(msg, id(1), &t), Err(DecodeError::Json(_))));
    }

    #[test]
    fn decoding_reads_exact_decimals_and_ignores_unknown_fields() {
        let t = table();
        let msg = br#"{"v":1,"type":"new_order","ts":5,"symbol":"ABC","client_order_id":"ui-1",
            "side":"buy","order_type":"limit","time_in_force":"gtc","price":100.05,"qty":"5","future_field":[1]}"#;
        let cmd = decode_command(msg, id(9), &t).unwrap();
        let CommandKind::New(o) = cmd.kind else { panic!("not a new order") };
        assert_eq!((o.price, o.qty, o.account), (Some(Price(10_005)), Qty(5), Account::anonymous()));
    }

    #[test]
    fn decoding_refuses_bad_messages() {
        let t = table();
        let cases: [(&[u8], &str); 7] = [
            (b"not json", "malformed"),
            (br#"{"v":2,"type":"cancel","ts":1,"order_id":"1"}"#, "unsupported envelope version 2"),
            (br#"{"v":1,"type":"explode","ts":1}"#, "unknown message type"),
            (br#"{"v":1,"type":"halt","ts":1,"symbol":"NOPE"}"#, "unknown symbol"),
            (
                br#"{"v":1,"type":"new_order","ts":1,"symbol":"ABC","client_order_id":"a","side":"buy","order_type":"limit","time_in_force":"gtc","price":"100.001","qty":"1"}"#,
                "price is not a multiple of 0.01",
            ),
            (
                br#"{"v":1,"type":"new_order","ts":1,"symbol":"ABC","client_order_id":"a b","side":"buy","order_type":"limit","time_in_force":"gtc","price":"1","qty":"1"}"#,
                "may contain only",
            ),
            (br#"{"v":1,"type":"cancel","ts":1}"#, "missing field `order_id`"),
        ];
        for (msg, want) in cases {
            let err = decode_command(msg, id(1), &t).unwrap_err().to_string();
            assert!(err.contains(want), "{err} does not contain {want}");
        }
        let unknown =
            decode_command(br#"{"v":1,"type":"halt","ts":1,"symbol":"NOPE"}"#, id(1), &t).unwrap_err();
        assert_eq!(unknown.reject_reason(), RejectReason::UnknownSymbol);
    }

    #[test]
    fn events_encode_with_decimals_and_ids() {
        let t = table();
        let abc = t.lookup("ABC").unwrap();
        let a = Account::anonymous();
        let c = ClientOrderId::new("x").unwrap();
        let fill = Event {
            cmd: id(42),
            index: 3,
            symbol: Some(abc),
            seq: 17,
            ts: Timestamp(99),
            kind: EventKind::Fill {
                fill: 1,
                maker: id(7),
                taker: id(42),
                taker_side: Side::Buy,
                price: Price(10_000),
                qty: Qty(5),
                maker_leaves: Qty(0),
                taker_leaves: Qty(2),
                maker_account: a,
                maker_client_order_id: c,
                taker_account: a,
                taker_client_order_id: c,
            },
        };
        let json: serde_json::Value = serde_json::from_slice(&encode_event(&fill, &t)).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["type"], "fill");
        assert_eq!(json["event_id"], "42-3");
        assert_eq!(json["trade_id"], "42-1");
        assert_eq!(json["symbol"], "ABC");
        assert_eq!(json["seq"], 17);
        assert_eq!(json["price"], "100.00");
        assert_eq!(json["qty"], "5");
        assert_eq!(fill.trade_id(), Some(TradeId { cmd: id(42), index: 1 }));
        let reject = Event {
            cmd: id(43),
            index: 0,
            symbol: None,
            seq: 0,
            ts: Timestamp(1),
            kind: EventKind::Rejected {
                order_id: id(1),
                account: a,
                client_order_id: None,
                reason: RejectReason::UnknownOrder,
                qty: Qty(0),
            },
        };
        let json: serde_json::Value = serde_json::from_slice(&encode_event(&reject, &t)).unwrap();
        assert_eq!(json["reason"], "unknown_order");
        assert_eq!(json["symbol"], "");
        assert!(json.get("qty").is_none());
    }
}

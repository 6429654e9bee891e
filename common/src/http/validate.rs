//! Turning request bodies into commands: shape, ranges, known symbol, exact decimals on tick and
//! lot, and the static limits of DESIGN.md §2. Pure functions, no I/O.
//!
//! The v1 body rejects unknown fields (a typo is an error); the original lab's body is read as it
//! was, plus optional `side` and `account`.

use crate::{
    Account, ClientOrderId, CommandKind, Decimal, DecimalError, FieldError, NewOrder, OrderId, OrderType,
    Qty, Replace, ShortStr, Side, SymbolId, SymbolSpec, SymbolTable, TimeInForce,
};
use serde::Deserialize;

use super::error::ApiError;

/// `POST /api/v1/orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V1Order {
    /// The client's handle (1–32 of `A–Z a–z 0–9 . _ - ~`).
    pub client_order_id: String,
    /// A configured symbol.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: String,
    /// `limit` or `market`.
    #[serde(rename = "type")]
    pub order_type: String,
    /// `gtc` (default for limit), `ioc` (default for market) or `fok`.
    #[serde(default)]
    pub time_in_force: Option<String>,
    /// Rejected by the book instead of taking liquidity.
    #[serde(default)]
    pub post_only: bool,
    /// Limit price (required for limit, absent for market); a decimal number or string.
    #[serde(default)]
    pub price: Option<Decimal>,
    /// Quantity; a decimal number or string.
    pub qty: Decimal,
    /// Owner until authentication exists; absent means `anonymous`.
    #[serde(default)]
    pub account: Option<String>,
}

/// `POST /order` and `POST /place_order`: the original lab's body.
#[derive(Debug, Deserialize)]
pub struct LabOrder {
    /// The client's order id.
    pub id: String,
    /// Symbol.
    pub symbol: String,
    /// Limit price.
    pub price: Decimal,
    /// Quantity.
    pub qty: Decimal,
    /// `buy` (default) or `sell`.
    #[serde(default)]
    pub side: Option<String>,
    /// Owner; absent means `anonymous`.
    #[serde(default)]
    pub account: Option<String>,
}

fn short(field: &str, value: &str) -> Result<ShortStr, ApiError> {
    ShortStr::new(value).map_err(|e| ApiError::field(format!("{field} {e}")))
}

fn account(value: Option<&str>) -> Result<Account, ApiError> {
    value.map_or(Ok(Account::anonymous()), |a| short("account", a))
}

fn side(value: &str) -> Result<Side, ApiError> {
    match value {
        "buy" => Ok(Side::Buy),
        "sell" => Ok(Side::Sell),
        other => Err(ApiError::field(format!("side must be \"buy\" or \"sell\", not {other:?}"))),
    }
}

fn decimal_error(e: FieldError) -> ApiError {
    match e.error {
        DecimalError::NotMultiple(_) => ApiError::Rule(e.to_string()),
        _ => ApiError::field(e.to_string()),
    }
}

/// What a body says besides symbol, price and quantity.
struct Draft {
    client_order_id: ClientOrderId,
    account: Account,
    side: Side,
    order_type: OrderType,
    tif: TimeInForce,
    post_only: bool,
}

/// A configured symbol, or the 400 that lists the known ones.
fn known_symbol<'t>(table: &'t SymbolTable, symbol: &str) -> Result<(SymbolId, &'t SymbolSpec), ApiError> {
    let unknown = || ApiError::BadRequest {
        code: "unknown_symbol",
        message: format!("unknown symbol {symbol:?}; known symbols: {}", table.names()),
    };
    let id = table.lookup(symbol).ok_or_else(unknown)?;
    Ok((id, table.get(id).ok_or_else(unknown)?))
}

/// Checks a new order against its symbol: tick, lot, static limits.
fn finish(
    table: &SymbolTable,
    symbol: &str,
    draft: Draft,
    price: Option<Decimal>,
    qty: Decimal,
) -> Result<NewOrder, ApiError> {
    let (id, spec) = known_symbol(table, symbol)?;
    let price = price.map(|p| spec.price("price", p)).transpose().map_err(decimal_error)?;
    let qty = spec.qty("qty", qty).map_err(decimal_error)?;
    spec.check_static(price, qty).map_err(|e| ApiError::Rule(e.to_string()))?;
    let Draft { client_order_id, account, side, order_type, tif, post_only } = draft;
    Ok(NewOrder { symbol: id, account, client_order_id, side, order_type, tif, post_only, price, qty })
}

/// Validates a v1 order.
pub fn v1(table: &SymbolTable, body: &V1Order) -> Result<NewOrder, ApiError> {
    let client_order_id = short("client_order_id", &body.client_order_id)?;
    let account = account(body.account.as_deref())?;
    let side = side(&body.side)?;
    let order_type = match body.order_type.as_str() {
        "limit" => OrderType::Limit,
        "market" => OrderType::Market,
        other => return Err(ApiError::field(format!("type must be \"limit\" or \"market\", not {other:?}"))),
    };
    let tif = match (body.time_in_force.as_deref(), order_type) {
        (None, OrderType::Limit) | (Some("gtc"), _) => TimeInForce::Gtc,
        (None, OrderType::Market) | (Some("ioc"), _) => TimeInForce::Ioc,
        (Some("fok"), _) => TimeInForce::Fok,
        (Some(other), _) => {
            return Err(ApiError::field(format!(
                "time_in_force must be \"gtc\", \"ioc\" or \"fok\", not {other:?}"
            )))
        }
    };
    match (order_type, body.price) {
        (OrderType::Limit, None) => return Err(ApiError::field("price is required for a limit order")),
        (OrderType::Market, Some(_)) => {
            return Err(ApiError::field("price must be absent for a market order"))
        }
        _ => {}
    }
    if body.post_only && (order_type == OrderType::Market || tif != TimeInForce::Gtc) {
        return Err(ApiError::field("post_only needs a limit order with time_in_force \"gtc\""));
    }
    let draft = Draft { client_order_id, account, side, order_type, tif, post_only: body.post_only };
    finish(table, &body.symbol, draft, body.price, body.qty)
}

/// Validates an order in the original lab's shape: a GTC limit order, `buy` unless `side` says.
pub fn lab(table: &SymbolTable, body: &LabOrder) -> Result<NewOrder, ApiError> {
    let client_order_id = short("id", &body.id)?;
    let account = account(body.account.as_deref())?;
    let side = body.side.as_deref().map_or(Ok(Side::Buy), side)?;
    let draft = Draft {
        client_order_id,
        account,
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        post_only: false,
    };
    finish(table, &body.symbol, draft, Some(body.price), body.qty)
}

/// `PATCH /api/v1/orders/{order_id}`, the public body: a new price and/or a new open quantity
/// (what is left out, the book keeps as the order has it when it applies the amend); `account`
/// only in development mode.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V1Amend {
    /// The new limit price.
    #[serde(default)]
    pub price: Option<Decimal>,
    /// The new open (unfilled) quantity.
    #[serde(default)]
    pub qty: Option<Decimal>,
    /// Who asks (development mode); absent means `anonymous`.
    #[serde(default)]
    pub account: Option<String>,
}

/// The amend as order-svc gets it: the public body with the order's symbol added by the gateway
/// (and, for a signed-in caller, the caller's account).
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct V1Replace {
    /// The order's symbol (the gateway fills it in from the order).
    pub symbol: String,
    /// The new limit price (absent: keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Decimal>,
    /// The new open (unfilled) quantity (absent: keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qty: Option<Decimal>,
    /// Who asks; absent means `anonymous`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// Validates a cancel-replace of `order_id`: a new price and/or open quantity (at least one), on
/// the symbol's tick and lot, within its static limits.
pub fn replace(table: &SymbolTable, order_id: OrderId, body: &V1Replace) -> Result<Replace, ApiError> {
    let account = account(body.account.as_deref())?;
    let (symbol, spec) = known_symbol(table, &body.symbol)?;
    if body.price.is_none() && body.qty.is_none() {
        return Err(ApiError::field("give price and/or qty (the new open quantity)"));
    }
    let price = body.price.map(|p| spec.price("price", p)).transpose().map_err(decimal_error)?;
    let qty = body.qty.map(|q| spec.qty("qty", q)).transpose().map_err(decimal_error)?;
    spec.check_static(price, qty.unwrap_or(Qty(1))).map_err(|e| ApiError::Rule(e.to_string()))?;
    Ok(Replace { symbol, order_id, account, price, qty })
}

/// `POST /api/v1/admin/...` as order-svc gets it: what the gateway's admin routes send.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V1Admin {
    /// `halt`, `resume`, `set_reference` or `mass_cancel`.
    pub action: String,
    /// The symbol (all but `mass_cancel`).
    #[serde(default)]
    pub symbol: Option<String>,
    /// The new reference price (`set_reference`).
    #[serde(default)]
    pub price: Option<Decimal>,
    /// Whose orders (`mass_cancel`).
    #[serde(default)]
    pub account: Option<String>,
}

/// Validates an admin command.
pub fn admin(table: &SymbolTable, body: &V1Admin) -> Result<CommandKind, ApiError> {
    let symbol = || {
        let name = body.symbol.as_deref().ok_or_else(|| ApiError::field("symbol is required"))?;
        known_symbol(table, name)
    };
    match body.action.as_str() {
        "halt" => Ok(CommandKind::Halt { symbol: symbol()?.0 }),
        "resume" => Ok(CommandKind::Resume { symbol: symbol()?.0 }),
        "set_reference" => {
            let (id, spec) = symbol()?;
            let price = body.price.ok_or_else(|| ApiError::field("price is required"))?;
            let price = spec.price("price", price).map_err(decimal_error)?;
            if price.0 <= 0 {
                return Err(ApiError::field("price must be positive"));
            }
            spec.check_static(Some(price), Qty(1)).map_err(|e| ApiError::Rule(e.to_string()))?;
            Ok(CommandKind::SetReference { symbol: id, price })
        }
        "mass_cancel" => {
            let name = body.account.as_deref().ok_or_else(|| ApiError::field("account is required"))?;
            Ok(CommandKind::MassCancel { account: short("account", name)? })
        }
        other => Err(ApiError::field(format!(
            "action must be \"halt\", \"resume\", \"set_reference\" or \"mass_cancel\", not {other:?}"
        ))),
    }
}

/// An exchange order id from a path, or the 400 that says what it must be.
pub fn order_id(path: &str) -> Result<OrderId, ApiError> {
    path.parse().map_err(|_| ApiError::field(format!("order_id must be a decimal u64, not {path:?}")))
}

/// Parses a JSON body, mapping serde's complaints to 400s that name the field.
pub fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() { "malformed_json" } else { "bad_field" };
        ApiError::BadRequest { code, message: e.to_string() }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Price, Qty};
    use actix_web::ResponseError;

    fn v1_json(json: &str) -> Result<NewOrder, ApiError> {
        let table = SymbolTable::default();
        let body: V1Order = parse(json.as_bytes())?;
        v1(&table, &body)
    }

    fn status(r: Result<NewOrder, ApiError>) -> (u16, String) {
        match r {
            Ok(_) => (202, String::new()),
            Err(e) => (e.status_code().as_u16(), e.to_string()),
        }
    }

    #[test]
    fn a_good_v1_order() {
        let o = v1_json(
            r#"{"client_order_id":"c-1","symbol":"ABC","side":"sell","type":"limit","time_in_force":"ioc","price":"100.05","qty":5}"#,
        )
        .unwrap();
        assert_eq!(
            (o.side, o.tif, o.price, o.qty),
            (Side::Sell, TimeInForce::Ioc, Some(Price(10_005)), Qty(5))
        );
        assert!(o.account.is_anonymous());
        let m = v1_json(r#"{"client_order_id":"m","symbol":"ABC","side":"buy","type":"market","qty":"1"}"#)
            .unwrap();
        assert_eq!((m.order_type, m.tif, m.price), (OrderType::Market, TimeInForce::Ioc, None));
    }

    #[test]
    fn bad_v1_orders_get_the_documented_status_and_name_the_field() {
        let base = r#""client_order_id":"c","symbol":"ABC","side":"buy","type":"limit""#;
        let cases: Vec<(String, u16, &str)> = vec![
            ("{".into(), 400, "EOF"),
            ("[1,2]".into(), 400, "invalid type"),
            (format!("{{{base}}}"), 400, "missing field `qty`"),
            (format!("{{{base},\"qty\":1,\"price\":1,\"colour\":\"red\"}}"), 400, "unknown field `colour`"),
            (format!("{{{base},\"qty\":-1,\"price\":1}}"), 400, "qty must be positive"),
            (format!("{{{base},\"qty\":0,\"price\":1}}"), 400, "qty must be positive"),
            (format!("{{{base},\"qty\":\"NaN\",\"price\":1}}"), 400, "is not a decimal number"),
            (format!("{{{base},\"qty\":1e40,\"price\":1}}"), 400, "out of range"),
            (format!("{{{base},\"qty\":1,\"price\":100.001}}"), 422, "price is not a multiple of 0.01"),
            (format!("{{{base},\"qty\":1.5,\"price\":1}}"), 422, "qty is not a multiple of 1"),
            (format!("{{{base},\"qty\":2000000,\"price\":1}}"), 422, "qty exceeds the maximum"),
            (format!("{{{base},\"qty\":1,\"price\":1000000}}"), 422, "outside the symbol's range"),
            (format!("{{{base},\"qty\":1}}"), 400, "price is required"),
            (
                r#"{"client_order_id":"c","symbol":"NOPE","side":"buy","type":"limit","qty":1,"price":1}"#.into(),
                400,
                "known symbols: ABC, DEF, XYZ",
            ),
            (
                r#"{"client_order_id":"c","symbol":"ABC","side":"up","type":"limit","qty":1,"price":1}"#.into(),
                400,
                "side must be",
            ),
            (
                r#"{"client_order_id":"a b","symbol":"ABC","side":"buy","type":"limit","qty":1,"price":1}"#.into(),
                400,
                "client_order_id may contain only",
            ),
            (
                r#"{"client_order_id":"c","symbol":"ABC","side":"buy","type":"market","qty":1,"price":1}"#.into(),
                400,
                "price must be absent",
            ),
            (
                r#"{"client_order_id":"c","symbol":"ABC","side":"buy","type":"limit","qty":1,"price":1,"post_only":true,"time_in_force":"ioc"}"#.into(),
                400,
                "post_only needs",
            ),
            (
                r#"{"client_order_id":"c","symbol":"ABC","side":"buy","type":"stop","qty":1,"price":1}"#.into(),
                400,
                "type must be",
            ),
        ];
        for (json, want_status, want_text) in cases {
            let (got_status, text) = status(v1_json(&json));
            assert_eq!(got_status, want_status, "{json} -> {text}");
            assert!(text.contains(want_text), "{json}: {text:?} lacks {want_text:?}");
        }
    }

    #[test]
    fn the_lab_body_defaults_to_buy_and_anonymous() {
        let table = SymbolTable::default();
        let body: LabOrder =
            parse(br#"{"id":"ui-123","symbol":"ABC","price":100,"qty":5,"extra":1}"#).unwrap();
        let o = lab(&table, &body).unwrap();
        assert_eq!(
            (o.side, o.price, o.qty, o.tif),
            (Side::Buy, Some(Price(10_000)), Qty(5), TimeInForce::Gtc)
        );
        assert!(o.account.is_anonymous());
        let body: LabOrder =
            parse(br#"{"id":"x","symbol":"ABC","price":100,"qty":5,"side":"sell","account":"al"}"#).unwrap();
        let o = lab(&table, &body).unwrap();
        assert_eq!((o.side, o.account.as_str()), (Side::Sell, "al"));
        let body: LabOrder =
            parse(br#"{"id":"x","symbol":"ABC","price":100,"qty":5,"side":"hold"}"#).unwrap();
        assert_eq!(lab(&table, &body).unwrap_err().status_code().as_u16(), 400);
    }

    /// Each case's JSON gets the status (`202` for accepted) and a message containing the text.
    fn refusals<T>(cases: &[(&str, u16, &str)], check: impl Fn(&str) -> Result<T, ApiError>) {
        for &(json, want_status, want_text) in cases {
            let (got, text) = match check(json) {
                Ok(_) => (202, String::new()),
                Err(e) => (e.status_code().as_u16(), e.to_string()),
            };
            assert_eq!(got, want_status, "{json} -> {text}");
            assert!(text.contains(want_text), "{json}: {text:?} lacks {want_text:?}");
        }
    }

    #[test]
    fn a_replace_is_checked_like_an_order() {
        let table = SymbolTable::default();
        let check = |json: &str| {
            let body: V1Replace = parse(json.as_bytes())?;
            replace(&table, OrderId(7), &body)
        };
        let r = check(r#"{"symbol":"ABC","price":"100.05","qty":"3","account":"al"}"#).unwrap();
        assert_eq!(
            (r.order_id, r.price, r.qty, r.account.as_str()),
            (OrderId(7), Some(Price(10_005)), Some(Qty(3)), "al")
        );
        let keep = check(r#"{"symbol":"ABC","qty":2}"#).unwrap();
        assert_eq!((keep.price, keep.qty), (None, Some(Qty(2))));
        // Through the JSON order-svc gets and back, exactly (no f64 on the way).
        let body = V1Replace {
            symbol: "ABC".into(),
            price: Some(Decimal::parse("100.05").unwrap()),
            qty: None,
            account: None,
        };
        let text = serde_json::to_string(&body).unwrap();
        assert_eq!(check(&text).unwrap().price, Some(Price(10_005)), "{text}");
        refusals(
            &[
                (r#"{"symbol":"ABC","price":"100.001","qty":"3"}"#, 422, "not a multiple of 0.01"),
                (r#"{"symbol":"ABC","price":100.0000000000000001}"#, 422, "not a multiple of 0.01"),
                (r#"{"symbol":"ABC","price":"100","qty":"0"}"#, 400, "qty must be positive"),
                (r#"{"symbol":"NOPE","price":"100","qty":"1"}"#, 400, "known symbols"),
                (r#"{"symbol":"ABC"}"#, 400, "give price and/or qty"),
                (r#"{"symbol":"ABC","price":"1","qty":"1","side":"buy"}"#, 400, "unknown field `side`"),
            ],
            check,
        );
    }

    #[test]
    fn admin_commands_name_what_they_need() {
        let table = SymbolTable::default();
        let check = |json: &str| {
            let body: V1Admin = parse(json.as_bytes())?;
            admin(&table, &body)
        };
        let abc = table.lookup("ABC").unwrap();
        assert_eq!(check(r#"{"action":"halt","symbol":"ABC"}"#).unwrap(), CommandKind::Halt { symbol: abc });
        assert_eq!(
            check(r#"{"action":"resume","symbol":"ABC"}"#).unwrap(),
            CommandKind::Resume { symbol: abc }
        );
        assert_eq!(
            check(r#"{"action":"set_reference","symbol":"ABC","price":"101.5"}"#).unwrap(),
            CommandKind::SetReference { symbol: abc, price: Price(10_150) }
        );
        assert!(matches!(
            check(r#"{"action":"mass_cancel","account":"bob"}"#).unwrap(),
            CommandKind::MassCancel { account } if account.as_str() == "bob"
        ));
        refusals(
            &[
                (r#"{"action":"halt"}"#, 400, "symbol is required"),
                (r#"{"action":"halt","symbol":"NOPE"}"#, 400, "known symbols"),
                (r#"{"action":"set_reference","symbol":"ABC"}"#, 400, "price is required"),
                (r#"{"action":"set_reference","symbol":"ABC","price":"-1"}"#, 400, "price must be positive"),
                (r#"{"action":"set_reference","symbol":"ABC","price":"1.001"}"#, 422, "not a multiple"),
                (r#"{"action":"mass_cancel"}"#, 400, "account is required"),
                (r#"{"action":"explode","symbol":"ABC"}"#, 400, "action must be"),
            ],
            check,
        );
    }
}

//! Turning request bodies into commands: shape, ranges, known symbol, exact decimals on tick and
//! lot, and the static limits of DESIGN.md §2. Pure functions, no I/O.
//!
//! The v1 body rejects unknown fields (a typo is an error); the original lab's body is read as it
//! was, plus optional `side` and `account`.

use crate::{
    Account, ClientOrderId, Decimal, DecimalError, FieldError, NewOrder, OrderType, ShortStr, Side,
    SymbolTable, TimeInForce,
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

/// Checks a new order against its symbol: tick, lot, static limits.
fn finish(
    table: &SymbolTable,
    symbol: &str,
    draft: Draft,
    price: Option<Decimal>,
    qty: Decimal,
) -> Result<NewOrder, ApiError> {
    let Some(id) = table.lookup(symbol) else {
        return Err(ApiError::BadRequest {
            code: "unknown_symbol",
            message: format!("unknown symbol {symbol:?}; known symbols: {}", table.names()),
        });
    };
    let spec = table.get(id).ok_or_else(|| ApiError::field("symbol is not configured"))?;
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
}

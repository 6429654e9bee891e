//! Integer money: prices in ticks, quantities in lots, and the small enums every order carries.
//!
//! Decimals exist only at the JSON edge ([`crate::decimal`]); inside, a price is an `i64` count of
//! the symbol's tick and a quantity a `u64` count of its lot, so arithmetic is exact and cheap.
//! Every operation that could overflow is checked; where the book's hot path subtracts the inner
//! values directly, an invariant stated at the site rules the underflow out, and debug builds
//! (`cargo test`) trap it anyway (`overflow-checks`, the workspace's `profile.dev`).

use serde::{Deserialize, Serialize};

/// A price as a whole number of the symbol's ticks.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(pub i64);

/// A quantity as a whole number of the symbol's lots.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Qty(pub u64);

/// Wall-clock nanoseconds since the Unix epoch, carried by a command (the book never reads a clock).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The wall clock now (for the services' hop stamps; the book never calls it).
    pub fn now() -> Timestamp {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        Timestamp(since.map_or(0, |d| d.as_nanos() as u64))
    }
}

impl Price {
    /// `self + rhs`, or `None` on overflow.
    #[inline]
    pub fn checked_add(self, rhs: i64) -> Option<Price> {
        self.0.checked_add(rhs).map(Price)
    }

    /// `self - rhs`, or `None` on overflow.
    #[inline]
    pub fn checked_sub(self, rhs: i64) -> Option<Price> {
        self.0.checked_sub(rhs).map(Price)
    }

    /// The price times a quantity, in ticks × lots. Cannot overflow: |i64| × u64 < 2^127.
    #[inline]
    pub fn notional(self, qty: Qty) -> i128 {
        self.0 as i128 * qty.0 as i128
    }
}

impl Qty {
    /// The zero quantity.
    pub const ZERO: Qty = Qty(0);

    /// `self + rhs`, or `None` on overflow.
    #[inline]
    pub fn checked_add(self, rhs: Qty) -> Option<Qty> {
        self.0.checked_add(rhs.0).map(Qty)
    }

    /// `self - rhs`, or `None` if `rhs` is larger.
    #[inline]
    pub fn checked_sub(self, rhs: Qty) -> Option<Qty> {
        self.0.checked_sub(rhs.0).map(Qty)
    }

    /// True for the zero quantity.
    #[inline]
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

/// Which side of the book an order is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// A bid: wants to buy.
    Buy,
    /// An ask: wants to sell.
    Sell,
}

impl Side {
    /// The other side.
    #[inline]
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// The lower-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

/// Whether an order names a price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    /// Trades at its price or better; the rest may rest.
    Limit,
    /// Trades at any price inside the symbol's band; never rests.
    Market,
}

impl OrderType {
    /// The lower-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderType::Limit => "limit",
            OrderType::Market => "market",
        }
    }
}

/// How long an order's unfilled rest lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Good till canceled: the remainder rests.
    Gtc,
    /// Immediate or cancel: the remainder is canceled.
    Ioc,
    /// Fill or kill: all of it trades at once or the order is rejected untouched.
    Fok,
}

impl TimeInForce {
    /// The lower-case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeInForce::Gtc => "gtc",
            TimeInForce::Ioc => "ioc",
            TimeInForce::Fok => "fok",
        }
    }
}

/// Where an order stands (DESIGN.md §5), as the matcher records it for `GET /api/v1/orders/{id}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// In the book's hands; not (yet) resting, filled or canceled.
    Accepted,
    /// Resting in the book, nothing filled yet.
    Resting,
    /// Some filled, some open.
    PartiallyFilled,
    /// All of it traded.
    Filled,
    /// What was open left the book without trading.
    Canceled,
    /// Refused; it never entered the book.
    Rejected,
}

impl OrderStatus {
    /// Every status, in declaration order.
    pub const ALL: [OrderStatus; 6] = [
        OrderStatus::Accepted,
        OrderStatus::Resting,
        OrderStatus::PartiallyFilled,
        OrderStatus::Filled,
        OrderStatus::Canceled,
        OrderStatus::Rejected,
    ];

    /// The snake_case wire name (the same as its JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Accepted => "accepted",
            OrderStatus::Resting => "resting",
            OrderStatus::PartiallyFilled => "partially_filled",
            OrderStatus::Filled => "filled",
            OrderStatus::Canceled => "canceled",
            OrderStatus::Rejected => "rejected",
        }
    }

    /// True once nothing more can happen to the order.
    pub fn is_final(self) -> bool {
        matches!(self, OrderStatus::Filled | OrderStatus::Canceled | OrderStatus::Rejected)
    }

    /// The status of a wire name ([`OrderStatus::as_str`]).
    pub fn from_name(name: &str) -> Option<OrderStatus> {
        OrderStatus::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// True for the wire name of a status an order can still trade or be canceled in.
    pub fn is_open_name(name: &str) -> bool {
        OrderStatus::from_name(name).is_some_and(|s| !s.is_final())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_arithmetic_reports_overflow() {
        assert_eq!(Price(i64::MAX).checked_add(1), None);
        assert_eq!(Price(i64::MIN).checked_sub(1), None);
        assert_eq!(Price(5).checked_add(-7), Some(Price(-2)));
        assert_eq!(Qty(3).checked_sub(Qty(4)), None);
        assert_eq!(Qty(u64::MAX).checked_add(Qty(1)), None);
        assert_eq!(Price(i64::MIN).notional(Qty(u64::MAX)), -(1i128 << 63) * u64::MAX as i128);
        assert_eq!(Price(-3).notional(Qty(4)), -12);
    }

    /// `as_str` and the serde names must never drift apart: both reach clients.
    #[test]
    fn enum_names_are_their_json() {
        let json = |v: serde_json::Value| v.as_str().unwrap().to_owned();
        for t in [OrderType::Limit, OrderType::Market] {
            assert_eq!(json(serde_json::to_value(t).unwrap()), t.as_str());
        }
        for t in [TimeInForce::Gtc, TimeInForce::Ioc, TimeInForce::Fok] {
            assert_eq!(json(serde_json::to_value(t).unwrap()), t.as_str());
        }
        for s in [Side::Buy, Side::Sell] {
            assert_eq!(json(serde_json::to_value(s).unwrap()), s.as_str());
        }
        for s in OrderStatus::ALL {
            assert_eq!(json(serde_json::to_value(s).unwrap()), s.as_str());
            assert_eq!(OrderStatus::from_name(s.as_str()), Some(s));
        }
    }

    #[test]
    fn open_statuses_by_name() {
        let open: Vec<&str> =
            OrderStatus::ALL.iter().map(|s| s.as_str()).filter(|n| OrderStatus::is_open_name(n)).collect();
        assert_eq!(open, ["accepted", "resting", "partially_filled"]);
        assert!(!OrderStatus::is_open_name("sent") && OrderStatus::from_name("").is_none());
    }

    #[test]
    fn sides_flip() {
        assert_eq!(Side::Buy.opposite(), Side::Sell);
        assert_eq!(Side::Sell.opposite().as_str(), "buy");
    }
}

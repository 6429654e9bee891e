//! The Redis key layout (DESIGN.md §4, README "Redis keys"), named once: the I/O thread writes
//! these keys and the HTTP front reads them.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `order:<exchange id>` | hash | the order: `order_id`, `symbol`, `account`, `client_order_id`, `side`, `type`, `time_in_force`, `post_only`, `entered_ns` (when order entry published it), `price`, `qty` (after a replace: filled plus the new open quantity), `filled_qty`, `status`, `reject_reason`, `cancel_reason`, `canceled_qty`, `last_request_rejected` (`<command id>:<reason>` of a refused cancel or replace), and the `hop_*_ns` timestamps |
//! | `fills:<exchange id>` | hash | trade id → the fill's JSON (`trade_id`, `price`, `qty`, `ts`) |
//! | `trade:<account>:<client order id>` | string | the original lab's shape of the order's first fill (`SET NX`) |
//! | `client:<account>:<symbol>:<client order id>` | string | the exchange id (`SET NX`) |
//! | `book:<symbol>` | string | the depth snapshot JSON with its sequence number |
//! | `trades:<symbol>` | stream | recent trades; entry id `<sequence>-0`, so a re-add is refused |
//! | `symbol:<symbol>` | hash | `halted`, `reference` |
//! | `orders:<account>` | sorted set | the account's newest orders (score: entry time, ms), at most [`RECENT_KEPT`] |
//! | `open:<account>` | set | the account's open orders (resting or partially filled GTC limit orders) |
//!
//! Retention (`--redis-retention-secs`, a day by default; 0: for ever): once an order ends
//! (filled, canceled, refused) its `order:`, `fills:` and `trade:` keys expire that long after; its
//! `client:` key expires that long after its client id has also left the book's duplicate window
//! (so a client told "duplicate" can always look up the order that holds the id). Open orders'
//! keys never expire. `orders:<account>` and `trades:<symbol>` are capped instead; `book:`,
//! `symbol:` and `open:` hold only the present. The `orders` and `trades` topics are the history.

use std::fmt::Display;

/// `order:<id>`.
pub fn order(id: impl Display) -> String {
    format!("order:{id}")
}

/// `fills:<id>`.
pub fn fills(id: impl Display) -> String {
    format!("fills:{id}")
}

/// `trade:<account>:<client order id>`: the original lab's `GET /trade/<id>`.
pub fn trade(account: &str, client_order_id: &str) -> String {
    format!("trade:{account}:{client_order_id}")
}

/// `client:<account>:<symbol>:<client order id>`.
pub fn client(account: &str, symbol: &str, client_order_id: &str) -> String {
    format!("client:{account}:{symbol}:{client_order_id}")
}

/// `book:<symbol>`.
pub fn book(symbol: &str) -> String {
    format!("book:{symbol}")
}

/// `trades:<symbol>`.
pub fn trades(symbol: &str) -> String {
    format!("trades:{symbol}")
}

/// `symbol:<symbol>`.
pub fn symbol(symbol: &str) -> String {
    format!("symbol:{symbol}")
}

/// `orders:<account>`: the account's recent orders.
pub fn recent(account: &str) -> String {
    format!("orders:{account}")
}

/// `open:<account>`: the account's open orders.
pub fn open(account: &str) -> String {
    format!("open:{account}")
}

/// How many of an account's newest orders `orders:<account>` keeps.
pub const RECENT_KEPT: isize = 500;

/// About how many entries a `trades:<symbol>` stream keeps (`MAXLEN ~`).
pub const TRADES_KEPT: usize = 10_000;

/// Levels kept on each side of a `book:<symbol>` snapshot.
pub const BOOK_DEPTH: usize = 50;

/// The `trades:<symbol>` entry id of sequence number `seq`.
pub fn stream_id(seq: u64) -> String {
    format!("{seq}-0")
}

/// The sequence number of a `trades:<symbol>` entry id.
pub fn stream_seq(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_carry_the_sequence() {
        assert_eq!(stream_id(42), "42-0");
        assert_eq!(stream_seq(&stream_id(42)), Some(42));
        assert_eq!(stream_seq("x-0"), None);
        assert_eq!(client("a", "ABC", "c-1"), "client:a:ABC:c-1");
        assert_eq!(order(7u64), "order:7");
    }
}

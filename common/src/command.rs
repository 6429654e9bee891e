//! The commands the book applies, in their in-memory form: small, `Copy`, no strings on the heap.
//!
//! One variant per command of DESIGN.md §2. Every command carries its own log position (`id`)
//! and time (`ts`): the book reads no clock, so a replay gives the same events byte for byte.
//! The JSON form lives in [`crate::envelope`].

use crate::ids::{Account, ClientOrderId, OrderId, SymbolId};
use crate::num::{OrderType, Price, Qty, Side, TimeInForce, Timestamp};

/// A command and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// The command's log position; for a new order, the order's exchange id.
    pub id: OrderId,
    /// When order entry published it: the time the book stamps on every event it causes.
    pub ts: Timestamp,
    /// What to do.
    pub kind: CommandKind,
}

/// What a command asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    /// Enter a new order.
    New(NewOrder),
    /// Cancel a resting order.
    Cancel(Cancel),
    /// Change a resting order's price and/or open quantity.
    Replace(Replace),
    /// Admin: stop accepting new orders on a symbol (cancels still work).
    Halt {
        /// The symbol to halt.
        symbol: SymbolId,
    },
    /// Admin: accept new orders on a halted symbol again.
    Resume {
        /// The symbol to resume.
        symbol: SymbolId,
    },
    /// Admin: cancel every resting order of an account, on every symbol this engine holds.
    MassCancel {
        /// Whose orders.
        account: Account,
    },
    /// Admin: move a symbol's reference price (and with it the price band).
    SetReference {
        /// The symbol.
        symbol: SymbolId,
        /// The new reference, in ticks.
        price: Price,
    },
}

/// A new order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewOrder {
    /// What it trades.
    pub symbol: SymbolId,
    /// Who owns it.
    pub account: Account,
    /// The owner's handle, unique per (account, symbol) among open and recent orders.
    pub client_order_id: ClientOrderId,
    /// Buy or sell.
    pub side: Side,
    /// Limit or market.
    pub order_type: OrderType,
    /// GTC, IOC or FOK. A market order never rests, whatever this says.
    pub tif: TimeInForce,
    /// Rejected instead of taking liquidity.
    pub post_only: bool,
    /// The limit price; `None` for a market order.
    pub price: Option<Price>,
    /// How much, in lots.
    pub qty: Qty,
}

/// Cancel an order by its exchange id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cancel {
    /// The order to cancel.
    pub order_id: OrderId,
    /// Who asks: must own the order.
    pub account: Account,
}

/// Replace a resting order's price and/or open quantity.
///
/// Quantity down at the same price keeps the order's place in the queue; a new price or a larger
/// quantity sends it to the back (and it may trade at once if the new price crosses). What is
/// `None` keeps the order's value *when the book applies the command*: a price-only amend never
/// gives back quantity that traded while the amend was on its way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replace {
    /// The symbol the order trades: the wire form needs it to read the new price's decimals.
    pub symbol: SymbolId,
    /// The order to change.
    pub order_id: OrderId,
    /// Who asks: must own the order.
    pub account: Account,
    /// The new limit price (`None`: keep it).
    pub price: Option<Price>,
    /// The new open (unfilled) quantity (`None`: keep it).
    pub qty: Option<Qty>,
}

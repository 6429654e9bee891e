//! What the book says back: one [`Event`] per thing that happened, in order, each with a
//! per-symbol, gap-free sequence number.
//!
//! Events are `Copy` and self-contained (a fill names both sides' accounts and client ids), so
//! the I/O thread can write Redis and Kafka from an event alone. Their ids derive from the command
//! that caused them: `(cmd, index)`; a trade's id is `(cmd, fill index)`.

use serde::{Deserialize, Serialize};

use crate::ids::{Account, ClientOrderId, OrderId, SymbolId, TradeId};
use crate::num::{OrderType, Price, Qty, Side, TimeInForce, Timestamp};

/// One thing the book did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The command that caused it.
    pub cmd: OrderId,
    /// Its place among that command's events: `(cmd, index)` is the event id.
    pub index: u32,
    /// The symbol it concerns; `None` for a reject that names no known symbol or order.
    pub symbol: Option<SymbolId>,
    /// Per-symbol sequence number, gap-free from 1; 0 when `symbol` is `None`.
    pub seq: u64,
    /// The causing command's time.
    pub ts: Timestamp,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A new order passed every check and entered the book (it may trade at once).
    Accepted {
        /// The order's exchange id.
        order_id: OrderId,
        /// Its owner.
        account: Account,
        /// The owner's handle.
        client_order_id: ClientOrderId,
        /// Buy or sell.
        side: Side,
        /// Limit or market.
        order_type: OrderType,
        /// GTC, IOC or FOK.
        tif: TimeInForce,
        /// Post-only.
        post_only: bool,
        /// Limit price (`None` for market).
        price: Option<Price>,
        /// Quantity ordered.
        qty: Qty,
    },
    /// A command was refused and changed nothing.
    Rejected {
        /// The new order's id, or the order a cancel/replace named.
        order_id: OrderId,
        /// Who sent the command.
        account: Account,
        /// The new order's client id (`None` for cancel, replace and admin rejects).
        client_order_id: Option<ClientOrderId>,
        /// Why.
        reason: RejectReason,
        /// The quantity refused (the new order's; 0 for other commands).
        qty: Qty,
    },
    /// Two orders traded.
    Fill {
        /// Index among the command's fills: the trade id is `(cmd, fill)`.
        fill: u32,
        /// The resting order.
        maker: OrderId,
        /// The incoming order.
        taker: OrderId,
        /// The taker's side.
        taker_side: Side,
        /// The maker's price: the trade price.
        price: Price,
        /// Quantity traded.
        qty: Qty,
        /// What the maker has left open.
        maker_leaves: Qty,
        /// What the taker has left open.
        taker_leaves: Qty,
        /// The maker's owner.
        maker_account: Account,
        /// The maker's client id.
        maker_client_order_id: ClientOrderId,
        /// The taker's owner.
        taker_account: Account,
        /// The taker's client id.
        taker_client_order_id: ClientOrderId,
    },
    /// An order's open quantity left the book without trading.
    Canceled {
        /// The order.
        order_id: OrderId,
        /// Its side.
        side: Side,
        /// Its limit price (`None`: a market order's unfilled rest).
        price: Option<Price>,
        /// The open quantity removed.
        qty: Qty,
        /// Why.
        reason: CancelReason,
    },
    /// A resting order got a new price and/or open quantity.
    Replaced {
        /// The order.
        order_id: OrderId,
        /// Its side.
        side: Side,
        /// Its new price.
        price: Price,
        /// Its new open quantity (before any matching the new price causes).
        qty: Qty,
        /// Whether it kept its place in the queue.
        priority_kept: bool,
    },
    /// A price level's totals after the command changed it (0 lots: the level is gone).
    Level {
        /// Bid or ask side.
        side: Side,
        /// The level's price.
        price: Price,
        /// Total open quantity resting there.
        qty: Qty,
        /// How many orders rest there.
        orders: u32,
    },
    /// An admin command changed a symbol's state.
    Status {
        /// Whether new orders are refused.
        halted: bool,
        /// The band's centre.
        reference: Price,
    },
}

impl Event {
    /// The trade id of a fill event.
    pub fn trade_id(&self) -> Option<TradeId> {
        match self.kind {
            EventKind::Fill { fill, .. } => Some(TradeId { cmd: self.cmd, index: fill }),
            _ => None,
        }
    }
}

/// Why a command was refused: a tiny code for the hot path, a snake_case name on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The command could not be decoded (runtime only; the book never sees it).
    Malformed,
    /// The symbol is not one this engine holds.
    UnknownSymbol,
    /// The symbol is halted: no new orders or replaces.
    Halted,
    /// An impossible combination: zero quantity, a limit without a price, a market order with a
    /// price or post-only, post-only with IOC/FOK.
    InvalidOrder,
    /// The client order id is in use by an open or recent order of the same account and symbol.
    DuplicateClientOrderId,
    /// The exchange order id is already live (a command applied twice).
    DuplicateOrderId,
    /// The price is outside the dynamic band around the reference price.
    PriceBand,
    /// A post-only order (or replace) would have taken liquidity.
    PostOnlyWouldTake,
    /// A fill-or-kill order could not be filled in full at once.
    FokUnfillable,
    /// No such open order.
    UnknownOrder,
    /// The order belongs to another account.
    NotOwner,
}

impl RejectReason {
    /// Every reason, in declaration order.
    pub const ALL: [RejectReason; 11] = [
        RejectReason::Malformed,
        RejectReason::UnknownSymbol,
        RejectReason::Halted,
        RejectReason::InvalidOrder,
        RejectReason::DuplicateClientOrderId,
        RejectReason::DuplicateOrderId,
        RejectReason::PriceBand,
        RejectReason::PostOnlyWouldTake,
        RejectReason::FokUnfillable,
        RejectReason::UnknownOrder,
        RejectReason::NotOwner,
    ];

    /// The snake_case wire name (the same as its JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::UnknownSymbol => "unknown_symbol",
            RejectReason::Halted => "halted",
            RejectReason::InvalidOrder => "invalid_order",
            RejectReason::DuplicateClientOrderId => "duplicate_client_order_id",
            RejectReason::DuplicateOrderId => "duplicate_order_id",
            RejectReason::PriceBand => "price_band",
            RejectReason::PostOnlyWouldTake => "post_only_would_take",
            RejectReason::FokUnfillable => "fok_unfillable",
            RejectReason::UnknownOrder => "unknown_order",
            RejectReason::NotOwner => "not_owner",
        }
    }
}

/// Why open quantity was canceled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Its owner asked.
    Requested,
    /// Self-trade prevention: a taker of the same account reached this resting order.
    SelfTrade,
    /// What an IOC or market order could not fill at once.
    Unfilled,
    /// An admin mass-cancel of the account.
    MassCancel,
}

impl CancelReason {
    /// Every reason, in declaration order.
    pub const ALL: [CancelReason; 4] =
        [CancelReason::Requested, CancelReason::SelfTrade, CancelReason::Unfilled, CancelReason::MassCancel];

    /// The snake_case wire name (the same as its JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::Requested => "requested",
            CancelReason::SelfTrade => "self_trade",
            CancelReason::Unfilled => "unfilled",
            CancelReason::MassCancel => "mass_cancel",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str` and the serde names must never drift apart: both reach clients.
    #[test]
    fn reason_names_are_their_json() {
        for r in RejectReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str(), "{r:?}");
        }
        for r in CancelReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str(), "{r:?}");
        }
    }
}

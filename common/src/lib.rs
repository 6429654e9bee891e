//! Trading Lab's shared data model (DESIGN.md §2).
//!
//! Everything the services agree on lives here: integer prices and quantities, exact decimals at
//! the JSON edge, the symbol table, the deterministic ids, the commands the book applies, the
//! events it emits, and the versioned JSON envelope they travel in over Kafka.
//!
//! # Layout
//! - [`num`]: `Price` (ticks), `Qty` (lots), `Side`, `OrderType`, `TimeInForce`, `Timestamp`.
//! - [`decimal`]: exact decimal parsing and tick/lot conversion, errors that name the field.
//! - [`symbol`]: `SymbolSpec`, `SymbolTable` and its default set (`ABC`, `DEF`, `XYZ`).
//! - [`ids`]: `OrderId` = (partition, offset), `TradeId`, inline `Account` / `ClientOrderId`.
//! - [`command`]: the commands, `Copy` and heap-free.
//! - [`event`]: the events, with reject and cancel reason codes.
//! - [`envelope`]: `{"v": 1, "type": ...}` JSON for commands and events.
//! - `http` (feature `http`): request metrics and their middleware, shared by the services.
#![forbid(unsafe_code)]

pub mod command;
pub mod decimal;
pub mod envelope;
pub mod event;
#[cfg(feature = "http")]
pub mod http;
pub mod ids;
pub mod num;
pub mod symbol;

pub use command::{Cancel, Command, CommandKind, NewOrder, Replace};
pub use decimal::{Decimal, DecimalError, FieldError};
pub use event::{CancelReason, Event, EventKind, RejectReason};
pub use ids::{Account, ClientOrderId, OrderId, ShortStr, SymbolId, TradeId};
pub use num::{OrderType, Price, Qty, Side, TimeInForce, Timestamp};
pub use symbol::{LimitError, SymbolSpec, SymbolTable};

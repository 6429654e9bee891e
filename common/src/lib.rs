//! Trading Lab's shared data model (DESIGN.md §2).
//!
//! Everything the services agree on lives here: integer prices and quantities, exact decimals at
//! the JSON edge, the symbol table, the deterministic ids, the commands the book applies, the
//! events it emits, and the versioned JSON envelope they travel in over Kafka.
//!
//! # Layout
//! - [`num`]: `Price` (ticks), `Qty` (lots), `Side`, `OrderType`, `TimeInForce`, `OrderStatus`,
//!   `Timestamp`; each enum's wire name is its `as_str()`.
//! - [`decimal`]: exact decimal parsing and tick/lot conversion, errors that name the field.
//! - [`symbol`]: `SymbolSpec`, `SymbolTable` and its default set (`ABC`, `DEF`, `XYZ`).
//! - [`ids`]: `OrderId` = (partition, offset), `TradeId`, inline `Account` / `ClientOrderId`.
//! - [`command`]: the commands, `Copy` and heap-free.
//! - [`event`]: the events, with reject and cancel reason codes (`as_str()`: their wire names).
//! - [`envelope`]: `{"v": 1, "type": ...}` JSON for commands and events.
//! - `http` (feature `http`): what the services share: `serve` with the endpoints every service
//!   has, request metrics and their middleware, the one JSON error shape, order validation, logs.
//! - `shutdown` (feature `http`): the handle that stops a service: SIGINT/SIGTERM, or a test.
#![forbid(unsafe_code)]

pub mod command;
pub mod decimal;
pub mod envelope;
pub mod event;
#[cfg(feature = "http")]
pub mod http;
pub mod ids;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod num;
#[cfg(feature = "http")]
pub mod shutdown;
pub mod symbol;
pub mod wake;

pub use command::{Cancel, Command, CommandKind, NewOrder, Replace};
pub use decimal::{Decimal, DecimalError, FieldError};
pub use event::{CancelReason, Event, EventKind, RejectReason};
pub use ids::{Account, ClientOrderId, OrderId, ShortStr, SymbolId, TradeId};
pub use num::{OrderStatus, OrderType, Price, Qty, Side, TimeInForce, Timestamp};
pub use symbol::{LimitError, SymbolSpec, SymbolTable};

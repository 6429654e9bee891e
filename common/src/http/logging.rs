//! The services' logs: `tracing` with an `EnvFilter` (`RUST_LOG`, default `info`), as text or,
//! with `LOG_FORMAT=json`, one JSON object a line for a log shipper. Colours only on a terminal,
//! so the files `./lab` writes under `run/` stay plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. An unknown `LOG_FORMAT` falls back to text and says so.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let format = std::env::var("LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stdout().is_terminal()).init();
        if !format.is_empty() && format != "text" {
            tracing::warn!(format, "LOG_FORMAT is `text` or `json`; writing text");
        }
    }
}

//! Logging set-up: human-readable lines by default, JSON lines for collectors, both filtered
//! by `RUST_LOG` (default `info`, with librdkafka's chatter at `warn`).

use tracing_subscriber::{fmt, EnvFilter};

use crate::config::LogFormat;

/// Installs the global subscriber. Calling it twice keeps the first.
pub fn init(format: LogFormat) {
    init_with(format, "info,rdkafka=warn,librdkafka=warn");
}

/// [`init`], with `default_filter` where `RUST_LOG` is not set (the demo shows errors only,
/// so that its report reads as a story).
pub fn init_with(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colour only on a terminal: escape codes in a log file or a collector are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

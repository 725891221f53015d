//! Logging of the long-running commands (`pgcmk serve`, `pgcmk agent`, `pgcmk vault
//! serve`) to stderr: text for people, or one JSON object per line for a log shipper
//! (`--log-format json`), with the request's id (in `span`) or the server's id.

use std::fmt;

use clap::ValueEnum;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, target, the event's fields, and
    /// the request it belongs to (`span.request_id`) or the server (`server`).
    Json,
}

/// Logs at `info` (or `RUST_LOG`) to stderr in `format`; text in colour only on a
/// terminal. `server` (an agent's server id) goes into every JSON line.
pub fn init(format: LogFormat, server: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // The agent serves a cryptfs mount.
        tracing_subscriber::EnvFilter::new(format!("info,{}", pgcmk_cryptfs::LOG_DIRECTIVES))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (its disk is full) is lost, not reported
        // with `eprintln!`, which panics when stderr fails: the handler or the audit
        // writer logging it would die with it (found by a busy vault on a full disk).
        .log_internal_errors(false);
    let _ = match format {
        // Services log to files (agent.log, which `pgcmk server logs` shows; the vault's
        // and control plane's logs when run as services): no colour codes there.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => {
            let json = tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false);
            builder
                .json()
                .event_format(WithServer {
                    inner: json,
                    server: server.map(|s| serde_json::to_string(s).unwrap_or_default()),
                })
                .try_init()
        }
    };
}

/// A JSON event format that puts `"server": ID` first in every line.
struct WithServer<F> {
    inner: F,
    /// The id, already a JSON string.
    server: Option<String>,
}

impl<S, N, F> FormatEvent<S, N> for WithServer<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some(server) = &self.server else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(writer, "{{\"server\":{server},{rest}"),
            None => writer.write_str(&line),
        }
    }
}

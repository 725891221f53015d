//! `pgcmk server logs`: printing the log records the control plane streams.

use pgcmk_agent::contract::task::{LogRecord, VolumeView};

use crate::error::CliError;
use crate::{output, Format};

/// Prints the log records of `response` as they arrive: `SOURCE | LINE`, or with
/// `--output json` one JSON document (one per line while following).
pub(crate) fn print_logs(
    response: reqwest::blocking::Response,
    follow: bool,
    format: Format,
) -> Result<(), CliError> {
    use std::io::{BufRead, Write};
    let mut records = Vec::new();
    let mut view = None;
    for line in std::io::BufReader::new(response).lines() {
        let line = line.map_err(|e| CliError::failed(format!("reading the logs: {e}")))?;
        if line.trim().is_empty() {
            continue; // keeps an idle stream alive
        }
        let record: LogRecord = serde_json::from_str(&line)
            .map_err(|e| CliError::failed(format!("unexpected log record ({e}): {line}")))?;
        match (format, follow) {
            (Format::Json, false) => records.push(record),
            (Format::Json, true) => println!("{line}"),
            (Format::Human, _) => {
                if let LogRecord::Volume(v) = &record {
                    view = Some(v.clone());
                }
                println!("{}", render_log_record(&record));
            }
        }
        let _ = std::io::stdout().flush();
    }
    if format == Format::Json && !follow {
        output::print(format, &serde_json::to_value(&records)?, |_| String::new());
    }
    if follow && format == Format::Human && view != Some(VolumeView::Live) {
        println!("(the server is not serving: its logs do not grow; not following)");
    }
    Ok(())
}

fn render_log_record(record: &LogRecord) -> String {
    match record {
        LogRecord::Line { source, text } => format!("{:<8} | {text}", source.name()),
        LogRecord::Volume(VolumeView::Live) => {
            "-- PostgreSQL's log, from the serving agent's mount".into()
        }
        LogRecord::Volume(VolumeView::ReadOnly) => {
            "-- PostgreSQL's log, from a read-only mount of the volume (the server is not serving)"
                .into()
        }
        LogRecord::Volume(VolumeView::Unavailable { reason }) => format!("-- {reason}"),
    }
}

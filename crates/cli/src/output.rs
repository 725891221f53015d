//! Printing results: human text by default, JSON with `--output json`.

use crate::Format;

/// Prints `value` as pretty JSON, or as the text `human` renders from it.
pub fn print(
    format: Format,
    value: &serde_json::Value,
    human: impl FnOnce(&serde_json::Value) -> String,
) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).expect("a JSON value always serializes")
        ),
        Format::Human => println!("{}", human(value)),
    }
}

//! Printing a volume check (cryptfs fsck), of a cipher directory (`pgcmk fs fsck`)
//! or of a server's volume (`pgcmk server fsck`).

use pgcmk_agent::contract::task::{BlockIssue, VolumeCheck};

use crate::error::{CliError, Failure};
use crate::{output, Format};

/// Prints `check` of `what`; an error (non-zero exit) when a block is bad.
pub fn print(what: &str, check: &VolumeCheck, format: Format) -> Result<(), CliError> {
    let value = serde_json::to_value(check)?;
    output::print(format, &value, |_| render_volume_check(check));
    if check.is_clean() {
        Ok(())
    } else {
        Err(CliError::new(
            Failure::Damaged,
            format!(
                "{} bad block(s) in {what}: reads of them fail (tampering or damage)",
                check.bad_blocks.len()
            ),
        ))
    }
}

fn render_volume_check(check: &VolumeCheck) -> String {
    let describe = |b: &BlockIssue| {
        let block = b
            .block
            .map_or("header".to_string(), |n| format!("block {n}"));
        format!("{}: {block}: {}", b.file.display(), b.reason)
    };
    let mut text = format!(
        "checked {} files, {} blocks: {} bad",
        check.files_checked,
        check.blocks_checked,
        check.bad_blocks.len()
    );
    for b in &check.bad_blocks {
        text.push_str(&format!("\n{}", describe(b)));
    }
    // Torn blocks are not errors: the next mount's crash recovery repairs them.
    if check.dirty {
        text.push_str(&format!(
            "\nnot cleanly unmounted: {} torn block(s) that the next mount repairs",
            check.torn_blocks.len()
        ));
    }
    for b in &check.torn_blocks {
        let block = b.block.map_or("header".to_string(), |n| n.to_string());
        text.push_str(&format!(
            "\n{}: torn {block}: {}",
            b.file.display(),
            b.reason
        ));
    }
    text
}

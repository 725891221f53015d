//! `pgcmk version`: the version and how this binary was built (recorded by build.rs).

use serde::Serialize;

use crate::{output, Format};

/// What `pgcmk version` prints.
#[derive(Serialize)]
struct BuildInfo {
    version: &'static str,
    commit: &'static str,
    commit_date: &'static str,
    profile: &'static str,
    target: &'static str,
    rustc: &'static str,
}

const BUILD: BuildInfo = BuildInfo {
    version: env!("CARGO_PKG_VERSION"),
    commit: env!("PGCMK_COMMIT"),
    commit_date: env!("PGCMK_COMMIT_DATE"),
    profile: env!("PGCMK_PROFILE"),
    target: env!("PGCMK_TARGET"),
    rustc: env!("PGCMK_RUSTC"),
};

/// `pgcmk --version`'s long form: the same facts on one line.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("PGCMK_COMMIT"),
    " of ",
    env!("PGCMK_COMMIT_DATE"),
    ", ",
    env!("PGCMK_PROFILE"),
    " build for ",
    env!("PGCMK_TARGET"),
    ", ",
    env!("PGCMK_RUSTC"),
    ")"
);

/// Prints the version and build information.
pub fn print(format: Format) {
    let value = serde_json::to_value(&BUILD).expect("static strings serialize");
    output::print(format, &value, |_| format!("pgcmk {LONG_VERSION}"));
}

//! Settings given as a flag or, failing that, an environment variable. The CLI reads
//! the variables itself instead of through clap's `env`, which lists a value taken
//! from the environment in a usage line as if it were a missing argument.

use std::path::PathBuf;

/// A path given as a flag, else by the environment variable `var`.
pub fn flag_or_env(flag: &Option<PathBuf>, var: &str) -> Option<PathBuf> {
    flag.clone()
        .or_else(|| std::env::var_os(var).map(PathBuf::from))
}

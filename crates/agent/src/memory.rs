//! Keeping the DEK out of swap and out of core dumps.

use pgcmk_crypto::Dek;
use zeroize::Zeroize;

use crate::error::IoContext;
use crate::{sys, Error};

/// Makes the current process non-dumpable with a zero core-size limit. The node
/// agent calls this before it unwraps a DEK.
pub fn harden_process() -> Result<(), Error> {
    sys::harden_process().ctx(|| "disabling core dumps (prctl/setrlimit)")
}

/// A DEK on its own heap allocation, locked into RAM (never swapped) and zeroized
/// before the lock is released.
pub struct LockedDek(Box<Dek>);

impl LockedDek {
    /// Moves `dek` into locked memory.
    pub fn new(dek: Dek) -> Result<Self, Error> {
        let boxed = Box::new(dek);
        sys::lock_in_memory(&*boxed).ctx(|| "locking the DEK in memory (mlock)")?;
        Ok(Self(boxed))
    }

    /// The DEK.
    pub fn dek(&self) -> &Dek {
        &self.0
    }
}

impl Drop for LockedDek {
    fn drop(&mut self) {
        self.0.zeroize();
        sys::unlock_in_memory(&*self.0);
    }
}

impl std::fmt::Debug for LockedDek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockedDek(REDACTED)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_dek_is_usable_and_redacted() {
        let dek = Dek::generate().unwrap();
        let copy = dek.clone();
        let locked = LockedDek::new(dek).unwrap();
        assert_eq!(locked.dek(), &copy);
        assert_eq!(format!("{locked:?}"), "LockedDek(REDACTED)");
    }

    #[test]
    fn hardening_sets_a_zero_core_limit() {
        // Runs in a child so the test process itself stays debuggable.
        if std::env::var_os("PGCMK_HARDEN_CHILD").is_some() {
            harden_process().unwrap();
            let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
            let core = limits
                .lines()
                .find(|l| l.starts_with("Max core file size"))
                .unwrap();
            assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
            return;
        }
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args(["--exact", "memory::tests::hardening_sets_a_zero_core_limit"])
            .env("PGCMK_HARDEN_CHILD", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

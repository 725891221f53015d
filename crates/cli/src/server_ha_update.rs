//! `pgcmk server update NAME --high-availability enabled|disabled`: makes a
//! single server highly available, online, or a highly available one single again
//! (`docs/high-availability.md`, "Enabling and disabling").

use std::time::Duration;

use pgcmk_control::platform::{HighAvailability, HighAvailabilityChange};

/// How long the control plane may take: the first node taken over by Patroni,
/// then a second one cloned and made the synchronous standby, each waited for
/// (also a key change, which restarts each node and switches over once).
pub const TIMEOUT: Duration = Duration::from_secs(6 * 60);

/// The mode asked for on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum HaMode {
    /// A primary and a synchronous standby, each with its own DEK.
    Enabled,
    /// A single server: the primary's data is kept, the other node removed.
    Disabled,
}

impl HaMode {
    /// The request's body.
    pub fn into_request(self) -> HighAvailabilityChange {
        HighAvailabilityChange {
            high_availability: match self {
                HaMode::Enabled => HighAvailability::Enabled,
                HaMode::Disabled => HighAvailability::Disabled,
            },
        }
    }
}

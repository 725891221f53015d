//! `pgcmk server failover`: moves a highly available server's primary role to its
//! standby through Patroni (`docs/high-availability.md`).

use clap::Args;
use pgcmk_control::platform::FailoverRequest;

use crate::name_arg::NameArg;

/// `pgcmk server failover` options.
#[derive(Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    name: NameArg,
    /// A planned switchover: the primary finishes its work and hands over, no
    /// transaction is cut off. Without it, the standby is promoted at once.
    #[arg(long)]
    planned: bool,
}

impl FailoverArgs {
    /// The server's name and the request.
    pub fn into_request(self) -> (String, FailoverRequest) {
        (
            self.name.into_name(),
            FailoverRequest {
                planned: self.planned,
            },
        )
    }
}

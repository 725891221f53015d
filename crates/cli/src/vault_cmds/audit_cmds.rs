//! `pgcmk audit ...`: list and verify the key vault audit trail.

use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::Value;

use super::Connection;
use crate::error::{CliError, Failure};
use crate::{output, Format};

/// `pgcmk audit ...`
#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// List audit entries, oldest first.
    #[command(
        after_help = "Example:\n  pgcmk audit list --vault orders-kv --result denied --since 2026-12-01T00:00:00Z"
    )]
    List {
        /// Only this vault.
        #[arg(long)]
        vault: Option<String>,
        /// Only this key name.
        #[arg(long)]
        key: Option<String>,
        /// Only this caller (object id or name).
        #[arg(long)]
        principal: Option<String>,
        /// Only this operation (KeyUnwrap, SetPolicy, …).
        #[arg(long)]
        operation: Option<String>,
        /// Only entries at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Only allowed or denied requests.
        #[arg(long, value_parser = ["allowed", "denied"])]
        result: Option<String>,
        /// Also list anonymous challenges: 401s to requests without a token, which
        /// every Azure SDK client meets first before fetching one (left out by default,
        /// so that denied shows real refusals).
        #[arg(long)]
        include_challenges: bool,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Verify the hash chain: exits non-zero naming the first bad entry.
    #[command(after_help = "Example:\n  pgcmk audit verify")]
    Verify,
}

fn audit_line(s: &Value) -> String {
    let e = &s["entry"];
    let key = match (e["key"].as_str(), e["version"].as_str()) {
        (Some(k), Some(v)) => format!("{k}/{v}"),
        (Some(k), None) => k.to_string(),
        _ => "-".into(),
    };
    let mut about = String::new();
    if let Some(target) = e["target"].as_str() {
        about.push_str(&format!(" target={target}"));
    }
    if let Some(perms) = e["permissions"].as_array() {
        let names: Vec<&str> = perms.iter().filter_map(Value::as_str).collect();
        about.push_str(&format!(" permissions={}", names.join(",")));
    }
    if let Some(n) = e["anonymous_left_out"].as_u64() {
        about.push_str(&format!(
            " (and {n} anonymous requests before it not recorded)"
        ));
    }
    format!(
        "#{} {} {} {} {} caller={} ({}) client={} status={} {} {}us req={}{about}",
        s["seq"],
        e["time"].as_str().unwrap_or_default(),
        if e["vault"].as_str().unwrap_or_default().is_empty() {
            "-"
        } else {
            e["vault"].as_str().unwrap_or_default()
        },
        e["operation"].as_str().unwrap_or_default(),
        key,
        e["caller"].as_str().unwrap_or_default(),
        e["caller_name"].as_str().unwrap_or("-"),
        e["client"].as_str().unwrap_or_default(),
        e["status"],
        match (e["result"].as_str(), e["challenge"].as_bool()) {
            (Some(result), Some(true)) => format!("{result} (anonymous challenge)"),
            (result, _) => result.unwrap_or_default().to_string(),
        },
        e["duration_us"],
        e["request_id"].as_str().unwrap_or_default(),
    )
}

/// Runs `pgcmk audit ...`.
pub fn audit(args: AuditArgs, format: Format) -> Result<(), CliError> {
    let client = args.conn.admin()?;
    match args.command {
        AuditCommand::List {
            vault,
            key,
            principal,
            operation,
            since,
            until,
            result,
            include_challenges,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            if include_challenges {
                query.push("include_challenges=true".into());
            }
            for (k, v) in [
                ("vault", vault),
                ("key", key),
                ("principal", principal),
                ("operation", operation),
                ("since", since),
                ("until", until),
                ("result", result),
            ] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", pgcmk_vault::client::urlencode(&v)));
                }
            }
            let v = client
                .call(
                    Method::GET,
                    &format!("/admin/audit?{}", query.join("&")),
                    None,
                )
                .map_err(CliError::from)?;
            output::print_list(format, &v, audit_line);
            Ok(())
        }
        AuditCommand::Verify => {
            let v = client
                .call(Method::GET, "/admin/audit/verify", None)
                .map_err(CliError::from)?;
            if v["ok"].as_bool() == Some(true) {
                output::print(format, &v, |v| {
                    format!("audit trail intact: {} entries verified", v["entries"])
                });
                Ok(())
            } else {
                if format == Format::Json {
                    output::print(format, &v, |_| String::new());
                }
                Err(CliError::new(
                    Failure::Damaged,
                    format!(
                        "audit trail is broken: {}",
                        v["problem"].as_str().unwrap_or("unknown problem")
                    ),
                ))
            }
        }
    }
}

//! How `pgcmk server` prints the control plane's answers for people.

use pgcmk_control::model::{Encryption, ServerDetails, ServerRecord, ServerState};
use pgcmk_control::platform::Created;
use serde_json::Value;

/// Renders the API's JSON answer `v` as a `T`.
pub(crate) fn typed<T: serde::de::DeserializeOwned>(
    v: &Value,
    render: impl Fn(&T) -> String,
) -> String {
    match T::deserialize(v) {
        Ok(t) => render(&t),
        Err(e) => format!("unexpected answer from the control plane ({e}): {v}"),
    }
}

/// Width a reason is wrapped at in `server show`: whole, on as many lines as it takes.
const REASON_WIDTH: usize = 88;

fn state_line(state: &ServerState) -> String {
    match state.reason() {
        Some(reason) => format!(
            "{}\n  reason:     {}",
            state.name(),
            wrap(reason, REASON_WIDTH).join("\n              ")
        ),
        None => state.name().to_string(),
    }
}

/// `text` in lines of at most `width` characters, broken between words (a word longer
/// than `width`, such as a URL, gets a line of its own); nothing is cut.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

pub(crate) fn render_server(v: &Value) -> String {
    typed(v, describe_server)
}

fn describe_server(s: &ServerRecord) -> String {
    let encryption = match &s.encryption {
        Encryption::CustomerManaged { key, identity } => format!(
            "customer-managed: key {key} via identity {identity} ({})",
            if key.is_versionless() {
                "follows its rotation"
            } else {
                "pinned to that version"
            }
        ),
        Encryption::ServiceManaged => "service-managed".to_string(),
    };
    let listen: Vec<String> = s.listen_addresses.iter().map(|a| a.to_string()).collect();
    let replica = match &s.replica_of {
        Some(source) => {
            format!("\n  replica of: server id {source} (read-only, streaming from it)")
        }
        None => String::new(),
    };
    format!(
        "server {}\n  state:      {}\n  location:   {}\n  port:       {}\n  listens on: {} (TLS only){replica}\n  encryption: {encryption}\n  needs key version: {} (it wraps the DEK: keep it enabled)\n  created:    {}",
        s.name,
        state_line(&s.state),
        s.location,
        s.port,
        listen.join(", "),
        s.wrapped_dek.kek,
        s.created_at,
    )
}

pub(crate) fn render_created(v: &Value) -> String {
    typed(v, |c: &Created| {
        format!(
            "{}\n  superuser:  postgres, password {} (shown once; the platform does not keep it)",
            describe_server(&c.server),
            c.password.expose_secret()
        )
    })
}

pub(crate) fn render_show(v: &Value) -> String {
    typed(v, |d: &ServerDetails| {
        let mut text = describe_server(&d.server);
        if !d.nodes.is_empty() {
            text.push_str("\n  nodes:");
        }
        for n in &d.nodes {
            text.push_str(&format!(
                "\n    {:<24} {}:{:<6} {}{:<13} {:<13} lag {} B  {}",
                n.name,
                n.address,
                n.port,
                n.host
                    .as_ref()
                    .map_or(String::new(), |host| format!("on host {host}  ")),
                n.role.as_deref().unwrap_or("-"),
                n.state.name(),
                n.lag_bytes.map_or("-".to_string(), |l| l.to_string()),
                n.patroni_state
                    .as_deref()
                    .unwrap_or("patroni not answering"),
            ));
        }
        text.push_str(&format!("\n  connect:    {}", d.connection_string));
        text.push_str("\n  events:");
        for e in &d.events {
            text.push_str(&format!(
                "\n    {} {:<13} {} — {}",
                e.at, e.who, e.what, e.why
            ));
        }
        text
    })
}

pub(crate) fn render_list(v: &Value) -> String {
    typed(v, |servers: &Vec<ServerRecord>| {
        if servers.is_empty() {
            return "no servers".to_string();
        }
        let rows: Vec<String> = servers
            .iter()
            .map(|s| {
                let kek = &s.wrapped_dek.kek;
                let mut row = format!(
                    "{:<24} {:<14} {:<6} {:<46} {}",
                    s.name,
                    s.location,
                    s.port,
                    kek.short_name(),
                    s.state.name()
                );
                if let Some(reason) = s.state.reason() {
                    for line in wrap(reason, REASON_WIDTH) {
                        row.push_str(&format!("\n    {line}"));
                    }
                }
                row
            })
            .collect();
        format!(
            "{:<24} {:<14} {:<6} {:<46} STATE\n{}",
            "NAME",
            "LOCATION",
            "PORT",
            "NEEDS KEY VERSION",
            rows.join("\n")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_wrapped_between_words_and_never_cut() {
        let reason = format!(
            "key access denied: unwrap refused by the vault (HTTP 403 Forbidden): grant it \
             with: pgcmk keyvault set-policy orders-kv --identity orders-mi --key-permissions \
             get wrapKey unwrapKey {}",
            "x".repeat(100)
        );
        let lines = wrap(&reason, 40);
        assert!(lines.len() > 3, "{lines:?}");
        assert!(
            lines
                .iter()
                .all(|l| l.chars().count() <= 40 || !l.contains(' ')),
            "{lines:?}"
        );
        assert_eq!(lines.join(" "), reason, "every word is kept, in order");
    }
}

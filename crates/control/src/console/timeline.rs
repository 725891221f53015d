//! A server's history as a picture: one lane of coloured spans for its states
//! (from the `state A -> B` events the control plane records on every transition)
//! and one lane of marks for its key events (re-wraps, adopted versions, refusals),
//! from its creation — or from the oldest of its last [`MAX_EVENTS`] events — to
//! now. Drawn on the server as SVG: no script, nothing to load. The events table
//! under it on the page says the same in words.

use std::fmt::Write;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use pgcmk_console::esc;

use crate::model::{Event, ServerRecord};

/// Events drawn (and listed) at most: the newest.
pub(super) const MAX_EVENTS: usize = 100;

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 10.0;

/// The colour of a state's span (the legend's classes use the same).
fn colour(state: &str) -> &'static str {
    match state {
        "Ready" => "#2da44e",
        "Inaccessible" => "#cf222e",
        "Stopped" => "#8c959f",
        "Provisioning" => "#bf8700",
        "Failed" => "#8250df",
        _ => "#57606a",
    }
}

/// `state A -> B` as (A, B).
fn transition(what: &str) -> Option<(&str, &str)> {
    what.strip_prefix("state ")?.split_once(" -> ")
}

/// Events about the key: its versions, re-wraps of the DEK, refusals.
fn is_key_event(what: &str) -> bool {
    transition(what).is_none() && (what.contains("key") || what.contains("dek"))
}

fn parse(at: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(at, &Rfc3339).ok()
}

fn short(t: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The chart of `server`'s `events` (oldest first) up to `now`, with its legend.
pub(super) fn render(server: &ServerRecord, events: &[Event], now: OffsetDateTime) -> String {
    let shown = &events[events.len().saturating_sub(MAX_EVENTS)..];
    let dated: Vec<(OffsetDateTime, &Event)> = shown
        .iter()
        .filter_map(|e| Some((parse(&e.at)?, e)))
        .collect();
    let created = parse(&server.created_at);
    let start = match (events.len() > MAX_EVENTS, dated.first(), created) {
        (false, _, Some(c)) => c,
        (_, Some((t, _)), _) => *t,
        (_, None, Some(c)) => c,
        (_, None, None) => now,
    };
    let span = (now - start).as_seconds_f64().max(1.0);
    let x = |t: OffsetDateTime| {
        LEFT + (t - start).as_seconds_f64().clamp(0.0, span) / span * (WIDTH - LEFT - RIGHT)
    };
    let mut state = dated
        .iter()
        .find_map(|(_, e)| transition(&e.what).map(|(from, _)| from))
        .unwrap_or(server.state.name());
    let mut since = start;
    let mut spans = Vec::new();
    for (t, e) in &dated {
        if let Some((_, to)) = transition(&e.what) {
            spans.push((since, *t, state));
            state = to;
            since = *t;
        }
    }
    spans.push((since, now, state));
    let mut svg = format!(
        "<svg class=\"timeline\" viewBox=\"0 0 {WIDTH} 112\" role=\"img\" aria-labelledby=\"tl-title\" \
         xmlns=\"http://www.w3.org/2000/svg\"><title id=\"tl-title\">States and key events of {} from {} to {}</title>\
         <text x=\"0\" y=\"34\">state</text><text x=\"0\" y=\"80\">key</text>\
         <line x1=\"{LEFT}\" y1=\"76\" x2=\"{}\" y2=\"76\" stroke=\"#d5dbe3\"/>",
        esc(&server.name),
        short(start),
        short(now),
        WIDTH - RIGHT
    );
    for (from, to, state) in &spans {
        let (x0, x1) = (x(*from), x(*to));
        let _ = write!(
            svg,
            "<rect x=\"{x0:.1}\" y=\"16\" width=\"{:.1}\" height=\"28\" rx=\"3\" fill=\"{}\" data-state=\"{}\">\
             <title>{} from {} to {}</title></rect>",
            (x1 - x0).max(2.0),
            colour(state),
            esc(state),
            esc(state),
            short(*from),
            short(*to)
        );
    }
    for (t, e) in dated.iter().filter(|(_, e)| is_key_event(&e.what)) {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"76\" r=\"6\" fill=\"#0b5cad\" data-key-event=\"\"><title>{}: {} ({})</title></circle>",
            x(*t),
            short(*t),
            esc(&e.what),
            esc(&e.why)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{LEFT}\" y=\"106\">{}</text><text x=\"{}\" y=\"106\" text-anchor=\"end\">now</text></svg>",
        short(start),
        WIDTH - RIGHT
    );
    svg.push_str("<div class=\"legend\" aria-hidden=\"true\">");
    for (class, label) in [
        ("s-ready", "Ready"),
        ("s-inaccessible", "Inaccessible"),
        ("s-stopped", "Stopped"),
        ("s-provisioning", "Provisioning"),
        ("s-failed", "Failed"),
        ("s-key", "key event"),
    ] {
        let _ = write!(svg, "<span><i class=\"{class}\"></i>{label}</span>");
    }
    svg.push_str("</div>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Encryption, ServerState};
    use pgcmk_keyprovider::{KeyVersionId, WrappedDek};

    fn event(seq: u64, at: &str, what: &str, why: &str) -> Event {
        Event {
            seq,
            at: at.into(),
            server_id: "s".into(),
            who: "key-monitor".into(),
            what: what.into(),
            why: why.into(),
        }
    }

    fn server(state: ServerState) -> ServerRecord {
        ServerRecord {
            id: "0".repeat(32),
            name: "orders".into(),
            location: "local".into(),
            encryption: Encryption::ServiceManaged,
            wrapped_dek: WrappedDek {
                kek: KeyVersionId::parse(&format!("https://127.0.0.1:1/keys/k/{}", "a".repeat(32)))
                    .unwrap(),
                algorithm: "RSA-OAEP-256".into(),
                ciphertext: vec![1],
            },
            state,
            port: 5432,
            listen_addresses: pgcmk_agent::contract::config::loopback_only(),
            replica_of: None,
            dir: "/tmp/x".into(),
            created_at: "2026-12-07T10:00:00Z".into(),
            nodes: Vec::new(),
            node_of: None,
            host: None,
        }
    }

    #[test]
    fn states_become_spans_and_key_events_marks_in_order() {
        let events = [
            event(1, "2026-12-07T10:00:00Z", "server created", "request"),
            event(
                2,
                "2026-12-07T10:00:05Z",
                "state Provisioning -> Ready",
                "up",
            ),
            event(
                3,
                "2026-12-07T10:30:00Z",
                "state Ready -> Inaccessible",
                "403 <forbidden>",
            ),
            event(
                4,
                "2026-12-07T10:40:00Z",
                "state Inaccessible -> Ready",
                "access back",
            ),
            event(
                5,
                "2026-12-07T10:50:00Z",
                "dek rewrapped",
                "key version adopted",
            ),
        ];
        let now = parse("2026-12-07T11:00:00Z").unwrap();
        let svg = render(&server(ServerState::Ready), &events, now);
        let states: Vec<&str> = svg
            .match_indices("data-state=\"")
            .map(|(i, m)| svg[i + m.len()..].split('"').next().unwrap())
            .collect();
        assert_eq!(states, ["Provisioning", "Ready", "Inaccessible", "Ready"]);
        assert_eq!(svg.matches("data-key-event").count(), 1);
        assert!(svg.contains("dek rewrapped"), "{svg}");
        // The Inaccessible span covers 10 of the 60 minutes drawn.
        let inaccessible = svg.split("data-state=\"Inaccessible\"").next().unwrap();
        let width: f64 = inaccessible
            .rsplit("width=\"")
            .next()
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let expected = (WIDTH - LEFT - RIGHT) / 6.0;
        assert!((width - expected).abs() < 1.0, "{width} vs {expected}");
    }

    #[test]
    fn a_server_without_transitions_is_one_span_of_its_state_and_names_are_escaped() {
        let mut s = server(ServerState::Stopped);
        s.name = "<script>x</script>".into();
        let now = parse("2026-12-07T11:00:00Z").unwrap();
        let svg = render(&s, &[], now);
        assert_eq!(svg.matches("<rect").count(), 1);
        assert!(svg.contains("data-state=\"Stopped\""));
        assert!(!svg.contains("<script>"));
    }
}

//! Text into HTML: every name a user chose (servers, keys, identities, reasons)
//! goes through [`esc`], in element content and in quoted attribute values alike.

use std::fmt;

/// `text`, escaped for HTML element content and double- or single-quoted attributes.
pub fn esc(text: &str) -> Escaped<'_> {
    Escaped(text)
}

/// Text that displays escaped (see [`esc`]).
#[derive(Clone, Copy)]
pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// `text` as one path segment of a URL (everything but unreserved characters
/// percent-encoded), for links to a named resource.
pub fn path_segment(text: &str) -> String {
    percent_encoded(text, b"")
}

/// `text` with every byte percent-encoded but the unreserved characters and those
/// in `also_kept` (e.g. `/` for a file path in a query value, which stays readable).
pub fn percent_encoded(text: &str, also_kept: &[u8]) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b if also_kept.contains(&b) => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_characters_are_escaped_and_the_rest_is_kept() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y' é"#).to_string(),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39; é"
        );
        assert_eq!(esc("orders-1").to_string(), "orders-1");
        assert_eq!(esc("").to_string(), "");
    }

    #[test]
    fn a_path_segment_cannot_leave_its_segment() {
        assert_eq!(path_segment("kv-1"), "kv-1");
        assert_eq!(path_segment("../a b/<"), "..%2Fa%20b%2F%3C");
    }
}

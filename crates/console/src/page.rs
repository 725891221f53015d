//! The frame of every console page: the document, its navigation, the notice of
//! the last action, and the headers that keep the page to itself — a
//! Content-Security-Policy allowing nothing but this origin (no inline script,
//! no framing, forms posting only here), `X-Frame-Options: DENY`, no caching.

use std::fmt::Write;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::html::esc;
use crate::session::{CsrfToken, Notice};

/// The style sheet, served by each console at `{base}/console.css`.
pub const STYLE_SHEET: &str = include_str!("console.css");

/// What the page is about and where it sits in its console.
pub struct Page<'a> {
    /// The console's name, e.g. `DBA console`.
    pub console: &'a str,
    /// The console's root path, e.g. `/console`.
    pub base: &'a str,
    /// The page's own heading and title.
    pub title: &'a str,
    /// Links of the navigation bar: path below `base`, label.
    pub nav: &'a [(&'a str, &'a str)],
    /// Who is signed in, shown beside the sign-out button; `None` on the sign-in page.
    pub signed_in: Option<SignedIn<'a>>,
    /// Reload the page every so many seconds (states change by themselves).
    pub refresh_secs: Option<u32>,
}

/// The signed-in user, as the page frame shows them.
pub struct SignedIn<'a> {
    /// Their name or role.
    pub name: &'a str,
    /// Their session's anti-forgery token, for the sign-out form.
    pub csrf: &'a CsrfToken,
    /// What their last action did.
    pub notice: Option<&'a Notice>,
}

impl Page<'_> {
    /// A page of the console at `base` saying what failed (plain text, escaped)
    /// with `status`, signed out of nothing: it shows no data.
    pub fn failure(console: &str, base: &str, status: StatusCode, message: &str) -> Response {
        Page {
            console,
            base,
            title: "Something went wrong",
            nav: &[],
            signed_in: None,
            refresh_secs: None,
        }
        .render(
            status,
            &format!(
                "<p class=\"notice failed\" role=\"alert\">{}</p><p><a href=\"{base}\">Back</a></p>",
                esc(message)
            ),
        )
    }

    /// The page with `main` (HTML, every user-chosen text in it escaped) as its content.
    pub fn render(&self, status: StatusCode, main: &str) -> Response {
        let mut html = String::with_capacity(main.len() + 2048);
        let base = self.base;
        let _ = write!(
            html,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        );
        if let Some(secs) = self.refresh_secs {
            let _ = write!(html, "<meta http-equiv=\"refresh\" content=\"{secs}\">");
        }
        let _ = write!(
            html,
            "<title>{} · pgcmk {}</title><link rel=\"stylesheet\" href=\"{base}/console.css\">\
             </head><body><header class=\"bar\"><a class=\"brand\" href=\"{base}\">pgcmk \
             <span>{}</span></a>",
            esc(self.title),
            esc(self.console),
            esc(self.console)
        );
        if let Some(user) = &self.signed_in {
            html.push_str("<nav aria-label=\"Main\"><ul>");
            for (path, label) in self.nav {
                let _ = write!(
                    html,
                    "<li><a href=\"{base}{}\">{}</a></li>",
                    esc(path),
                    esc(label)
                );
            }
            let _ = write!(
                html,
                "</ul></nav><form class=\"signout\" method=\"post\" action=\"{base}/logout\">\
                 {}<span class=\"who\">{}</span><button type=\"submit\">Sign out</button></form>",
                csrf_field(user.csrf),
                esc(user.name)
            );
        }
        let _ = write!(
            html,
            "</header><main id=\"main\"><h1>{}</h1>",
            esc(self.title)
        );
        if let Some(notice) = self.signed_in.as_ref().and_then(|u| u.notice) {
            let (class, role) = match notice.failed {
                true => ("notice failed", "alert"),
                false => ("notice", "status"),
            };
            let _ = write!(
                html,
                "<p class=\"{class}\" role=\"{role}\">{}</p>",
                esc(&notice.text)
            );
        }
        html.push_str(main);
        html.push_str("</main></body></html>\n");
        guarded((
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        ))
    }
}

/// The hidden field carrying the session's anti-forgery token in a form.
pub fn csrf_field(csrf: &CsrfToken) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        csrf.as_str()
    )
}

/// A one-button form posting to `action` (a path, already safe in an attribute).
pub fn action_button(action: &str, label: &str, csrf: &CsrfToken, class: &str) -> String {
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{}\">{}<button type=\"submit\" \
         class=\"{class}\">{}</button></form>",
        esc(action),
        csrf_field(csrf),
        esc(label)
    )
}

/// The style sheet's response (a handler).
pub async fn style_sheet() -> Response {
    guarded((
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_SHEET,
    ))
}

/// A redirect (303 See Other: the next request is a GET) to `location`.
pub fn see_other(location: &str) -> Response {
    let mut response = guarded(StatusCode::SEE_OTHER);
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// `response` with the headers every console answer carries.
pub fn guarded(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_carries_the_guarding_headers_and_escapes_its_title() {
        let page = Page {
            console: "DBA console",
            base: "/console",
            title: "<script>x</script>",
            nav: &[],
            signed_in: None,
            refresh_secs: None,
        };
        let response = page.render(StatusCode::OK, "<p>hi</p>");
        let h = response.headers();
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'"));
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        let body = futures_body(response);
        assert!(
            body.contains("<h1>&lt;script&gt;x&lt;/script&gt;</h1>"),
            "{body}"
        );
        assert!(!body.contains("<script>"));
    }

    fn futures_body(response: Response) -> String {
        let bytes = tokio_block_on(axum::body::to_bytes(response.into_body(), usize::MAX));
        String::from_utf8(bytes.unwrap().to_vec()).unwrap()
    }

    /// Polls a future that completes without waiting (an in-memory body).
    fn tokio_block_on<F: std::future::Future>(f: F) -> F::Output {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}

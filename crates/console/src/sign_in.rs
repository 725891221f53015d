//! The sign-in page: a form of password fields, posted to `{base}/login`. A failed
//! attempt answers 401 with the same page and one sentence on what to use; it says
//! nothing about what was typed.

use std::fmt::Write;

use axum::http::StatusCode;
use axum::response::Response;

use crate::html::esc;
use crate::page::Page;

/// One field of the sign-in form.
pub struct Field {
    /// The form field's name.
    pub name: &'static str,
    /// Its visible label.
    pub label: &'static str,
    /// Where the value comes from, shown under the label.
    pub hint: &'static str,
    /// Hidden while typed (a secret).
    pub secret: bool,
}

/// The sign-in page of the console `console` at `base`, its form carrying `token`
/// (see [`crate::Gate::sign_in_page`]); `failed` says what a failed attempt should
/// have used.
pub(crate) fn page(
    console: &str,
    base: &str,
    fields: &[Field],
    failed: Option<&str>,
    token: &str,
) -> Response {
    let mut main = String::new();
    let _ = write!(
        main,
        "<section class=\"signin\"><form class=\"stack\" method=\"post\" action=\"{base}/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    );
    if let Some(why) = failed {
        let _ = write!(
            main,
            "<p class=\"notice failed\" role=\"alert\">{}</p>",
            esc(why)
        );
    }
    for f in fields {
        let _ = write!(
            main,
            "<label for=\"{0}\">{1}<span class=\"hint\">{2}</span><input id=\"{0}\" name=\"{0}\" \
             type=\"{3}\" autocomplete=\"off\" required></label>",
            f.name,
            esc(f.label),
            esc(f.hint),
            if f.secret { "password" } else { "text" }
        );
    }
    main.push_str("<button type=\"submit\">Sign in</button></form></section>");
    let status = match failed {
        Some(_) => StatusCode::UNAUTHORIZED,
        None => StatusCode::OK,
    };
    Page {
        console,
        base,
        title: "Sign in",
        nav: &[],
        signed_in: None,
        refresh_secs: None,
    }
    .render(status, &main)
}

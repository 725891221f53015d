//! The way into a console: the session cookie, signing in and out, and the check
//! every form post passes (a live session and its anti-forgery token).
//!
//! The cookie is `__Host-` prefixed (Secure, `Path=/`, no domain), `HttpOnly`
//! (no script reads it) and `SameSite=Strict` (no other site's page sends it);
//! each console names its own, since browsers share cookies between the ports of
//! one host.

use std::time::Instant;

use axum::extract::rejection::FormRejection;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use pgcmk_crypto::ct_eq;

use crate::page::{guarded, see_other, Page};
use crate::session::{Notice, Session, SessionLimits, Sessions};
use crate::sign_in::{self, Field};

/// Seconds a sign-in form stays usable.
const SIGN_IN_FORM_SECS: u32 = 600;

/// A console's sessions and cookie.
pub struct Gate<W> {
    sessions: Sessions<W>,
    cookie: &'static str,
    base: &'static str,
}

/// A request's live session, with its id (to leave a notice or sign out).
pub struct Visit<W> {
    id: String,
    /// The session.
    pub session: Session<W>,
}

/// Why a form post is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No live session: sign in (again).
    SignedOut,
    /// The form's anti-forgery token is missing or not this session's.
    Forged,
}

/// A console's state, holding its gate: handlers then take a [`Visit`] as an
/// extractor, and a request without a live session is sent to sign in.
pub trait HoldsGate<W> {
    /// The console's gate.
    fn gate(&self) -> &Gate<W>;
}

impl<S, W> FromRequestParts<S> for Visit<W>
where
    S: HoldsGate<W> + Send + Sync,
    W: Clone + Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let gate = state.gate();
        gate.visit(&parts.headers).ok_or_else(|| gate.to_sign_in())
    }
}

/// A form that carries nothing but the session's anti-forgery token (sign-out,
/// one-button actions).
#[derive(Deserialize)]
pub struct TokenForm {
    /// The anti-forgery token.
    #[serde(default)]
    pub csrf: String,
}

impl<W: Clone> Gate<W> {
    /// A gate for the console at `base` (e.g. `/console`) whose cookie is named
    /// `__Host-{cookie}`.
    pub fn new(cookie: &'static str, base: &'static str, limits: SessionLimits) -> Self {
        Self {
            sessions: Sessions::new(limits),
            cookie,
            base,
        }
    }

    /// The live session the request's cookie names, if any.
    pub fn visit(&self, headers: &HeaderMap) -> Option<Visit<W>> {
        let id = self.cookie_value(headers)?;
        let session = self.sessions.find(&id, Instant::now())?;
        Some(Visit { id, session })
    }

    /// The session of a form post carrying `csrf`, or why it is refused.
    pub fn post(&self, headers: &HeaderMap, csrf: &str) -> Result<Visit<W>, Refused> {
        let visit = self.visit(headers).ok_or(Refused::SignedOut)?;
        if !visit.session.csrf.matches(csrf) {
            return Err(Refused::Forged);
        }
        Ok(visit)
    }

    /// The answer to a refused post: back to sign-in, or 403.
    pub fn refusal(&self, refused: Refused) -> Response {
        match refused {
            Refused::SignedOut => self.to_sign_in(),
            Refused::Forged => guarded((
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "this form did not come from this console's page (its anti-forgery token is \
                 missing or stale): reload the page and try again\n",
            )),
        }
    }

    /// The sign-in page of console `console` (`failed`: what a failed attempt should
    /// have used). Its form is protected like every other, before any session
    /// exists, by a double submit: a fresh random token both in a short-lived
    /// `SameSite=Strict` cookie and in the form, which another site's page cannot
    /// send together.
    pub fn sign_in_page(&self, console: &str, fields: &[Field], failed: Option<&str>) -> Response {
        let Ok(token) = pgcmk_crypto::random::hex_id(32) else {
            return Page::failure(
                console,
                self.base,
                StatusCode::INTERNAL_SERVER_ERROR,
                "no random numbers for the sign-in form; try again",
            );
        };
        let response = sign_in::page(console, self.base, fields, failed, &token);
        let cookie = format!(
            "__Host-{}-signin={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={SIGN_IN_FORM_SECS}",
            self.cookie
        );
        with_cookie(response, &cookie)
    }

    /// True when a sign-in post carries the token of a sign-in page this browser
    /// was given (see [`Gate::sign_in_page`]), compared in constant time.
    pub fn sign_in_form_is_ours(&self, headers: &HeaderMap, csrf: &str) -> bool {
        let name = format!("__Host-{}-signin", self.cookie);
        cookie_named(headers, &name)
            .is_some_and(|token| !token.is_empty() && ct_eq(token.as_bytes(), csrf.as_bytes()))
    }

    /// Signs `who` in (they proved their credential) and sends them to `base`.
    pub fn sign_in(&self, who: W) -> Result<Response, pgcmk_crypto::Error> {
        let id = self.sessions.open(who, Instant::now())?;
        let cookie = format!(
            "__Host-{}={}; Path=/; Secure; HttpOnly; SameSite=Strict",
            self.cookie,
            id.as_str()
        );
        Ok(with_cookie(see_other(self.base), &cookie))
    }

    /// Ends the session and sends the browser to sign-in, its cookie cleared.
    pub fn sign_out(&self, visit: &Visit<W>) -> Response {
        self.sessions.close(&visit.id);
        let response = self.to_sign_in();
        let cookie = format!(
            "__Host-{}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
            self.cookie
        );
        with_cookie(response, &cookie)
    }

    /// The answer to the sign-out form: signed out, or why not.
    pub fn sign_out_posted(
        &self,
        headers: &HeaderMap,
        form: Result<Form<TokenForm>, FormRejection>,
    ) -> Response {
        let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
        match self.post(headers, &csrf) {
            Ok(visit) => self.sign_out(&visit),
            Err(refused) => self.refusal(refused),
        }
    }

    /// Leaves `notice` for the session's next page.
    pub fn notify(&self, visit: &Visit<W>, failed: bool, text: impl Into<String>) {
        self.sessions.notify(
            &visit.id,
            Notice {
                failed,
                text: text.into(),
            },
        );
    }

    /// A redirect to the sign-in page.
    pub fn to_sign_in(&self) -> Response {
        see_other(&format!("{}/login", self.base))
    }

    fn cookie_value(&self, headers: &HeaderMap) -> Option<String> {
        cookie_named(headers, &format!("__Host-{}", self.cookie))
    }
}

/// `response` setting `cookie` (a `Set-Cookie` value).
fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// The value of the request's cookie `wanted`.
fn cookie_named(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> Gate<&'static str> {
        Gate::new("pgcmk-test", "/console", SessionLimits::default())
    }

    fn cookie_of(response: &Response) -> String {
        response.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string()
    }

    fn request_with(set_cookie: &str) -> HeaderMap {
        let pair = set_cookie.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {pair}")).unwrap(),
        );
        h
    }

    #[test]
    fn signing_in_sets_a_strict_host_only_cookie_naming_a_live_session() {
        let g = gate();
        let response = g.sign_in("dba").unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let cookie = cookie_of(&response);
        for attribute in [
            "__Host-pgcmk-test=",
            "Path=/",
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
        ] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        let visit = g.visit(&request_with(&cookie)).expect("signed in");
        assert_eq!(visit.session.who, "dba");
        assert!(g.visit(&HeaderMap::new()).is_none());
        // Another console's cookie of the same value is not this one's.
        let other = cookie.replace("pgcmk-test", "pgcmk-other");
        assert!(g.visit(&request_with(&other)).is_none());
    }

    #[test]
    fn a_sign_in_post_needs_the_token_of_a_sign_in_page_given_to_this_browser() {
        let g = gate();
        let page = g.sign_in_page("test", &[], None);
        let cookie = cookie_of(&page);
        assert!(cookie.starts_with("__Host-pgcmk-test-signin="), "{cookie}");
        assert!(cookie.contains("SameSite=Strict") && cookie.contains("HttpOnly"));
        let token = cookie.split(';').next().unwrap().split_once('=').unwrap().1;
        let headers = request_with(&cookie);
        assert!(g.sign_in_form_is_ours(&headers, token));
        let other = cookie_of(&g.sign_in_page("test", &[], None));
        let other_token = other.split(';').next().unwrap().split_once('=').unwrap().1;
        assert_ne!(token, other_token);
        assert!(!g.sign_in_form_is_ours(&headers, other_token));
        assert!(!g.sign_in_form_is_ours(&headers, ""));
        assert!(!g.sign_in_form_is_ours(&HeaderMap::new(), token));
    }

    #[test]
    fn a_post_needs_the_session_and_its_token_and_signing_out_ends_it() {
        let g = gate();
        let cookie = cookie_of(&g.sign_in("dba").unwrap());
        let headers = request_with(&cookie);
        let csrf = g.visit(&headers).unwrap().session.csrf;
        assert!(g.post(&headers, csrf.as_str()).is_ok());
        assert_eq!(g.post(&headers, "").err(), Some(Refused::Forged));
        assert_eq!(
            g.post(&HeaderMap::new(), csrf.as_str()).err(),
            Some(Refused::SignedOut)
        );
        assert_eq!(g.refusal(Refused::Forged).status(), StatusCode::FORBIDDEN);
        let visit = g.post(&headers, csrf.as_str()).unwrap();
        let out = g.sign_out(&visit);
        assert!(cookie_of(&out).contains("Max-Age=0"));
        assert!(g.visit(&headers).is_none());
    }
}

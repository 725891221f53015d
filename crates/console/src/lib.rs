//! What the two web consoles share — the DBA's (served by the control plane) and
//! the security officer's (served by the vault service): server-side sessions
//! behind a cookie, anti-forgery tokens on every form, escaping, the page frame
//! with its security headers, and the style sheet. Each console keeps its own
//! sessions and its own credential check, so separation of duties holds in the
//! browser as it does on the command line; neither has an operation of its own:
//! both call what their service's API calls.
//!
//! | file          | concept                                               |
//! |---------------|-------------------------------------------------------|
//! | `session.rs`  | sessions: ids, expiry, anti-forgery tokens, notices   |
//! | `gate.rs`     | the cookie, signing in and out, checking a form post  |
//! | `html.rs`     | escaping user-chosen text                             |
//! | `page.rs`     | the page frame, security headers, redirects           |
//! | `sign_in.rs`  | the sign-in form                                      |
//! | `routes.rs`   | the routes every console has: style sheet, sign-out   |

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod gate;
pub mod html;
pub mod page;
pub mod routes;
pub mod session;
pub mod sign_in;

pub use gate::{Gate, HoldsGate, Refused, TokenForm, Visit};
pub use html::{esc, path_segment};
pub use page::{action_button, csrf_field, guarded, see_other, style_sheet, Page, SignedIn};
pub use session::{CsrfToken, Notice, SessionLimits};

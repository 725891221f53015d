//! The two web consoles in a real browser (headless Chromium over WebDriver, see
//! `pgcmk_testkit::webdriver`), on a real stack: `pgcmk vault serve`, `pgcmk serve`
//! checking keys every 2 s, and a customer-managed server `orders` whose identity
//! `orders-mi` the security officer grants in vault `orders-kv`.
//!
//! - The customer's switch, in the browser: the officer removes the identity's
//!   policy in the security officer console and the DBA console, reloading itself,
//!   shows `orders` Inaccessible within the monitor's bound; granting it back shows
//!   Ready; the server's timeline has the Inaccessible span; its backups page
//!   shows the repository's retention and key; the audit page says the chain is
//!   intact.
//! - A wrong credential sees nothing: no server, vault or identity name in any page.
//! - User-chosen text is escaped: a `<script>` name echoed in a refusal stays text.
//! - A form post without the session's anti-forgery token is refused and changes
//!   nothing; every console answer forbids framing and foreign content.
//!
//! With `PGCMK_SCREENSHOTS=DIR` the story writes the consoles' screenshots there
//! (`scripts/screenshots`, for docs/).

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgcmk_testkit::shared::{Held, Shared};
use pgcmk_testkit::wait::wait_for;
use pgcmk_testkit::webdriver::Browser;
use support::*;

/// The control plane's key check interval, seconds.
const INTERVAL_SECS: u64 = 2;
/// Time for a state change to show: a key check, a supervision pass and one of
/// the page's own reloads (3 s), with room for a loaded machine.
const SHOWN_WITHIN: Duration = Duration::from_secs(20);
/// Time for a page a click asked for to arrive.
const PAGE_LOADS: Duration = Duration::from_secs(10);

struct Fixture {
    stack: Stack,
    key: CustomerKey,
}

fn fixture() -> Held<Fixture> {
    static FIXTURE: Shared<Fixture> = Shared::new();
    FIXTURE.get(|| {
        let stack = Stack::start(INTERVAL_SECS, 300, None);
        let key = stack.vault.customer_key("orders");
        stack.cp.create_with("orders", &key, &versionless(&key.kid));
        Fixture { stack, key }
    })
}

impl Fixture {
    fn dba_console(&self) -> String {
        format!("{}/console", self.stack.cp.url)
    }

    fn officer_console(&self) -> String {
        format!("{}/console", self.stack.vault.process.service.info.url)
    }

    fn dba_credential(&self) -> String {
        std::fs::read_to_string(self.stack.cp.dba_credential())
            .unwrap()
            .trim()
            .to_string()
    }

    fn browser(&self, name: &str) -> Browser {
        Browser::start(
            &self
                .stack
                .root
                .path()
                .join(format!("chromedriver-{name}.log")),
        )
    }

    fn sign_in_as_dba(&self, b: &Browser) {
        b.open(&format!("{}/login", self.dba_console()));
        b.type_into("#credential", &self.dba_credential());
        b.click("button[type=submit]");
        b.wait_for(".signout", PAGE_LOADS);
    }

    fn sign_in_as_officer(&self, b: &Browser) {
        let admin = self.stack.vault.process.admin_credential();
        b.open(&format!("{}/login", self.officer_console()));
        b.type_into("#client_id", &admin.client_id);
        b.type_into("#client_secret", &admin.client_secret);
        b.click("button[type=submit]");
        b.wait_for(".signout", PAGE_LOADS);
    }
}

/// The state the DBA console's servers page shows for `orders` now, read from one
/// snapshot of the page (it reloads itself every few seconds, so elements found
/// one moment may be gone the next).
fn shown_state(b: &Browser) -> Option<String> {
    let page = b.source();
    let row = &page[page.find(r#"<tr data-server="orders">"#)?..];
    let state = &row[row.find(r#"data-state=""#)? + r#"data-state=""#.len()..];
    Some(state[..state.find('"')?].to_string())
}

fn screenshot(b: &Browser, name: &str) {
    if let Some(dir) = std::env::var_os("PGCMK_SCREENSHOTS") {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        b.screenshot(&dir.join(format!("{name}.png")));
    }
}

#[test]
fn revoking_in_the_officer_console_shows_inaccessible_in_the_dba_console_and_granting_back_ready() {
    let f = fixture();
    // One browser, signed in to both (each console has its own cookie).
    let b = f.browser("story");
    f.sign_in_as_dba(&b);
    assert_eq!(shown_state(&b).as_deref(), Some("Ready"), "{}", b.source());
    f.sign_in_as_officer(&b);
    let policy = r#"section[data-vault="orders-kv"] tr[data-policy="orders-mi"]"#;
    assert!(b.find(policy).is_some(), "{}", b.source());
    screenshot(&b, "officer-console");

    b.click(&format!("{policy} button"));
    b.wait_for(".notice", PAGE_LOADS);
    assert!(
        b.text(".notice").contains("Removed orders-mi"),
        "{}",
        b.source()
    );
    assert!(b.find(policy).is_none());
    // The DBA's page reloads by itself: nobody navigates it.
    let revoked = Instant::now();
    b.open(&f.dba_console());
    wait_for(
        "the DBA console to show orders Inaccessible",
        SHOWN_WITHIN,
        || shown_state(&b).as_deref() == Some("Inaccessible"),
    );
    eprintln!(
        "Inaccessible shown {:?} after the revoke",
        revoked.elapsed()
    );
    screenshot(&b, "dba-console-inaccessible");

    b.open(&f.officer_console());
    let grant = r#"section[data-vault="orders-kv"] form[action$="/policies"]"#;
    b.click(&format!(r#"{grant} option[value="orders-mi"]"#));
    b.click(&format!("{grant} button[type=submit]"));
    b.wait_for(".notice", PAGE_LOADS);
    assert!(
        b.text(".notice")
            .contains("Granted orders-mi get, unwrapKey, wrapKey"),
        "{}",
        b.source()
    );
    let granted = Instant::now();
    b.open(&f.dba_console());
    wait_for(
        "the DBA console to show orders Ready again",
        SHOWN_WITHIN,
        || shown_state(&b).as_deref() == Some("Ready"),
    );
    eprintln!("Ready shown {:?} after the grant", granted.elapsed());
    screenshot(&b, "dba-console");

    b.open(&format!("{}/servers/orders", f.dba_console()));
    for state in ["Ready", "Inaccessible"] {
        let span = format!(r#"svg.timeline rect[data-state="{state}"]"#);
        assert!(b.find(&span).is_some(), "no {state} span:\n{}", b.source());
    }
    let version = version_of(&f.key.kid);
    assert!(
        b.source().contains(version),
        "the key version in use is shown"
    );
    screenshot(&b, "dba-server");
    // Its backups, as its agent reads the repository: kept 7 days, under its key.
    b.open(&format!("{}/servers/orders/backups", f.dba_console()));
    let catalog = b.text("main");
    assert!(
        catalog.contains("Kept 7 days") && catalog.contains(version),
        "{catalog}"
    );

    b.open(&format!("{}/audit", f.officer_console()));
    assert!(
        b.find(r#"[data-chain="intact"]"#).is_some(),
        "{}",
        b.source()
    );
    assert!(b.source().contains("DeletePolicy"));
    screenshot(&b, "officer-audit");
}

#[test]
fn a_wrong_credential_sees_nothing() {
    let f = fixture();
    let b = f.browser("wrong");
    let secrets_of_the_stack = ["orders", "westeurope", "admin"];
    // Right form, wrong value; and the officer's secret with the DBA's console.
    let admin = f.stack.vault.process.admin_credential();
    for wrong in ["0".repeat(64), admin.client_secret.clone()] {
        b.open(&format!("{}/login", f.dba_console()));
        b.type_into("#credential", &wrong);
        b.click("button[type=submit]");
        b.wait_for(".notice.failed", PAGE_LOADS);
        assert!(b.text(".notice.failed").contains("not the DBA credential"));
        b.open(&format!("{}/servers/orders", f.dba_console()));
        assert!(b.url().ends_with("/console/login"), "{}", b.url());
        let page = b.source();
        for name in secrets_of_the_stack {
            assert!(
                !page.contains(name),
                "'{name}' shown without signing in:\n{page}"
            );
        }
    }
    // The server's managed identity is not a service administrator; a wrong secret
    // is nobody, and the attempt is in the audit trail.
    let since = pgcmk_control::model::now_rfc3339();
    let mi: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&f.key.identity.credential_file).unwrap()).unwrap();
    for (id, secret) in [
        (
            mi["client_id"].as_str().unwrap(),
            mi["client_secret"].as_str().unwrap(),
        ),
        (admin.client_id.as_str(), "wrong"),
    ] {
        b.open(&format!("{}/login", f.officer_console()));
        b.type_into("#client_id", id);
        b.type_into("#client_secret", secret);
        b.click("button[type=submit]");
        b.wait_for(".notice.failed", PAGE_LOADS);
        assert!(b
            .text(".notice.failed")
            .contains("not a service administrator"));
        b.open(&format!("{}/audit", f.officer_console()));
        assert!(b.url().ends_with("/console/login"), "{}", b.url());
        let page = b.source();
        for name in ["orders", "westeurope", "DeletePolicy", "SetPolicy"] {
            assert!(
                !page.contains(name),
                "'{name}' shown without signing in:\n{page}"
            );
        }
    }
    let denied = f.stack.vault.cli(&[
        "audit",
        "list",
        "--operation",
        "ClientCredentialsToken",
        "--result",
        "denied",
        "--since",
        &since,
    ]);
    assert_eq!(denied.as_array().map_or(0, Vec::len), 1, "{denied}");
}

#[test]
fn a_script_in_a_name_stays_text_in_both_consoles() {
    let f = fixture();
    let b = f.browser("escape");
    let hostile = "<script>document.title='owned'</script>";
    f.sign_in_as_dba(&b);
    b.open(&format!("{}/servers/new", f.dba_console()));
    b.type_into("#name", hostile);
    b.type_into("#location", "westeurope");
    b.click("form.stack button[type=submit]");
    b.wait_for(".notice.failed", PAGE_LOADS);
    let notice = b.text(".notice.failed");
    assert!(
        notice.contains(hostile),
        "the refusal names what was typed: {notice}"
    );
    assert!(b.find("main script").is_none(), "{}", b.source());

    f.sign_in_as_officer(&b);
    let create = r#"section[data-vault="orders-kv"] form[action$="/keys"]"#;
    b.type_into(&format!("{create} input[name=name]"), hostile);
    b.click(&format!("{create} button[type=submit]"));
    b.wait_for(".notice.failed", PAGE_LOADS);
    assert!(
        b.text(".notice.failed").starts_with("Refused"),
        "{}",
        b.source()
    );
    assert!(b.find("main script").is_none(), "{}", b.source());
    assert!(!b.source().contains("owned'</script>"));
}

/// An HTTPS client trusting the CAs in `ca_files` only, following no redirect.
fn client_trusting(ca_files: &[PathBuf]) -> reqwest::blocking::Client {
    let certs = ca_files
        .iter()
        .flat_map(|f| reqwest::Certificate::from_pem_bundle(&std::fs::read(f).unwrap()).unwrap())
        .collect::<Vec<_>>();
    reqwest::blocking::Client::builder()
        .tls_certs_only(certs)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Signs in over plain HTTPS as a browser does (the sign-in page's token, then the
/// form); the session cookie (`name=value`). A sign-in post without the page's
/// token is refused first.
fn session_cookie(f: &Fixture, http: &reqwest::blocking::Client) -> String {
    let login = format!("{}/login", f.dba_console());
    let forged = http
        .post(&login)
        .form(&[("credential", f.dba_credential())])
        .send()
        .unwrap();
    assert_eq!(forged.status(), 403, "a sign-in without the page's token");
    let page = http.get(&login).send().unwrap();
    let form_cookie = first_pair(page.headers()["set-cookie"].to_str().unwrap());
    let html = page.text().unwrap();
    let token = html
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the sign-in form's token");
    let answer = http
        .post(&login)
        .header("cookie", &form_cookie)
        .form(&[("csrf", token), ("credential", &f.dba_credential())])
        .send()
        .unwrap();
    assert_eq!(answer.status(), 303);
    first_pair(answer.headers()["set-cookie"].to_str().unwrap())
}

/// The `name=value` of a `Set-Cookie` value.
fn first_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

#[test]
fn a_form_post_without_the_session_token_is_refused_and_changes_nothing() {
    let f = fixture();
    let http = client_trusting(&[f.stack.cp.ca_file()]);
    let cookie = session_cookie(&f, &http);
    for csrf in ["", &"0".repeat(64)] {
        let answer = http
            .post(format!("{}/servers/orders/stop", f.dba_console()))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf)])
            .send()
            .unwrap();
        assert_eq!(answer.status(), 403);
    }
    assert!(
        !f.stack.cp.events("orders").iter().any(|e| e["what"]
            .as_str()
            .unwrap_or_default()
            .ends_with("-> Stopped")),
        "a refused post stopped the server"
    );
}

#[test]
fn every_console_answer_forbids_framing_and_foreign_content() {
    let f = fixture();
    let http = client_trusting(&[f.stack.cp.ca_file(), f.stack.vault.ca_file()]);
    for url in [
        format!("{}/login", f.dba_console()),
        f.dba_console(),
        format!("{}/console.css", f.dba_console()),
        format!("{}/login", f.officer_console()),
        format!("{}/audit", f.officer_console()),
    ] {
        let answer = http.get(&url).send().unwrap();
        let h = answer.headers();
        assert_eq!(h["x-frame-options"], "DENY", "{url}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{url}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{url}: {csp}");
        assert_eq!(h["cache-control"], "no-store", "{url}");
    }
}

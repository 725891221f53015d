//! A headless Chromium driven over W3C WebDriver (Debian's `chromium` and
//! `chromium-driver`): the web consoles' browser tests and `scripts/screenshots`.
//! A few commands over plain HTTP to a `chromedriver` child on a free loopback
//! port; the browser runs in a throw-away profile and quits with its session.
//!
//! The consoles' certificates come from each service's own local CA, which this
//! profile does not know: the browser is started with `--ignore-certificate-errors`,
//! for tests only (a user imports the service's `ca.pem` instead, see
//! docs/operations.md, "Web consoles").

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use crate::net::free_port;
use crate::process::{kill_quietly, spawn_logged};
use crate::wait::poll;

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session; the browser and its driver end when it drops.
pub struct Browser {
    driver: Child,
    http: reqwest::blocking::Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` (its log in `log`) and a headless Chromium session.
    pub fn start(log: &Path) -> Self {
        let port = free_port();
        let mut driver = spawn_logged(
            Command::new("chromedriver").arg(format!("--port={port}")),
            log,
        );
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");
        let base = format!("http://127.0.0.1:{port}");
        let up = poll(Duration::from_secs(20), Duration::from_millis(50), || {
            http.get(format!("{base}/status"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        if up.is_none() {
            kill_quietly(&mut driver);
            panic!(
                "chromedriver did not answer within 20 s; see {}",
                log.display()
            );
        }
        let profile = tempfile::tempdir().expect("a browser profile directory");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--ignore-certificate-errors", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let answer = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .and_then(|r| r.json::<Value>());
        let session = match answer {
            Ok(v) if v["value"]["sessionId"].is_string() => v["value"]["sessionId"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            other => {
                kill_quietly(&mut driver);
                panic!("no browser session: {other:?}; see {}", log.display());
            }
        };
        Self {
            driver,
            http,
            session: format!("{base}/session/{session}"),
            _profile: profile,
        }
    }

    fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            request = request.json(&b);
        }
        let answer: Value = request
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        if answer["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", answer["value"]);
        }
        answer["value"].clone()
    }

    /// Opens `url` and waits for it to load.
    pub fn open(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    /// The current page's URL.
    pub fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The current page's HTML.
    pub fn source(&self) -> String {
        self.command(reqwest::Method::GET, "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        let answer: Value = self
            .http
            .post(format!("{}/element", self.session))
            .json(&json!({ "using": "css selector", "value": css }))
            .send()
            .and_then(|r| r.json())
            .ok()?;
        answer["value"][ELEMENT].as_str().map(String::from)
    }

    /// Waits up to `limit` for an element matching `css` (a page a click loads
    /// may still be on its way when the click returns).
    pub fn wait_for(&self, css: &str, limit: Duration) {
        if poll(limit, Duration::from_millis(50), || {
            self.find(css).is_some()
        })
        .is_none()
        {
            panic!(
                "no element '{css}' within {limit:?} on {}:\n{}",
                self.url(),
                self.source()
            );
        }
    }

    fn element(&self, css: &str) -> String {
        self.find(css)
            .unwrap_or_else(|| panic!("no element '{css}' on {}:\n{}", self.url(), self.source()))
    }

    /// Types `text` into the field matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Clicks the element matching `css` (and waits for a page it loads).
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        );
    }

    /// The visible text of the element matching `css`.
    pub fn text(&self, css: &str) -> String {
        let id = self.element(css);
        self.command(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Writes a PNG of the window to `file`.
    pub fn screenshot(&self, file: &Path) {
        let b64 = self.command(reqwest::Method::GET, "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        std::fs::write(file, png).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session quits the browser; then the driver goes.
        let _ = self.http.delete(&self.session).send();
        kill_quietly(&mut self.driver);
    }
}

//! Removing a repository from Azure Blob Storage: the Blob service's REST API (List
//! Blobs, Delete Blob) authorized with the storage account's shared key
//! (`SharedKey`), as pgBackRest reaches the same container. pgBackRest has no
//! command that removes a repository without its cipher passphrase and a running
//! stanza, and a deleted server may have neither (its key purged): so the control
//! plane removes the blobs under the repository's path itself.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use pgcmk_agent::contract::backup::AzureStore;
use pgcmk_crypto::mac::MacKey;
use pgcmk_crypto::SecretBytes;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use time::macros::format_description;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The Blob service's API version the requests are signed for.
const API_VERSION: &str = "2021-08-06";
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A failure to remove blobs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The account's key is not the base64 text Azure gives.
    #[error(
        "the storage account's key is not base64 (as the portal and `az storage account keys \
         list` show it): give it again with `pgcmk serve --backup-azure-key-file` (or `--geo-backup-azure-key-file` for the geo-redundant copies' account)"
    )]
    BadAccountKey,
    /// The CA file or the client could not be set up.
    #[error("cannot reach the Blob service: {0}")]
    Client(String),
    /// The request did not get an answer.
    #[error("{operation} at {endpoint} got no answer ({reason}); the delete is retried at the next `pgcmk server delete` or control plane start")]
    Unreachable {
        /// What was asked.
        operation: &'static str,
        /// Where.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The service refused.
    #[error("{operation} was refused by the Blob service ({status}): {body}")]
    Refused {
        /// What was asked.
        operation: &'static str,
        /// The HTTP status.
        status: u16,
        /// The service's error body.
        body: String,
    },
}

/// One container, reached with the account's shared key.
pub struct BlobContainer<'a> {
    store: &'a AzureStore,
    key: MacKey,
    client: Client,
}

impl<'a> BlobContainer<'a> {
    /// The container of `store`, signing with `account_key` (the base64 text of
    /// the account's key).
    pub fn open(store: &'a AzureStore, account_key: &SecretBytes) -> Result<Self, BlobError> {
        let text = std::str::from_utf8(account_key.expose_secret())
            .map_err(|_| BlobError::BadAccountKey)?;
        let raw = Zeroizing::new(
            BASE64
                .decode(text.trim())
                .map_err(|_| BlobError::BadAccountKey)?,
        );
        let key = MacKey::from_secret(&SecretBytes::new(raw.to_vec()));
        let mut builder = Client::builder()
            .https_only(true)
            .timeout(REQUEST_TIMEOUT)
            .no_proxy();
        if let Some(ca) = &store.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| BlobError::Client(format!("reading {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| BlobError::Client(format!("{}: {e}", ca.display())))?;
            builder = builder.tls_certs_only(certs);
        }
        let client = builder
            .build()
            .map_err(|e| BlobError::Client(e.to_string()))?;
        Ok(Self { store, key, client })
    }

    /// Deletes every blob whose name begins with `prefix`; how many there were.
    pub fn delete_prefix(&self, prefix: &str) -> Result<usize, BlobError> {
        let mut deleted = 0;
        let mut marker = String::new();
        loop {
            let mut query = vec![
                ("comp", "list"),
                ("prefix", prefix),
                ("restype", "container"),
            ];
            if !marker.is_empty() {
                query.push(("marker", marker.as_str()));
            }
            let listing = self.send("List Blobs", Method::GET, "", &query)?;
            let (names, next) = read_listing(&listing);
            for name in names {
                self.send("Delete Blob", Method::DELETE, &name, &[])?;
                deleted += 1;
            }
            match next {
                Some(next) => marker = next,
                None => return Ok(deleted),
            }
        }
    }

    /// Sends a signed request for `blob` (empty: the container) with `query`
    /// (sorted by name); the answer's body.
    fn send(
        &self,
        operation: &'static str,
        method: Method,
        blob: &str,
        query: &[(&str, &str)],
    ) -> Result<String, BlobError> {
        let path = self.path(blob);
        let endpoint = format!("https://{}:{}", self.store.host, self.store.port);
        let date = http_date(OffsetDateTime::now_utc());
        let to_sign = string_to_sign(method.as_str(), &date, &self.store.account, &path, query);
        let signature = BASE64.encode(self.key.sign(to_sign.as_bytes()).as_bytes());
        let request: RequestBuilder = self
            .client
            .request(method, format!("{endpoint}{path}"))
            .query(query)
            .header("x-ms-date", &date)
            .header("x-ms-version", API_VERSION)
            .header(
                "Authorization",
                format!("SharedKey {}:{signature}", self.store.account),
            );
        let response = request.send().map_err(|e| BlobError::Unreachable {
            operation,
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        })?;
        let status = response.status();
        let body = response.text().unwrap_or_default();
        // A blob gone meanwhile (another delete) is what was wanted.
        if status.is_success() || (operation == "Delete Blob" && status.as_u16() == 404) {
            return Ok(body);
        }
        Err(BlobError::Refused {
            operation,
            status: status.as_u16(),
            body: body.chars().take(500).collect(),
        })
    }

    /// The URL path of `blob` (empty: the container), percent-encoded.
    fn path(&self, blob: &str) -> String {
        let mut path = String::new();
        if self.store.path_style {
            path.push('/');
            path.push_str(&self.store.account);
        }
        path.push('/');
        path.push_str(&self.store.container);
        if !blob.is_empty() {
            path.push('/');
            path.push_str(&pgcmk_console::html::percent_encoded(blob, b"/"));
        }
        path
    }
}

/// What a Shared Key signature covers (version 2015-02-21 and later): the verb,
/// eleven standard headers (none set but the date, sent as `x-ms-date`), the
/// `x-ms-` headers, and the resource with its query.
fn string_to_sign(
    verb: &str,
    date: &str,
    account: &str,
    path: &str,
    query: &[(&str, &str)],
) -> String {
    let mut text = format!(
        "{verb}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{API_VERSION}\n/{account}{path}"
    );
    let mut params: Vec<(String, &str)> = query
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), *v))
        .collect();
    params.sort();
    for (name, value) in params {
        text.push('\n');
        text.push_str(&name);
        text.push(':');
        text.push_str(value);
    }
    text
}

/// `Mon, 07 Dec 2026 18:00:00 GMT`, as HTTP dates are written.
fn http_date(at: OffsetDateTime) -> String {
    let format = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    at.format(&format).unwrap_or_default()
}

/// The blob names of a List Blobs answer, and its continuation marker.
fn read_listing(xml: &str) -> (Vec<String>, Option<String>) {
    let names = elements(xml, "Name").map(unescape).collect();
    let next = elements(xml, "NextMarker")
        .next()
        .filter(|m| !m.is_empty())
        .map(unescape);
    (names, next)
}

/// The text of each `<tag>...</tag>` in `xml`.
fn elements<'x>(xml: &'x str, tag: &str) -> impl Iterator<Item = &'x str> + 'x {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = xml;
    std::iter::from_fn(move || {
        let start = rest.find(&open)? + open.len();
        let len = rest[start..].find(&close)?;
        let text = &rest[start..start + len];
        rest = &rest[start + len + close.len()..];
        Some(text)
    })
}

/// XML's five predefined entities, unescaped.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_string_has_the_headers_then_the_sorted_query() {
        let text = string_to_sign(
            "GET",
            "Mon, 07 Dec 2026 18:00:00 GMT",
            "acct",
            "/acct/c",
            &[
                ("restype", "container"),
                ("comp", "list"),
                ("prefix", "id/"),
            ],
        );
        assert_eq!(
            text,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Mon, 07 Dec 2026 18:00:00 GMT\n\
             x-ms-version:2021-08-06\n/acct/acct/c\ncomp:list\nprefix:id/\nrestype:container"
        );
    }

    #[test]
    fn http_dates_are_in_gmt() {
        let at = OffsetDateTime::from_unix_timestamp(1_796_666_400).unwrap();
        assert_eq!(http_date(at), "Mon, 07 Dec 2026 18:00:00 GMT");
    }

    #[test]
    fn listings_give_names_and_the_next_marker() {
        let xml =
            "<?xml version=\"1.0\"?><EnumerationResults ContainerName=\"c\"><Prefix>id/</Prefix>\
                   <Blobs><Blob><Name>id/a&amp;b</Name><Properties/></Blob>\
                   <Blob><Name>id/backup/backup.info</Name></Blob></Blobs>\
                   <NextMarker>m2</NextMarker></EnumerationResults>";
        let (names, next) = read_listing(xml);
        assert_eq!(names, ["id/a&b", "id/backup/backup.info"]);
        assert_eq!(next.as_deref(), Some("m2"));
        let (none, end) =
            read_listing("<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>");
        assert!(none.is_empty() && end.is_none());
    }
}

//! KMIP servers as key providers: a key `kmip://HOST:PORT/UNIQUE_IDENTIFIER` held
//! by the server, used through its Encrypt and Decrypt operations (AES-256-GCM)
//! over TLS with a client certificate; never Get.
//!
//! - [`ttlv`]: the TTLV codec, bounded and typed for hostile input.
//! - [`KmipKek`]: the [`KeyEncryptionKey`](crate::KeyEncryptionKey) it provides.

mod client;
mod kek;
mod message;
pub mod ttlv;
mod uri;

pub use kek::KmipKek;
pub use uri::KmipKeyReference;

//! KMIP servers as key providers: references of the form
//! `kmip://HOST:PORT/UNIQUE_IDENTIFIER`.

mod uri;

pub use uri::KmipKeyReference;

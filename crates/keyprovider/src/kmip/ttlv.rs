//! KMIP's Tag-Type-Length-Value encoding (KMIP 1.x, section 9.1): a typed codec
//! with no I/O, safe to feed hostile bytes. Every length is checked against what
//! is left before anything is allocated, structures nest at most [`MAX_DEPTH`]
//! deep, padding must be zero, and each failure is a typed [`TtlvError`].

use std::fmt;

use zeroize::Zeroize;

/// Deepest nesting of structures accepted (KMIP messages nest about 6 deep).
pub const MAX_DEPTH: usize = 16;
/// Largest message accepted or sent, in bytes.
pub const MAX_MESSAGE: usize = 1 << 20;

/// A KMIP tag (3 bytes on the wire, `0x42XXXX` for the standard ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag(pub u32);

/// One item: a tag and its typed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// What the value is.
    pub tag: Tag,
    /// The value.
    pub value: Value,
}

/// A typed value (the KMIP item types).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// Type 0x01: items in order.
    Structure(Vec<Item>),
    /// Type 0x02: 32-bit signed.
    Integer(i32),
    /// Type 0x03: 64-bit signed.
    LongInteger(i64),
    /// Type 0x04: big-endian two's complement, a multiple of 8 bytes.
    BigInteger(Vec<u8>),
    /// Type 0x05: an enumeration's 32-bit value.
    Enumeration(u32),
    /// Type 0x06.
    Boolean(bool),
    /// Type 0x07: UTF-8.
    TextString(String),
    /// Type 0x08.
    ByteString(Vec<u8>),
    /// Type 0x09: seconds since the Unix epoch.
    DateTime(i64),
    /// Type 0x0A: seconds.
    Interval(u32),
}

/// Why bytes are not a TTLV item.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtlvError {
    /// The bytes end inside an item.
    #[error("the message ends inside an item (at byte {at})")]
    Truncated {
        /// Offset of the item.
        at: usize,
    },
    /// An item type that KMIP 1.x does not define.
    #[error("unknown item type 0x{kind:02x} at byte {at}")]
    UnknownType {
        /// The type byte.
        kind: u8,
        /// Offset of the item.
        at: usize,
    },
    /// A length that does not fit the type (e.g. an Integer of 3 bytes).
    #[error(
        "item of type 0x{kind:02x} at byte {at} has length {len}, which that type cannot have"
    )]
    BadLength {
        /// The type byte.
        kind: u8,
        /// The length on the wire.
        len: u32,
        /// Offset of the item.
        at: usize,
    },
    /// Padding bytes that are not zero, or a Boolean that is neither 0 nor 1.
    #[error("malformed value at byte {at}")]
    Malformed {
        /// Offset of the item.
        at: usize,
    },
    /// A Text String that is not UTF-8.
    #[error("text at byte {at} is not UTF-8")]
    NotUtf8 {
        /// Offset of the item.
        at: usize,
    },
    /// Structures nested deeper than [`MAX_DEPTH`].
    #[error("structures nest deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A message over [`MAX_MESSAGE`] bytes.
    #[error("the message is {len} bytes, over the {MAX_MESSAGE}-byte limit")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Bytes left after the one top-level item.
    #[error("{extra} bytes follow the message")]
    Trailing {
        /// How many.
        extra: usize,
    },
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:06x}", self.0)
    }
}

impl Item {
    /// An item `tag` holding `value`.
    pub fn new(tag: Tag, value: Value) -> Self {
        Self { tag, value }
    }

    /// Appends the encoding of this item to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tag.0.to_be_bytes()[1..]);
        let (kind, body): (u8, Vec<u8>) = match &self.value {
            Value::Structure(items) => {
                let mut body = Vec::new();
                for item in items {
                    item.encode(&mut body);
                }
                (0x01, body)
            }
            Value::Integer(v) => (0x02, v.to_be_bytes().to_vec()),
            Value::LongInteger(v) => (0x03, v.to_be_bytes().to_vec()),
            Value::BigInteger(v) => (0x04, v.clone()),
            Value::Enumeration(v) => (0x05, v.to_be_bytes().to_vec()),
            Value::Boolean(v) => (0x06, u64::from(*v).to_be_bytes().to_vec()),
            Value::TextString(v) => (0x07, v.as_bytes().to_vec()),
            Value::ByteString(v) => (0x08, v.clone()),
            Value::DateTime(v) => (0x09, v.to_be_bytes().to_vec()),
            Value::Interval(v) => (0x0A, v.to_be_bytes().to_vec()),
        };
        out.push(kind);
        // Messages are built from bounded parts: a DEK, names, a few attributes.
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out.resize(out.len() + padding(body.len()), 0);
    }

    /// The encoding of this item.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes exactly one item filling `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Item, TtlvError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(TtlvError::TooLong { len: bytes.len() });
        }
        let (item, used) = decode_at(bytes, 0, 0)?;
        match bytes.len() - used {
            0 => Ok(item),
            extra => Err(TtlvError::Trailing { extra }),
        }
    }

    /// Overwrites every byte and text string in the item with zeros (and empties
    /// them): a message that carried a DEK is wiped before it is dropped.
    pub fn wipe(&mut self) {
        match &mut self.value {
            Value::Structure(items) => items.iter_mut().for_each(Item::wipe),
            Value::ByteString(b) | Value::BigInteger(b) => b.zeroize(),
            Value::TextString(t) => t.zeroize(),
            _ => {}
        }
    }

    /// The first child of a structure with `tag`, if any.
    pub fn child(&self, tag: Tag) -> Option<&Item> {
        self.children().iter().find(|i| i.tag == tag)
    }

    /// Every child of a structure with `tag`.
    pub fn all(&self, tag: Tag) -> impl Iterator<Item = &Item> {
        self.children().iter().filter(move |i| i.tag == tag)
    }

    fn children(&self) -> &[Item] {
        match &self.value {
            Value::Structure(items) => items,
            _ => &[],
        }
    }
}

/// The header length: tag (3), type (1), length (4).
const HEADER: usize = 8;

fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}

/// Decodes the item at `bytes[at..]`; the item and the offset after it.
fn decode_at(bytes: &[u8], at: usize, depth: usize) -> Result<(Item, usize), TtlvError> {
    let header = bytes
        .get(at..at + HEADER)
        .ok_or(TtlvError::Truncated { at })?;
    let tag = Tag(u32::from_be_bytes([0, header[0], header[1], header[2]]));
    let kind = header[3];
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let start = at + HEADER;
    let body_len = usize::try_from(len).map_err(|_| TtlvError::Truncated { at })?;
    let padded = body_len
        .checked_add(padding(body_len))
        .ok_or(TtlvError::Truncated { at })?;
    let end = start
        .checked_add(padded)
        .filter(|end| *end <= bytes.len())
        .ok_or(TtlvError::Truncated { at })?;
    let body = &bytes[start..start + body_len];
    if bytes[start + body_len..end].iter().any(|b| *b != 0) {
        return Err(TtlvError::Malformed { at });
    }
    let bad_length = || TtlvError::BadLength { kind, len, at };
    let fixed = |n: usize| -> Result<[u8; 8], TtlvError> {
        if body_len != n {
            return Err(bad_length());
        }
        let mut b = [0u8; 8];
        b[8 - n..].copy_from_slice(body);
        Ok(b)
    };
    let value = match kind {
        0x01 => {
            if depth >= MAX_DEPTH {
                return Err(TtlvError::TooDeep);
            }
            let mut items = Vec::new();
            let mut next = start;
            while next < start + body_len {
                let (item, after) = decode_at(&bytes[..start + body_len], next, depth + 1)?;
                items.push(item);
                next = after;
            }
            Value::Structure(items)
        }
        0x02 => Value::Integer(i64::from_be_bytes(fixed(4)?) as i32),
        0x03 => Value::LongInteger(i64::from_be_bytes(fixed(8)?)),
        0x04 if body_len % 8 == 0 && body_len > 0 => Value::BigInteger(body.to_vec()),
        0x05 => Value::Enumeration(u64::from_be_bytes(fixed(4)?) as u32),
        0x06 => match u64::from_be_bytes(fixed(8)?) {
            0 => Value::Boolean(false),
            1 => Value::Boolean(true),
            _ => return Err(TtlvError::Malformed { at }),
        },
        0x07 => Value::TextString(
            String::from_utf8(body.to_vec()).map_err(|_| TtlvError::NotUtf8 { at })?,
        ),
        0x08 => Value::ByteString(body.to_vec()),
        0x09 => Value::DateTime(i64::from_be_bytes(fixed(8)?)),
        0x0A => Value::Interval(u64::from_be_bytes(fixed(4)?) as u32),
        0x04 => return Err(bad_length()),
        _ => return Err(TtlvError::UnknownType { kind, at }),
    };
    Ok((Item { tag, value }, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Tag = Tag(0x420094);

    fn sample() -> Item {
        Item::new(
            Tag(0x420078),
            Value::Structure(vec![
                Item::new(T, Value::TextString("key-1".into())),
                Item::new(Tag(0x42005C), Value::Enumeration(0x1F)),
                Item::new(Tag(0x42000D), Value::Integer(-2)),
                Item::new(Tag(0x4200C2), Value::ByteString(vec![1, 2, 3])),
                Item::new(Tag(0x420006), Value::Boolean(true)),
                Item::new(Tag(0x420092), Value::DateTime(1_700_000_000)),
                Item::new(Tag(0x420001), Value::LongInteger(-5)),
                Item::new(Tag(0x420002), Value::Interval(60)),
                Item::new(Tag(0x420003), Value::BigInteger(vec![0; 8])),
            ]),
        )
    }

    #[test]
    fn every_type_round_trips_with_eight_byte_alignment() {
        let bytes = sample().to_bytes();
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(Item::decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn wiping_zeroes_every_byte_string_inside() {
        let mut item = sample();
        item.wipe();
        let data = item.child(Tag(0x4200C2)).unwrap();
        // Zeroed in place, then emptied.
        assert_eq!(data.value, Value::ByteString(Vec::new()));
    }

    #[test]
    fn an_integer_is_encoded_as_the_specification_shows() {
        // KMIP 1.4 section 9.1.2, example: Integer 8 with tag 0x420020.
        let bytes = Item::new(Tag(0x420020), Value::Integer(8)).to_bytes();
        assert_eq!(
            bytes,
            [0x42, 0x00, 0x20, 0x02, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0, 0, 0]
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            assert!(Item::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_lengths_types_padding_and_nesting_are_typed_errors() {
        let item = |kind: u8, len: u32, body: &[u8]| {
            let mut b = vec![0x42, 0x00, 0x94, kind];
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(body);
            b
        };
        // A length far past the end allocates nothing and says so.
        assert_eq!(
            Item::decode(&item(0x08, u32::MAX, &[])),
            Err(TtlvError::Truncated { at: 0 })
        );
        assert!(matches!(
            Item::decode(&item(0x02, 3, &[0; 8])),
            Err(TtlvError::BadLength {
                kind: 2,
                len: 3,
                ..
            })
        ));
        assert!(matches!(
            Item::decode(&item(0x0B, 0, &[])),
            Err(TtlvError::UnknownType { kind: 0x0B, .. })
        ));
        assert!(matches!(
            Item::decode(&item(0x08, 1, &[7, 0, 0, 0, 0, 0, 0, 1])),
            Err(TtlvError::Malformed { .. })
        ));
        assert!(matches!(
            Item::decode(&item(0x06, 8, &[0, 0, 0, 0, 0, 0, 0, 2])),
            Err(TtlvError::Malformed { .. })
        ));
        assert!(matches!(
            Item::decode(&item(0x07, 2, &[0xff, 0xfe, 0, 0, 0, 0, 0, 0])),
            Err(TtlvError::NotUtf8 { .. })
        ));
        assert!(matches!(
            Item::decode(&item(0x04, 3, &[0; 8])),
            Err(TtlvError::BadLength { .. })
        ));
        let mut trailing = item(0x02, 4, &[0; 8]);
        trailing.extend_from_slice(&[0; 8]);
        assert_eq!(
            Item::decode(&trailing),
            Err(TtlvError::Trailing { extra: 8 })
        );
        // A child claiming more than its parent holds.
        let mut lying = item(0x01, 16, &[]);
        lying.extend_from_slice(&item(0x08, 64, &[0; 8]));
        assert!(matches!(
            Item::decode(&lying),
            Err(TtlvError::Truncated { .. })
        ));
        // Nesting past the limit.
        let mut deep = Item::new(T, Value::Integer(1));
        for _ in 0..=MAX_DEPTH {
            deep = Item::new(T, Value::Structure(vec![deep]));
        }
        assert_eq!(Item::decode(&deep.to_bytes()), Err(TtlvError::TooDeep));
        assert!(matches!(
            Item::decode(&vec![0; MAX_MESSAGE + 8]),
            Err(TtlvError::TooLong { .. })
        ));
    }
}

//! The KMIP 1.4 messages pgcmk sends: one batch item per request (Get Attributes,
//! Encrypt, Decrypt), and the typed reading of the answer. Never Get: the key's
//! material stays on the server.

use super::ttlv::{Item, Tag, Value};

/// Tags (KMIP 1.4, section 9.1.3.1).
pub(super) mod tag {
    use super::Tag;
    pub const ATTRIBUTE: Tag = Tag(0x420008);
    pub const ATTRIBUTE_NAME: Tag = Tag(0x42000A);
    pub const ATTRIBUTE_VALUE: Tag = Tag(0x42000B);
    pub const AUTHENTICATED_ENCRYPTION_TAG: Tag = Tag(0x4200FF);
    pub const BATCH_COUNT: Tag = Tag(0x42000D);
    pub const BATCH_ITEM: Tag = Tag(0x42000F);
    pub const BLOCK_CIPHER_MODE: Tag = Tag(0x420011);
    pub const CRYPTOGRAPHIC_ALGORITHM: Tag = Tag(0x420028);
    pub const CRYPTOGRAPHIC_PARAMETERS: Tag = Tag(0x42002B);
    pub const DATA: Tag = Tag(0x4200C2);
    pub const IV_COUNTER_NONCE: Tag = Tag(0x42003D);
    pub const OPERATION: Tag = Tag(0x42005C);
    pub const PROTOCOL_VERSION: Tag = Tag(0x420069);
    pub const PROTOCOL_VERSION_MAJOR: Tag = Tag(0x42006A);
    pub const PROTOCOL_VERSION_MINOR: Tag = Tag(0x42006B);
    pub const REQUEST_HEADER: Tag = Tag(0x420077);
    pub const REQUEST_MESSAGE: Tag = Tag(0x420078);
    pub const REQUEST_PAYLOAD: Tag = Tag(0x420079);
    pub const RESPONSE_MESSAGE: Tag = Tag(0x42007B);
    pub const RESPONSE_PAYLOAD: Tag = Tag(0x42007C);
    pub const RESULT_MESSAGE: Tag = Tag(0x42007D);
    pub const RESULT_REASON: Tag = Tag(0x42007E);
    pub const RESULT_STATUS: Tag = Tag(0x42007F);
    pub const TAG_LENGTH: Tag = Tag(0x4200CE);
    pub const UNIQUE_IDENTIFIER: Tag = Tag(0x420094);
}

/// The operations pgcmk uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Operation {
    GetAttributes,
    Encrypt,
    Decrypt,
}

impl Operation {
    fn code(self) -> u32 {
        match self {
            Operation::GetAttributes => 0x0B,
            Operation::Encrypt => 0x1F,
            Operation::Decrypt => 0x20,
        }
    }
}

/// Result reasons that say the server refuses this client or this key for good
/// (KMIP 1.4, section 9.1.3.2.29): Item Not Found, Authentication Not Successful,
/// Permission Denied, Object Archived, Wrong Key Lifecycle State, Cryptographic
/// Failure (a wrapped DEK the key did not wrap).
const DENIALS: [u32; 6] = [0x01, 0x03, 0x0C, 0x0D, 0x13, 0x0A];

/// What the server answered instead of a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    /// The result reason, when given.
    pub reason: Option<u32>,
    /// The result message, when given.
    pub message: String,
}

impl Refusal {
    /// True when the refusal is about this client or key, not a passing failure.
    pub fn is_denial(&self) -> bool {
        self.reason.is_some_and(|r| DENIALS.contains(&r))
    }
}

/// Why a response could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ResponseError {
    /// The server refused the operation.
    Refused(Refusal),
    /// The response is not a KMIP response to this request.
    Malformed(&'static str),
}

/// The encoded request message for `operation` with `payload`; the payload is
/// wiped once encoded (it may carry a DEK).
pub(super) fn request(operation: Operation, payload: Vec<Item>) -> Vec<u8> {
    let structure = |tag, items| Item::new(tag, Value::Structure(items));
    let version = structure(
        tag::PROTOCOL_VERSION,
        vec![
            Item::new(tag::PROTOCOL_VERSION_MAJOR, Value::Integer(1)),
            Item::new(tag::PROTOCOL_VERSION_MINOR, Value::Integer(4)),
        ],
    );
    let mut message = structure(
        tag::REQUEST_MESSAGE,
        vec![
            structure(
                tag::REQUEST_HEADER,
                vec![version, Item::new(tag::BATCH_COUNT, Value::Integer(1))],
            ),
            structure(
                tag::BATCH_ITEM,
                vec![
                    Item::new(tag::OPERATION, Value::Enumeration(operation.code())),
                    structure(tag::REQUEST_PAYLOAD, payload),
                ],
            ),
        ],
    );
    let bytes = message.to_bytes();
    message.wipe();
    bytes
}

/// The response payload of the one batch item in `message`, an answer to `operation`.
pub(super) fn response_payload(
    message: &Item,
    operation: Operation,
) -> Result<Item, ResponseError> {
    if message.tag != tag::RESPONSE_MESSAGE {
        return Err(ResponseError::Malformed("not a response message"));
    }
    let item = message
        .child(tag::BATCH_ITEM)
        .ok_or(ResponseError::Malformed("no batch item"))?;
    if let Some(op) = item.child(tag::OPERATION) {
        if op.value != Value::Enumeration(operation.code()) {
            return Err(ResponseError::Malformed("an answer to another operation"));
        }
    }
    match item.child(tag::RESULT_STATUS).map(|s| &s.value) {
        Some(Value::Enumeration(0)) => item
            .child(tag::RESPONSE_PAYLOAD)
            .cloned()
            .ok_or(ResponseError::Malformed("success without a payload")),
        Some(Value::Enumeration(_)) => Err(ResponseError::Refused(Refusal {
            reason: match item.child(tag::RESULT_REASON).map(|r| &r.value) {
                Some(Value::Enumeration(r)) => Some(*r),
                _ => None,
            },
            message: text(item.child(tag::RESULT_MESSAGE)).unwrap_or_default(),
        })),
        _ => Err(ResponseError::Malformed("no result status")),
    }
}

/// The text of a Text String item.
pub(super) fn text(item: Option<&Item>) -> Option<String> {
    match &item?.value {
        Value::TextString(s) => Some(s.chars().take(300).collect()),
        _ => None,
    }
}

/// The bytes of a Byte String item.
pub(super) fn bytes(item: Option<&Item>) -> Option<&[u8]> {
    match &item?.value {
        Value::ByteString(b) => Some(b),
        _ => None,
    }
}

/// The value of attribute `name` in a Get Attributes response payload.
pub(super) fn attribute<'a>(payload: &'a Item, name: &str) -> Option<&'a Value> {
    payload
        .all(tag::ATTRIBUTE)
        .find(|a| text(a.child(tag::ATTRIBUTE_NAME)).as_deref() == Some(name))
        .and_then(|a| a.child(tag::ATTRIBUTE_VALUE))
        .map(|v| &v.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(op: u32, status: u32, extra: Vec<Item>) -> Item {
        let mut batch = vec![
            Item::new(tag::OPERATION, Value::Enumeration(op)),
            Item::new(tag::RESULT_STATUS, Value::Enumeration(status)),
        ];
        batch.extend(extra);
        Item::new(
            tag::RESPONSE_MESSAGE,
            Value::Structure(vec![Item::new(tag::BATCH_ITEM, Value::Structure(batch))]),
        )
    }

    #[test]
    fn a_request_is_one_batch_item_of_kmip_1_4() {
        let bytes = request(Operation::Decrypt, vec![]);
        let message = Item::decode(&bytes).unwrap();
        let header = message.child(tag::REQUEST_HEADER).unwrap();
        let version = header.child(tag::PROTOCOL_VERSION).unwrap();
        assert_eq!(
            version.child(tag::PROTOCOL_VERSION_MINOR).unwrap().value,
            Value::Integer(4)
        );
        let item = message.child(tag::BATCH_ITEM).unwrap();
        assert_eq!(
            item.child(tag::OPERATION).unwrap().value,
            Value::Enumeration(0x20)
        );
    }

    #[test]
    fn refusals_say_whether_they_are_denials() {
        let refused = |reason: u32| {
            let extra = vec![
                Item::new(tag::RESULT_REASON, Value::Enumeration(reason)),
                Item::new(tag::RESULT_MESSAGE, Value::TextString("no".into())),
            ];
            match response_payload(&answer(0x1F, 1, extra), Operation::Encrypt) {
                Err(ResponseError::Refused(r)) => r,
                other => panic!("{other:?}"),
            }
        };
        assert!(refused(0x0C).is_denial(), "Permission Denied");
        assert!(refused(0x01).is_denial(), "Item Not Found");
        assert!(!refused(0x100).is_denial(), "General Failure");
        assert_eq!(refused(0x0C).message, "no");
    }

    #[test]
    fn an_answer_to_another_operation_or_without_status_is_malformed() {
        let payload = vec![Item::new(tag::RESPONSE_PAYLOAD, Value::Structure(vec![]))];
        assert!(response_payload(&answer(0x1F, 0, payload.clone()), Operation::Encrypt).is_ok());
        assert!(matches!(
            response_payload(&answer(0x20, 0, payload), Operation::Encrypt),
            Err(ResponseError::Malformed(_))
        ));
        let no_status = Item::new(
            tag::RESPONSE_MESSAGE,
            Value::Structure(vec![Item::new(tag::BATCH_ITEM, Value::Structure(vec![]))]),
        );
        assert!(matches!(
            response_payload(&no_status, Operation::Encrypt),
            Err(ResponseError::Malformed(_))
        ));
    }
}

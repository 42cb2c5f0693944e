//! Request messages and response batch items (KMIP 1.2 section 7), sans-I/O.
//! One operation per message: wrapcrypt's calls are few and small.

use crate::enums::{Operation, ResultReason, ResultStatus};
use crate::error::KmipError;
use crate::tag;
use crate::ttlv::{Ttlv, Value};

/// The protocol version this client speaks (PyKMIP's default, and the
/// version most key managers accept).
pub const PROTOCOL_VERSION: (i32, i32) = (1, 2);

/// The version Encrypt and Decrypt are sent with: Authenticated Encryption
/// Additional Data and Tag (AES-GCM) were added to their payloads in KMIP 1.4.
pub const AEAD_PROTOCOL_VERSION: (i32, i32) = (1, 4);

/// Builds a KMIP 1.2 Request Message holding one batch item.
pub fn request(op: Operation, payload: Vec<Ttlv>) -> Ttlv {
    request_version(PROTOCOL_VERSION, op, payload)
}

/// Builds a Request Message of a given protocol version.
pub fn request_version(version: (i32, i32), op: Operation, payload: Vec<Ttlv>) -> Ttlv {
    let (major, minor) = version;
    Ttlv::structure(
        tag::REQUEST_MESSAGE,
        vec![
            Ttlv::structure(
                tag::REQUEST_HEADER,
                vec![
                    Ttlv::structure(
                        tag::PROTOCOL_VERSION,
                        vec![
                            Ttlv::integer(tag::PROTOCOL_VERSION_MAJOR, major),
                            Ttlv::integer(tag::PROTOCOL_VERSION_MINOR, minor),
                        ],
                    ),
                    Ttlv::integer(tag::BATCH_COUNT, 1),
                ],
            ),
            Ttlv::structure(
                tag::BATCH_ITEM,
                vec![
                    Ttlv::enumeration(tag::OPERATION, op.code()),
                    Ttlv::structure(tag::REQUEST_PAYLOAD, payload),
                ],
            ),
        ],
    )
}

/// Checks a Response Message for `op` and returns its Response Payload (an
/// empty structure when the server sent none). A failed result becomes
/// [`KmipError::Operation`] with the server's reason and message.
pub fn response_payload(msg: Ttlv, op: Operation) -> Result<Ttlv, KmipError> {
    let malformed = |what: &str| KmipError::Malformed {
        op,
        what: what.to_owned(),
    };
    if msg.tag != tag::RESPONSE_MESSAGE {
        return Err(malformed("not a Response Message"));
    }
    let Value::Structure(items) = msg.value else {
        return Err(malformed("Response Message is not a structure"));
    };
    let mut batch = None;
    for item in items {
        if item.tag == tag::BATCH_ITEM {
            if batch.is_some() {
                return Err(malformed("more than one Batch Item"));
            }
            batch = Some(item);
        }
    }
    let batch = batch.ok_or_else(|| malformed("no Batch Item"))?;
    if let Some(got) = batch.child(tag::OPERATION).and_then(Ttlv::as_enum) {
        if got != op.code() {
            return Err(malformed(&format!(
                "answer is for {}",
                Operation::from_code(got)
            )));
        }
    }
    let status = batch
        .child(tag::RESULT_STATUS)
        .and_then(Ttlv::as_enum)
        .map(ResultStatus::from_code)
        .ok_or_else(|| malformed("no Result Status"))?;
    if status != ResultStatus::Success {
        let reason = batch
            .child(tag::RESULT_REASON)
            .and_then(Ttlv::as_enum)
            .map(ResultReason::from_code)
            .unwrap_or(ResultReason::GeneralFailure);
        let mut message = batch
            .child(tag::RESULT_MESSAGE)
            .and_then(Ttlv::as_text)
            .unwrap_or("")
            .to_owned();
        if status != ResultStatus::OperationFailed {
            message = format!("{status}: {message}");
        }
        // One line: a server's message may hold newlines.
        message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        return Err(KmipError::Operation {
            op,
            reason,
            message,
        });
    }
    let Value::Structure(items) = batch.value else {
        return Err(malformed("Batch Item is not a structure"));
    };
    Ok(items
        .into_iter()
        .find(|i| i.tag == tag::RESPONSE_PAYLOAD)
        .unwrap_or_else(|| Ttlv::structure(tag::RESPONSE_PAYLOAD, Vec::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(op: Operation, status: u32, extra: Vec<Ttlv>) -> Ttlv {
        let mut batch = vec![
            Ttlv::enumeration(tag::OPERATION, op.code()),
            Ttlv::enumeration(tag::RESULT_STATUS, status),
        ];
        batch.extend(extra);
        Ttlv::structure(
            tag::RESPONSE_MESSAGE,
            vec![
                Ttlv::structure(tag::RESPONSE_HEADER, vec![]),
                Ttlv::structure(tag::BATCH_ITEM, batch),
            ],
        )
    }

    #[test]
    fn failure_becomes_operation_error() {
        let msg = response(
            Operation::Get,
            1,
            vec![
                Ttlv::enumeration(tag::RESULT_REASON, 1),
                Ttlv::text(tag::RESULT_MESSAGE, "Could not locate\nobject: 9"),
            ],
        );
        let e = response_payload(msg, Operation::Get).unwrap_err();
        assert_eq!(e.reason(), Some(ResultReason::ItemNotFound));
        assert_eq!(
            e.to_string(),
            "KMIP Get failed: Item Not Found: Could not locate object: 9"
        );
    }

    #[test]
    fn success_returns_payload_and_checks_operation() {
        let payload = Ttlv::structure(
            tag::RESPONSE_PAYLOAD,
            vec![Ttlv::text(tag::UNIQUE_IDENTIFIER, "1")],
        );
        let msg = response(Operation::Create, 0, vec![payload.clone()]);
        assert_eq!(
            response_payload(msg.clone(), Operation::Create).unwrap(),
            payload
        );
        assert!(matches!(
            response_payload(msg, Operation::Get),
            Err(KmipError::Malformed { .. })
        ));
    }

    #[test]
    fn request_round_trips() {
        let r = request(
            Operation::Activate,
            vec![Ttlv::text(tag::UNIQUE_IDENTIFIER, "7")],
        );
        let bytes = r.encode().unwrap();
        assert_eq!(Ttlv::decode(&bytes).unwrap(), r);
        assert_eq!(&bytes[..4], &[0x42, 0x00, 0x78, 0x01]);
    }
}

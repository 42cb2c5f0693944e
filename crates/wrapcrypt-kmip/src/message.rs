//! Request messages and response batch items (KMIP 1.2 section 7), sans-I/O.
//! A message carries one operation, or a batch of several answered in one
//! round trip (items after the first refer to a Create's object through the
//! ID Placeholder by leaving out their Unique Identifier).

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

/// Batch Error Continuation Option Stop: the server skips the items after
/// a failed one.
const BATCH_ERROR_STOP: u32 = 0x02;

/// Builds a KMIP 1.2 Request Message holding one batch item.
pub fn request(op: Operation, payload: Vec<Ttlv>) -> Ttlv {
    request_version(PROTOCOL_VERSION, op, payload)
}

/// Builds a Request Message of a given protocol version.
pub fn request_version(version: (i32, i32), op: Operation, payload: Vec<Ttlv>) -> Ttlv {
    request_batch(version, vec![(op, payload)])
}

/// The Unique Batch Item ID of item `i` (4 bytes, big-endian).
fn batch_id(i: usize) -> Vec<u8> {
    u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes().to_vec()
}

/// Builds a Request Message holding `items` in order. With more than one
/// item each gets a Unique Batch Item ID and the server is asked to stop at
/// the first failure.
pub fn request_batch(version: (i32, i32), items: Vec<(Operation, Vec<Ttlv>)>) -> Ttlv {
    let (major, minor) = version;
    let n = items.len();
    let mut header = vec![Ttlv::structure(
        tag::PROTOCOL_VERSION,
        vec![
            Ttlv::integer(tag::PROTOCOL_VERSION_MAJOR, major),
            Ttlv::integer(tag::PROTOCOL_VERSION_MINOR, minor),
        ],
    )];
    if n > 1 {
        header.push(Ttlv::enumeration(
            tag::BATCH_ERROR_CONTINUATION_OPTION,
            BATCH_ERROR_STOP,
        ));
    }
    header.push(Ttlv::integer(
        tag::BATCH_COUNT,
        i32::try_from(n).unwrap_or(i32::MAX),
    ));
    let mut msg = vec![Ttlv::structure(tag::REQUEST_HEADER, header)];
    for (i, (op, payload)) in items.into_iter().enumerate() {
        let mut item = vec![Ttlv::enumeration(tag::OPERATION, op.code())];
        if n > 1 {
            item.push(Ttlv::bytes(tag::UNIQUE_BATCH_ITEM_ID, &batch_id(i)));
        }
        item.push(Ttlv::structure(tag::REQUEST_PAYLOAD, payload));
        msg.push(Ttlv::structure(tag::BATCH_ITEM, item));
    }
    Ttlv::structure(tag::REQUEST_MESSAGE, msg)
}

/// Checks a Response Message for `op` and returns its Response Payload (an
/// empty structure when the server sent none). A failed result becomes
/// [`KmipError::Operation`] with the server's reason and message.
pub fn response_payload(msg: Ttlv, op: Operation) -> Result<Ttlv, KmipError> {
    let mut results = response_payloads(msg, &[op])?;
    match results.pop() {
        Some(r) if results.is_empty() => r,
        _ => Err(KmipError::Malformed {
            op,
            what: "not one Batch Item".into(),
        }),
    }
}

/// Checks a Response Message for the batch `ops` and returns one result per
/// operation, in order. The outer error is for the message as a whole (not
/// a response, or the server refused the whole request); an item the server
/// did not run because an earlier one failed is [`KmipError::Skipped`].
pub fn response_payloads(
    msg: Ttlv,
    ops: &[Operation],
) -> Result<Vec<Result<Ttlv, KmipError>>, KmipError> {
    let first = ops.first().copied().unwrap_or(Operation::Other(0));
    let malformed = |what: &str| KmipError::Malformed {
        op: first,
        what: what.to_owned(),
    };
    if msg.tag != tag::RESPONSE_MESSAGE {
        return Err(malformed("not a Response Message"));
    }
    let Value::Structure(items) = msg.value else {
        return Err(malformed("Response Message is not a structure"));
    };
    let batch: Vec<Ttlv> = items
        .into_iter()
        .filter(|i| i.tag == tag::BATCH_ITEM)
        .collect();
    if batch.is_empty() {
        return Err(malformed("no Batch Item"));
    }
    if batch.len() > ops.len() {
        return Err(malformed("more Batch Items than requests"));
    }
    // A server that cannot parse a batch answers with one item without an
    // id: that error is the whole message's.
    if ops.len() > 1 && batch.len() == 1 && batch[0].child(tag::UNIQUE_BATCH_ITEM_ID).is_none() {
        let item = batch
            .into_iter()
            .next()
            .ok_or_else(|| malformed("no Batch Item"))?;
        return match item_result(item, first) {
            Err(e) => Err(e),
            Ok(_) => Err(malformed("one answer for a batch")),
        };
    }
    let mut out = Vec::with_capacity(ops.len());
    for (i, item) in batch.into_iter().enumerate() {
        if ops.len() > 1 {
            let id = match item.child(tag::UNIQUE_BATCH_ITEM_ID).map(|t| &t.value) {
                Some(Value::ByteString(b)) => Some(b.to_vec()),
                _ => None,
            };
            if id != Some(batch_id(i)) {
                return Err(malformed("Batch Items out of order"));
            }
        }
        out.push(item_result(item, ops[i]));
    }
    for op in &ops[out.len()..] {
        out.push(Err(KmipError::Skipped { op: *op }));
    }
    Ok(out)
}

/// The payload of one response batch item for `op`, or its failure.
fn item_result(batch: Ttlv, op: Operation) -> Result<Ttlv, KmipError> {
    let malformed = |what: &str| KmipError::Malformed {
        op,
        what: what.to_owned(),
    };
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
    fn batch_results_in_order_and_skipped() {
        let item = |i: usize, op: Operation, status: u32| {
            Ttlv::structure(
                tag::BATCH_ITEM,
                vec![
                    Ttlv::enumeration(tag::OPERATION, op.code()),
                    Ttlv::bytes(tag::UNIQUE_BATCH_ITEM_ID, &batch_id(i)),
                    Ttlv::enumeration(tag::RESULT_STATUS, status),
                ],
            )
        };
        let msg = Ttlv::structure(
            tag::RESPONSE_MESSAGE,
            vec![
                Ttlv::structure(tag::RESPONSE_HEADER, vec![]),
                item(0, Operation::Create, 0),
                item(1, Operation::Activate, 1),
            ],
        );
        let ops = [Operation::Create, Operation::Activate, Operation::Get];
        let r = response_payloads(msg, &ops).unwrap();
        assert!(r[0].is_ok());
        assert_eq!(
            r[1].as_ref().unwrap_err().reason(),
            Some(ResultReason::GeneralFailure)
        );
        assert!(matches!(
            r[2],
            Err(KmipError::Skipped { op: Operation::Get })
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

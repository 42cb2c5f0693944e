//! The codec against PyKMIP's own encoder and decoder (kmip.core), run at
//! test time: the KMIP 1.2 specification's encoding examples (section 9.1.2)
//! must come out of both byte for byte, and a request built by this crate
//! must parse in PyKMIP with the same fields.

use std::io::Write;
use std::process::{Command, Stdio};

use wrapcrypt_kmip::message;
use wrapcrypt_kmip::{
    ops, KeySpec, LocateQuery, Operation, RevocationReasonCode, State, Tag, Ttlv, Value,
};

fn python(script: &str, stdin: &str) -> String {
    let mut child = Command::new("python3")
        .arg("-W")
        .arg("ignore")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python3 with PyKMIP failed (scripts/install-deps.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const ENCODE: &str = r#"
import enum
from kmip.core import primitives, utils, enums
T = enums.Tags.COMPROMISE_DATE  # 0x420020, the tag of the specification's examples
E = enum.Enum('E', {'X': 255})
for i in [
    primitives.Integer(8, tag=T),
    primitives.LongInteger(123456789000000000, tag=T),
    primitives.BigInteger(1234567890000000000000000000, tag=T),
    primitives.Enumeration(E, E.X, tag=T),
    primitives.Boolean(True, tag=T),
    primitives.TextString("Hello World", tag=T),
    primitives.ByteString(b"\x01\x02\x03", tag=T),
    primitives.DateTime(0x47DA67F8, tag=T),
    primitives.Interval(864000, tag=T),
]:
    s = utils.BytearrayStream()
    i.write(s)
    print(s.buffer.hex())
"#;

#[test]
fn spec_examples_match_pykmip_encoder() {
    const T: Tag = Tag(0x420020);
    let ours = [
        Ttlv::integer(T, 8),
        Ttlv::new(T, Value::LongInteger(123_456_789_000_000_000)),
        Ttlv::new(
            T,
            Value::BigInteger(hex::decode("0000000003FD35EB6BC2DF4618080000").unwrap()),
        ),
        Ttlv::enumeration(T, 255),
        Ttlv::new(T, Value::Boolean(true)),
        Ttlv::text(T, "Hello World"),
        Ttlv::bytes(T, &[1, 2, 3]),
        Ttlv::new(T, Value::DateTime(0x47DA67F8)),
        Ttlv::new(T, Value::Interval(864_000)),
    ];
    let theirs: Vec<String> = python(ENCODE, "").lines().map(str::to_owned).collect();
    assert_eq!(theirs.len(), ours.len());
    for (item, hex_) in ours.iter().zip(&theirs) {
        let bytes = hex::decode(hex_).unwrap();
        assert_eq!(&item.encode().unwrap(), &bytes, "{item:?}");
        assert_eq!(&Ttlv::decode(&bytes).unwrap(), item);
    }
}

const DECODE: &str = r#"
import sys
from kmip.core import utils
from kmip.core.messages import messages
for line in sys.stdin:
    m = messages.RequestMessage()
    m.read(utils.BytearrayStream(bytes.fromhex(line.strip())))
    h = m.request_header
    b = m.batch_items[0]
    p = b.request_payload
    out = ["%d.%d" % (h.protocol_version.major, h.protocol_version.minor), b.operation.value.name]
    if hasattr(p, "object_type") and p.object_type is not None:
        out.append(p.object_type.name)
    ta = getattr(p, "template_attribute", None)
    attrs = list(ta.attributes) if ta is not None else list(getattr(p, "attributes", None) or [])
    for a in attrs:
        v = a.attribute_value
        if hasattr(v, "name_value"):
            v = v.name_value.value
        elif hasattr(v, "value"):
            v = v.value
        idx = a.attribute_index.value if a.attribute_index is not None else "-"
        out.append("%s[%s]=%s" % (a.attribute_name.value, idx, getattr(v, "name", v)))
    if getattr(p, "revocation_reason", None) is not None:
        r = p.revocation_reason
        out.append("%s:%s" % (r.revocation_code.value.name, r.revocation_message.value if r.revocation_message else ""))
    if getattr(p, "unique_identifier", None) is not None:
        u = p.unique_identifier
        out.append("id=%s" % getattr(u, "value", u))
    print(" ".join(str(x) for x in out))
"#;

#[test]
fn requests_parse_in_pykmip() {
    let reqs = [
        message::request(
            Operation::Create,
            ops::create(&KeySpec::aes256_kek(
                "mk-web",
                &["wrapcrypt:web", "wrapcrypt:all"],
            )),
        ),
        message::request(
            Operation::Locate,
            ops::locate(&LocateQuery {
                name: Some("mk-web".into()),
                group: Some("wrapcrypt:web".into()),
                state: Some(State::Active),
                ..LocateQuery::default()
            }),
        ),
        message::request(
            Operation::Revoke,
            ops::revoke("7", RevocationReasonCode::Superseded, Some("rotated"), 0),
        ),
        message::request(Operation::Get, ops::get("7")),
    ];
    let input: String = reqs
        .iter()
        .map(|r| hex::encode(r.encode().unwrap()) + "\n")
        .collect();
    let out = python(DECODE, &input);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "1.2 CREATE SYMMETRIC_KEY Cryptographic Algorithm[-]=AES Cryptographic Length[-]=256 \
             Cryptographic Usage Mask[-]=60 Name[-]=mk-web Object Group[-]=wrapcrypt:web \
             Object Group[1]=wrapcrypt:all",
            "1.2 LOCATE Name[-]=mk-web Object Group[-]=wrapcrypt:web State[-]=ACTIVE",
            "1.2 REVOKE SUPERSEDED:rotated id=7",
            "1.2 GET id=7",
        ]
    );
}

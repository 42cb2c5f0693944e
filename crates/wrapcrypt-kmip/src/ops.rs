//! Request payloads and response parsing for the operations the client
//! implements (KMIP 1.2 section 4), sans-I/O.

use wrapcrypt_secret::SecretBytes;

use crate::enums::{
    usage, CryptographicAlgorithm, ObjectType, Operation, RevocationReasonCode, State,
    BLOCK_CIPHER_MODE_GCM, KEY_FORMAT_RAW, KEY_FORMAT_TRANSPARENT_SYMMETRIC, NAME_TYPE_TEXT,
    OPAQUE_DATA_TYPE_NONE, PADDING_NONE,
};
use crate::error::KmipError;
use crate::tag;
use crate::ttlv::{Tag, Ttlv, Value};

/// Attribute names (KMIP 1.2 section 3).
pub mod attr {
    pub const UNIQUE_IDENTIFIER: &str = "Unique Identifier";
    pub const NAME: &str = "Name";
    pub const OBJECT_TYPE: &str = "Object Type";
    pub const OBJECT_GROUP: &str = "Object Group";
    pub const STATE: &str = "State";
    pub const CRYPTOGRAPHIC_ALGORITHM: &str = "Cryptographic Algorithm";
    pub const CRYPTOGRAPHIC_LENGTH: &str = "Cryptographic Length";
    pub const CRYPTOGRAPHIC_USAGE_MASK: &str = "Cryptographic Usage Mask";
}

/// What `Create` makes: an AES key with a name and the groups it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    /// `Object Group` values (wrapcrypt: the host group, e.g. `wrapcrypt:web`).
    pub groups: Vec<String>,
    pub bits: i32,
    pub usage_mask: i32,
}

impl KeySpec {
    /// An AES-256 key-encrypting key: Encrypt | Decrypt | Wrap Key | Unwrap Key.
    pub fn aes256_kek(name: &str, groups: &[&str]) -> KeySpec {
        KeySpec {
            name: name.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            bits: 256,
            usage_mask: usage::ENCRYPT | usage::DECRYPT | usage::WRAP_KEY | usage::UNWRAP_KEY,
        }
    }
}

/// An Attribute structure. `index` is sent for the second and later values
/// of a multi-valued attribute (PyKMIP refuses a repeated one without it).
fn attribute(name: &str, index: Option<i32>, value: Value) -> Ttlv {
    let mut items = vec![Ttlv::text(tag::ATTRIBUTE_NAME, name)];
    if let Some(i) = index {
        items.push(Ttlv::integer(tag::ATTRIBUTE_INDEX, i));
    }
    items.push(Ttlv::new(tag::ATTRIBUTE_VALUE, value));
    Ttlv::structure(tag::ATTRIBUTE, items)
}

fn name_value(name: &str) -> Value {
    Value::Structure(vec![
        Ttlv::text(tag::NAME_VALUE, name),
        Ttlv::enumeration(tag::NAME_TYPE, NAME_TYPE_TEXT),
    ])
}

fn id_item(id: &str) -> Ttlv {
    Ttlv::text(tag::UNIQUE_IDENTIFIER, id)
}

/// A Name attribute and one Object Group attribute per group.
fn name_and_groups<S: AsRef<str>>(name: &str, groups: &[S]) -> Vec<Ttlv> {
    let mut attrs = vec![attribute(attr::NAME, None, name_value(name))];
    for (i, g) in groups.iter().enumerate() {
        let index = (i > 0).then(|| i32::try_from(i).unwrap_or(i32::MAX));
        attrs.push(attribute(
            attr::OBJECT_GROUP,
            index,
            Value::TextString(g.as_ref().to_owned()),
        ));
    }
    attrs
}

pub fn create(spec: &KeySpec) -> Vec<Ttlv> {
    let mut attrs = vec![
        attribute(
            attr::CRYPTOGRAPHIC_ALGORITHM,
            None,
            Value::Enumeration(CryptographicAlgorithm::Aes.code()),
        ),
        attribute(attr::CRYPTOGRAPHIC_LENGTH, None, Value::Integer(spec.bits)),
        attribute(
            attr::CRYPTOGRAPHIC_USAGE_MASK,
            None,
            Value::Integer(spec.usage_mask),
        ),
    ];
    attrs.extend(name_and_groups(&spec.name, &spec.groups));
    vec![
        Ttlv::enumeration(tag::OBJECT_TYPE, ObjectType::SymmetricKey.code()),
        Ttlv::structure(tag::TEMPLATE_ATTRIBUTE, attrs),
    ]
}

/// Register of an Opaque Object (e.g. an escrowed header backup).
pub fn register_opaque(name: &str, groups: &[&str], data: &[u8]) -> Vec<Ttlv> {
    vec![
        Ttlv::enumeration(tag::OBJECT_TYPE, ObjectType::OpaqueObject.code()),
        Ttlv::structure(tag::TEMPLATE_ATTRIBUTE, name_and_groups(name, groups)),
        Ttlv::structure(
            tag::OPAQUE_OBJECT,
            vec![
                Ttlv::enumeration(tag::OPAQUE_DATA_TYPE, OPAQUE_DATA_TYPE_NONE),
                Ttlv::bytes(tag::OPAQUE_DATA_VALUE, data),
            ],
        ),
    ]
}

/// The bytes of a Get response for an Opaque Object.
pub fn opaque_data(payload: Ttlv, id: &str) -> Result<Vec<u8>, KmipError> {
    let malformed = |what: &str| KmipError::Malformed {
        op: Operation::Get,
        what: what.to_owned(),
    };
    let ty = payload
        .child(tag::OBJECT_TYPE)
        .and_then(Ttlv::as_enum)
        .map(ObjectType::from_code)
        .ok_or_else(|| malformed("no Object Type"))?;
    if ty != ObjectType::OpaqueObject {
        return Err(KmipError::wrong_type(id, ObjectType::OpaqueObject, ty));
    }
    let value = take(payload, &[tag::OPAQUE_OBJECT, tag::OPAQUE_DATA_VALUE])
        .ok_or_else(|| malformed("no Opaque Data Value"))?;
    match value.value {
        Value::ByteString(b) => Ok(b.to_vec()),
        _ => Err(malformed("Opaque Data Value is not a Byte String")),
    }
}

/// The payload of Activate, Destroy and Get Attribute List: one identifier.
pub fn by_id(id: &str) -> Vec<Ttlv> {
    vec![id_item(id)]
}

/// Get. No Key Format Type is asked for: a symmetric key comes in its
/// default format, Raw, which [`symmetric_key`] checks; asking for one would
/// make PyKMIP refuse any other object type with Key Format Type Not
/// Supported instead of returning it, hiding what the object is.
pub fn get(id: &str) -> Vec<Ttlv> {
    vec![id_item(id)]
}

/// Get of the object an earlier Create of the same batch made (the ID
/// Placeholder: no Unique Identifier).
pub fn get_placeholder() -> Vec<Ttlv> {
    Vec::new()
}

pub fn get_attributes(id: &str, names: &[&str]) -> Vec<Ttlv> {
    let mut p = vec![id_item(id)];
    p.extend(names.iter().map(|n| Ttlv::text(tag::ATTRIBUTE_NAME, n)));
    p
}

/// Revoke. `now` (seconds since the epoch) is sent as the Compromise
/// Occurrence Date for `KeyCompromise`, which the specification requires.
pub fn revoke(id: &str, code: RevocationReasonCode, message: Option<&str>, now: i64) -> Vec<Ttlv> {
    let mut reason = vec![Ttlv::enumeration(tag::REVOCATION_REASON_CODE, code.code())];
    if let Some(m) = message {
        reason.push(Ttlv::text(tag::REVOCATION_MESSAGE, m));
    }
    let mut p = vec![id_item(id), Ttlv::structure(tag::REVOCATION_REASON, reason)];
    if code == RevocationReasonCode::KeyCompromise {
        p.push(Ttlv::new(
            tag::COMPROMISE_OCCURRENCE_DATE,
            Value::DateTime(now),
        ));
    }
    p
}

/// AES-GCM output of a server-side Encrypt: what Decrypt needs back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcmSealed {
    pub iv: Vec<u8>,
    pub ciphertext: Vec<u8>,
    pub tag: Vec<u8>,
}

/// Length of the GCM nonce the client sends (the standard 96 bits; PyKMIP
/// would otherwise make a 128-bit one).
pub const GCM_IV_LEN: usize = 12;
/// Length of the GCM tag asked for.
pub const GCM_TAG_LEN: i32 = 16;

fn gcm_parameters() -> Ttlv {
    Ttlv::structure(
        tag::CRYPTOGRAPHIC_PARAMETERS,
        vec![
            Ttlv::enumeration(tag::BLOCK_CIPHER_MODE, BLOCK_CIPHER_MODE_GCM),
            Ttlv::enumeration(tag::PADDING_METHOD, PADDING_NONE),
            Ttlv::enumeration(
                tag::CRYPTOGRAPHIC_ALGORITHM,
                CryptographicAlgorithm::Aes.code(),
            ),
            Ttlv::integer(tag::TAG_LENGTH, GCM_TAG_LEN),
        ],
    )
}

/// Encrypt (KMIP 1.4 payload) with AES-GCM under the object `id`.
pub fn encrypt_gcm(id: &str, plaintext: &[u8], iv: &[u8], aad: &[u8]) -> Vec<Ttlv> {
    vec![
        id_item(id),
        gcm_parameters(),
        Ttlv::bytes(tag::DATA, plaintext),
        Ttlv::bytes(tag::IV_COUNTER_NONCE, iv),
        Ttlv::bytes(tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, aad),
    ]
}

/// Decrypt (KMIP 1.4 payload) of what [`encrypt_gcm`] produced.
pub fn decrypt_gcm(id: &str, sealed: &GcmSealed, aad: &[u8]) -> Vec<Ttlv> {
    vec![
        id_item(id),
        gcm_parameters(),
        Ttlv::bytes(tag::DATA, &sealed.ciphertext),
        Ttlv::bytes(tag::IV_COUNTER_NONCE, &sealed.iv),
        Ttlv::bytes(tag::AUTHENTICATED_ENCRYPTION_ADDITIONAL_DATA, aad),
        Ttlv::bytes(tag::AUTHENTICATED_ENCRYPTION_TAG, &sealed.tag),
    ]
}

fn byte_string(payload: &Ttlv, t: Tag) -> Option<&[u8]> {
    match &payload.child(t)?.value {
        Value::ByteString(b) => Some(b),
        _ => None,
    }
}

/// The ciphertext and tag of an Encrypt response (the IV is the one sent,
/// unless the server says otherwise).
pub fn sealed(payload: &Ttlv, iv: &[u8]) -> Result<GcmSealed, KmipError> {
    let malformed = |what: &str| KmipError::Malformed {
        op: Operation::Encrypt,
        what: what.to_owned(),
    };
    let ciphertext = byte_string(payload, tag::DATA).ok_or_else(|| malformed("no Data"))?;
    let tag_ = byte_string(payload, tag::AUTHENTICATED_ENCRYPTION_TAG)
        .ok_or_else(|| malformed("no Authenticated Encryption Tag"))?;
    if tag_.len() != GCM_TAG_LEN as usize {
        return Err(malformed("GCM tag of the wrong length"));
    }
    let iv = byte_string(payload, tag::IV_COUNTER_NONCE).unwrap_or(iv);
    Ok(GcmSealed {
        iv: iv.to_vec(),
        ciphertext: ciphertext.to_vec(),
        tag: tag_.to_vec(),
    })
}

/// The plaintext of a Decrypt response, moved into locked memory.
pub fn plaintext(payload: Ttlv) -> Result<SecretBytes, KmipError> {
    let data = take(payload, &[tag::DATA]).ok_or(KmipError::Malformed {
        op: Operation::Decrypt,
        what: "no Data".into(),
    })?;
    match data.value {
        Value::ByteString(b) => Ok(SecretBytes::copy_from(&b)),
        _ => Err(KmipError::Malformed {
            op: Operation::Decrypt,
            what: "Data is not a Byte String".into(),
        }),
    }
}

/// What Locate searches for; every field given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocateQuery {
    pub name: Option<String>,
    pub group: Option<String>,
    pub state: Option<State>,
    pub object_type: Option<ObjectType>,
    pub max_items: Option<i32>,
}

pub fn locate(q: &LocateQuery) -> Vec<Ttlv> {
    let mut p = Vec::new();
    if let Some(n) = q.max_items {
        p.push(Ttlv::integer(tag::MAXIMUM_ITEMS, n));
    }
    if let Some(t) = q.object_type {
        p.push(attribute(
            attr::OBJECT_TYPE,
            None,
            Value::Enumeration(t.code()),
        ));
    }
    if let Some(n) = &q.name {
        p.push(attribute(attr::NAME, None, name_value(n)));
    }
    if let Some(g) = &q.group {
        p.push(attribute(
            attr::OBJECT_GROUP,
            None,
            Value::TextString(g.clone()),
        ));
    }
    if let Some(s) = q.state {
        p.push(attribute(attr::STATE, None, Value::Enumeration(s.code())));
    }
    p
}

/// The Unique Identifier of a response payload.
pub fn unique_id(payload: &Ttlv, op: Operation) -> Result<String, KmipError> {
    payload
        .child(tag::UNIQUE_IDENTIFIER)
        .and_then(Ttlv::as_text)
        .map(str::to_owned)
        .ok_or_else(|| KmipError::Malformed {
            op,
            what: "no Unique Identifier".into(),
        })
}

/// Every Unique Identifier of a Locate response, in the server's order.
pub fn located_ids(payload: &Ttlv) -> Vec<String> {
    payload
        .children(tag::UNIQUE_IDENTIFIER)
        .filter_map(Ttlv::as_text)
        .map(str::to_owned)
        .collect()
}

/// Moves the item at `path` out of `t` (no copy of key bytes is made).
fn take(t: Ttlv, path: &[Tag]) -> Option<Ttlv> {
    let mut cur = t;
    for want in path {
        let Value::Structure(items) = cur.value else {
            return None;
        };
        cur = items.into_iter().find(|i| i.tag == *want)?;
    }
    Some(cur)
}

/// The key bytes of a Get response, checked to be an AES key of `bytes`
/// bytes. The response tree's copy is zeroized when it is dropped here.
pub fn symmetric_key(payload: Ttlv, id: &str, bytes: usize) -> Result<SecretBytes, KmipError> {
    let malformed = |what: &str| KmipError::Malformed {
        op: Operation::Get,
        what: what.to_owned(),
    };
    let ty = payload
        .child(tag::OBJECT_TYPE)
        .and_then(Ttlv::as_enum)
        .map(ObjectType::from_code)
        .ok_or_else(|| malformed("no Object Type"))?;
    if ty != ObjectType::SymmetricKey {
        return Err(KmipError::wrong_type(id, ObjectType::SymmetricKey, ty));
    }
    let block = take(payload, &[tag::SYMMETRIC_KEY, tag::KEY_BLOCK])
        .ok_or_else(|| malformed("no Key Block"))?;
    let format = block.child(tag::KEY_FORMAT_TYPE).and_then(Ttlv::as_enum);
    if !matches!(
        format,
        Some(KEY_FORMAT_RAW | KEY_FORMAT_TRANSPARENT_SYMMETRIC)
    ) {
        return Err(malformed("key is not in Raw format"));
    }
    let alg = block
        .child(tag::CRYPTOGRAPHIC_ALGORITHM)
        .and_then(Ttlv::as_enum)
        .map(CryptographicAlgorithm::from_code);
    if alg != Some(CryptographicAlgorithm::Aes) {
        return Err(KmipError::WrongObject {
            id: id.to_owned(),
            what: format!(
                "is not an AES key ({})",
                alg.map_or("no algorithm".to_owned(), |a| a.to_string())
            ),
        });
    }
    let value = take(block, &[tag::KEY_VALUE]).ok_or_else(|| malformed("no Key Value"))?;
    // A Key Value is a structure holding Key Material, or a Byte String when
    // the key is wrapped (which this client never asks for).
    let material = match value.value {
        Value::Structure(_) => take(value, &[tag::KEY_MATERIAL]),
        _ => None,
    }
    .ok_or_else(|| malformed("no Key Material (wrapped key?)"))?;
    let Value::ByteString(key) = material.value else {
        return Err(malformed("Key Material is not a Byte String"));
    };
    if key.len() != bytes {
        return Err(KmipError::WrongObject {
            id: id.to_owned(),
            what: format!("is {} bits long, not {}", key.len() * 8, bytes * 8),
        });
    }
    Ok(SecretBytes::copy_from(&key))
}

/// The attributes of one object, as a Get Attributes response lists them.
#[derive(Clone, Debug)]
pub struct Attributes {
    pub id: String,
    /// (name, value) in the server's order; multi-valued ones repeat.
    pub items: Vec<(String, Ttlv)>,
}

impl Attributes {
    pub fn from_payload(payload: &Ttlv) -> Result<Attributes, KmipError> {
        let id = unique_id(payload, Operation::GetAttributes)?;
        let items = payload
            .children(tag::ATTRIBUTE)
            .filter_map(|a| {
                let name = a.child(tag::ATTRIBUTE_NAME)?.as_text()?.to_owned();
                Some((name, a.child(tag::ATTRIBUTE_VALUE)?.clone()))
            })
            .collect();
        Ok(Attributes { id, items })
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Ttlv> + 'a {
        self.items
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v)
    }

    fn enum_of(&self, name: &str) -> Option<u32> {
        self.values(name).next().and_then(Ttlv::as_enum)
    }

    pub fn state(&self) -> Option<State> {
        self.enum_of(attr::STATE).map(State::from_code)
    }

    pub fn object_type(&self) -> Option<ObjectType> {
        self.enum_of(attr::OBJECT_TYPE).map(ObjectType::from_code)
    }

    pub fn algorithm(&self) -> Option<CryptographicAlgorithm> {
        self.enum_of(attr::CRYPTOGRAPHIC_ALGORITHM)
            .map(CryptographicAlgorithm::from_code)
    }

    pub fn length(&self) -> Option<i32> {
        self.values(attr::CRYPTOGRAPHIC_LENGTH)
            .next()
            .and_then(Ttlv::as_int)
    }

    pub fn usage_mask(&self) -> Option<i32> {
        self.values(attr::CRYPTOGRAPHIC_USAGE_MASK)
            .next()
            .and_then(Ttlv::as_int)
    }

    pub fn names(&self) -> Vec<String> {
        self.values(attr::NAME)
            .filter_map(|v| v.child(tag::NAME_VALUE)?.as_text().map(str::to_owned))
            .collect()
    }

    pub fn groups(&self) -> Vec<String> {
        self.values(attr::OBJECT_GROUP)
            .filter_map(|v| v.as_text().map(str::to_owned))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_response(ty: ObjectType, alg: CryptographicAlgorithm, key: &[u8]) -> Ttlv {
        Ttlv::structure(
            tag::RESPONSE_PAYLOAD,
            vec![
                Ttlv::enumeration(tag::OBJECT_TYPE, ty.code()),
                id_item("3"),
                Ttlv::structure(
                    tag::SYMMETRIC_KEY,
                    vec![Ttlv::structure(
                        tag::KEY_BLOCK,
                        vec![
                            Ttlv::enumeration(tag::KEY_FORMAT_TYPE, KEY_FORMAT_RAW),
                            Ttlv::structure(
                                tag::KEY_VALUE,
                                vec![Ttlv::bytes(tag::KEY_MATERIAL, key)],
                            ),
                            Ttlv::enumeration(tag::CRYPTOGRAPHIC_ALGORITHM, alg.code()),
                            Ttlv::integer(tag::CRYPTOGRAPHIC_LENGTH, (key.len() * 8) as i32),
                        ],
                    )],
                ),
            ],
        )
    }

    #[test]
    fn key_is_extracted_and_checked() {
        let k = symmetric_key(
            get_response(
                ObjectType::SymmetricKey,
                CryptographicAlgorithm::Aes,
                &[7; 32],
            ),
            "3",
            32,
        )
        .unwrap();
        assert_eq!(k.expose_secret(), &[7; 32]);
        let e = symmetric_key(
            get_response(
                ObjectType::SymmetricKey,
                CryptographicAlgorithm::Aes,
                &[7; 16],
            ),
            "3",
            32,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "KMIP object 3 is 128 bits long, not 256");
        let e = symmetric_key(
            get_response(
                ObjectType::SecretData,
                CryptographicAlgorithm::Aes,
                &[7; 32],
            ),
            "3",
            32,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "KMIP object 3 is of type Secret Data, not Symmetric Key"
        );
        let e = symmetric_key(
            get_response(
                ObjectType::SymmetricKey,
                CryptographicAlgorithm::TripleDes,
                &[7; 32],
            ),
            "3",
            32,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not an AES key (3DES)"), "{e}");
    }

    #[test]
    fn create_indexes_repeated_groups() {
        let p = create(&KeySpec::aes256_kek("mk", &["a", "b"]));
        let groups: Vec<_> = p[1]
            .children(tag::ATTRIBUTE)
            .filter(|a| {
                a.child(tag::ATTRIBUTE_NAME).and_then(Ttlv::as_text) == Some(attr::OBJECT_GROUP)
            })
            .map(|a| a.child(tag::ATTRIBUTE_INDEX).and_then(Ttlv::as_int))
            .collect();
        assert_eq!(groups, vec![None, Some(1)]);
    }
}

//! KMIP Tag-Type-Length-Value encoding (KMIP 1.2 specification, section 9.1).
//!
//! Every item is a 3-byte tag, a 1-byte type, a 4-byte big-endian length and
//! the value, padded with zeros to a multiple of 8 bytes. A Structure's value
//! is the concatenation of its items. The decoder checks every length against
//! its type and the bytes present, requires zero padding and a bounded
//! nesting depth, and returns a [`CodecError`] naming the offset; it never
//! panics and never allocates more than the input's size.

use std::fmt;

use zeroize::Zeroizing;

/// A 24-bit KMIP tag (0x42XXXX for the standard ones, 0x54XXXX extensions).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u32);

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag(0x{:06X})", self.0)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:06X}", self.0)
    }
}

/// The type byte of an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ItemType {
    Structure = 0x01,
    Integer = 0x02,
    LongInteger = 0x03,
    BigInteger = 0x04,
    Enumeration = 0x05,
    Boolean = 0x06,
    TextString = 0x07,
    ByteString = 0x08,
    DateTime = 0x09,
    Interval = 0x0A,
}

impl ItemType {
    pub fn from_byte(b: u8) -> Option<ItemType> {
        Some(match b {
            0x01 => ItemType::Structure,
            0x02 => ItemType::Integer,
            0x03 => ItemType::LongInteger,
            0x04 => ItemType::BigInteger,
            0x05 => ItemType::Enumeration,
            0x06 => ItemType::Boolean,
            0x07 => ItemType::TextString,
            0x08 => ItemType::ByteString,
            0x09 => ItemType::DateTime,
            0x0A => ItemType::Interval,
            _ => return None,
        })
    }
}

/// The value of an item.
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    Structure(Vec<Ttlv>),
    Integer(i32),
    LongInteger(i64),
    /// Two's complement, big-endian, a multiple of 8 bytes long.
    BigInteger(Vec<u8>),
    Enumeration(u32),
    Boolean(bool),
    TextString(String),
    /// Zeroized on drop: key material travels in byte strings.
    ByteString(Zeroizing<Vec<u8>>),
    /// Seconds since the POSIX epoch.
    DateTime(i64),
    /// Seconds.
    Interval(u32),
}

impl Value {
    pub fn item_type(&self) -> ItemType {
        match self {
            Value::Structure(_) => ItemType::Structure,
            Value::Integer(_) => ItemType::Integer,
            Value::LongInteger(_) => ItemType::LongInteger,
            Value::BigInteger(_) => ItemType::BigInteger,
            Value::Enumeration(_) => ItemType::Enumeration,
            Value::Boolean(_) => ItemType::Boolean,
            Value::TextString(_) => ItemType::TextString,
            Value::ByteString(_) => ItemType::ByteString,
            Value::DateTime(_) => ItemType::DateTime,
            Value::Interval(_) => ItemType::Interval,
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Structure(items) => f.debug_list().entries(items).finish(),
            Value::Integer(v) => write!(f, "Integer({v})"),
            Value::LongInteger(v) => write!(f, "LongInteger({v})"),
            Value::BigInteger(v) => write!(f, "BigInteger({} bytes)", v.len()),
            Value::Enumeration(v) => write!(f, "Enumeration(0x{v:08X})"),
            Value::Boolean(v) => write!(f, "Boolean({v})"),
            Value::TextString(v) => write!(f, "TextString({v:?})"),
            // Never print the content: it may be a key.
            Value::ByteString(v) => write!(f, "ByteString({} bytes)", v.len()),
            Value::DateTime(v) => write!(f, "DateTime({v})"),
            Value::Interval(v) => write!(f, "Interval({v})"),
        }
    }
}

/// One item: a tag and a value.
#[derive(Clone, PartialEq, Eq)]
pub struct Ttlv {
    pub tag: Tag,
    pub value: Value,
}

impl fmt::Debug for Ttlv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {:?}", self.tag, self.value)
    }
}

/// A malformed TTLV input (or an item too large to encode).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// Fewer bytes than the header or the length asks for.
    Truncated {
        offset: usize,
        need: usize,
        have: usize,
    },
    /// A type byte that KMIP 1.2 does not define.
    UnknownType { offset: usize, byte: u8 },
    /// A length that the type does not allow (Integer not 4, BigInteger not a
    /// multiple of 8, ...).
    BadLength {
        offset: usize,
        item_type: ItemType,
        len: u32,
    },
    /// Non-zero padding bytes after a value.
    BadPadding { offset: usize },
    /// A Boolean other than 0 or 1.
    BadBoolean { offset: usize, value: u64 },
    /// A Text String that is not UTF-8.
    BadUtf8 { offset: usize },
    /// A Structure whose length is not a multiple of 8 or whose items overrun it.
    BadStructure { offset: usize },
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep { offset: usize },
    /// Bytes after the top-level item.
    TrailingBytes { offset: usize },
    /// A value longer than a 32-bit length (encoding) or than a message limit.
    TooLarge { len: usize },
    /// A message header that is not the expected top-level structure.
    UnexpectedHeader { tag: Tag, item_type: u8 },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Truncated { offset, need, have } => {
                write!(f, "TTLV truncated at byte {offset}: need {need} bytes, have {have}")
            }
            CodecError::UnknownType { offset, byte } => {
                write!(f, "TTLV unknown item type 0x{byte:02X} at byte {offset}")
            }
            CodecError::BadLength { offset, item_type, len } => {
                write!(f, "TTLV {item_type:?} at byte {offset} has invalid length {len}")
            }
            CodecError::BadPadding { offset } => {
                write!(f, "TTLV non-zero padding at byte {offset}")
            }
            CodecError::BadBoolean { offset, value } => {
                write!(f, "TTLV Boolean at byte {offset} is {value}, not 0 or 1")
            }
            CodecError::BadUtf8 { offset } => {
                write!(f, "TTLV Text String at byte {offset} is not UTF-8")
            }
            CodecError::BadStructure { offset } => {
                write!(f, "TTLV Structure at byte {offset} does not hold whole items")
            }
            CodecError::TooDeep { offset } => {
                write!(f, "TTLV nesting deeper than {MAX_DEPTH} at byte {offset}")
            }
            CodecError::TrailingBytes { offset } => {
                write!(f, "TTLV trailing bytes after the message at byte {offset}")
            }
            CodecError::TooLarge { len } => write!(f, "TTLV item of {len} bytes is too large"),
            CodecError::UnexpectedHeader { tag, item_type } => write!(
                f,
                "TTLV message starts with tag {tag} type 0x{item_type:02X}, not the expected structure"
            ),
        }
    }
}

impl std::error::Error for CodecError {}

/// Deepest Structure nesting the decoder accepts (KMIP messages need < 10).
pub const MAX_DEPTH: usize = 32;

/// Size of an item header (tag, type, length).
pub const HEADER_LEN: usize = 8;

fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

impl Ttlv {
    pub fn new(tag: Tag, value: Value) -> Ttlv {
        Ttlv { tag, value }
    }

    pub fn structure(tag: Tag, items: Vec<Ttlv>) -> Ttlv {
        Ttlv::new(tag, Value::Structure(items))
    }

    pub fn integer(tag: Tag, v: i32) -> Ttlv {
        Ttlv::new(tag, Value::Integer(v))
    }

    pub fn enumeration(tag: Tag, v: u32) -> Ttlv {
        Ttlv::new(tag, Value::Enumeration(v))
    }

    pub fn text(tag: Tag, v: &str) -> Ttlv {
        Ttlv::new(tag, Value::TextString(v.to_owned()))
    }

    pub fn bytes(tag: Tag, v: &[u8]) -> Ttlv {
        Ttlv::new(tag, Value::ByteString(Zeroizing::new(v.to_vec())))
    }

    /// The items of a Structure (empty for any other type).
    pub fn items(&self) -> &[Ttlv] {
        match &self.value {
            Value::Structure(items) => items,
            _ => &[],
        }
    }

    /// The first item of a Structure with this tag.
    pub fn child(&self, tag: Tag) -> Option<&Ttlv> {
        self.items().iter().find(|i| i.tag == tag)
    }

    /// Every item of a Structure with this tag, in order.
    pub fn children(&self, tag: Tag) -> impl Iterator<Item = &Ttlv> {
        self.items().iter().filter(move |i| i.tag == tag)
    }

    pub fn as_enum(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i32> {
        match self.value {
            Value::Integer(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::TextString(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_datetime(&self) -> Option<i64> {
        match self.value {
            Value::DateTime(v) => Some(v),
            _ => None,
        }
    }

    /// The encoded size of this item, header and padding included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match &self.value {
                Value::Structure(items) => items.iter().map(Ttlv::encoded_len).sum(),
                Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 8,
                Value::LongInteger(_) | Value::Boolean(_) | Value::DateTime(_) => 8,
                Value::BigInteger(v) => padded(v.len()),
                Value::TextString(v) => padded(v.len()),
                Value::ByteString(v) => padded(v.len()),
            }
    }

    /// Encodes this item. Fails only for an item whose length does not fit
    /// in 32 bits, or a Big Integer that is not a multiple of 8 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Appends the encoding of this item to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let header_at = out.len();
        out.extend_from_slice(&self.tag.0.to_be_bytes()[1..]);
        out.push(self.value.item_type() as u8);
        out.extend_from_slice(&[0; 4]);
        let value_at = out.len();
        let len = match &self.value {
            Value::Structure(items) => {
                for item in items {
                    item.encode_into(out)?;
                }
                out.len() - value_at
            }
            Value::Integer(v) => put_padded(out, &v.to_be_bytes()),
            Value::Enumeration(v) => put_padded(out, &v.to_be_bytes()),
            Value::Interval(v) => put_padded(out, &v.to_be_bytes()),
            Value::LongInteger(v) => put_padded(out, &v.to_be_bytes()),
            Value::DateTime(v) => put_padded(out, &v.to_be_bytes()),
            Value::Boolean(v) => put_padded(out, &u64::from(*v).to_be_bytes()),
            Value::BigInteger(v) => {
                if v.len() % 8 != 0 {
                    return Err(CodecError::BadLength {
                        offset: header_at,
                        item_type: ItemType::BigInteger,
                        len: u32::try_from(v.len()).unwrap_or(u32::MAX),
                    });
                }
                put_padded(out, v)
            }
            Value::TextString(v) => put_padded(out, v.as_bytes()),
            Value::ByteString(v) => put_padded(out, v),
        };
        let len32 = u32::try_from(len).map_err(|_| CodecError::TooLarge { len })?;
        out[header_at + 4..header_at + 8].copy_from_slice(&len32.to_be_bytes());
        Ok(())
    }

    /// Decodes exactly one item spanning all of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Ttlv, CodecError> {
        let (item, used) = decode_at(buf, 0, 0)?;
        if used != buf.len() {
            return Err(CodecError::TrailingBytes { offset: used });
        }
        Ok(item)
    }

    /// Decodes one item at the start of `buf`; returns it and the bytes used.
    pub fn decode_prefix(buf: &[u8]) -> Result<(Ttlv, usize), CodecError> {
        decode_at(buf, 0, 0)
    }
}

/// Writes `v` and zero padding to 8 bytes; returns the unpadded length.
fn put_padded(out: &mut Vec<u8>, v: &[u8]) -> usize {
    out.extend_from_slice(v);
    out.resize(out.len() + (padded(v.len()) - v.len()), 0);
    v.len()
}

/// Reads an item header: tag, type byte and length.
pub fn decode_header(buf: &[u8], offset: usize) -> Result<(Tag, u8, u32), CodecError> {
    let h = buf
        .get(offset..offset.saturating_add(HEADER_LEN))
        .filter(|h| h.len() == HEADER_LEN)
        .ok_or(CodecError::Truncated {
            offset,
            need: HEADER_LEN,
            have: buf.len().saturating_sub(offset),
        })?;
    let tag = Tag(u32::from_be_bytes([0, h[0], h[1], h[2]]));
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    Ok((tag, h[3], len))
}

/// Checks a message header read from the wire and returns the total message
/// size (header included). `max` bounds what the caller will allocate.
pub fn message_len(header: &[u8; HEADER_LEN], want: Tag, max: usize) -> Result<usize, CodecError> {
    let (tag, ty, len) = decode_header(header, 0)?;
    if tag != want || ty != ItemType::Structure as u8 || len % 8 != 0 {
        return Err(CodecError::UnexpectedHeader { tag, item_type: ty });
    }
    let total = HEADER_LEN + len as usize;
    if total > max {
        return Err(CodecError::TooLarge { len: total });
    }
    Ok(total)
}

fn decode_at(buf: &[u8], offset: usize, depth: usize) -> Result<(Ttlv, usize), CodecError> {
    let (tag, ty, len32) = decode_header(buf, offset)?;
    let item_type = ItemType::from_byte(ty).ok_or(CodecError::UnknownType {
        offset: offset + 3,
        byte: ty,
    })?;
    let len = len32 as usize;
    let bad_len = CodecError::BadLength {
        offset,
        item_type,
        len: len32,
    };
    let fixed = match item_type {
        ItemType::Integer | ItemType::Enumeration | ItemType::Interval => Some(4),
        ItemType::LongInteger | ItemType::Boolean | ItemType::DateTime => Some(8),
        _ => None,
    };
    if fixed.is_some_and(|n| n != len) || (item_type == ItemType::BigInteger && len % 8 != 0) {
        return Err(bad_len);
    }
    if item_type == ItemType::Structure && len % 8 != 0 {
        return Err(CodecError::BadStructure { offset });
    }
    let start = offset + HEADER_LEN;
    let total = padded(len);
    let have = buf.len() - start;
    if have < total {
        return Err(CodecError::Truncated {
            offset: start,
            need: total,
            have,
        });
    }
    let v = &buf[start..start + len];
    if buf[start + len..start + total].iter().any(|&b| b != 0) {
        return Err(CodecError::BadPadding {
            offset: start + len,
        });
    }
    let be4 = || [v[0], v[1], v[2], v[3]];
    let be8 = || [v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]];
    let value = match item_type {
        ItemType::Structure => {
            if depth >= MAX_DEPTH {
                return Err(CodecError::TooDeep { offset });
            }
            let end = start + len;
            let mut items = Vec::new();
            let mut at = start;
            while at < end {
                // The structure's own length was checked against the input,
                // so an item running past its end is the structure's fault.
                let (item, used) = decode_at(&buf[..end], at, depth + 1).map_err(|e| match e {
                    CodecError::Truncated { .. } => CodecError::BadStructure { offset },
                    e => e,
                })?;
                items.push(item);
                at += used;
            }
            Value::Structure(items)
        }
        ItemType::Integer => Value::Integer(i32::from_be_bytes(be4())),
        ItemType::Enumeration => Value::Enumeration(u32::from_be_bytes(be4())),
        ItemType::Interval => Value::Interval(u32::from_be_bytes(be4())),
        ItemType::LongInteger => Value::LongInteger(i64::from_be_bytes(be8())),
        ItemType::DateTime => Value::DateTime(i64::from_be_bytes(be8())),
        ItemType::Boolean => match u64::from_be_bytes(be8()) {
            0 => Value::Boolean(false),
            1 => Value::Boolean(true),
            value => return Err(CodecError::BadBoolean { offset, value }),
        },
        ItemType::BigInteger => Value::BigInteger(v.to_vec()),
        ItemType::TextString => Value::TextString(
            std::str::from_utf8(v)
                .map_err(|_| CodecError::BadUtf8 { offset: start })?
                .to_owned(),
        ),
        ItemType::ByteString => Value::ByteString(Zeroizing::new(v.to_vec())),
    };
    Ok((Ttlv { tag, value }, HEADER_LEN + total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '|')
            .collect();
        hex::decode(s).unwrap()
    }

    const T: Tag = Tag(0x420020);

    /// The encoding examples of the KMIP 1.2 specification, section 9.1.2
    /// (tag 0x420020 throughout). tests/pykmip_vectors.rs checks the same
    /// bytes against PyKMIP's own encoder.
    pub(crate) fn spec_vectors() -> Vec<(Ttlv, &'static str)> {
        vec![
            (
                Ttlv::integer(T, 8),
                "420020 | 02 | 00000004 | 00000008 00000000",
            ),
            (
                Ttlv::new(T, Value::LongInteger(123_456_789_000_000_000)),
                "420020 | 03 | 00000008 | 01B69B4BA5749200",
            ),
            (
                Ttlv::new(
                    T,
                    Value::BigInteger(unhex("0000000003FD35EB6BC2DF4618080000")),
                ),
                "420020 | 04 | 00000010 | 0000000003FD35EB 6BC2DF4618080000",
            ),
            (
                Ttlv::enumeration(T, 255),
                "420020 | 05 | 00000004 | 000000FF 00000000",
            ),
            (
                Ttlv::new(T, Value::Boolean(true)),
                "420020 | 06 | 00000008 | 0000000000000001",
            ),
            (
                Ttlv::text(T, "Hello World"),
                "420020 | 07 | 0000000B | 48656C6C6F20576F 726C640000000000",
            ),
            (
                Ttlv::bytes(T, &[1, 2, 3]),
                "420020 | 08 | 00000003 | 0102030000000000",
            ),
            (
                Ttlv::new(T, Value::DateTime(0x47DA67F8)),
                "420020 | 09 | 00000008 | 0000000047DA67F8",
            ),
            (
                Ttlv::new(T, Value::Interval(864_000)),
                "420020 | 0A | 00000004 | 000D2F00 00000000",
            ),
            (
                Ttlv::structure(
                    T,
                    vec![
                        Ttlv::enumeration(Tag(0x420004), 254),
                        Ttlv::integer(Tag(0x420005), 255),
                    ],
                ),
                "420020 | 01 | 00000020 | 420004 | 05 | 00000004 | 000000FE 00000000 \
                 | 420005 | 02 | 00000004 | 000000FF 00000000",
            ),
        ]
    }

    #[test]
    fn spec_examples_encode_and_decode() {
        for (item, hex) in spec_vectors() {
            let bytes = unhex(hex);
            assert_eq!(item.encode().unwrap(), bytes, "{item:?}");
            assert_eq!(item.encoded_len(), bytes.len());
            assert_eq!(Ttlv::decode(&bytes).unwrap(), item);
        }
    }

    #[test]
    fn rejects_bad_lengths_padding_and_types() {
        // Integer with length 8.
        let b = unhex("420020 02 00000008 0000000800000000");
        assert!(matches!(
            Ttlv::decode(&b),
            Err(CodecError::BadLength { .. })
        ));
        // Non-zero padding.
        let b = unhex("420020 02 00000004 0000000800000001");
        assert_eq!(Ttlv::decode(&b), Err(CodecError::BadPadding { offset: 12 }));
        // Unknown type.
        let b = unhex("420020 0B 00000004 0000000800000000");
        assert!(matches!(
            Ttlv::decode(&b),
            Err(CodecError::UnknownType { byte: 0x0B, .. })
        ));
        // Boolean 2.
        let b = unhex("420020 06 00000008 0000000000000002");
        assert!(matches!(
            Ttlv::decode(&b),
            Err(CodecError::BadBoolean { value: 2, .. })
        ));
        // Bad UTF-8.
        let b = unhex("420020 07 00000001 FF00000000000000");
        assert!(matches!(Ttlv::decode(&b), Err(CodecError::BadUtf8 { .. })));
        // BigInteger of 4 bytes.
        let b = unhex("420020 04 00000004 0000000100000000");
        assert!(matches!(
            Ttlv::decode(&b),
            Err(CodecError::BadLength { .. })
        ));
        // Structure claiming 8 bytes around a 16-byte item.
        let b = unhex("420020 01 00000008 420004 05 00000004 000000FE00000000");
        assert!(matches!(
            Ttlv::decode(&b),
            Err(CodecError::BadStructure { .. })
        ));
        // Trailing bytes.
        let b = unhex("420020 02 00000004 0000000800000000 00");
        assert!(matches!(
            Ttlv::decode(&b),
            Err(CodecError::TrailingBytes { offset: 16 })
        ));
        // A length near u32::MAX does not allocate or overflow.
        let b = unhex("420020 08 FFFFFFFF 00");
        assert!(matches!(
            Ttlv::decode(&b),
            Err(CodecError::Truncated { .. })
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for (item, _) in spec_vectors() {
            let bytes = item.encode().unwrap();
            for n in 0..bytes.len() {
                assert!(Ttlv::decode(&bytes[..n]).is_err(), "{item:?} cut at {n}");
            }
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut item = Ttlv::integer(T, 1);
        for _ in 0..MAX_DEPTH + 1 {
            item = Ttlv::structure(T, vec![item]);
        }
        let bytes = item.encode().unwrap();
        assert!(matches!(
            Ttlv::decode(&bytes),
            Err(CodecError::TooDeep { .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: mutate every byte of a real structure.
        let (item, _) = spec_vectors().pop().unwrap();
        let bytes = item.encode().unwrap();
        for i in 0..bytes.len() {
            for v in [0u8, 1, 7, 0x0A, 0x0B, 0x80, 0xFF] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = Ttlv::decode(&b);
            }
        }
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            let n = (x % 64) as usize;
            let b: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = Ttlv::decode(&b);
        }
    }

    /// A random item tree from a xorshift state.
    fn random_item(x: &mut u64, depth: usize) -> Ttlv {
        let mut next = || {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x
        };
        let tag = Tag(0x42_0000 | (next() as u32 & 0xFFFF));
        let n = (next() % 20) as usize;
        let value = match next() % if depth < 4 { 10 } else { 9 } {
            0 => Value::Integer(next() as i32),
            1 => Value::LongInteger(next() as i64),
            2 => Value::BigInteger((0..n / 8 * 8).map(|_| next() as u8).collect()),
            3 => Value::Enumeration(next() as u32),
            4 => Value::Boolean(next() % 2 == 0),
            5 => Value::TextString(
                (0..n)
                    .map(|_| char::from(b'a' + (next() % 26) as u8))
                    .collect(),
            ),
            6 => Value::ByteString(Zeroizing::new((0..n).map(|_| next() as u8).collect())),
            7 => Value::DateTime(next() as i64),
            8 => Value::Interval(next() as u32),
            _ => Value::Structure((0..n % 5).map(|_| random_item(x, depth + 1)).collect()),
        };
        Ttlv { tag, value }
    }

    #[test]
    fn random_trees_round_trip() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2_000 {
            let item = random_item(&mut x, 0);
            let bytes = item.encode().unwrap();
            assert_eq!(bytes.len(), item.encoded_len());
            assert_eq!(bytes.len() % 8, 0);
            assert_eq!(Ttlv::decode(&bytes).unwrap(), item);
        }
    }

    #[test]
    fn debug_never_shows_byte_strings() {
        let item = Ttlv::bytes(T, &[0xAB; 32]);
        let s = format!("{item:?}");
        assert!(
            s.contains("32 bytes") && !s.to_lowercase().contains("ab"),
            "{s}"
        );
    }

    #[test]
    fn message_len_checks_the_header() {
        let h = [0x42, 0x00, 0x7B, 0x01, 0, 0, 0, 0x10];
        assert_eq!(message_len(&h, Tag(0x42007B), 1 << 20), Ok(24));
        assert!(message_len(&h, Tag(0x420078), 1 << 20).is_err());
        let big = [0x42, 0x00, 0x7B, 0x01, 0x7F, 0, 0, 0];
        assert!(matches!(
            message_len(&big, Tag(0x42007B), 1 << 20),
            Err(CodecError::TooLarge { .. })
        ));
    }
}

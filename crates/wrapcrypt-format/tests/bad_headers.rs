//! Bad input: valid LUKS2 headers, damaged systematically, must either be
//! recovered from the other copy or rejected with the typed error that names
//! what is wrong, never a panic and never an accepted bad header.
//!
//! Valid headers come from `cryptsetup luksFormat` run at test time (PBKDF2
//! with 1000 iterations so it is fast) and from cryptsetup's reference images
//! in ../shared/testdata/cryptsetup (see its README for provenance). Each
//! JSON-level damage is also shown to `cryptsetup luksDump`; where it and
//! wrapcrypt disagree the table below says so and why.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};
use wrapcrypt_format::luks2::{
    binary, parse_json_area, Area, BinaryError, Copy, CopyError, Luks2Header, Metadata, ParseError,
    RepairReason, Section, ValidateError, BIN_HDR_SIZE, MAX_METADATA_PREFIX,
};

// ---------------------------------------------------------------------------
// Fixtures

/// A valid header: the device prefix holding both copies, and what it decodes to.
#[derive(Clone)]
struct Fx {
    name: String,
    /// Both metadata copies (2 * hdr_size bytes).
    buf: Vec<u8>,
    hs: usize,
    header: Luks2Header,
    /// The JSON of the primary copy as on disk.
    json: Value,
    /// Size of the image it came from (cryptsetup checks the device size).
    image_len: u64,
}

impl Fx {
    fn from_image(name: &str, path: &Path) -> Fx {
        let mut buf = std::fs::read(path).unwrap();
        let image_len = buf.len() as u64;
        buf.truncate(MAX_METADATA_PREFIX);
        let loaded = Luks2Header::parse(&buf).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            loaded.needs_repair.is_none(),
            "{name}: fixture needs repair"
        );
        let hs = loaded.header.hdr_size as usize;
        buf.truncate(2 * hs);
        let json = parse_json_area(&buf[BIN_HDR_SIZE..hs]).unwrap();
        Fx {
            name: name.to_string(),
            buf,
            hs,
            header: loaded.header,
            json,
            image_len,
        }
    }

    fn copy_range(&self, copy: Copy) -> Range<usize> {
        match copy {
            Copy::Primary => 0..self.hs,
            Copy::Secondary => self.hs..2 * self.hs,
        }
    }
}

fn testdata() -> PathBuf {
    if let Ok(p) = std::env::var("WRAPCRYPT_TESTDATA") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/cryptsetup")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A header made by cryptsetup here: keyslots 0 and 1 (PBKDF2), one
/// luks2-keyring token bound to keyslot 1, one dynamic crypt segment.
fn formatted() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fmt.img");
        let (k0, k1) = (dir.path().join("k0"), dir.path().join("k1"));
        std::fs::write(&k0, "first passphrase").unwrap();
        std::fs::write(&k1, "second passphrase").unwrap();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(20 << 20)
            .unwrap();
        let fast = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
        run(Command::new("cryptsetup")
            .args(["luksFormat", "--batch-mode", "--type", "luks2"])
            .args(fast)
            .arg("--key-file")
            .arg(&k0)
            .arg(&img));
        run(Command::new("cryptsetup")
            .args(["luksAddKey", "--batch-mode"])
            .args(fast)
            .arg("--key-file")
            .arg(&k0)
            .arg(&img)
            .arg(&k1));
        run(Command::new("cryptsetup")
            .args(["token", "add", "--key-description", "wrapcrypt-test"])
            .args(["--key-slot", "1"])
            .arg(&img));
        Fx::from_image("luksFormat", &img)
    })
}

/// A reference image from cryptsetup's test suite, decompressed to a temp dir.
fn reference(name: &str) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let td = testdata();
    if let Some(tar) = name
        .starts_with("test_image_")
        .then_some("luks2_mda_images.tar.xz")
    {
        run(Command::new("tar")
            .arg("xJf")
            .arg(td.join(tar))
            .arg("-C")
            .arg(dir.path())
            .arg(name));
    } else {
        let out = Command::new("xz")
            .arg("-dkc")
            .arg(td.join(format!("{name}.xz")))
            .output()
            .unwrap();
        assert!(out.status.success(), "xz {name}");
        std::fs::write(dir.path().join(name), out.stdout).unwrap();
    }
    Fx::from_image(name, &dir.path().join(name))
}

fn all_fixtures() -> Vec<Fx> {
    let mut v = vec![formatted().clone()];
    for name in [
        "test_image_16",
        "test_image_64",
        "test_image_1024",
        "compatimage2.img",
    ] {
        v.push(reference(name));
    }
    v
}

// ---------------------------------------------------------------------------
// Damage helpers

fn reseal(buf: &mut [u8], range: Range<usize>) {
    binary::seal("sha256", &mut buf[range]).unwrap();
}

/// Replaces the JSON area of both copies with `area` (exactly json_size
/// bytes) and re-seals both checksums, so JSON validation is what fails.
fn with_area(fx: &Fx, area: &[u8]) -> Vec<u8> {
    assert_eq!(area.len(), fx.hs - BIN_HDR_SIZE);
    let mut buf = fx.buf.clone();
    for copy in [Copy::Primary, Copy::Secondary] {
        let r = fx.copy_range(copy);
        buf[r.start + BIN_HDR_SIZE..r.end].copy_from_slice(area);
        reseal(&mut buf, r);
    }
    buf
}

/// Both copies carry `text` followed by NUL padding.
fn with_text(fx: &Fx, text: &str) -> Vec<u8> {
    let mut area = vec![0u8; fx.hs - BIN_HDR_SIZE];
    area[..text.len()].copy_from_slice(text.as_bytes());
    with_area(fx, &area)
}

/// Both copies carry the fixture's JSON after `edit`.
fn with_json(fx: &Fx, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = fx.json.clone();
    edit(&mut v);
    with_text(fx, &serde_json::to_string(&v).unwrap())
}

/// Sets the member at JSON pointer `ptr` (its parent must be an object).
fn set(v: &mut Value, ptr: &str, val: Value) {
    let (parent, key) = ptr.rsplit_once('/').unwrap();
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no object at {parent}"))
        .insert(key.to_string(), val);
}

fn remove(v: &mut Value, ptr: &str) -> Value {
    let (parent, key) = ptr.rsplit_once('/').unwrap();
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap()
        .shift_remove(key)
        .unwrap_or_else(|| panic!("nothing at {ptr}"))
}

/// Moves the object at `/section/from` to `/section/to`.
fn rename(v: &mut Value, section: &str, from: &str, to: &str) {
    let o = remove(v, &format!("/{section}/{from}"));
    set(v, &format!("/{section}/{to}"), o);
}

/// Blanks free-text reasons so that errors compare on variant, section,
/// id, field and values only.
fn norm(e: ValidateError) -> ValidateError {
    match e {
        ValidateError::Invalid {
            section, id, field, ..
        } => ValidateError::Invalid {
            section,
            id,
            field,
            reason: String::new(),
        },
        ValidateError::Json(_) => ValidateError::Json(String::new()),
        e => e,
    }
}

fn invalid(section: Section, id: Option<u32>, field: &str) -> ValidateError {
    ValidateError::Invalid {
        section,
        id,
        field: field.to_string(),
        reason: String::new(),
    }
}

/// Asserts both copies fail with the same JSON error `want`.
fn assert_both_json(what: &str, buf: &[u8], want: &ValidateError) {
    match Luks2Header::parse(buf) {
        Err(ParseError::BothDamaged { primary, secondary }) => {
            for (copy, err) in [(Copy::Primary, *primary), (Copy::Secondary, *secondary)] {
                match err {
                    CopyError::Json { copy: c, err } => {
                        assert_eq!(c, copy, "{what}");
                        assert_eq!(norm(err), *want, "{what}: {copy} copy");
                    }
                    other => panic!("{what}: {copy} copy: expected JSON error, got {other:?}"),
                }
            }
        }
        Err(e) => panic!("{what}: expected BothDamaged, got {e:?}"),
        Ok(l) => panic!("{what}: damaged header accepted: {:?}", l.needs_repair),
    }
}

/// Asserts both copies fail with binary errors `want` (primary, secondary).
fn assert_both_binary(what: &str, buf: &[u8], want: [BinaryError; 2]) {
    match Luks2Header::parse(buf) {
        Err(ParseError::BothDamaged { primary, secondary }) => {
            assert_eq!(
                *primary,
                CopyError::Binary {
                    copy: Copy::Primary,
                    err: want[0].clone()
                },
                "{what}"
            );
            assert_eq!(
                *secondary,
                CopyError::Binary {
                    copy: Copy::Secondary,
                    err: want[1].clone()
                },
                "{what}"
            );
        }
        other => panic!("{what}: expected BothDamaged, got {other:?}"),
    }
}

/// Asserts the header parses, the metadata is the fixture's, and
/// `needs_repair` names `copy` as damaged; returns the damage.
fn assert_recovered(fx: &Fx, what: &str, buf: &[u8], copy: Copy) -> CopyError {
    let l = Luks2Header::parse(buf).unwrap_or_else(|e| panic!("{}: {what}: {e:?}", fx.name));
    let h = &l.header;
    assert!(h.meta == fx.header.meta, "{}: {what}: metadata", fx.name);
    assert_eq!(
        (h.seqid, h.hdr_size, &h.uuid, &h.label, &h.subsystem),
        (
            fx.header.seqid,
            fx.header.hdr_size,
            &fx.header.uuid,
            &fx.header.label,
            &fx.header.subsystem
        ),
        "{}: {what}",
        fx.name
    );
    match l.needs_repair {
        Some((c, RepairReason::Damaged(e))) => {
            assert_eq!(c, copy, "{}: {what}: repair names the wrong copy", fx.name);
            let ec = match &e {
                CopyError::Binary { copy, .. } | CopyError::Json { copy, .. } => *copy,
                other => panic!("{other:?}"),
            };
            assert_eq!(ec, copy, "{}: {what}: error names the wrong copy", fx.name);
            e
        }
        other => panic!(
            "{}: {what}: expected damaged {copy}, got {other:?}",
            fx.name
        ),
    }
}

/// Writes `prefix` over a sparse image of the fixture's size and asks
/// `cryptsetup luksDump` about it; true if cryptsetup accepts the header.
fn cryptsetup_accepts(fx: &Fx, prefix: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("damaged.img");
    std::fs::write(&img, prefix).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(fx.image_len.max(prefix.len() as u64))
        .unwrap();
    let out = Command::new("cryptsetup")
        .arg("luksDump")
        .arg(&img)
        .output()
        .expect("cryptsetup runs");
    out.status.success()
}

// Binary header field offsets (LUKS2 on-disk format).
const OFF_VERSION: usize = 6;
const OFF_HDR_SIZE: usize = 8;
const OFF_SEQID: usize = 16;
const OFF_LABEL: usize = 24;
const OFF_CSUM_ALG: usize = 72;
const OFF_SALT: usize = 104;
const OFF_UUID: usize = 168;
const OFF_SUBSYSTEM: usize = 208;
const OFF_HDR_OFFSET: usize = 256;
const OFF_CSUM: usize = 448;
/// sha256 fills 32 of the 64 checksum bytes; the rest is not checked (by
/// cryptsetup either), so damage there is harmless.
const CSUM_UNUSED: Range<usize> = OFF_CSUM + 32..OFF_CSUM + 64;

// ---------------------------------------------------------------------------
// One copy damaged: recovered from the other

#[test]
fn flipped_byte_in_one_copy_is_recovered_from_the_other() {
    for fx in all_fixtures() {
        let json_len = serde_json::to_string(&fx.json).unwrap().len();
        // Every byte of the binary header's fields, its padding, the JSON
        // text and the JSON padding sampled (the checksum covers them alike).
        // (Every 5th field byte for the big metadata areas, whose copies
        // cost 1 MiB of hashing each time.)
        let field_step = if fx.hs > 0x10000 { 5 } else { 1 };
        let mut offsets: Vec<usize> = (0..512).step_by(field_step).collect();
        offsets.extend((512..BIN_HDR_SIZE).step_by(61));
        offsets.extend((BIN_HDR_SIZE..BIN_HDR_SIZE + json_len).step_by(17));
        offsets.extend((BIN_HDR_SIZE + json_len..fx.hs).step_by(fx.hs / 16 + 1));
        offsets.push(fx.hs - 1);
        let mut checked = 0;
        for copy in [Copy::Primary, Copy::Secondary] {
            let base = fx.copy_range(copy).start;
            for &off in &offsets {
                let masks: &[u8] = if off < 512 { &[0x01, 0x80] } else { &[0x01] };
                for &mask in masks {
                    let mut buf = fx.buf.clone();
                    buf[base + off] ^= mask;
                    let what = format!("{copy} byte {off} ^ {mask:#x}");
                    if CSUM_UNUSED.contains(&off) {
                        let l = Luks2Header::parse(&buf).unwrap();
                        assert!(l.needs_repair.is_none(), "{}: {what}", fx.name);
                        assert!(l.header.meta == fx.header.meta);
                        continue;
                    }
                    assert_recovered(&fx, &what, &buf, copy);
                    checked += 1;
                }
            }
        }
        eprintln!("{}: {checked} single-copy flips recovered", fx.name);
    }
}

#[test]
fn damaged_binary_fields_name_the_field() {
    let fx = formatted();
    let hs = fx.hs as u64;
    // (byte, xor mask, field, expected error given the damaged copy's offset)
    type Want = fn(u64) -> BinaryError;
    let cases: &[(usize, u8, &str, Want)] = &[
        (0, 0x01, "magic", |_| BinaryError::BadMagic),
        (5, 0x80, "magic", |_| BinaryError::BadMagic),
        (OFF_VERSION + 1, 0x03, "version", |_| {
            BinaryError::BadVersion(1)
        }),
        (OFF_VERSION, 0x01, "version", |_| {
            BinaryError::BadVersion(0x0102)
        }),
        (OFF_HDR_SIZE + 6, 0x01, "hdr_size", |_| {
            BinaryError::BadHdrSize(0x4100)
        }),
        (OFF_HDR_SIZE, 0x80, "hdr_size", |_| {
            BinaryError::BadHdrSize(0x8000_0000_0000_4000)
        }),
        (OFF_SEQID + 7, 0x01, "seqid", |_| {
            BinaryError::ChecksumMismatch
        }),
        (OFF_LABEL, 0xff, "label", |_| BinaryError::NotUtf8 {
            field: "label",
        }),
        (OFF_CSUM_ALG, 0x01, "checksum_alg", |_| {
            BinaryError::UnsupportedChecksum("rha256".into())
        }),
        (OFF_CSUM_ALG + 6, b'1', "checksum_alg", |_| {
            BinaryError::UnsupportedChecksum("sha2561".into())
        }),
        (OFF_SALT + 10, 0x01, "salt", |_| {
            BinaryError::ChecksumMismatch
        }),
        (OFF_UUID + 3, 0x01, "uuid", |_| {
            BinaryError::ChecksumMismatch
        }),
        (OFF_SUBSYSTEM, 0xc3, "subsystem", |_| BinaryError::NotUtf8 {
            field: "subsystem",
        }),
        (OFF_HDR_OFFSET + 7, 0x01, "hdr_offset", |at| {
            BinaryError::WrongOffset {
                found: at ^ 1,
                expected: at,
            }
        }),
        (OFF_CSUM, 0x01, "csum", |_| BinaryError::ChecksumMismatch),
        (1000, 0x01, "binary padding", |_| {
            BinaryError::ChecksumMismatch
        }),
        (BIN_HDR_SIZE + 1, 0x01, "JSON text", |_| {
            BinaryError::ChecksumMismatch
        }),
        (BIN_HDR_SIZE + 8000, 0x01, "JSON padding", |_| {
            BinaryError::ChecksumMismatch
        }),
    ];
    for copy in [Copy::Primary, Copy::Secondary] {
        let at = match copy {
            Copy::Primary => 0,
            Copy::Secondary => hs,
        };
        for &(off, mask, field, want) in cases {
            let mut buf = fx.buf.clone();
            buf[at as usize + off] ^= mask;
            let e = assert_recovered(fx, field, &buf, copy);
            assert_eq!(
                e,
                CopyError::Binary {
                    copy,
                    err: want(at)
                },
                "{copy} {field} (byte {off} ^ {mask:#x})"
            );
        }
        // String fields filled to the brim have no NUL left.
        for (field, range) in [
            ("label", OFF_LABEL..OFF_LABEL + 48),
            ("uuid", OFF_UUID + 36..OFF_UUID + 40),
        ] {
            let mut buf = fx.buf.clone();
            buf[at as usize + range.start..at as usize + range.end].fill(b'A');
            let e = assert_recovered(fx, field, &buf, copy);
            assert_eq!(
                e,
                CopyError::Binary {
                    copy,
                    err: BinaryError::Unterminated { field }
                }
            );
        }
    }
}

#[test]
fn older_copy_is_stale_and_the_newer_wins() {
    let fx = formatted();
    for (newer, older) in [
        (Copy::Primary, Copy::Secondary),
        (Copy::Secondary, Copy::Primary),
    ] {
        let mut buf = fx.buf.clone();
        let r = fx.copy_range(older);
        let seq = fx.header.seqid - 1;
        buf[r.start + OFF_SEQID..r.start + OFF_SEQID + 8].copy_from_slice(&seq.to_be_bytes());
        reseal(&mut buf, r);
        let l = Luks2Header::parse(&buf).unwrap();
        assert_eq!(
            l.needs_repair,
            Some((older, RepairReason::Stale)),
            "{newer}"
        );
        assert_eq!(l.header.seqid, fx.header.seqid);
        assert!(l.header.meta == fx.header.meta);
    }
}

/// A copy carrying the other copy's magic at its own offset, checksum and
/// hdr_offset consistent, is not that copy (cryptsetup checks the magic
/// against the position).
#[test]
fn magic_of_the_other_copy_is_rejected() {
    let fx = formatted();
    for copy in [Copy::Primary, Copy::Secondary] {
        let mut buf = fx.buf.clone();
        let r = fx.copy_range(copy);
        let other: &[u8] = match copy {
            Copy::Primary => b"SKUL\xba\xbe",
            Copy::Secondary => b"LUKS\xba\xbe",
        };
        buf[r.start..r.start + 6].copy_from_slice(other);
        reseal(&mut buf, r);
        let e = assert_recovered(fx, "other copy's magic", &buf, copy);
        assert_eq!(
            e,
            CopyError::Binary {
                copy,
                err: BinaryError::BadMagic
            }
        );
        assert!(cryptsetup_accepts(fx, &buf), "cryptsetup recovers too");
    }
}

// ---------------------------------------------------------------------------
// Both copies damaged: a typed error

#[test]
fn both_copies_flipped_is_a_typed_error() {
    for fx in all_fixtures() {
        let hs = fx.hs;
        // Same byte in both copies, then different bytes in each.
        let mut pairs: Vec<(usize, usize)> = (0..512).map(|o| (o, o)).collect();
        pairs.extend((BIN_HDR_SIZE..hs).step_by(hs / 13).map(|o| (o, o)));
        pairs.extend([(0, OFF_CSUM), (OFF_HDR_SIZE + 6, BIN_HDR_SIZE + 2)]);
        for (p, s) in pairs {
            if CSUM_UNUSED.contains(&p) || CSUM_UNUSED.contains(&s) {
                continue;
            }
            let mut buf = fx.buf.clone();
            buf[p] ^= 0x01;
            buf[hs + s] ^= 0x01;
            match Luks2Header::parse(&buf) {
                Err(ParseError::BothDamaged { primary, secondary }) => {
                    assert!(matches!(
                        *primary,
                        CopyError::Binary {
                            copy: Copy::Primary,
                            ..
                        }
                    ));
                    assert!(matches!(
                        *secondary,
                        CopyError::Binary {
                            copy: Copy::Secondary,
                            ..
                        }
                    ));
                }
                // Both magics gone: nothing says this was LUKS2.
                Err(ParseError::NotLuks2) => assert!(p < 8 && s < 8, "{}: {p}/{s}", fx.name),
                other => panic!("{}: bytes {p}/{s}: {other:?}", fx.name),
            }
        }
    }
    let fx = formatted();
    let mut buf = fx.buf.clone();
    buf[OFF_CSUM] ^= 1;
    buf[fx.hs + BIN_HDR_SIZE + 10] ^= 1;
    assert_both_binary(
        "checksums",
        &buf,
        [BinaryError::ChecksumMismatch, BinaryError::ChecksumMismatch],
    );
    assert!(!cryptsetup_accepts(fx, &buf));
}

#[test]
fn wrong_hdr_offset_and_hdr_size_in_both_copies() {
    let fx = formatted();
    let hs = fx.hs;
    // Offsets swapped between the copies.
    let mut buf = fx.buf.clone();
    buf[OFF_HDR_OFFSET..OFF_HDR_OFFSET + 8].copy_from_slice(&(hs as u64).to_be_bytes());
    buf[hs + OFF_HDR_OFFSET..hs + OFF_HDR_OFFSET + 8].copy_from_slice(&0u64.to_be_bytes());
    reseal(&mut buf, 0..hs);
    reseal(&mut buf, hs..2 * hs);
    assert_both_binary(
        "hdr_offset swapped",
        &buf,
        [
            BinaryError::WrongOffset {
                found: hs as u64,
                expected: 0,
            },
            BinaryError::WrongOffset {
                found: 0,
                expected: hs as u64,
            },
        ],
    );
    assert!(!cryptsetup_accepts(fx, &buf));

    // A size that is not one of the nine.
    let mut buf = fx.buf.clone();
    for at in [0, hs] {
        buf[at + OFF_HDR_SIZE..at + OFF_HDR_SIZE + 8].copy_from_slice(&0x5000u64.to_be_bytes());
        reseal(&mut buf, at..at + hs);
    }
    assert_both_binary(
        "hdr_size 0x5000",
        &buf,
        [
            BinaryError::BadHdrSize(0x5000),
            BinaryError::BadHdrSize(0x5000),
        ],
    );
    assert!(!cryptsetup_accepts(fx, &buf));

    // An allowed size that is not this header's: the primary then spans
    // the secondary, whose bytes are not JSON padding; the secondary at
    // its true offset claims 32 KiB but its config says 16 KiB.
    let big = 2 * hs;
    let mut buf = fx.buf.clone();
    buf.resize(4 * hs, 0);
    buf[hs + OFF_HDR_SIZE..hs + OFF_HDR_SIZE + 8].copy_from_slice(&(big as u64).to_be_bytes());
    reseal(&mut buf, hs..hs + big);
    buf[OFF_HDR_SIZE..OFF_HDR_SIZE + 8].copy_from_slice(&(big as u64).to_be_bytes());
    reseal(&mut buf, 0..big);
    match Luks2Header::parse(&buf) {
        Err(ParseError::BothDamaged { primary, secondary }) => {
            assert_eq!(
                *primary,
                CopyError::Json {
                    copy: Copy::Primary,
                    err: ValidateError::Padding(hs)
                }
            );
            match *secondary {
                CopyError::Json {
                    copy: Copy::Secondary,
                    err,
                } => assert_eq!(norm(err), invalid(Section::Config, None, "json_size")),
                other => panic!("{other:?}"),
            }
        }
        other => panic!("hdr_size doubled: {other:?}"),
    }
    assert!(!cryptsetup_accepts(fx, &buf));
}

#[test]
fn truncated_at_many_lengths() {
    for fx in all_fixtures() {
        let hs = fx.hs;
        let mut lens = vec![0, 1, 6, 7, 8, 100, 511, 4095, 4096, 4097, 8191, 8192];
        for base in [hs, 2 * hs] {
            lens.extend([base - 4097, base - 4096, base - 4095, base - 1]);
        }
        lens.extend([hs, hs + 1, hs + 4095, hs + 4096, hs + 4097, 2 * hs]);
        lens.extend((0..2 * hs).step_by(2 * hs / 61));
        lens.sort_unstable();
        lens.dedup();
        for n in lens {
            let r = Luks2Header::parse(&fx.buf[..n]);
            if n < hs {
                // cryptsetup says "not a valid LUKS device" for a device
                // shorter than the primary copy too.
                assert_eq!(r.unwrap_err(), ParseError::NotLuks2, "{} len {n}", fx.name);
            } else if n < 2 * hs {
                let e = assert_recovered(&fx, &format!("len {n}"), &fx.buf[..n], Copy::Secondary);
                let want = if n < hs + BIN_HDR_SIZE {
                    BinaryError::BadMagic
                } else {
                    BinaryError::Truncated { len: n - hs }
                };
                assert_eq!(
                    e,
                    CopyError::Binary {
                        copy: Copy::Secondary,
                        err: want
                    },
                    "{} len {n}",
                    fx.name
                );
            } else {
                let l = r.unwrap();
                assert!(l.needs_repair.is_none());
                assert!(l.header == fx.header);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// JSON damage in both copies (checksums re-sealed): exact typed errors

/// What `cryptsetup luksDump` (2.6.1) says about a damaged header.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cs {
    Rejects,
    /// cryptsetup accepts what wrapcrypt rejects; the reason is noted at the case.
    Accepts,
}

struct Case {
    name: &'static str,
    buf: Vec<u8>,
    want: ValidateError,
    cs: Cs,
}

fn json_cases(fx: &Fx) -> Vec<Case> {
    use Cs::*;
    use Section::*;
    let ks = |id| Some(id);
    let mut v = Vec::new();
    let mut case = |name, cs, want, buf| {
        v.push(Case {
            name,
            buf,
            want,
            cs,
        })
    };
    // Layout
    case(
        "overlapping keyslot areas",
        Rejects,
        ValidateError::Overlap {
            a: Area::Keyslot(0),
            b: Area::Keyslot(1),
        },
        with_json(fx, |v| {
            set(v, "/keyslots/1/area/offset", json!("36864"));
        }),
    );
    case(
        "keyslot area before the keyslots area",
        Rejects,
        ValidateError::OutOfBounds {
            area: Area::Keyslot(0),
            offset: 16384,
            size: 258048,
        },
        with_json(fx, |v| set(v, "/keyslots/0/area/offset", json!("16384"))),
    );
    case(
        "keyslot area past the keyslots area",
        Rejects,
        ValidateError::OutOfBounds {
            area: Area::Keyslot(1),
            offset: 16773120,
            size: 258048,
        },
        with_json(fx, |v| set(v, "/keyslots/1/area/offset", json!("16773120"))),
    );
    case(
        "keyslot area end overflows",
        Rejects,
        ValidateError::OutOfBounds {
            area: Area::Keyslot(1),
            offset: u64::MAX - 4095,
            size: 258048,
        },
        with_json(fx, |v| {
            set(
                v,
                "/keyslots/1/area/offset",
                json!((u64::MAX - 4095).to_string()),
            )
        }),
    );
    // cryptsetup: data starts at 0 (detached header) or at the keyslots
    // area's end or later (wrapcrypt accepted these before).
    for (name, off) in [
        ("segment inside the metadata area", 16384u64),
        ("segment overlaps a keyslot area", 290816),
        (
            "segment inside the keyslots area, clear of keyslots",
            1048576,
        ),
        ("segment in the last sector of the keyslots area", 16776704),
    ] {
        case(
            name,
            Rejects,
            ValidateError::OutOfBounds {
                area: Area::Segment(0),
                offset: off,
                size: u64::MAX - off,
            },
            with_json(fx, |v| set(v, "/segments/0/offset", json!(off.to_string()))),
        );
    }
    case(
        "keyslot area of size 0",
        Rejects,
        invalid(Keyslots, ks(1), "size"),
        with_json(fx, |v| set(v, "/keyslots/1/area/size", json!("0"))),
    );
    let two_segments = |v: &mut Value, off1: &str| {
        set(v, "/segments/0/size", json!("1048576"));
        let mut s1 = v["segments"]["0"].clone();
        s1["offset"] = json!(off1);
        s1["size"] = json!("dynamic");
        set(v, "/segments/1", s1);
        set(v, "/digests/0/segments", json!(["0", "1"]));
    };
    case(
        "overlapping segments",
        Rejects,
        ValidateError::Overlap {
            a: Area::Segment(0),
            b: Area::Segment(1),
        },
        with_json(fx, |v| two_segments(v, "17301504")),
    );
    case(
        "dynamic segment before another",
        Rejects,
        invalid(Segments, Some(0), "size"),
        with_json(fx, |v| {
            two_segments(v, "17825792");
            set(v, "/segments/0/size", json!("dynamic"));
        }),
    );
    case(
        "json_size does not match hdr_size",
        Rejects,
        invalid(Config, None, "json_size"),
        with_json(fx, |v| set(v, "/config/json_size", json!("28672"))),
    );
    case(
        "keyslots_size not 4096-aligned",
        Rejects,
        invalid(Config, None, "keyslots_size"),
        with_json(fx, |v| set(v, "/config/keyslots_size", json!("16744449"))),
    );
    case(
        "segment offset not sector-aligned",
        Rejects,
        invalid(Segments, Some(0), "offset"),
        with_json(fx, |v| set(v, "/segments/0/offset", json!("16777217"))),
    );
    // References
    case(
        "digest -> missing keyslot",
        Rejects,
        ValidateError::Dangling {
            section: Digests,
            id: 0,
            field: "keyslots",
            target: Keyslots,
            target_id: "5".into(),
        },
        with_json(fx, |v| {
            set(v, "/digests/0/keyslots", json!(["0", "1", "5"]))
        }),
    );
    case(
        "digest -> missing segment",
        Rejects,
        ValidateError::Dangling {
            section: Digests,
            id: 0,
            field: "segments",
            target: Segments,
            target_id: "3".into(),
        },
        with_json(fx, |v| set(v, "/digests/0/segments", json!(["0", "3"]))),
    );
    case(
        "token -> missing keyslot",
        Rejects,
        ValidateError::Dangling {
            section: Tokens,
            id: 0,
            field: "keyslots",
            target: Keyslots,
            target_id: "7".into(),
        },
        with_json(fx, |v| set(v, "/tokens/0/keyslots", json!(["7"]))),
    );
    case(
        "keyslot in no digest",
        Rejects,
        invalid(Keyslots, ks(1), "digests"),
        with_json(fx, |v| set(v, "/digests/0/keyslots", json!(["0"]))),
    );
    case(
        "crypt segment in no digest",
        Rejects,
        invalid(Segments, Some(0), "digests"),
        with_json(fx, |v| set(v, "/digests/0/segments", json!([]))),
    );
    case(
        "segment ids with a gap",
        Rejects,
        ValidateError::BadId {
            section: Segments,
            id: "2".into(),
        },
        with_json(fx, |v| {
            rename(v, "segments", "0", "2");
            set(v, "/digests/0/segments", json!(["2"]));
        }),
    );
    case(
        "keyslot in two digests",
        Rejects,
        invalid(Digests, Some(1), "keyslots"),
        with_json(fx, |v| {
            let mut d = v["digests"]["0"].clone();
            d["keyslots"] = json!(["1"]);
            d["segments"] = json!([]);
            set(v, "/digests/1", d);
        }),
    );
    // 64-bit values
    case(
        "keyslot area offset as a JSON number",
        Rejects,
        invalid(Keyslots, ks(0), "offset"),
        with_json(fx, |v| set(v, "/keyslots/0/area/offset", json!(32768))),
    );
    case(
        "segment offset as a JSON number",
        Rejects,
        invalid(Segments, Some(0), "offset"),
        with_json(fx, |v| set(v, "/segments/0/offset", json!(16777216))),
    );
    case(
        "iv_tweak as a JSON number",
        Rejects,
        invalid(Segments, Some(0), "iv_tweak"),
        with_json(fx, |v| set(v, "/segments/0/iv_tweak", json!(0))),
    );
    case(
        "json_size as a JSON number",
        Rejects,
        invalid(Config, None, "json_size"),
        with_json(fx, |v| set(v, "/config/json_size", json!(12288))),
    );
    case(
        "negative iv_tweak",
        Rejects,
        invalid(Segments, Some(0), "iv_tweak"),
        with_json(fx, |v| set(v, "/segments/0/iv_tweak", json!("-1"))),
    );
    case(
        "negative keyslot area size",
        Rejects,
        invalid(Keyslots, ks(0), "size"),
        with_json(fx, |v| set(v, "/keyslots/0/area/size", json!("-1"))),
    );
    case(
        "keyslot area size 2^64",
        Rejects,
        invalid(Keyslots, ks(0), "size"),
        with_json(fx, |v| {
            set(v, "/keyslots/0/area/size", json!("18446744073709551616"))
        }),
    );
    case(
        "keyslots_size 2^64",
        Rejects,
        invalid(Config, None, "keyslots_size"),
        with_json(fx, |v| {
            set(v, "/config/keyslots_size", json!("18446744073709551616"))
        }),
    );
    case(
        "segment offset 20 nines",
        Rejects,
        invalid(Segments, Some(0), "offset"),
        with_json(fx, |v| {
            set(v, "/segments/0/offset", json!("99999999999999999999"))
        }),
    );
    case(
        "leading '+' on segment offset",
        Rejects,
        invalid(Segments, Some(0), "offset"),
        with_json(fx, |v| set(v, "/segments/0/offset", json!("+16777216"))),
    );
    case(
        "key_size 2^32 as a JSON number",
        Rejects,
        invalid(Keyslots, ks(0), "key_size"),
        with_json(fx, |v| set(v, "/keyslots/0/key_size", json!(1u64 << 32))),
    );
    // cryptsetup checks only that key_size is an integer; a keyslot of size
    // 0 can hold no key, so wrapcrypt rejects it.
    case(
        "key_size 0",
        Accepts,
        invalid(Keyslots, ks(0), "key_size"),
        with_json(fx, |v| set(v, "/keyslots/0/key_size", json!(0))),
    );
    // Object ids
    case(
        "keyslot id with a leading zero",
        Rejects,
        ValidateError::BadId {
            section: Keyslots,
            id: "01".into(),
        },
        with_json(fx, |v| rename(v, "keyslots", "1", "01")),
    );
    case(
        "segment id with a leading zero",
        Rejects,
        ValidateError::BadId {
            section: Segments,
            id: "00".into(),
        },
        with_json(fx, |v| rename(v, "segments", "0", "00")),
    );
    // cryptsetup parses token and digest ids with strtol-like leniency and
    // accepts "00"; wrapcrypt wants ids in canonical form in every section.
    case(
        "token id with a leading zero",
        Accepts,
        ValidateError::BadId {
            section: Tokens,
            id: "00".into(),
        },
        with_json(fx, |v| rename(v, "tokens", "0", "00")),
    );
    // cryptsetup parses token and digest ids with strtol-like leniency and
    // accepts "00"; wrapcrypt wants ids in canonical form in every section.
    case(
        "digest id with a leading zero",
        Accepts,
        ValidateError::BadId {
            section: Digests,
            id: "00".into(),
        },
        with_json(fx, |v| rename(v, "digests", "0", "00")),
    );
    case(
        "keyslot id 32",
        Rejects,
        ValidateError::BadId {
            section: Keyslots,
            id: "32".into(),
        },
        with_json(fx, |v| rename(v, "keyslots", "1", "32")),
    );
    case(
        "keyslot id -1",
        Rejects,
        ValidateError::BadId {
            section: Keyslots,
            id: "-1".into(),
        },
        with_json(fx, |v| rename(v, "keyslots", "1", "-1")),
    );
    // cryptsetup does not enforce the id limits on tokens and digests
    // (LUKS2_TOKENS_MAX 32, LUKS2_DIGEST_MAX 8) when it reads a header.
    case(
        "token id 32",
        Accepts,
        ValidateError::BadId {
            section: Tokens,
            id: "32".into(),
        },
        with_json(fx, |v| rename(v, "tokens", "0", "32")),
    );
    case(
        "digest id 8",
        Accepts,
        ValidateError::BadId {
            section: Digests,
            id: "8".into(),
        },
        with_json(fx, |v| rename(v, "digests", "0", "8")),
    );
    case(
        "reference with a leading zero",
        Rejects,
        invalid(Digests, Some(0), "keyslots"),
        with_json(fx, |v| set(v, "/digests/0/keyslots", json!(["0", "01"]))),
    );
    case(
        "reference as a JSON number",
        Rejects,
        invalid(Tokens, Some(0), "keyslots"),
        with_json(fx, |v| set(v, "/tokens/0/keyslots", json!([1]))),
    );
    // Keyslot contents. cryptsetup checks the KDF type, salts, digests and
    // priority only when a keyslot is used, so luksDump accepts these;
    // wrapcrypt rejects them when reading the header.
    case(
        "unknown KDF",
        Accepts,
        invalid(Keyslots, ks(0), "type"),
        with_json(fx, |v| set(v, "/keyslots/0/kdf/type", json!("scrypt"))),
    );
    case(
        "bad base64 keyslot salt",
        Accepts,
        invalid(Keyslots, ks(1), "salt"),
        with_json(fx, |v| set(v, "/keyslots/1/kdf/salt", json!("not*base64"))),
    );
    case(
        "bad base64 digest",
        Accepts,
        invalid(Digests, Some(0), "digest"),
        with_json(fx, |v| set(v, "/digests/0/digest", json!("AAA"))),
    );
    case(
        "priority 3",
        Accepts,
        invalid(Keyslots, ks(0), "priority"),
        with_json(fx, |v| set(v, "/keyslots/0/priority", json!(3))),
    );
    case(
        "priority -1",
        Accepts,
        invalid(Keyslots, ks(0), "priority"),
        with_json(fx, |v| set(v, "/keyslots/0/priority", json!(-1))),
    );
    case(
        "priority 2^32",
        Accepts,
        invalid(Keyslots, ks(0), "priority"),
        with_json(fx, |v| set(v, "/keyslots/0/priority", json!(1u64 << 32))),
    );
    case(
        "unknown digest type",
        Accepts,
        invalid(Digests, Some(0), "type"),
        with_json(fx, |v| set(v, "/digests/0/type", json!("argon2"))),
    );
    case(
        "unknown AF type",
        Rejects,
        invalid(Keyslots, ks(0), "af"),
        with_json(fx, |v| set(v, "/keyslots/0/af/type", json!("luks9"))),
    );
    case(
        "sector_size 3000",
        Rejects,
        invalid(Segments, Some(0), "sector_size"),
        with_json(fx, |v| set(v, "/segments/0/sector_size", json!(3000))),
    );
    case(
        "missing kdf",
        Rejects,
        ValidateError::Missing {
            section: Keyslots,
            id: ks(0),
            field: "kdf",
        },
        with_json(fx, |v| {
            remove(v, "/keyslots/0/kdf");
        }),
    );
    case(
        "missing segment encryption",
        Rejects,
        ValidateError::Missing {
            section: Segments,
            id: Some(0),
            field: "encryption",
        },
        with_json(fx, |v| {
            remove(v, "/segments/0/encryption");
        }),
    );
    case(
        "missing config",
        Rejects,
        ValidateError::Missing {
            section: Root,
            id: None,
            field: "config",
        },
        with_json(fx, |v| {
            remove(v, "/config");
        }),
    );
    // Non-object sections and objects
    case(
        "keyslots is an array",
        Rejects,
        invalid(Keyslots, None, "keyslots"),
        with_json(fx, |v| set(v, "/keyslots", json!([]))),
    );
    case(
        "tokens is a string",
        Rejects,
        invalid(Tokens, None, "tokens"),
        with_json(fx, |v| set(v, "/tokens", json!("x"))),
    );
    case(
        "segments is null",
        Rejects,
        invalid(Segments, None, "segments"),
        with_json(fx, |v| set(v, "/segments", json!(null))),
    );
    case(
        "digests is a number",
        Rejects,
        invalid(Digests, None, "digests"),
        with_json(fx, |v| set(v, "/digests", json!(7))),
    );
    case(
        "config is an array",
        Rejects,
        invalid(Config, None, "config"),
        with_json(fx, |v| set(v, "/config", json!([]))),
    );
    case(
        "keyslot is a string",
        Rejects,
        invalid(Keyslots, ks(1), "keyslot"),
        with_json(fx, |v| {
            set(v, "/keyslots/1", json!("x"));
            set(v, "/digests/0/keyslots", json!(["0"]));
            set(v, "/tokens", json!({}));
        }),
    );
    case(
        "keyslot area is an array",
        Rejects,
        invalid(Keyslots, ks(0), "area"),
        with_json(fx, |v| set(v, "/keyslots/0/area", json!([]))),
    );
    case(
        "top level is an array",
        Rejects,
        ValidateError::Json(String::new()),
        with_text(fx, "[]"),
    );
    case(
        "JSON text cut short",
        Rejects,
        ValidateError::Json(String::new()),
        with_text(fx, &serde_json::to_string(&fx.json).unwrap()[..100]),
    );
    case(
        "JSON text not UTF-8",
        Rejects,
        ValidateError::Json(String::new()),
        {
            let mut area = vec![0u8; fx.hs - BIN_HDR_SIZE];
            area[..4].copy_from_slice(b"{\"\xff\"");
            with_area(fx, &area)
        },
    );
    // JSON area framing
    let text = serde_json::to_string(&fx.json).unwrap();
    case(
        "non-NUL byte in the padding",
        Rejects,
        ValidateError::Padding(BIN_HDR_SIZE + text.len() + 10),
        {
            let mut area = vec![0u8; fx.hs - BIN_HDR_SIZE];
            area[..text.len()].copy_from_slice(text.as_bytes());
            area[text.len() + 10] = b'x';
            with_area(fx, &area)
        },
    );
    case(
        "non-NUL last byte of the JSON area",
        Rejects,
        ValidateError::Padding(fx.hs - 1),
        {
            let mut area = vec![0u8; fx.hs - BIN_HDR_SIZE];
            area[..text.len()].copy_from_slice(text.as_bytes());
            *area.last_mut().unwrap() = b' ';
            with_area(fx, &area)
        },
    );
    case("no NUL terminator", Rejects, ValidateError::Unterminated, {
        let mut area = vec![b' '; fx.hs - BIN_HDR_SIZE];
        area[..text.len()].copy_from_slice(text.as_bytes());
        with_area(fx, &area)
    });
    v
}

#[test]
fn json_damage_in_both_copies_is_a_typed_error() {
    let fx = formatted();
    let mut disagreements = Vec::new();
    for c in json_cases(fx) {
        assert_both_json(c.name, &c.buf, &c.want);
        // The same JSON goes through the public step-by-step API too.
        let area = &c.buf[BIN_HDR_SIZE..fx.hs];
        let step = parse_json_area(area)
            .and_then(|j| Metadata::from_json(&j))
            .and_then(|m| m.validate_layout(fx.hs as u64, true));
        assert_eq!(step.map_err(norm), Err(c.want.clone()), "{}", c.name);
        let cs = if cryptsetup_accepts(fx, &c.buf) {
            Cs::Accepts
        } else {
            Cs::Rejects
        };
        if cs != c.cs {
            disagreements.push(format!(
                "{}: cryptsetup {cs:?}, table says {:?}",
                c.name, c.cs
            ));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

/// Damage in one copy only is hidden by recovery, whatever it is.
#[test]
fn json_damage_in_one_copy_is_recovered() {
    let fx = formatted();
    for c in json_cases(fx) {
        for copy in [Copy::Primary, Copy::Secondary] {
            let mut buf = fx.buf.clone();
            let r = fx.copy_range(copy);
            buf[r.clone()].copy_from_slice(&c.buf[r]);
            match assert_recovered(fx, c.name, &buf, copy) {
                CopyError::Json { err, .. } => assert_eq!(norm(err), c.want, "{}", c.name),
                other => panic!("{}: {other:?}", c.name),
            }
        }
    }
}

/// Headers that look odd but are valid for cryptsetup too: wrapcrypt must
/// accept them (and keep what it does not know).
#[test]
fn odd_but_valid_headers_are_accepted_by_both() {
    let fx = formatted();
    let text = serde_json::to_string(&fx.json).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "keyslot ids with a gap",
            with_json(fx, |v| {
                rename(v, "keyslots", "1", "5");
                set(v, "/digests/0/keyslots", json!(["0", "5"]));
                set(v, "/tokens/0/keyslots", json!(["5"]));
            }),
        ),
        (
            "segment at offset 0 (detached header)",
            with_json(fx, |v| set(v, "/segments/0/offset", json!("0"))),
        ),
        (
            "64-bit value with leading zeros",
            with_json(fx, |v| set(v, "/keyslots/0/area/offset", json!("032768"))),
        ),
        (
            "keyslot area size not 4096-aligned",
            with_json(fx, |v| set(v, "/keyslots/1/area/size", json!("1000"))),
        ),
        (
            "unknown members",
            with_json(fx, |v| {
                set(v, "/wrapcrypt-test", json!({"a": [1, "2"]}));
                set(v, "/keyslots/0/x-note", json!("kept"));
                set(v, "/config/x-note", json!(null));
            }),
        ),
        (
            "unknown keyslot type",
            with_json(fx, |v| set(v, "/keyslots/1/type", json!("future"))),
        ),
        (
            "linear segment",
            with_json(fx, |v| {
                set(v, "/segments/0/type", json!("linear"));
                for m in ["iv_tweak", "encryption", "sector_size"] {
                    remove(v, &format!("/segments/0/{m}"));
                }
            }),
        ),
        (
            "pretty-printed JSON",
            with_text(fx, &serde_json::to_string_pretty(&fx.json).unwrap()),
        ),
        (
            "duplicate member (the last one counts)",
            with_text(
                fx,
                &format!(
                    "{},\"config\":{}}}",
                    &text[..text.len() - 1],
                    fx.json["config"]
                ),
            ),
        ),
    ];
    for (name, buf) in cases {
        let l = Luks2Header::parse(&buf).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(l.needs_repair.is_none(), "{name}");
        // What was read is what gets written back (64-bit values in
        // canonical form).
        let area = &buf[BIN_HDR_SIZE..fx.hs];
        let mut json = parse_json_area(area).unwrap();
        if name.starts_with("64-bit") {
            assert_eq!(l.header.meta.keyslots[&0].area.offset, 32768);
            set(&mut json, "/keyslots/0/area/offset", json!("32768"));
        }
        assert_eq!(l.header.meta.to_json(), json, "{name}: not preserved");
        assert!(
            cryptsetup_accepts(fx, &buf),
            "{name}: cryptsetup rejects it"
        );
    }
}

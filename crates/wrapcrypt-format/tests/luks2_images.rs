//! LUKS2 parse/encode against cryptsetup's reference images
//! (../shared/testdata/cryptsetup, see its README for provenance).

use std::path::PathBuf;
use std::process::Command;

use wrapcrypt_format::luks2::{Copy, Luks2Header, MAX_METADATA_PREFIX};

fn testdata() -> PathBuf {
    if let Ok(p) = std::env::var("WRAPCRYPT_TESTDATA") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/cryptsetup")
}

/// Decompresses a reference image into a temp dir and returns its prefix.
fn image(name: &str) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let td = testdata();
    if name.starts_with("test_image_") || name.starts_with("luks2_header_requirements") {
        let tar = if name.starts_with("test_image_") {
            "luks2_mda_images.tar.xz"
        } else {
            "luks2_header_requirements.tar.xz"
        };
        let st = Command::new("tar")
            .arg("xJf")
            .arg(td.join(tar))
            .arg("-C")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(st.success());
    } else {
        let out = Command::new("xz")
            .arg("-dkc")
            .arg(td.join(format!("{name}.xz")))
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::write(dir.path().join(name), out.stdout).unwrap();
    }
    let mut data = std::fs::read(dir.path().join(name)).unwrap();
    data.truncate(MAX_METADATA_PREFIX);
    (dir, data)
}

fn roundtrip(name: &str) -> Luks2Header {
    let (_d, buf) = image(name);
    let loaded = Luks2Header::parse(&buf).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        loaded.needs_repair.is_none(),
        "{name}: {:?}",
        loaded.needs_repair
    );
    let h = loaded.header;
    // Re-encoding an unchanged header reproduces both copies byte for byte
    // (JSON member order is kept as read, whichever cryptsetup wrote it).
    let hs = h.hdr_size as usize;
    let mut buf2 = h.encode_copy(Copy::Primary).unwrap();
    buf2.extend(h.encode_copy(Copy::Secondary).unwrap());
    let again = Luks2Header::parse(&buf2).unwrap();
    assert!(
        again.needs_repair.is_none(),
        "{name}: re-encoded copies disagree"
    );
    assert!(
        again.header == h,
        "{name}: re-encoded header decodes differently"
    );
    assert!(
        buf2[..hs] == buf[..hs],
        "{name}: primary copy not byte-identical"
    );
    assert!(
        buf2[hs..] == buf[hs..2 * hs],
        "{name}: secondary copy not byte-identical"
    );
    h
}

#[test]
fn mda_images_all_sizes_roundtrip() {
    for kib in [16, 32, 64, 128, 256, 512, 1024, 2048, 4096] {
        let h = roundtrip(&format!("test_image_{kib}"));
        assert_eq!(h.hdr_size, kib * 1024);
        assert_eq!(h.meta.config.json_size, kib * 1024 - 4096);
    }
}

#[test]
fn compatimage2_roundtrip() {
    let h = roundtrip("compatimage2.img");
    assert_eq!(h.meta.keyslots.len(), 2);
    assert_eq!(
        h.meta.keyslots[&1].kdf.as_ref().unwrap().type_name(),
        "argon2id"
    );
}

#[test]
fn unbound_keyslot_is_recognised() {
    let h = roundtrip("luks2_keyslot_unassigned.img");
    assert!(h.meta.keyslot_is_bound(0));
    assert!(!h.meta.keyslot_is_bound(1));
}

#[test]
fn requirements_are_reported() {
    let h = roundtrip("luks2_header_requirements");
    assert_eq!(h.meta.config.unknown_requirements(), vec!["req0", "req1"]);
    let h = roundtrip("luks2_header_requirements_free");
    assert!(h.meta.config.unknown_requirements().is_empty());
}

#[test]
fn invalid_cipher_header_parses() {
    let h = roundtrip("luks2_invalid_cipher.img");
    let seg = &h.meta.segments[&0];
    assert!(seg.encryption.as_deref().unwrap().starts_with("capi:"));
}

#[test]
fn damaged_primary_is_recovered_from_secondary() {
    let (_d, mut buf) = image("test_image_64");
    buf[4096 + 10] ^= 0x55; // inside the primary JSON area
    let l = Luks2Header::parse(&buf).unwrap();
    assert!(matches!(l.needs_repair, Some((Copy::Primary, _))));
    let fixed = l.header.encode_copy(Copy::Primary).unwrap();
    // the repaired primary is a valid copy with the same metadata
    let mut b2 = buf.clone();
    b2[..fixed.len()].copy_from_slice(&fixed);
    let l2 = Luks2Header::parse(&b2).unwrap();
    assert!(l2.needs_repair.is_none());
    assert_eq!(l2.header.meta, l.header.meta);
}

#[test]
fn damaged_secondary_is_reported() {
    let (_d, mut buf) = image("test_image_16");
    buf[16384 + 5000] ^= 1;
    let l = Luks2Header::parse(&buf).unwrap();
    assert!(matches!(l.needs_repair, Some((Copy::Secondary, _))));
}

#[test]
fn both_damaged_is_an_error_naming_both() {
    let (_d, mut buf) = image("test_image_16");
    buf[5000] ^= 1;
    buf[16384 + 5000] ^= 1;
    let e = Luks2Header::parse(&buf).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("primary") && msg.contains("secondary"),
        "{msg}"
    );
}

//! LUKS1 header parsing, encoding and dumping checked against cryptsetup
//! 2.6.1: the reference images of `/work/shared/testdata/cryptsetup` and
//! headers `cryptsetup luksFormat --type luks1` makes at test time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wrapcrypt_format::dump::{luks1_dump, luks1_volume_key_dump};
use wrapcrypt_format::luks1::{Luks1Error, Luks1Field, Luks1Header, Luks1KeyslotState};
use wrapcrypt_secret::SecretBytes;

const TESTDATA: &str = "/work/shared/testdata/cryptsetup";

fn cs(args: &[&str]) -> Output {
    Command::new("cryptsetup")
        .args(args)
        .output()
        .expect("cryptsetup runs")
}

fn run(args: &[&str]) -> Vec<u8> {
    let out = cs(args);
    assert!(
        out.status.success(),
        "cryptsetup {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn unpack(dir: &Path, file: &str) -> PathBuf {
    let out = dir.join(file.trim_end_matches(".xz"));
    let data = Command::new("xz")
        .args(["-dkc", &format!("{TESTDATA}/{file}")])
        .output()
        .expect("xz");
    assert!(data.status.success());
    std::fs::write(&out, data.stdout).expect("write");
    out
}

fn header_bytes(p: &Path) -> Vec<u8> {
    let mut b = std::fs::read(p).expect("read");
    b.truncate(4096);
    b
}

/// PBKDF2 through the crate's own KDF module.
fn pbkdf2(hash: &str, pw: &[u8], salt: &[u8], iter: u32, out: &mut [u8]) -> Result<(), String> {
    use wrapcrypt_format::hash::HashAlg;
    use wrapcrypt_format::kdf::{derive, KdfParams};
    let hash = HashAlg::from_name(hash).map_err(|e| e.to_string())?;
    derive(
        &KdfParams::Pbkdf2 {
            hash,
            iterations: iter,
        },
        pw,
        salt,
        out,
    )
    .map_err(|e| e.to_string())
}

/// Parses `img`, checks the exact round trip, and compares our dump with
/// cryptsetup's.
fn check_image(img: &Path) -> Luks1Header {
    let bytes = header_bytes(img);
    let hdr = Luks1Header::parse(&bytes).expect("valid LUKS1 header");
    assert_eq!(&hdr.encode()[..], &bytes[..592], "round trip of {img:?}");
    let imgs = img.to_str().expect("utf8");
    let mut ours = String::new();
    luks1_dump(imgs, &hdr, &mut ours);
    let theirs = String::from_utf8(run(&["luksDump", imgs])).expect("utf8");
    assert_eq!(ours, theirs, "luksDump of {imgs}");
    hdr
}

/// Compares `--dump-volume-key` with ours and checks the MK digest.
fn check_volume_key(img: &Path, keyfile: &Path, hdr: &Luks1Header) {
    let imgs = img.to_str().expect("utf8");
    let kfs = keyfile.to_str().expect("utf8");
    let vk = keyfile.with_extension("vk");
    let _ = std::fs::remove_file(&vk);
    let base = ["luksDump", "-q", "--dump-volume-key", "--key-file", kfs];
    run(&[
        &base[..],
        &["--volume-key-file", vk.to_str().expect("utf8"), imgs],
    ]
    .concat());
    let key = SecretBytes::take_vec(std::fs::read(&vk).expect("vk"));
    let theirs = String::from_utf8(run(&[&base[..], &[imgs]].concat())).expect("utf8");
    let mut ours = String::new();
    luks1_volume_key_dump(imgs, hdr, key.expose_secret(), &mut ours);
    assert_eq!(ours, theirs, "--dump-volume-key of {imgs}");
    assert_eq!(hdr.verify_volume_key(key.expose_secret(), pbkdf2), Ok(true));
    let mut wrong = SecretBytes::copy_from(key.expose_secret());
    wrong.expose_secret_mut()[0] ^= 1;
    assert_eq!(
        hdr.verify_volume_key(wrong.expose_secret(), pbkdf2),
        Ok(false)
    );
}

#[test]
fn reference_images_parse_round_trip_and_dump() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kf = dir.path().join("compat.pass");
    std::fs::write(&kf, "compatkey").expect("pass");

    let img = unpack(dir.path(), "compatimage.img.xz");
    let hdr = check_image(&img);
    assert_eq!(hdr.cipher_spec(), "aes-cbc-essiv:sha256");
    assert_eq!(hdr.key_bytes(), 16);
    assert_eq!(hdr.payload_offset(), 1032);
    assert_eq!(hdr.active_keyslots().collect::<Vec<_>>(), vec![0]);
    check_volume_key(&img, &kf, &hdr);

    // Version 1.0 layout: first keyslot at sector 2, unaligned areas.
    let img = unpack(dir.path(), "compatv10image.img.xz");
    let hdr = check_image(&img);
    assert_eq!(hdr.hash_spec(), "sha1");
    assert_eq!(hdr.payload_offset(), 1010);
    assert_eq!(hdr.keyslot_sectors(0), 2..127);
    assert_eq!(hdr.keyslot_area(1), 128 * 512..253 * 512);
    assert_eq!(hdr.keyslot_material_len(0), 16 * 4000);
    assert_eq!(hdr.mk_digest_iter(), 10);
    check_volume_key(&img, &kf, &hdr);

    let img = unpack(dir.path(), "valid_header_file.xz");
    let hdr = check_image(&img);
    assert_eq!(hdr.uuid(), "14af2331-2046-46ea-ac0d-4453bb95e744");
    assert_eq!(hdr.hash_spec(), "sha512");
    assert_eq!(hdr.payload_offset_bytes(), 4096 * 512);
    assert!(hdr
        .keyslots()
        .iter()
        .all(|k| k.state == Luks1KeyslotState::Disabled && k.stripes == 4000));
    let key = SecretBytes::copy_from(
        &hex::decode("bb21158c733229347bd4e681891e213d94c685be6a5b84818afe7a78a6de7a1a")
            .expect("hex"),
    );
    assert_eq!(hdr.verify_volume_key(key.expose_secret(), pbkdf2), Ok(true));
    let mut wrong = SecretBytes::copy_from(key.expose_secret());
    wrong.expose_secret_mut()[31] ^= 0x80;
    assert_eq!(
        hdr.verify_volume_key(wrong.expose_secret(), pbkdf2),
        Ok(false)
    );
    assert_eq!(
        hdr.verify_volume_key(&key.expose_secret()[..16], pbkdf2),
        Ok(false)
    );
}

fn format_luks1(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let img = dir.join(name);
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(12 << 20))
        .expect("image");
    let kf = dir.join("pw");
    std::fs::write(&kf, "testpass").expect("pw");
    let (kfs, imgs) = (kf.to_str().expect("utf8"), img.to_str().expect("utf8"));
    let mut a = vec!["luksFormat", "-q", "--type", "luks1", "--key-file", kfs];
    a.extend_from_slice(&["--pbkdf-force-iterations", "1000"]);
    a.extend_from_slice(extra);
    a.push(imgs);
    run(&a);
    img
}

#[test]
fn cryptsetup_made_headers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let kf = d.join("pw");
    let cases: [(&str, &[&str]); 6] = [
        ("sha1", &["--hash", "sha1"]),
        ("sha256", &["--hash", "sha256", "--key-size", "256"]),
        (
            "sha512",
            &[
                "--hash",
                "sha512",
                "--cipher",
                "aes-cbc-essiv:sha256",
                "--key-size",
                "128",
            ],
        ),
        (
            "ripemd160",
            &[
                "--hash",
                "ripemd160",
                "--cipher",
                "aes-cbc-plain",
                "--key-size",
                "192",
            ],
        ),
        ("whirlpool", &["--hash", "whirlpool"]),
        (
            "align",
            &[
                "--align-payload",
                "8192",
                "--uuid",
                "01234567-89ab-cdef-0123-456789abcdef",
            ],
        ),
    ];
    for (name, extra) in cases {
        let img = format_luks1(d, &format!("{name}.img"), extra);
        let hdr = check_image(&img);
        check_volume_key(&img, &kf, &hdr);
        // cryptsetup aligns every keyslot area to 4 KiB after the header.
        let sectors = (u64::from(hdr.key_bytes()) * 4000).div_ceil(512);
        let mut expect = 8;
        for slot in 0..8 {
            assert_eq!(
                hdr.keyslot_sectors(slot),
                expect..expect + sectors,
                "{name} slot {slot}"
            );
            expect = (expect + sectors).div_ceil(8) * 8;
        }
        assert!(u64::from(hdr.payload_offset()) >= hdr.keyslot_sectors(7).end);
    }
    let hdr = check_image(&d.join("sha1.img"));
    assert_eq!(hdr.key_bytes(), 64);
    assert_eq!(hdr.cipher_mode(), "xts-plain64");
    assert_eq!(hdr.payload_offset(), 4096);
    let hdr = check_image(&d.join("align.img"));
    assert_eq!(hdr.uuid(), "01234567-89ab-cdef-0123-456789abcdef");
    assert_eq!(hdr.payload_offset(), 8192);

    // More keyslots, one killed again.
    let img = d.join("sha256.img");
    let imgs = img.to_str().expect("utf8");
    let kfs = kf.to_str().expect("utf8");
    let pw2 = d.join("pw2");
    std::fs::write(&pw2, "other").expect("pw2");
    let pw2s = pw2.to_str().expect("utf8");
    for slot in ["3", "7", "1"] {
        run(&[
            "luksAddKey",
            "-q",
            "--key-file",
            kfs,
            "--pbkdf-force-iterations",
            "1000",
            "-S",
            slot,
            imgs,
            pw2s,
        ]);
    }
    run(&["luksKillSlot", "-q", imgs, "7"]);
    let hdr = check_image(&img);
    assert_eq!(hdr.active_keyslots().collect::<Vec<_>>(), vec![0, 1, 3]);
    assert_eq!(hdr.keyslot(3).map(|k| k.iterations), Some(1000));
    check_volume_key(&img, &pw2, &hdr);

    // Detached header: payload offset 0 names a separate data device.
    let data = d.join("data.img");
    std::fs::File::create(&data)
        .and_then(|f| f.set_len(4 << 20))
        .expect("data");
    let hdr_file = d.join("hdr.img");
    std::fs::File::create(&hdr_file)
        .and_then(|f| f.set_len(2 << 20))
        .expect("hdr");
    run(&[
        "luksFormat",
        "-q",
        "--type",
        "luks1",
        "--key-file",
        kfs,
        "--pbkdf-force-iterations",
        "1000",
        "--header",
        hdr_file.to_str().expect("utf8"),
        data.to_str().expect("utf8"),
    ]);
    let hdr = check_image(&hdr_file);
    assert_eq!(hdr.payload_offset(), 0);
    check_volume_key(&hdr_file, &kf, &hdr);
}

/// Each rule: a mutation of a valid header, the error we must return, and
/// whether cryptsetup also refuses to load the result.
#[test]
fn validation_errors_match_cryptsetup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = unpack(dir.path(), "compatimage.img.xz");
    let good = std::fs::read(&img).expect("read");
    type Mutate = fn(&mut [u8]);
    let cases: Vec<(&str, Mutate, Luks1Error)> = vec![
        ("magic", |b| b[0] = b'X', Luks1Error::BadMagic),
        (
            "stripes",
            |b| b[208 + 44..208 + 48].copy_from_slice(&3999u32.to_be_bytes()),
            Luks1Error::InvalidStripes {
                slot: 0,
                stripes: 3999,
            },
        ),
        (
            "overlap",
            // Slot 1 starts inside slot 0 (sectors 8..133).
            |b| b[256 + 40..256 + 44].copy_from_slice(&100u32.to_be_bytes()),
            Luks1Error::KeyslotsOverlap { a: 0, b: 1 },
        ),
        (
            "past-payload",
            |b| b[544 + 40..544 + 44].copy_from_slice(&1000u32.to_be_bytes()),
            Luks1Error::KeyslotOverlapsPayload {
                slot: 7,
                start: 1000,
                end: 1125,
                payload: 1032,
            },
        ),
        (
            "in-header",
            |b| b[208 + 40..208 + 44].copy_from_slice(&1u32.to_be_bytes()),
            Luks1Error::KeyslotOverlapsHeader { slot: 0, offset: 1 },
        ),
        (
            "hash",
            |b| b[72..80].copy_from_slice(b"md5\0\0\0\0\0"),
            Luks1Error::UnknownHash("md5".into()),
        ),
        (
            "key-bytes",
            |b| b[108..112].fill(0),
            Luks1Error::InvalidKeyBytes(0),
        ),
        (
            "unterminated-hash",
            |b| b[72..104].copy_from_slice(b"sha256aaaaaaaaaaaaaaaaaaaaaaaaaa"),
            Luks1Error::UnknownHash("sha256aaaaaaaaaaaaaaaaaaaaaaaaa".into()),
        ),
    ];
    for (name, mutate, expected) in cases {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert_eq!(Luks1Header::parse(&bad), Err(expected), "{name}");
        let p = dir.path().join(format!("{name}.img"));
        std::fs::write(&p, &bad).expect("write");
        let out = cs(&["luksDump", p.to_str().expect("utf8")]);
        assert!(!out.status.success(), "cryptsetup accepted {name}");
    }
    // An unknown state word: cryptsetup loads the header and shows the
    // slot as DISABLED; so do we, keeping the word for the round trip.
    let mut odd = good.clone();
    odd[208..212].copy_from_slice(&0x1234u32.to_be_bytes());
    let p = dir.path().join("state.img");
    std::fs::write(&p, &odd).expect("write");
    let hdr = check_image(&p);
    assert_eq!(
        hdr.keyslot(0).map(|k| k.state),
        Some(Luks1KeyslotState::Other(0x1234))
    );
    assert_eq!(hdr.active_keyslots().count(), 0);
    // A string without NUL: cryptsetup reads its first 31 bytes.
    let mut unterminated = good.clone();
    unterminated[40..72].copy_from_slice(b"cbc-essiv:sha256aaaaaaaaaaaaaaaa");
    let p = dir.path().join("unterminated.img");
    std::fs::write(&p, &unterminated).expect("write");
    let hdr = check_image(&p);
    assert_eq!(hdr.cipher_mode(), "cbc-essiv:sha256aaaaaaaaaaaaaaa");
    let mut bad_utf8 = good.clone();
    bad_utf8[168] = 0xff;
    assert_eq!(
        Luks1Header::parse(&bad_utf8),
        Err(Luks1Error::NotUtf8(Luks1Field::Uuid))
    );
    let mut v2 = good.clone();
    v2[7] = 3;
    assert_eq!(
        Luks1Header::parse(&v2),
        Err(Luks1Error::UnsupportedVersion(3))
    );
    assert_eq!(
        Luks1Header::parse(&good[..591]),
        Err(Luks1Error::Truncated { len: 591 })
    );
}

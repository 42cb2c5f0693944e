//! Payloads written by the Linux kernel's dm-crypt in cryptsetup's reference
//! images (../shared/testdata/cryptsetup, see its README): the volume key
//! comes from `cryptsetup luksDump --dump-volume-key` at test time, the
//! expected payload hashes from the README.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use sha2::Digest;
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{CipherSpec, SectorCipher, SoftCipher};

fn testdata() -> PathBuf {
    match std::env::var_os("WRAPCRYPT_TESTDATA") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata"),
    }
    .join("cryptsetup")
}

struct Image {
    bytes: Vec<u8>,
    key: SecretBytes,
    spec: CipherSpec,
    payload_sectors: usize,
}

fn open_image(name: &str, passphrase: &str) -> Image {
    let src = testdata().join(format!("{name}.img.xz"));
    assert!(src.exists(), "reference image missing: {}", src.display());
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join(format!("{name}.img"));
    let out = Command::new("xz")
        .arg("-dkc")
        .arg(&src)
        .output()
        .expect("xz");
    assert!(out.status.success());
    std::fs::write(&img, &out.stdout).unwrap();

    let mut child = Command::new("cryptsetup")
        .args([
            "luksDump",
            "--dump-volume-key",
            "--batch-mode",
            "--key-file",
            "-",
        ])
        .arg(&img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cryptsetup (cryptsetup-bin) is a test dependency");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(passphrase.as_bytes())
        .unwrap();
    let dump = child.wait_with_output().unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8(dump.stdout).unwrap();

    let field = |label: &str| -> String {
        let mut lines = text.lines();
        let mut val = String::new();
        while let Some(l) = lines.next() {
            if let Some(rest) = l.trim_start().strip_prefix(label) {
                val = rest.trim_start_matches(':').trim().to_string();
                // The key may continue on indented hex lines.
                for more in lines.by_ref() {
                    let m = more.trim();
                    if m.is_empty() || m.contains(':') {
                        break;
                    }
                    val.push(' ');
                    val.push_str(m);
                }
                break;
            }
        }
        val
    };
    let key_hex: String = field("MK dump")
        .split_whitespace()
        .collect::<Vec<_>>()
        .concat();
    let mut key_bytes = hex::decode(&key_hex).expect("volume key hex");
    let key = SecretBytes::copy_from(&key_bytes);
    zeroize::Zeroize::zeroize(&mut key_bytes);
    let spec = CipherSpec::from_luks1(&field("Cipher name"), &field("Cipher mode")).unwrap();
    let payload_sectors: usize = field("Payload offset").parse().unwrap();
    Image {
        bytes: out.stdout,
        key,
        spec,
        payload_sectors,
    }
}

fn check(name: &str, spec: &str, hash_hex: &str, sha1: bool) {
    let im = open_image(name, "compatkey");
    assert_eq!(im.spec.to_string(), spec);
    let c = SoftCipher::new(&im.spec, &im.key, 512).unwrap();
    let ct = im.bytes[im.payload_sectors * 512..].to_vec();
    let mut pt = ct.clone();
    c.decrypt(0, &mut pt).unwrap();
    let got = if sha1 {
        hex::encode(sha1::Sha1::digest(&pt))
    } else {
        hex::encode(sha2::Sha256::digest(&pt))
    };
    assert_eq!(got, hash_hex, "{name}: decrypted payload hash");
    // And encrypting it again gives back dm-crypt's bytes exactly.
    c.encrypt(0, &mut pt).unwrap();
    assert!(pt == ct, "{name}: re-encryption differs from dm-crypt");
}

#[test]
fn luks1_aes_cbc_essiv_sha256_payload() {
    check(
        "compatimage",
        "aes-cbc-essiv:sha256",
        "7428e8f2436882a07eb32765086f5c899474c08b5576f556b573d2aabdf923e8",
        false,
    );
}

#[test]
fn luks1_aes_cbc_plain_payload() {
    check(
        "compatv10image",
        "aes-cbc-plain",
        "51b48c2471a7593ceaf14dc5e66bca86ed05f6cc",
        true,
    );
}

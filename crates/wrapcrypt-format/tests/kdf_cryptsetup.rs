//! End-to-end oracle: cryptsetup-bin writes LUKS2 keyslots with a known
//! volume key (`--volume-key-file`); this crate's KDF derives the keyslot
//! key from the passphrase, Python `cryptography` (OpenSSL's AES-XTS)
//! decrypts the keyslot area with it, this crate's AF merge recovers the
//! volume key, and this crate's PBKDF2 reproduces the header's digest.
//! Every KDF, hash and AF hash LUKS2 offers is covered.
//!
//! Header fields are read from `cryptsetup luksDump --dump-json-metadata`,
//! so this test does not depend on the crate's own LUKS2 parser.

use std::path::Path;
use std::process::Command;

mod oracle;
use oracle::python_args;
use wrapcrypt_format::af;
use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::kdf::{self, Argon2Variant, KdfParams};
use wrapcrypt_secret::SecretBytes;

/// Prints the keyslot-0 and digest-0 fields as `name value` lines
/// (binary values hex), for the image given as argv[1].
const HEADER_PY: &str = r#"
import sys, json, base64, subprocess
j = json.loads(subprocess.run(['cryptsetup', 'luksDump', '--dump-json-metadata', sys.argv[1]],
                              capture_output=True, check=True).stdout)
ks = j['keyslots']['0']; kdf = ks['kdf']; dg = j['digests']['0']
print('kdf', kdf['type'])
print('kdf_hash', kdf.get('hash', '-'))
print('iterations', kdf.get('iterations', 0))
print('time', kdf.get('time', 0)); print('memory', kdf.get('memory', 0)); print('cpus', kdf.get('cpus', 0))
print('salt', base64.b64decode(kdf['salt']).hex())
print('key_size', ks['key_size'])
print('af_hash', ks['af']['hash']); print('stripes', ks['af']['stripes'])
print('area_offset', ks['area']['offset']); print('area_size', ks['area']['size'])
print('area_encryption', ks['area']['encryption']); print('area_key_size', ks['area']['key_size'])
print('digest_hash', dg['hash']); print('digest_iterations', dg['iterations'])
print('digest_salt', base64.b64decode(dg['salt']).hex())
print('digest', base64.b64decode(dg['digest']).hex())
"#;

/// Decrypts `length` bytes at `offset` of image argv[1] with AES-XTS,
/// 512-byte sectors, plain64 IVs counted from the area start; key hex on
/// stdin, plaintext hex on stdout.
const DECRYPT_PY: &str = r#"
import sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key = bytes.fromhex(sys.stdin.read().strip())
off, length = int(sys.argv[2]), int(sys.argv[3])
with open(sys.argv[1], 'rb') as f:
    f.seek(off); data = f.read(length)
out = b''
for i in range(0, length, 512):
    d = Cipher(algorithms.AES(key), modes.XTS((i // 512).to_bytes(16, 'little'))).decryptor()
    out += d.update(data[i:i+512]) + d.finalize()
print(out.hex())
"#;

struct Header(Vec<(String, String)>);

impl Header {
    fn get(&self, k: &str) -> &str {
        &self.0.iter().find(|(n, _)| n == k).expect(k).1
    }
    fn num<T: std::str::FromStr>(&self, k: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        self.get(k).parse().unwrap()
    }
    fn bin(&self, k: &str) -> Vec<u8> {
        hex::decode(self.get(k)).unwrap()
    }
}

fn format(dir: &Path, name: &str, key_bits: u32, pbkdf_args: &[&str]) -> (Vec<u8>, String) {
    let img = dir.join(name);
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let vk: Vec<u8> = (0..key_bits / 8)
        .map(|i| (i as u8).wrapping_mul(37) ^ 0x5c)
        .collect();
    let vk_file = dir.join(format!("{name}.vk"));
    std::fs::write(&vk_file, &vk).unwrap();
    let pw_file = dir.join("pw");
    std::fs::write(&pw_file, b"correct horse battery").unwrap();
    let st = Command::new("cryptsetup")
        .args(["luksFormat", "-q", "--type", "luks2"])
        .arg("--volume-key-file")
        .arg(&vk_file)
        .args(["--key-size", &key_bits.to_string()])
        .arg("--key-file")
        .arg(&pw_file)
        .args(pbkdf_args)
        .arg(&img)
        .status()
        .expect("cryptsetup-bin is installed by scripts/install-deps.sh");
    assert!(st.success(), "cryptsetup luksFormat {pbkdf_args:?}");
    (vk, img.to_str().unwrap().to_string())
}

fn check_image(img: &str, vk: &[u8], want_kdf: &str) {
    let text = python_args(HEADER_PY, &[img], "");
    let h = Header(
        text.lines()
            .map(|l| {
                let (a, b) = l.split_once(' ').unwrap();
                (a.to_string(), b.to_string())
            })
            .collect(),
    );
    assert_eq!(h.get("kdf"), want_kdf);
    assert_eq!(h.get("area_encryption"), "aes-xts-plain64");
    let params = match h.get("kdf") {
        "pbkdf2" => KdfParams::Pbkdf2 {
            hash: HashAlg::from_name(h.get("kdf_hash")).unwrap(),
            iterations: h.num("iterations"),
        },
        t => KdfParams::Argon2 {
            variant: Argon2Variant::from_name(t).unwrap(),
            time: h.num("time"),
            memory_kib: h.num("memory"),
            parallel: h.num("cpus"),
        },
    };
    let key_size: usize = h.num("key_size");
    let stripes: u32 = h.num("stripes");
    let af_hash = HashAlg::from_name(h.get("af_hash")).unwrap();

    let mut area_key = SecretBytes::zeroed(h.num("area_key_size"));
    kdf::derive(
        &params,
        b"correct horse battery",
        &h.bin("salt"),
        area_key.expose_secret_mut(),
    )
    .unwrap();

    let split_len = af::af_split_size(key_size, stripes, 512);
    assert!(split_len as u64 <= h.num::<u64>("area_size"));
    let plain = python_args(
        DECRYPT_PY,
        &[img, h.get("area_offset"), &split_len.to_string()],
        &hex::encode(area_key.expose_secret()),
    );
    let material = hex::decode(plain.trim()).unwrap();

    let mut volume_key = SecretBytes::zeroed(key_size);
    af::af_merge(
        &material[..key_size * stripes as usize],
        key_size,
        stripes,
        af_hash,
        volume_key.expose_secret_mut(),
    )
    .unwrap();
    assert_eq!(volume_key.expose_secret(), vk, "{params}, AF {af_hash}");

    // The pbkdf2 digest over the volume key.
    let digest = h.bin("digest");
    let mut check = vec![0u8; digest.len()];
    kdf::derive(
        &KdfParams::Pbkdf2 {
            hash: HashAlg::from_name(h.get("digest_hash")).unwrap(),
            iterations: h.num("digest_iterations"),
        },
        volume_key.expose_secret(),
        &h.bin("digest_salt"),
        &mut check,
    )
    .unwrap();
    assert_eq!(check, digest, "digest of {params}");
}

#[test]
fn kdf_cryptsetup_keyslots_unlock() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, u32, &[&str], &str); 8] = [
        (
            "a2id",
            512,
            &[
                "--pbkdf",
                "argon2id",
                "--pbkdf-force-iterations",
                "4",
                "--pbkdf-memory",
                "32768",
                "--pbkdf-parallel",
                "2",
            ],
            "argon2id",
        ),
        (
            "a2i",
            256,
            &[
                "--pbkdf",
                "argon2i",
                "--pbkdf-force-iterations",
                "5",
                "--pbkdf-memory",
                "8000",
                "--pbkdf-parallel",
                "1",
            ],
            "argon2i",
        ),
        (
            "sha256",
            512,
            &[
                "--pbkdf",
                "pbkdf2",
                "--hash",
                "sha256",
                "--pbkdf-force-iterations",
                "1000",
            ],
            "pbkdf2",
        ),
        (
            "sha1",
            256,
            &[
                "--pbkdf",
                "pbkdf2",
                "--hash",
                "sha1",
                "--pbkdf-force-iterations",
                "1500",
            ],
            "pbkdf2",
        ),
        (
            "sha512",
            512,
            &[
                "--pbkdf",
                "pbkdf2",
                "--hash",
                "sha512",
                "--pbkdf-force-iterations",
                "1000",
            ],
            "pbkdf2",
        ),
        (
            "ripemd160",
            512,
            &[
                "--pbkdf",
                "pbkdf2",
                "--hash",
                "ripemd160",
                "--pbkdf-force-iterations",
                "1000",
            ],
            "pbkdf2",
        ),
        (
            "whirlpool",
            512,
            &[
                "--pbkdf",
                "pbkdf2",
                "--hash",
                "whirlpool",
                "--pbkdf-force-iterations",
                "1000",
            ],
            "pbkdf2",
        ),
        (
            // A benchmarked (not forced) count, threaded PBKDF2 path.
            "sha256-bench",
            512,
            &[
                "--pbkdf",
                "pbkdf2",
                "--hash",
                "sha256",
                "--iter-time",
                "100",
            ],
            "pbkdf2",
        ),
    ];
    for (name, bits, args, kdf_type) in cases {
        let (vk, img) = format(dir.path(), name, bits, args);
        check_image(&img, &vk, kdf_type);
    }
}

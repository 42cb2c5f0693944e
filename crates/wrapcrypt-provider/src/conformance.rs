//! The provider conformance suite: the one set of checks every
//! [`KeyProvider`] passes (soft, custodian, pkcs11 in-process and through
//! `p11-kit server`, and any external provider). Built with the
//! `conformance` feature, for tests only: it panics on failure and runs
//! Python `cryptography` as the independent AES-XTS oracle.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::SectorCipher;

use crate::wkb::Mechanism;
use crate::xts::aes_256_xts;
use crate::{clear_key_vp, ErrorCode, KeyProvider, KeySpec, KeyState, ProviderError, Wkb};

/// VP of the key 00 01 … 3f (Python `cryptography` AES-XTS of 32 zero
/// bytes, tweak 0).
pub const VP_KEY_0_63: &str = "cd6b103236fbd87dba93e9001e29bc3d5e885d6abd1577e3e0e0a5f49e444894";

/// The AES-256-XTS key 00 01 … 3f.
pub fn key_0_63() -> SecretBytes {
    SecretBytes::copy_from(&(0..64u8).collect::<Vec<_>>())
}

/// `n` bytes of test data that differ from sector to sector.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 512) as u8).collect()
}

/// Runs a Python script with `input` on stdin; its stdout.
pub fn python(script: &str, input: &[u8]) -> Vec<u8> {
    let mut c = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is installed (scripts/install-deps.sh)");
    c.stdin
        .take()
        .expect("piped stdin")
        .write_all(input)
        .expect("python3 reads its input");
    let out = c.wait_with_output().expect("python3 runs");
    assert!(out.status.success(), "python3 failed: {out:?}");
    out.stdout
}

/// Python `cryptography` (OpenSSL) AES-XTS of `data` under key 00..3f,
/// sector by sector, dm-crypt `plain64` tweaks from `iv`.
pub fn python_xts(data: &[u8], sector: usize, iv: u64) -> Vec<u8> {
    let script = format!(
        "import sys\nfrom cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\
         d=sys.stdin.buffer.read(); k=bytes(range(64)); out=b''\n\
         for i in range(len(d)//{sector}):\n\
         \x20   t=({iv}+i*{step}).to_bytes(16,'little')\n\
         \x20   out+=Cipher(algorithms.AES(k),modes.XTS(t)).encryptor().update(d[i*{sector}:(i+1)*{sector}])\n\
         sys.stdout.buffer.write(out)\n",
        step = sector / 512
    );
    python(&script, data)
}

/// Data-path checks on a cipher over key 00..3f: equal to the software
/// engine and to OpenSSL's XTS at 512- and 4096-byte sectors, round trip,
/// partial sectors refused, and four threads at once on one cipher (the
/// FUSE workers share it), with batches larger than one provider call.
pub fn check_cipher_0_63(open: &dyn Fn(usize) -> Arc<dyn SectorCipher>) {
    for (sector, iv) in [(512usize, 5u64), (4096, 8 * 77)] {
        let c = open(sector);
        assert_eq!(c.sector_size(), sector);
        let plain = pattern(sector * 6);
        let mut d = plain.clone();
        c.encrypt(iv, &mut d).unwrap();
        let mut soft = plain.clone();
        aes_256_xts(&key_0_63(), sector)
            .unwrap()
            .encrypt(iv, &mut soft)
            .unwrap();
        assert_eq!(d, soft, "sector {sector}: differs from the software engine");
        assert_eq!(
            d,
            python_xts(&plain, sector, iv),
            "sector {sector}: differs from OpenSSL"
        );
        c.decrypt(iv, &mut d).unwrap();
        assert_eq!(d, plain);
        assert!(
            c.encrypt(0, &mut [0u8; 100]).is_err(),
            "partial sector accepted"
        );
    }
    let c = open(4096);
    let want = python_xts(&pattern(4096 * 300), 4096, 0);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            let want = want.clone();
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let mut d = pattern(4096 * 300);
                    c.encrypt(0, &mut d).unwrap();
                    assert!(d == want, "threaded encryption differs");
                    c.decrypt(0, &mut d).unwrap();
                    assert!(d == pattern(4096 * 300), "threaded round trip differs");
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
}

/// `w` with bit 0 of payload byte `byte` flipped and the blob's SHA-256
/// check recomputed: only the provider's own integrity check (an AEAD tag,
/// RFC 5649's check, the token-held key's VP) can refuse it.
pub fn forged(w: &Wkb, byte: usize) -> Wkb {
    let mut payload = w.expose_payload().to_vec();
    payload[byte] ^= 1;
    Wkb::new(
        w.provider(),
        w.algorithm(),
        w.mechanism(),
        w.wrapping_key().clone(),
        SecretBytes::copy_from(&payload),
    )
    .expect("a forged blob still encodes")
}

/// The suite: generate (fixed-size self-describing blob, stable VP, two keys
/// two VPs), validate (current, protection), import (VP equals the software
/// VP of the clear key; a short key refused), the data path
/// ([`check_cipher_0_63`]), refusals of `foreign` (another provider's
/// blob), of a damaged blob, and of an altered payload under a valid
/// checksum ([`forged`]): `IntegrityFailure` at open, `invalid` at validate
/// (for every mechanism that wraps; a `Clear` blob is its own key).
pub fn provider_suite(p: &dyn KeyProvider, foreign: &Wkb) {
    let spec = KeySpec::aes_256_xts();
    let g = p.generate(&spec).unwrap();
    let enc = g.encode();
    assert_eq!(enc.len(), 256);
    let g = Wkb::parse(&enc).unwrap();
    assert_eq!(g.provider(), p.name());
    let vp = p.verification_pattern(&g).unwrap();
    assert_eq!(vp.len(), 64);
    assert_eq!(p.verification_pattern(&g).unwrap(), vp);
    let st = p.validate(&g).unwrap();
    assert_eq!(st.state, KeyState::Current);
    assert_eq!(st.protection, p.protection());
    let g2 = p.generate(&spec).unwrap();
    assert_ne!(p.verification_pattern(&g2).unwrap(), vp, "two keys, one VP");

    let imp = p.import(&key_0_63(), &spec).unwrap();
    assert_eq!(p.verification_pattern(&imp).unwrap(), VP_KEY_0_63);
    assert_eq!(clear_key_vp(&key_0_63()).unwrap(), VP_KEY_0_63);
    assert!(p.import(&SecretBytes::copy_from(&[1; 32]), &spec).is_err());

    check_cipher_0_63(&|sector| p.open_cipher(&imp, sector).unwrap());
    assert!(p.open_cipher(&imp, 1000).is_err());

    match p.validate(foreign) {
        Err(ProviderError::WrongProvider { expected, .. }) => assert_eq!(expected, p.name()),
        other => panic!("foreign blob accepted: {other:?}"),
    }
    assert!(p.open_cipher(foreign, 512).is_err());
    let mut bad = imp.encode();
    bad[150] ^= 0x80;
    assert!(Wkb::parse(&bad).is_err());
    // A `Clear` blob (the soft provider's) is its key: any bytes are a key,
    // certified by the LUKS2 digest, and there is nothing to forge.
    if imp.mechanism() != Mechanism::Clear {
        let f = forged(&imp, 3);
        let e = p.open_cipher(&f, 512).err().expect("a forged blob opened");
        assert_eq!(e.code(), ErrorCode::IntegrityFailure, "{e}");
        assert!(matches!(
            p.validate(&f).unwrap().state,
            KeyState::Invalid(_)
        ));
    }
    for w in [g, g2, imp] {
        let _ = p.discard(&w);
    }
}

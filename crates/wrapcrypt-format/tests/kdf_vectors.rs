//! Known-answer and cross-implementation tests for `hash` and `kdf`.
//!
//! Sources of truth:
//! * hashes: FIPS 180-2 / RIPEMD-160 / ISO 10118-3 "abc" vectors, and at test
//!   time Python `hashlib` (OpenSSL) and `openssl dgst -provider legacy -whirlpool`;
//! * PBKDF2: RFC 6070 (HMAC-SHA1), RFC 7914 §11 (HMAC-SHA256), and at test
//!   time Python `hashlib.pbkdf2_hmac` and `openssl kdf ... PBKDF2` (Whirlpool);
//! * Argon2: RFC 9106 §5 (version 0x13 inputs with secret and associated
//!   data), and RustCrypto's `argon2` crate as an independent implementation
//!   of libargon2's output. Python `argon2-cffi` would only wrap the same
//!   libargon2 again, so it is not used.

use std::process::Command;

mod oracle;
use oracle::{bytes, python};
use wrapcrypt_format::hash::HashAlg;
use wrapcrypt_format::kdf::{self, Argon2Variant, KdfError, KdfKind, KdfParams, ParamsError};

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    hex::decode(s).expect("test vector hex")
}

#[test]
fn kdf_hash_names_and_sizes() {
    for h in HashAlg::ALL {
        assert_eq!(HashAlg::from_name(h.name()).unwrap(), h);
        assert_eq!(h.digest(b"").len(), h.digest_len());
    }
    assert_eq!(HashAlg::from_name("SHA256").unwrap(), HashAlg::Sha256);
    let e = HashAlg::from_name("md5").unwrap_err();
    assert_eq!(e.name, "md5");
    assert!(HashAlg::from_name("sha3-256").is_err());
    assert_eq!(HashAlg::Whirlpool.block_len(), 64 * 2);
}

#[test]
fn kdf_hash_abc_vectors() {
    let v = [
        (HashAlg::Sha1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (
            HashAlg::Sha224,
            "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7",
        ),
        (
            HashAlg::Sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            HashAlg::Sha384,
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
             8086072ba1e7cc2358baeca134c825a7",
        ),
        (
            HashAlg::Sha512,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
        (
            HashAlg::Ripemd160,
            "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc",
        ),
        (
            HashAlg::Whirlpool,
            "4e2448a4c6f486bb16b6562c73b4020bf3043e3a731bce721ae1b303d97e6d4c\
             7181eebdb6c57e277d0e34957114cbd6c797fc9d95d8b582d225292076d4eef5",
        ),
    ];
    for (h, want) in v {
        assert_eq!(hex::encode(h.digest(b"abc")), want, "{h}");
    }
}

#[test]
fn kdf_hash_incremental_matches_one_shot_and_python() {
    let data = bytes(1, 1000);
    let mut lines = String::new();
    for h in HashAlg::ALL {
        let mut inc = h.hasher();
        for piece in data.chunks(37) {
            inc.update(piece);
        }
        let mut out = vec![0u8; h.digest_len()];
        inc.finalize_into_reset(&mut out);
        assert_eq!(out, h.digest(&data), "{h}");
        // The reset hasher starts afresh.
        inc.update(b"abc");
        inc.finalize_into(&mut out);
        assert_eq!(out, h.digest(b"abc"), "{h}");
        if h != HashAlg::Whirlpool {
            lines.push_str(&format!("{} {}\n", h.name(), hex::encode(h.digest(&data))));
        }
    }
    let py = python(
        "import sys,hashlib\n\
         data=bytes.fromhex(sys.stdin.readline().strip())\n\
         for line in sys.stdin:\n\
         \x20   n,want=line.split()\n\
         \x20   got=hashlib.new(n,data).hexdigest()\n\
         \x20   print(n, 'ok' if got==want else 'MISMATCH '+got)\n",
        &format!("{}\n{lines}", hex::encode(&data)),
    );
    assert_eq!(py.matches(" ok").count(), 6, "{py}");
    // Whirlpool: OpenSSL's legacy provider.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("data");
    std::fs::write(&f, &data).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-provider", "legacy", "-whirlpool", "-r"])
        .arg(&f)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let got = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        got.split_whitespace().next().unwrap(),
        hex::encode(HashAlg::Whirlpool.digest(&data))
    );
}

fn pbkdf2(hash: HashAlg, p: &[u8], s: &[u8], iterations: u32, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    kdf::derive(&KdfParams::Pbkdf2 { hash, iterations }, p, s, &mut out).unwrap();
    out
}

#[test]
fn kdf_pbkdf2_rfc6070_sha1() {
    // RFC 6070 §2 (the 16777216-iteration case is left out for time).
    let v: [(&[u8], &[u8], u32, &str); 5] = [
        (
            b"password",
            b"salt",
            1,
            "0c60c80f961f0e71f3a9b524af6012062fe037a6",
        ),
        (
            b"password",
            b"salt",
            2,
            "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957",
        ),
        (
            b"password",
            b"salt",
            4096,
            "4b007901b765489abead49d926f721d065a429c1",
        ),
        (
            b"passwordPASSWORDpassword",
            b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
            4096,
            "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038",
        ),
        (
            b"pass\0word",
            b"sa\0lt",
            4096,
            "56fa6aa75548099dcc37d7f03425e0c3",
        ),
    ];
    for (p, s, c, want) in v {
        let want = unhex(want);
        assert_eq!(pbkdf2(HashAlg::Sha1, p, s, c, want.len()), want);
    }
}

#[test]
fn kdf_pbkdf2_rfc7914_sha256() {
    // RFC 7914 §11.
    let want1 = unhex(
        "55 ac 04 6e 56 e3 08 9f ec 16 91 c2 25 44 b6 05 f9 41 85 21 6d de 04 65 e6 8b 9d 57 c2 0d ac bc
         49 ca 9c cc f1 79 b6 45 99 16 64 b3 9d 77 ef 31 7c 71 b8 45 b1 e3 0b d5 09 11 20 41 d3 a1 97 83",
    );
    assert_eq!(pbkdf2(HashAlg::Sha256, b"passwd", b"salt", 1, 64), want1);
    // 80000 iterations and two output blocks: the threaded path.
    let want2 = unhex(
        "4d dc d8 f6 0b 98 be 21 83 0c ee 5e f2 27 01 f9 64 1a 44 18 d0 4c 04 14 ae ff 08 87 6b 34 ab 56
         a1 d4 25 a1 22 58 33 54 9a db 84 1b 51 c9 b3 17 6a 27 2b de bb a1 d0 78 47 8f 62 b3 97 f3 3c 8d",
    );
    assert_eq!(
        pbkdf2(HashAlg::Sha256, b"Password", b"NaCl", 80000, 64),
        want2
    );
}

#[test]
fn kdf_pbkdf2_matches_python_hashlib() {
    // (hash, password len, salt len, iterations, key len): odd lengths,
    // passwords longer than the HMAC block, partial last blocks, and
    // multi-block keys above the threading threshold.
    let cases = [
        (HashAlg::Sha1, 8, 32, 1000, 32),
        (HashAlg::Sha1, 100, 32, 1000, 65),
        (HashAlg::Sha224, 9, 16, 1500, 40),
        (HashAlg::Sha256, 0, 32, 1000, 64),
        (HashAlg::Sha256, 200, 32, 25000, 96),
        (HashAlg::Sha384, 13, 32, 1200, 100),
        (HashAlg::Sha512, 150, 32, 1000, 64),
        (HashAlg::Sha512, 12, 32, 21000, 130),
        (HashAlg::Ripemd160, 10, 32, 1000, 32),
        (HashAlg::Ripemd160, 65, 32, 20000, 64),
    ];
    let mut input = String::new();
    for (i, &(h, pl, sl, c, kl)) in cases.iter().enumerate() {
        let p = bytes(100 + i as u32, pl);
        let s = bytes(200 + i as u32, sl);
        let got = pbkdf2(h, &p, &s, c, kl);
        input.push_str(&format!(
            "{} {} {} {c} {kl} {}\n",
            h.name(),
            if p.is_empty() {
                "-".into()
            } else {
                hex::encode(&p)
            },
            hex::encode(&s),
            hex::encode(&got)
        ));
    }
    let py = python(
        "import sys,hashlib\n\
         for line in sys.stdin:\n\
         \x20   n,p,s,c,kl,want=line.split()\n\
         \x20   p=b'' if p=='-' else bytes.fromhex(p)\n\
         \x20   got=hashlib.pbkdf2_hmac(n,p,bytes.fromhex(s),int(c),int(kl)).hex()\n\
         \x20   print(n, 'ok' if got==want else 'MISMATCH')\n",
        &input,
    );
    assert_eq!(py.matches(" ok").count(), cases.len(), "{py}");
}

#[test]
fn kdf_pbkdf2_whirlpool_matches_openssl() {
    for (c, kl) in [(1000u32, 32usize), (1000, 70), (20000, 130)] {
        let got = pbkdf2(HashAlg::Whirlpool, b"compatkey", b"saltsaltsalt", c, kl);
        let out = Command::new("openssl")
            .args(["kdf", "-provider", "legacy", "-provider", "default"])
            .args(["-keylen", &kl.to_string()])
            .args(["-kdfopt", "digest:whirlpool"])
            .args(["-kdfopt", "pass:compatkey", "-kdfopt", "salt:saltsaltsalt"])
            .args(["-kdfopt", &format!("iter:{c}"), "PBKDF2"])
            .output()
            .expect("openssl");
        assert!(out.status.success());
        let want: String = String::from_utf8(out.stdout)
            .unwrap()
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .collect();
        assert_eq!(hex::encode(got), want.to_lowercase(), "c={c} kl={kl}");
    }
}

const RFC9106_PWD: [u8; 32] = [0x01; 32];
const RFC9106_SALT: [u8; 16] = [0x02; 16];
const RFC9106_SECRET: [u8; 8] = [0x03; 8];
const RFC9106_AD: [u8; 12] = [0x04; 12];

#[test]
fn kdf_argon2_rfc9106_vectors() {
    // RFC 9106 §5.2 (Argon2i) and §5.3 (Argon2id): t=3, m=32 KiB, p=4,
    // version 0x13, 32-byte tag.
    for (variant, want) in [
        (
            Argon2Variant::I,
            "c8 14 d9 d1 dc 7f 37 aa 13 f0 d7 7f 24 94 bd a1 c8 de 6b 01 6d d3 88 d2 99 52 a4 c4 67 2b 6c e8",
        ),
        (
            Argon2Variant::Id,
            "0d 64 0d f5 8d 78 76 6c 08 c0 37 a3 4a 8b 53 c9 d0 1e f0 45 2d 75 b6 5e b5 25 20 e9 6b 01 e6 59",
        ),
    ] {
        let p = KdfParams::Argon2 {
            variant,
            time: 3,
            memory_kib: 32,
            parallel: 4,
        };
        let mut out = [0u8; 32];
        kdf::derive_keyed(
            &p,
            &RFC9106_PWD,
            &RFC9106_SALT,
            &RFC9106_SECRET,
            &RFC9106_AD,
            &mut out,
        )
        .unwrap();
        assert_eq!(out.to_vec(), unhex(want), "{}", variant.name());
    }
}

fn rustcrypto_argon2(
    variant: Argon2Variant,
    t: u32,
    m: u32,
    p: u32,
    pwd: &[u8],
    salt: &[u8],
    len: usize,
) -> Vec<u8> {
    let alg = match variant {
        Argon2Variant::I => argon2::Algorithm::Argon2i,
        Argon2Variant::Id => argon2::Algorithm::Argon2id,
    };
    let params = argon2::Params::new(m, t, p, Some(len)).unwrap();
    let a = argon2::Argon2::new(alg, argon2::Version::V0x13, params);
    let mut out = vec![0u8; len];
    a.hash_password_into(pwd, salt, &mut out).unwrap();
    out
}

#[test]
fn kdf_argon2_matches_rustcrypto() {
    // LUKS-shaped inputs (32-byte salt, 32/64-byte keys), memory sizes that
    // are not multiples of 4·p (libargon2 rounds them down), odd lane counts.
    let cases = [
        (Argon2Variant::Id, 4, 1024, 4, 64, 9),
        (Argon2Variant::Id, 4, 1000, 3, 32, 0),
        (Argon2Variant::I, 4, 2048, 2, 64, 16),
        (Argon2Variant::I, 5, 333, 1, 33, 100),
        (Argon2Variant::Id, 1, 64, 8, 4, 3),
        (Argon2Variant::Id, 4, 16384, 4, 512, 12),
    ];
    for (i, &(v, t, m, p, len, pwl)) in cases.iter().enumerate() {
        let pwd = bytes(300 + i as u32, pwl);
        let salt = bytes(400 + i as u32, 32);
        let mut out = vec![0u8; len];
        let params = KdfParams::Argon2 {
            variant: v,
            time: t,
            memory_kib: m,
            parallel: p,
        };
        kdf::derive(&params, &pwd, &salt, &mut out).unwrap();
        assert_eq!(
            out,
            rustcrypto_argon2(v, t, m, p, &pwd, &salt, len),
            "{params}"
        );
    }
}

#[test]
fn kdf_limits_for_new_keyslots() {
    let a = |time, memory_kib, parallel| KdfParams::Argon2 {
        variant: Argon2Variant::Id,
        time,
        memory_kib,
        parallel,
    };
    assert!(a(4, 32, 1).validate_new().is_ok());
    assert!(a(4, 4 << 20, 4).validate_new().is_ok());
    assert_eq!(
        a(3, 1024, 1).validate_new(),
        Err(ParamsError::Argon2TimeTooLow { time: 3, min: 4 })
    );
    assert_eq!(
        a(4, 31, 1).validate_new(),
        Err(ParamsError::Argon2MemoryTooLow {
            memory_kib: 31,
            min_kib: 32
        })
    );
    assert_eq!(
        a(4, (4 << 20) + 1, 1).validate_new(),
        Err(ParamsError::Argon2MemoryTooHigh {
            memory_kib: (4 << 20) + 1,
            max_kib: 4 << 20
        })
    );
    assert!(matches!(
        a(4, 1024, 0).validate_new(),
        Err(ParamsError::Argon2ParallelOutOfRange { parallel: 0, .. })
    ));
    assert!(matches!(
        a(4, 1024, 5).validate_new(),
        Err(ParamsError::Argon2ParallelOutOfRange { parallel: 5, .. })
    ));
    let p = |iterations| KdfParams::Pbkdf2 {
        hash: HashAlg::Sha256,
        iterations,
    };
    assert!(p(1000).validate_new().is_ok());
    assert_eq!(
        p(999).validate_new(),
        Err(ParamsError::Pbkdf2IterationsTooLow {
            iterations: 999,
            min: 1000
        })
    );
    // Existing headers may be below the creation limits and still unlock.
    assert!(p(1).check_computable().is_ok());
    assert!(a(1, 64, 8).check_computable().is_ok());
    assert!(p(0).check_computable().is_err());
    assert!(a(1, 63, 8).check_computable().is_err());
    assert_eq!(a(4, 1024, 4).type_name(), "argon2id");
    assert_eq!(p(1000).type_name(), "pbkdf2");
}

#[test]
fn kdf_derive_rejects_bad_inputs() {
    let argon = KdfParams::Argon2 {
        variant: Argon2Variant::I,
        time: 4,
        memory_kib: 64,
        parallel: 1,
    };
    let mut out = [0u8; 32];
    assert!(matches!(
        kdf::derive(&argon, b"pw", b"short", &mut out),
        Err(KdfError::SaltTooShort { len: 5, min: 8, .. })
    ));
    assert!(matches!(
        kdf::derive(&argon, b"pw", &[0; 32], &mut out[..3]),
        Err(KdfError::OutputLength { len: 3, .. })
    ));
    let huge = KdfParams::Argon2 {
        variant: Argon2Variant::Id,
        time: 4,
        memory_kib: u32::MAX,
        parallel: 4,
    };
    assert!(matches!(
        kdf::derive(&huge, b"pw", &[0; 32], &mut out),
        Err(KdfError::Params(ParamsError::Argon2MemoryTooHigh { .. }))
    ));
    let pb = KdfParams::Pbkdf2 {
        hash: HashAlg::Sha1,
        iterations: 1000,
    };
    assert!(matches!(
        kdf::derive(&pb, b"pw", b"salt", &mut []),
        Err(KdfError::OutputLength { len: 0, .. })
    ));
    assert!(matches!(
        kdf::derive_keyed(&pb, b"pw", b"salt", b"k", b"", &mut out),
        Err(KdfError::InputTooLong { .. })
    ));
}

#[test]
fn kdf_calibration_on_this_machine() {
    // PBKDF2: the count is rate × target, so one derivation with it costs
    // about the target in CPU time. Bounds are loose: CI shares two cores.
    let p = kdf::calibrate(KdfKind::Pbkdf2(HashAlg::Sha256), 200, 0, 0, 32).unwrap();
    let KdfParams::Pbkdf2 { hash, iterations } = p else {
        panic!("PBKDF2 expected, got {p}");
    };
    assert_eq!(hash, HashAlg::Sha256);
    assert!(iterations >= kdf::PBKDF2_MIN_ITERATIONS);
    assert!(p.validate_new().is_ok());
    let digest_iters = kdf::calibrate_digest_iterations(HashAlg::Sha256, 64).unwrap();
    assert!(digest_iters >= 1000);
    // 125 ms for a two-block key is well below 200 ms for a one-block key.
    assert!(digest_iters < iterations, "{digest_iters} vs {iterations}");

    // Argon2 with an 8 MiB cap: memory never exceeds the cap, limits hold.
    let a = kdf::calibrate(KdfKind::Argon2(Argon2Variant::Id), 150, 8192, 2, 64).unwrap();
    let KdfParams::Argon2 {
        variant,
        time,
        memory_kib,
        parallel,
    } = a
    else {
        panic!("Argon2 expected, got {a}");
    };
    assert_eq!((variant, parallel), (Argon2Variant::Id, 2));
    assert!(memory_kib <= 8192 && time >= 4, "{a}");
    assert!(a.validate_new().is_ok(), "{a}");

    assert!(matches!(
        kdf::calibrate(KdfKind::Pbkdf2(HashAlg::Sha1), 0, 0, 0, 32),
        Err(kdf::CalibrateError::ZeroTarget)
    ));
    assert!((1..=4).contains(&kdf::default_parallel()));
    let m = kdf::default_max_memory_kib();
    assert!(
        (64 * 1024..=kdf::DEFAULT_MAX_MEMORY_KIB).contains(&m),
        "{m}"
    );
}

//! `open --type plain` on real FUSE + loop activations (docs/actions.md):
//! cryptsetup 2.6.1's plain defaults and options give the ciphertext an
//! independent oracle computes. The oracle (Python: hashlib for the
//! passphrase hashing cryptsetup documents, `cryptography` for AES-CBC
//! with ESSIV and AES-XTS) derives the key from the passphrase itself,
//! decrypts what was written through /dev/mapper/NAME, and encrypts data
//! that wrapcrypt must then read back in clear. Needs root, FUSE, loop.

mod common;

use std::process::{Command, Stdio};

use common::*;

struct Close(String);
impl Drop for Close {
    fn drop(&mut self) {
        let _ = WC.cmd(&["close", &self.0]).stderr(Stdio::null()).status();
    }
}

/// The oracle: `derive` (cryptsetup's plain hashing: round i hashes i
/// bytes "A" then the passphrase; `plain` pads; key files are the key),
/// and one sector transform per cipher. Usage:
/// `oracle.py MODE HASH KEYBYTES INPUTFILE CIPHER IMAGE OFFSET SKIP LEN IN OUT`
/// with MODE `pass` / `file`, and direction `dec` (IMAGE → OUT) or `enc`
/// (IN → IMAGE).
const ORACLE: &str = r#"
import hashlib, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
mode, hname, klen, inp, cipher, img, off, skip, length, direction, src, dst = sys.argv[1:]
klen, off, skip, length = int(klen), int(off), int(skip), int(length)
data = open(inp, 'rb').read()
if mode == 'file':
    assert len(data) >= klen
    key = data[:klen]
elif hname == 'plain':
    key = (data + bytes(klen))[:klen]
else:
    key, r = b'', 0
    while len(key) < klen:
        key += hashlib.new(hname, b'A' * r + data).digest()
        r += 1
    key = key[:klen]
def sector(n, buf, enc):
    if cipher == 'aes-cbc-essiv:sha256':
        salt = hashlib.sha256(key).digest()
        iv = Cipher(algorithms.AES(salt), modes.ECB()).encryptor().update(n.to_bytes(16, 'little'))
        c = Cipher(algorithms.AES(key), modes.CBC(iv))
    elif cipher == 'aes-xts-plain64':
        c = Cipher(algorithms.AES(key), modes.XTS(n.to_bytes(16, 'little')))
    else:
        raise SystemExit('oracle: unknown cipher ' + cipher)
    x = c.encryptor() if enc else c.decryptor()
    return x.update(buf) + x.finalize()
with open(img, 'r+b') as f:
    f.seek(off * 512)
    if direction == 'dec':
        ct = f.read(length)
        pt = b''.join(sector(skip + i, ct[i*512:(i+1)*512], False) for i in range(length // 512))
        open(dst, 'wb').write(pt)
    else:
        pt = open(src, 'rb').read()[:length]
        f.write(b''.join(sector(skip + i, pt[i*512:(i+1)*512], True) for i in range(length // 512)))
"#;

struct Oracle<'a> {
    s: &'a Scratch,
    mode: &'a str,
    hash: &'a str,
    key_bytes: usize,
    input: String,
    cipher: &'a str,
    img: &'a str,
    offset: u64,
    skip: u64,
}

impl Oracle<'_> {
    fn run(&self, dir: &str, len: usize, src: &str, dst: &str) {
        let script = self.s.key("oracle.py", ORACLE.as_bytes());
        let o = Command::new("python3")
            .arg(&script)
            .args([
                self.mode,
                self.hash,
                &self.key_bytes.to_string(),
                &self.input,
                self.cipher,
                self.img,
                &self.offset.to_string(),
                &self.skip.to_string(),
                &len.to_string(),
                dir,
                src,
                dst,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "oracle: {o:?}");
    }

    /// What the oracle decrypts from the image.
    fn decrypt(&self, len: usize) -> Vec<u8> {
        let out = self.s.p("oracle.out");
        self.run("dec", len, "-", &out);
        std::fs::read(out).unwrap()
    }

    /// The oracle encrypts `data` into the image.
    fn encrypt(&self, data: &[u8]) {
        let src = self.s.key("oracle.in", data);
        self.run("enc", data.len(), &src, "-");
    }
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn dd(args: &[&str]) {
    let st = Command::new("dd")
        .args(args)
        .arg("status=none")
        .status()
        .unwrap();
    assert!(st.success(), "dd {args:?}");
}

/// Writes `data` at the start of the device, closes nothing.
fn write_dev(s: &Scratch, name: &str, data: &[u8]) {
    let f = s.key("w.bin", data);
    dd(&[
        &format!("if={f}"),
        &format!("of=/dev/mapper/{name}"),
        "bs=64k",
        "oflag=direct",
        "conv=fsync,notrunc",
    ]);
}

fn read_dev(s: &Scratch, name: &str, len: usize) -> Vec<u8> {
    let out = s.p("r.bin");
    dd(&[
        &format!("if=/dev/mapper/{name}"),
        &format!("of={out}"),
        "bs=64k",
        &format!("count={}", len / 65536),
        "iflag=direct",
    ]);
    std::fs::read(out).unwrap()
}

fn blockdev_size(name: &str) -> u64 {
    let o = Command::new("blockdev")
        .args(["--getsize64", &format!("/dev/mapper/{name}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[test]
fn plain_defaults_match_cryptsetup_hashing_and_essiv() {
    let s = Scratch::new();
    let img = s.image("p.img", 8);
    let name = format!("wcplain{}", std::process::id());
    // A passphrase on stdin: read to the newline, which is dropped.
    let o = WC.run_stdin(
        &["open", "--type", "plain", &img, &name],
        Some(b"plain passphrase\n"),
    );
    assert_eq!(o.code, 0, "{o}");
    let _guard = Close(name.clone());
    assert_eq!(blockdev_size(&name), 8 << 20);
    let st = WC.ok(&["status", &name]).stdout;
    for want in [
        "type:    PLAIN",
        "cipher:  aes-cbc-essiv:sha256",
        "keysize: 256 bits",
        "offset:  0 sectors",
        "size:    16384 sectors",
    ] {
        assert!(st.contains(want), "{want:?} in {st}");
    }
    let js: serde_json::Value =
        serde_json::from_str(WC.ok(&["status", "--json", &name]).stdout.trim()).unwrap();
    assert_eq!(js["type"], "PLAIN");
    assert_eq!(js["key-bits"], 256);

    let data = random(1 << 20, 1);
    write_dev(&s, &name, &data);
    WC.ok(&["close", &name]);
    let oracle = Oracle {
        s: &s,
        mode: "pass",
        hash: "ripemd160",
        key_bytes: 32,
        input: s.key("pass.txt", b"plain passphrase"),
        cipher: "aes-cbc-essiv:sha256",
        img: &img,
        offset: 0,
        skip: 0,
    };
    assert!(
        oracle.decrypt(1 << 20) == data,
        "the oracle decrypts what wrapcrypt wrote"
    );
    // And the other way: the oracle's ciphertext reads back in clear.
    let other = random(1 << 20, 2);
    oracle.encrypt(&other);
    let o = WC.run_stdin(
        &["open", "--type", "plain", &img, &name],
        Some(b"plain passphrase\n"),
    );
    assert_eq!(o.code, 0, "{o}");
    assert!(
        read_dev(&s, &name, 1 << 20) == other,
        "wrapcrypt reads the oracle's data"
    );
    WC.ok(&["close", &name]);
    // A wrong passphrase is not detectable in plain mode: it opens and
    // reads something else.
    let o = WC.run_stdin(&["open", "--type", "plain", &img, &name], Some(b"other\n"));
    assert_eq!(o.code, 0, "{o}");
    assert!(read_dev(&s, &name, 1 << 20) != other);
    WC.ok(&["close", &name]);
    assert!(!std::path::Path::new(&format!("/dev/mapper/{name}")).exists());
}

#[test]
fn plain_options_offset_skip_size_hash_cipher_and_key_files() {
    let s = Scratch::new();
    let img = s.image("q.img", 8);
    let name = format!("wcplainq{}", std::process::id());
    // XTS, 512-bit key from sha256 (two rounds), data at sector 64, IV from 1000, 4 MiB.
    let args = [
        "open",
        "--type",
        "plain",
        "--cipher",
        "aes-xts-plain64",
        "--key-size",
        "512",
        "--hash",
        "sha256",
        "--offset",
        "64",
        "--skip",
        "1000",
        "--size",
        "8192",
        &img,
        &name,
    ];
    let o = WC.run_stdin(&args, Some(b"xts pass\n"));
    assert_eq!(o.code, 0, "{o}");
    let guard = Close(name.clone());
    assert_eq!(blockdev_size(&name), 4 << 20);
    let st = WC.ok(&["status", &name]).stdout;
    assert!(st.contains("offset:  64 sectors"), "{st}");
    assert!(st.contains("keysize: 512 bits"), "{st}");
    let data = random(4 << 20, 3);
    write_dev(&s, &name, &data);
    WC.ok(&["close", &name]);
    drop(guard);
    let oracle = Oracle {
        s: &s,
        mode: "pass",
        hash: "sha256",
        key_bytes: 64,
        input: s.key("xts.txt", b"xts pass"),
        cipher: "aes-xts-plain64",
        img: &img,
        offset: 64,
        skip: 1000,
    };
    assert!(oracle.decrypt(4 << 20) == data, "XTS with offset and skip");
    // The bytes before the offset were never written.
    assert!(bytes(&img)[..64 * 512].iter().all(|&b| b == 0));

    // A key file is the key itself (first 32 bytes; --hash ignored, said).
    let kf_bytes = random(100, 4);
    let kf = s.key("bin.key", &kf_bytes);
    let o = WC.run(&[
        "open",
        "--type",
        "plain",
        "--key-file",
        &kf,
        "--hash",
        "sha512",
        &img,
        &name,
    ]);
    assert_eq!(o.code, 0, "{o}");
    assert!(
        o.stderr.contains("--hash parameter is being ignored"),
        "{o}"
    );
    let guard = Close(name.clone());
    let data = random(1 << 20, 5);
    write_dev(&s, &name, &data);
    WC.ok(&["close", &name]);
    drop(guard);
    let kf_oracle = Oracle {
        mode: "file",
        key_bytes: 32,
        input: kf.clone(),
        cipher: "aes-cbc-essiv:sha256",
        offset: 0,
        skip: 0,
        ..oracle
    };
    assert!(kf_oracle.decrypt(1 << 20) == data, "key file as the key");
    // --keyfile-offset picks the key from inside the file.
    let o = WC.run(&[
        "open",
        "--type",
        "plain",
        "--key-file",
        &kf,
        "--keyfile-offset",
        "10",
        &img,
        &name,
    ]);
    assert_eq!(o.code, 0, "{o}");
    let guard = Close(name.clone());
    write_dev(&s, &name, &data);
    WC.ok(&["close", &name]);
    drop(guard);
    let sub = s.key("sub.key", &kf_bytes[10..42]);
    let sub_oracle = Oracle {
        input: sub,
        ..kf_oracle
    };
    assert!(sub_oracle.decrypt(1 << 20) == data, "--keyfile-offset");

    // --key-file - : all of stdin, newline kept, hashed.
    let o = WC.run_stdin(
        &["open", "--type", "plain", "--key-file", "-", &img, &name],
        Some(b"stdin pass\n"),
    );
    assert_eq!(o.code, 0, "{o}");
    let guard = Close(name.clone());
    write_dev(&s, &name, &data);
    WC.ok(&["close", &name]);
    drop(guard);
    let stdin_oracle = Oracle {
        mode: "pass",
        hash: "ripemd160",
        input: s.key("stdin.txt", b"stdin pass\n"),
        ..sub_oracle
    };
    assert!(
        stdin_oracle.decrypt(1 << 20) == data,
        "--key-file - keeps the newline"
    );
}

#[test]
fn plain_bad_input_one_line_exit_code_nothing_active() {
    let s = Scratch::new();
    let img = s.image("b.img", 4);
    let name = format!("wcplainb{}", std::process::id());
    let short = s.key("short.key", &[1u8; 31]);
    let cases: Vec<(Vec<&str>, i32)> = vec![
        (vec!["--key-file", short.as_str()], 1),
        (vec!["--hash", "nohash"], 1),
        (vec!["--cipher", "nocipher-xts-plain64"], 1),
        (vec!["--offset", "8192"], 1),
        (vec!["--key-size", "250"], 1),
        (vec!["--size", "7", "--sector-size", "4096"], 1),
        (vec!["--size", "8", "--device-size", "4096"], 1),
    ];
    for (extra, code) in cases {
        let mut args = vec!["open", "--type", "plain"];
        args.extend(&extra);
        args.extend([img.as_str(), name.as_str()]);
        let o = WC.run_stdin(&args, Some(b"pass\n"));
        assert_eq!(o.code, code, "{extra:?}: {o}");
        assert_eq!(o.stderr.trim().lines().count(), 1, "{extra:?}: {o}");
        assert!(!std::path::Path::new(&format!("/dev/mapper/{name}")).exists());
    }
    // A device that does not exist: 4. A name in use: 5.
    let o = WC.run_stdin(
        &["open", "--type", "plain", &s.p("none.img"), &name],
        Some(b"pass\n"),
    );
    assert_eq!(o.code, 4, "{o}");
    WC.run_stdin(&["open", "--type", "plain", &img, &name], Some(b"pass\n"));
    let _guard = Close(name.clone());
    let img2 = s.image("b2.img", 4);
    let o = WC.run_stdin(&["open", "--type", "plain", &img2, &name], Some(b"pass\n"));
    assert_eq!(o.code, 5, "{o}");
    // Plain options on a LUKS open are refused.
    let o = WC.run(&["open", &img2, "x", "--skip", "1"]);
    assert_eq!(o.code, 1, "{o}");
    // The image was never written.
    assert!(bytes(&img2).iter().all(|&b| b == 0));
}

#[test]
fn plain_resize_fills_the_device_after_the_offset() {
    let s = Scratch::new();
    let img = s.image("z.img", 8);
    let name = format!("wcplainz{}", std::process::id());
    // cryptsetup's old spelling, plainOpen.
    let args = ["plainOpen", "--offset", "64", "--size", "4096", &img, &name];
    let o = WC.run_stdin(&args, Some(b"zz\n"));
    assert_eq!(o.code, 0, "{o}");
    let _guard = Close(name.clone());
    assert_eq!(blockdev_size(&name), 2 << 20);
    let data = random(2 << 20, 9);
    write_dev(&s, &name, &data);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    // cryptsetup: "for plain crypt device, the whole device size is used"
    // (after the offset).
    WC.ok(&["resize", &name]);
    assert_eq!(blockdev_size(&name), (16 << 20) - 64 * 512);
    let st = WC.ok(&["status", &name]).stdout;
    assert!(
        st.contains(&format!("size:    {} sectors", (16 << 20) / 512 - 64)),
        "{st}"
    );
    assert!(read_dev(&s, &name, 2 << 20) == data);
}

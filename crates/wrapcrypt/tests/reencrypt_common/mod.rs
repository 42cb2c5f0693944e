//! Helpers of the reencryption tests: seeded images whose data is checked
//! by an independent AES-XTS (Python `cryptography`), cryptsetup's and
//! wrapcrypt's init and resume, masked header comparisons.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// Data offset of cryptsetup's default LUKS2 layout.
pub const DATA_OFFSET: u64 = 16 << 20;

/// AES-XTS over whole sectors, tweak = byte offset / 512 (dm-crypt's
/// plain64 for LUKS2). `enc IMG OFF SS PLAINFILE` writes the plaintext
/// encrypted; `dec IMG OFF SS` prints the SHA-256 of the decrypted data to
/// the end of the image. The key (hex) comes on stdin, never in argv.
pub const XTS_PY: &str = r#"
import sys, hashlib
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
op, img, off, ss = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
key = bytes.fromhex(sys.stdin.readline().strip())
def run(data, enc):
    out = bytearray()
    for i in range(0, len(data), ss):
        c = Cipher(algorithms.AES(key), modes.XTS((i // 512).to_bytes(16, 'little')))
        x = c.encryptor() if enc else c.decryptor()
        out += x.update(data[i:i + ss]) + x.finalize()
    return bytes(out)
if op == 'enc':
    data = open(sys.argv[5], 'rb').read()
    with open(img, 'r+b') as f:
        f.seek(off); f.write(run(data, True))
else:
    with open(img, 'rb') as f:
        f.seek(off); data = f.read()
    print(hashlib.sha256(run(data, False)).hexdigest())
"#;

pub fn xts(args: &[&str], key_hex: &str) -> String {
    let mut c = Command::new("python3");
    c.arg("-c").arg(XTS_PY).args(args);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("python3 runs");
    {
        use std::io::Write;
        let mut si = child.stdin.take().expect("stdin");
        writeln!(si, "{key_hex}").expect("key to python");
    }
    let o = child.wait_with_output().expect("python3");
    assert!(
        o.status.success(),
        "python3 xts {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub fn sha256_file(path: &str) -> String {
    let o = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&o.stdout)[..64].to_string()
}

/// A file `name` in `s` of `bytes` random bytes: (path, its SHA-256).
pub fn random_file(s: &Scratch, name: &str, bytes: u64) -> (String, String) {
    let p = s.p(name);
    let st = Command::new("head")
        .args(["-c", &bytes.to_string(), "/dev/urandom"])
        .stdout(std::fs::File::create(&p).expect("random file"))
        .status()
        .expect("head");
    assert!(st.success());
    let h = sha256_file(&p);
    (p, h)
}

/// A cryptsetup-formatted image of `mib` MiB (data from 16 MiB on) whose
/// data area holds random plaintext encrypted under its volume key.
/// Returns (image, key file, SHA-256 of the plaintext).
pub fn seeded(s: &Scratch, name: &str, mib: u64, sector: &str) -> (String, String, String) {
    let kf = s.key("pw", b"reencrypt test passphrase");
    let img = s.image(name, mib);
    let mut o = FAST.to_vec();
    o.extend(["--sector-size", sector]);
    format(CS, &img, &kf, &o);
    let (plain, _) = random_file(s, "plain.bin", (mib << 20) - DATA_OFFSET);
    let key = volume_key(CS, &img, &kf, &[]);
    xts(
        &["enc", &img, &DATA_OFFSET.to_string(), sector, &plain],
        &key,
    );
    let h = sha256_file(&plain);
    assert_eq!(data_hash(&img, &kf, sector), h, "seeded data decrypts");
    (img, kf, h)
}

/// SHA-256 of the data decrypted under the key cryptsetup dumps.
pub fn data_hash(img: &str, kf: &str, sector: &str) -> String {
    let key = volume_key(CS, img, kf, &[]);
    xts(&["dec", img, &DATA_OFFSET.to_string(), sector], &key)
}

pub fn json(img: &str) -> serde_json::Value {
    let o = CS.ok(&["luksDump", "--dump-json-metadata", img]);
    serde_json::from_str(&o.stdout).expect("JSON")
}

/// The header is a plain LUKS2 header again: one segment, no reencrypt
/// keyslot, no requirement; both tools open it; the key changed.
pub fn assert_finished(img: &str, kf: &str, old_key: &str) {
    let j = json(img);
    assert_eq!(j["segments"].as_object().unwrap().len(), 1, "{j}");
    assert!(j["config"].get("requirements").is_none(), "{j}");
    for (_, k) in j["keyslots"].as_object().unwrap() {
        assert_eq!(k["type"], "luks2", "{j}");
    }
    assert_eq!(test_pass(CS, img, kf, &[]), 0, "cryptsetup opens");
    assert_eq!(test_pass(WC, img, kf, &[]), 0, "wrapcrypt opens");
    assert_ne!(volume_key(CS, img, kf, &[]), old_key, "key changed");
    assert_eq!(
        volume_key(WC, img, kf, &[]),
        volume_key(CS, img, kf, &[]),
        "both tools see the same new key"
    );
}

pub fn seqid(img: &str) -> u64 {
    let mut b = [0u8; 24];
    std::fs::File::open(img)
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read header");
    u64::from_be_bytes(b[16..24].try_into().unwrap())
}

/// Runs cryptsetup ARGS and stops it with SIGINT once it has written
/// `steps` more headers (it finishes the hotzone, records it and exits).
pub fn interrupt(args: &[&str], img: &str, steps: u64) {
    let mut c = Command::new("cryptsetup");
    c.args(args);
    interrupt_cmd(c, img, steps);
}

/// Runs `cmd` (a reencryption by either tool) and stops it with SIGINT
/// once `img`'s header has been written `steps` more times; it must then
/// end unsuccessfully ("interrupted").
pub fn interrupt_cmd(mut cmd: Command, img: &str, steps: u64) {
    let start = seqid(img);
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("reencryption runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    while seqid(img) < start + steps {
        assert!(child.try_wait().expect("wait").is_none(), "ended too early");
        assert!(Instant::now() < deadline, "no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let out = child.wait_with_output().expect("wait");
    assert!(
        !out.status.success(),
        "the reencryption was not interrupted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn cs_init(img: &str, kf: &str, extra: &[&str]) {
    let mut a = vec![
        "reencrypt",
        "-q",
        "--force-offline-reencrypt",
        "--init-only",
        "-d",
        kf,
    ];
    a.extend_from_slice(FAST);
    a.extend_from_slice(extra);
    a.push(img);
    CS.ok(&a);
}

pub fn wc_resume(img: &str, kf: &str, extra: &[&str]) -> Out {
    let mut a = vec!["reencrypt", "--resume-only", "-d", kf];
    a.extend_from_slice(extra);
    a.push(img);
    WC.run(&a)
}

/// Parsed JSON metadata with the random members (salts, digests) masked.
pub fn masked_json(img: &str) -> serde_json::Value {
    let mut j = json(img);
    for d in j["digests"].as_object_mut().unwrap().values_mut() {
        d["salt"] = "*".into();
        d["digest"] = "*".into();
    }
    for k in j["keyslots"].as_object_mut().unwrap().values_mut() {
        if k.get("kdf").is_some() {
            k["kdf"]["salt"] = "*".into();
        }
    }
    j
}

/// luksDump text without UUID, salts and digests.
pub fn masked_dump(img: &str) -> String {
    let o = CS.ok(&["luksDump", img]);
    let mut out = String::new();
    let mut skip_hex = false;
    for line in o.stdout.lines() {
        let t = line.trim_start();
        let hex_cont = !t.is_empty()
            && t.split_whitespace()
                .all(|w| w.len() == 2 && w.bytes().all(|b| b.is_ascii_hexdigit()));
        if skip_hex && hex_cont {
            continue;
        }
        skip_hex = false;
        if let Some(k) = ["UUID:", "Salt:", "Digest:"]
            .iter()
            .find(|k| t.starts_with(**k))
        {
            out.push_str(&format!("{k} *\n"));
            skip_hex = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub fn wc_init(img: &str, kf: &str, extra: &[&str]) -> Out {
    let mut a = vec!["reencrypt", "--init-only", "-d", kf];
    a.extend_from_slice(FAST);
    a.extend_from_slice(extra);
    a.push(img);
    WC.run(&a)
}

/// Both header copies of `img` (16 KiB metadata) flag a hotzone, with the
/// same seqid.
pub fn hot_on_disk(img: &str) -> bool {
    let mut b = vec![0u8; 0x8000];
    if std::fs::File::open(img)
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        return false;
    }
    let has = |r: &[u8]| r.windows(15).any(|w| w == b"in-reencryption");
    has(&b[..0x4000]) && has(&b[0x4000..]) && b[16..24] == b[0x4000 + 16..0x4000 + 24]
}

/// Runs cryptsetup ARGS and kills it (SIGKILL) while a hotzone is being
/// rewritten (stopped first, so the state is seen whole): the state a power
/// cut leaves.
pub fn kill_mid_hotzone(args: &[&str], img: &str) {
    let mut child = Command::new("cryptsetup")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cryptsetup runs");
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    let signal = |sig| assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill");
    let stopped = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('T')))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(child.try_wait().expect("wait").is_none(), "ended too early");
        assert!(Instant::now() < deadline, "no progress");
        if hot_on_disk(img) {
            signal(libc::SIGSTOP);
            while !stopped() {
                std::thread::sleep(Duration::from_micros(100));
            }
            if hot_on_disk(img) {
                break;
            }
            signal(libc::SIGCONT);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    signal(libc::SIGKILL);
    child.wait().expect("wait");
}

/// Runs a shell script.
pub fn sh(script: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(script).output().unwrap()
}

/// Runs a shell script that must succeed; its stdout.
pub fn sh_ok(script: &str) -> String {
    let o = sh(script);
    assert!(
        o.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An activation (and its mount point) unmounted and closed on drop,
/// whatever the test did.
pub struct Active {
    pub name: String,
    pub mnt: String,
}

impl Drop for Active {
    fn drop(&mut self) {
        let quiet = |mut c: Command| {
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        let mut u = Command::new("umount");
        u.arg(&self.mnt);
        quiet(u);
        quiet(WC.cmd(&["close", &self.name]));
    }
}

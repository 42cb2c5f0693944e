//! `reencrypt --encrypt --reduce-device-size R` (the header at the start
//! of the device, the data shifted by R/2, cryptsetup's `datashift`
//! resilience, backward direction) against cryptsetup 2.6.1: the header
//! wrapcrypt's init writes equals cryptsetup's (luksDump text and JSON,
//! random members masked) and so do the bytes it moves; each tool
//! finishes the other's init and interrupted or killed run; a wrapcrypt
//! run killed before any of its writes is finished by either tool; bad
//! input gets cryptsetup's message and exit code and changes nothing.
//! After every run the data at the new offset decrypts (Python
//! `cryptography` AES-XTS under the key `luksDump --dump-volume-key`
//! prints) to the first `size - R` bytes of the original plaintext.

mod common;
mod reencrypt_common;

use std::process::{Command, Stdio};

use common::*;
use reencrypt_common::*;

const MIB: u64 = 1 << 20;

/// SHA-256 of `n` bytes at `off` of IMG decrypted with AES-XTS (tweak =
/// byte offset from `off` / 512, sectors of SS bytes); the key on stdin.
const DEC_N: &str = r#"
import sys, hashlib
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
img, off, ss, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
key = bytes.fromhex(sys.stdin.readline().strip())
with open(img, 'rb') as f:
    f.seek(off); data = f.read(n)
out = bytearray()
for i in range(0, len(data), ss):
    d = Cipher(algorithms.AES(key), modes.XTS((i // 512).to_bytes(16, 'little'))).decryptor()
    out += d.update(data[i:i + ss]) + d.finalize()
print(hashlib.sha256(out).hexdigest())
"#;

fn dec_n(img: &str, off: u64, ss: u64, n: u64, key: &str) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(DEC_N)
        .args([img, &off.to_string(), &ss.to_string(), &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write;
        let mut si = child.stdin.take().expect("stdin");
        writeln!(si, "{key}").expect("key to python");
    }
    let o = child.wait_with_output().expect("python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// A plaintext image of `size` random bytes.
struct Plain {
    path: String,
    bytes: Vec<u8>,
}

fn plaintext(s: &Scratch, name: &str, size: u64) -> Plain {
    let (path, _) = random_file(s, name, size);
    let bytes = std::fs::read(&path).expect("plaintext");
    Plain { path, bytes }
}

impl Plain {
    /// SHA-256 of the plaintext an encryption with `reduce` keeps.
    fn kept(&self, reduce: u64) -> String {
        sha256(&self.bytes[..self.bytes.len() - reduce as usize])
    }
}

fn encrypt_args<'a>(tool: Tool, reduce: &'a str, kf: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "reencrypt",
        "--encrypt",
        "--reduce-device-size",
        reduce,
        "-q",
        "-d",
        kf,
    ];
    if tool == CS {
        a.push("--force-offline-reencrypt");
    }
    a.extend_from_slice(FAST);
    a.extend_from_slice(extra);
    a
}

/// Finished: one crypt segment at R/2, no requirement, both tools open it
/// with the same key, its first `size - R` bytes decrypt to the kept
/// plaintext, and the plaintext copy of the head at the end is gone.
fn assert_encrypted(img: &str, kf: &str, plain: &Plain, reduce: u64) {
    let j = json(img);
    let segs = j["segments"].as_object().unwrap();
    assert_eq!(segs.len(), 1, "{j}");
    assert_eq!(j["segments"]["0"]["type"], "crypt", "{j}");
    assert_eq!(
        j["segments"]["0"]["offset"],
        (reduce / 2).to_string(),
        "{j}"
    );
    assert_eq!(j["segments"]["0"]["size"], "dynamic", "{j}");
    assert!(j["config"].get("requirements").is_none(), "{j}");
    assert_eq!(j["keyslots"].as_object().unwrap().len(), 1, "{j}");
    for t in BOTH {
        assert_eq!(test_pass(t, img, kf, &[]), 0, "{t:?} opens");
    }
    let key = volume_key(CS, img, kf, &[]);
    assert_eq!(volume_key(WC, img, kf, &[]), key, "same key for both");
    let n = plain.bytes.len() as u64 - reduce;
    let ss: u64 = j["segments"]["0"]["sector_size"].as_u64().unwrap();
    if j["segments"]["0"]["encryption"] == "aes-xts-plain64" {
        assert_eq!(
            dec_n(img, reduce / 2, ss, n, &key),
            plain.kept(reduce),
            "data decrypts to the plaintext"
        );
    }
    let now = std::fs::read(img).unwrap();
    let s = (reduce / 2) as usize;
    let tail = &now[now.len() - s..];
    assert_ne!(tail, &plain.bytes[..s], "the copy of the head was wiped");
}

/// The seqid of `img`'s primary header, 0 while it holds no LUKS2
/// header (the plaintext before the init lands).
fn epoch(img: &str) -> u64 {
    use std::io::Read;
    let mut b = [0u8; 24];
    if std::fs::File::open(img)
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
        || &b[..6] != b"LUKS\xba\xbe"
    {
        return 0;
    }
    u64::from_be_bytes(b[16..24].try_into().unwrap())
}

/// Runs `cmd` (an encryption of `img` by either tool) and stops it with
/// SIGINT once the header has reached `at`; it must end "interrupted".
fn interrupt_at(mut cmd: Command, img: &str, at: u64) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("encryption runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while epoch(img) < at {
        assert!(child.try_wait().expect("wait").is_none(), "ended too early");
        assert!(std::time::Instant::now() < deadline, "no progress");
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    // Frozen first, so the run cannot finish before SIGINT is pending.
    let pid = child.id() as libc::pid_t;
    for sig in [libc::SIGSTOP, libc::SIGINT, libc::SIGCONT] {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        !out.status.success(),
        "not interrupted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wc_resume_ok(img: &str, kf: &str) {
    let o = wc_resume(img, kf, &[]);
    assert_eq!(o.code, 0, "wrapcrypt resume: {o}");
}

fn cs_resume_ok(img: &str, kf: &str) {
    CS.ok(&[
        "reencrypt",
        "--resume-only",
        "-q",
        "--force-offline-reencrypt",
        "-d",
        kf,
        img,
    ]);
}

const OPTION_SETS: &[(&str, &[&str])] = &[
    ("4M", &[]),
    (
        "4M",
        &[
            "--sector-size",
            "4096",
            "--uuid",
            "12345678-1234-1234-1234-123456789abc",
            "--label",
            "shift-label",
            "--subsystem",
            "shift-sub",
        ],
    ),
    ("1M", &["--key-size", "256", "--resilience", "journal"]),
    (
        "3M",
        &["--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"],
    ),
    ("576K", &["--resilience", "datashift"]),
];

fn size_of(r: &str) -> u64 {
    let (n, unit) = r.split_at(r.len() - 1);
    n.parse::<u64>().unwrap() * if unit == "M" { MIB } else { 1024 }
}

/// For each option set both tools init copies of the same plaintext: the
/// headers agree (masked luksDump text and JSON, epoch included) and the
/// images agree beyond the header (the head copied to the end, the rest
/// untouched); then each tool finishes the other's init, and both
/// results decrypt to the kept plaintext with the same final header.
#[test]
fn datashift_init_equals_cryptsetups_and_each_finishes_the_other() {
    let s = Scratch::new();
    let kf = s.key("pw", b"datashift passphrase");
    let plain = plaintext(&s, "base.img", 20 * MIB);
    for (i, (reduce, extra)) in OPTION_SETS.iter().enumerate() {
        let r = size_of(reduce);
        let mut imgs = Vec::new();
        for t in BOTH {
            let img = s.copy(&plain.path, &format!("{i}-{t:?}.img"));
            let mut a = encrypt_args(t, reduce, &kf, extra);
            a.push("--init-only");
            a.push(&img);
            let o = t.ok(&a);
            if t == WC && r / 2 < 4 * MIB {
                assert!(o.stdout.contains("keyslots area"), "warning: {o}");
            }
            imgs.push(img);
        }
        let (w, c) = (&imgs[0], &imgs[1]);
        assert_eq!(
            masked_dump(w),
            masked_dump(c),
            "luksDump, {reduce} {extra:?}"
        );
        assert_eq!(masked_json(w), masked_json(c), "JSON, {reduce} {extra:?}");
        assert_eq!(
            WC.run(&["luksDump", w]).stdout,
            CS.ok(&["luksDump", w]).stdout,
            "wrapcrypt's luksDump of its init"
        );
        assert_eq!(
            WC.run(&["luksDump", c]).stdout,
            CS.ok(&["luksDump", c]).stdout,
            "wrapcrypt's luksDump of cryptsetup's init"
        );
        let (wb, cb) = (bytes(w), bytes(c));
        let sh = (r / 2) as usize;
        assert!(wb[sh..] == cb[sh..], "same bytes beyond the header");
        let end = wb.len();
        assert!(
            wb[end - sh..] == plain.bytes[..sh],
            "head copied to the end"
        );
        assert!(
            wb[sh..end - 2 * sh] == plain.bytes[sh..end - 2 * sh],
            "the rest of the kept data untouched"
        );
        // Each finishes the other's init.
        cs_resume_ok(w, &kf);
        wc_resume_ok(c, &kf);
        for img in [w, c] {
            assert_encrypted(img, &kf, &plain, r);
        }
        assert_eq!(
            masked_json(w),
            masked_json(c),
            "final JSON, {reduce} {extra:?}"
        );
    }
    println!("{} option sets compared", OPTION_SETS.len());
}

/// A whole wrapcrypt run opens with both tools and decrypts right; also
/// with less data than one shift (the moved head is all of it).
#[test]
fn datashift_whole_run() {
    let s = Scratch::new();
    let kf = s.key("pw", b"datashift passphrase");
    for (i, (size, reduce)) in [(20 * MIB, "4M"), (8 * MIB, "1M"), (5 * MIB, "4M")]
        .iter()
        .enumerate()
    {
        let plain = plaintext(&s, &format!("p{i}.img"), *size);
        let img = s.copy(&plain.path, &format!("{i}.img"));
        let mut a = encrypt_args(WC, reduce, &kf, &[]);
        a.push(&img);
        WC.ok(&a);
        assert_encrypted(&img, &kf, &plain, size_of(reduce));
        // cryptsetup does the same on a copy: the same final header.
        let cimg = s.copy(&plain.path, &format!("{i}-cs.img"));
        let mut a = encrypt_args(CS, reduce, &kf, &[]);
        a.push(&cimg);
        CS.ok(&a);
        assert_encrypted(&cimg, &kf, &plain, size_of(reduce));
        let (mut wj, mut cj) = (masked_json(&img), masked_json(&cimg));
        // cryptsetup writes one header more (its post state after the
        // last hotzone); the UUIDs differ.
        for j in [&mut wj, &mut cj] {
            j["keyslots"]["0"]["kdf"]["salt"] = "*".into();
        }
        assert_eq!(wj, cj, "final JSON");
    }
}

/// cryptsetup stopped by SIGINT after some headers, or killed inside a
/// hotzone (both header copies flag it): luksDump of both tools agree,
/// wrapcrypt finishes.
#[test]
fn cryptsetup_interrupted_or_killed_finished_by_wrapcrypt() {
    let s = Scratch::new();
    let kf = s.key("pw", b"datashift passphrase");
    let plain = plaintext(&s, "base.img", 32 * MIB);
    for steps in [1, 4, 9] {
        let img = s.copy(&plain.path, &format!("int{steps}.img"));
        let mut a = encrypt_args(CS, "2M", &kf, &[]);
        a.push(&img);
        interrupt_at(CS.cmd(&a), &img, 4 + steps);
        assert_eq!(
            WC.run(&["luksDump", &img]).stdout,
            CS.ok(&["luksDump", &img]).stdout,
            "luksDump after SIGINT at {steps}"
        );
        wc_resume_ok(&img, &kf);
        assert_encrypted(&img, &kf, &plain, 2 * MIB);
    }
    let img = s.copy(&plain.path, "killed.img");
    let mut a = encrypt_args(CS, "2M", &kf, &[]);
    a.push(&img);
    kill_mid_hotzone(&a, &img);
    assert!(hot_on_disk(&img), "a hotzone was cut");
    assert_eq!(
        WC.run(&["luksDump", &img]).stdout,
        CS.ok(&["luksDump", &img]).stdout,
        "luksDump after the kill"
    );
    wc_resume_ok(&img, &kf);
    assert_encrypted(&img, &kf, &plain, 2 * MIB);
}

/// wrapcrypt stopped by SIGINT ("Reencryption interrupted.", exit 1, the
/// hotzone in flight finished): cryptsetup's --resume-only finishes.
#[test]
fn wrapcrypt_interrupted_finished_by_cryptsetup() {
    let s = Scratch::new();
    let kf = s.key("pw", b"datashift passphrase");
    let plain = plaintext(&s, "base.img", 32 * MIB);
    for steps in [2, 7] {
        let img = s.copy(&plain.path, &format!("int{steps}.img"));
        let mut a = encrypt_args(WC, "2M", &kf, &[]);
        a.push(&img);
        interrupt_at(WC.cmd(&a), &img, 4 + steps);
        assert!(!hot_on_disk(&img), "no hotzone cut off");
        assert_eq!(
            WC.run(&["luksDump", &img]).stdout,
            CS.ok(&["luksDump", &img]).stdout,
            "luksDump after SIGINT"
        );
        cs_resume_ok(&img, &kf);
        assert_encrypted(&img, &kf, &plain, 2 * MIB);
    }
}

/// Bad input: one line, cryptsetup's first line and exit code, and the
/// image unchanged (hashed before and after), for both tools.
#[test]
fn datashift_bad_input_refused_nothing_changed() {
    let s = Scratch::new();
    let kf = s.key("pw", b"datashift passphrase");
    let plain = plaintext(&s, "base.img", 8 * MIB);
    let cases: &[(&[&str], &str)] = &[
        (&[], "Encryption without detached header"),
        (
            &["--reduce-device-size", "4097"],
            "Reduce size must be multiple of 512",
        ),
        (
            &["--reduce-device-size", "601K"],
            "Data offset is not multiple of 4096 bytes.",
        ),
        (
            &["--reduce-device-size", "64K"],
            "No space for new keyslot.",
        ),
        (
            &["--reduce-device-size", "560K"],
            "No space for new keyslot.",
        ),
        (&["--reduce-device-size", "16M"], "is too small."),
        (
            &["--reduce-device-size", "8M"],
            "Failed to initialize LUKS2 reencryption",
        ),
    ];
    for (extra, msg) in cases {
        let mut codes = Vec::new();
        for t in BOTH {
            let img = s.copy(&plain.path, &format!("{t:?}.img"));
            let mut a = vec!["reencrypt", "--encrypt", "-q", "-d", &kf];
            if t == CS {
                a.push("--force-offline-reencrypt");
            }
            a.extend_from_slice(FAST);
            a.extend_from_slice(extra);
            a.push(&img);
            let o = t.run(&a);
            assert_eq!(
                sha256_file(&img),
                sha256(&plain.bytes),
                "{t:?} {extra:?} changed the image"
            );
            if t == WC {
                let lines: Vec<&str> = o.stderr.lines().collect();
                assert_eq!(lines.len(), 1, "one line: {o}");
                assert!(lines[0].contains(msg), "{extra:?}: {o}");
            } else {
                assert!(o.stderr.contains(msg), "cryptsetup {extra:?}: {o}");
            }
            codes.push(o.code);
        }
        assert_eq!(codes[0], codes[1], "exit codes {extra:?}");
        assert_ne!(codes[0], 0);
    }
    // An unknown resilience: cryptsetup 2.6.1 takes any name with a data
    // shift (and writes `datashift`); wrapcrypt refuses it before writing.
    let img = s.copy(&plain.path, "foo.img");
    let mut a = encrypt_args(WC, "1M", &kf, &["--resilience", "foo"]);
    a.push(&img);
    let o = WC.run(&a);
    assert_eq!(
        (o.code, o.stderr.trim()),
        (1, "Unsupported resilience mode foo"),
        "{o}"
    );
    assert_eq!(sha256_file(&img), sha256(&plain.bytes));
    // A LUKS device is refused.
    let img = s.copy(&plain.path, "luks.img");
    format(CS, &img, &kf, FAST);
    let before = sha256_file(&img);
    let mut a = encrypt_args(WC, "4M", &kf, &[]);
    a.push(&img);
    let o = WC.run(&a);
    assert_eq!(o.code, 1, "{o}");
    assert!(o.stderr.contains("already LUKS"), "{o}");
    assert_eq!(sha256_file(&img), before);
    println!("{} bad inputs refused", cases.len() + 2);
}

/// Whether the plaintext copy of the head at the end of `img` is gone.
fn tail_wiped(img: &str, plain: &Plain, reduce: u64) -> bool {
    let now = std::fs::read(img).unwrap();
    let s = (reduce / 2) as usize;
    now[now.len() - s..] != plain.bytes[..s]
}

/// A wrapcrypt encryption of `img` whose temporary header goes to `tmp`,
/// killed before its `k`-th write (torn: the write lands in part first).
fn wc_encrypt_faulted(img: &str, kf: &str, tmp: &str, k: Option<u64>, torn: bool) -> Out {
    std::fs::create_dir_all(tmp).unwrap();
    let mut a = encrypt_args(WC, "1M", kf, &[]);
    a.push(img);
    let mut c = WC.cmd(&a);
    c.env("TMPDIR", tmp);
    if let Some(k) = k {
        c.env("WRAPCRYPT_FAULT_AT", k.to_string());
        if torn {
            c.env("WRAPCRYPT_FAULT_TORN", "1");
        }
    }
    run_cmd(&mut c, None, WC)
}

/// Kills wrapcrypt's whole `--encrypt --reduce-device-size 1M` run of a
/// 4 MiB device (6 hotzones of 512 KiB) before each of its writes (torn:
/// in the middle of it), then checks and finishes what is left: before
/// the header lands on the device the kept plaintext is untouched and the
/// init runs again; after it luksDump of both tools agree and wrapcrypt
/// (2 of 3) or cryptsetup (1 of 3; `repair` first where a hotzone was
/// cut) finishes; every case ends with data that decrypts to the kept
/// plaintext.
fn killed_at_every_write(torn: bool) {
    let s = Scratch::new();
    let kf = s.key("pw", b"datashift crash passphrase");
    let plain = plaintext(&s, "base.img", 4 * MIB);
    let r = MIB;
    let kept = plain.bytes.len() - r as usize;
    let count = s.p("count");
    {
        let img = s.copy(&plain.path, "count.img");
        let mut a = encrypt_args(WC, "1M", &kf, &[]);
        a.push(&img);
        let mut c = WC.cmd(&a);
        c.env("WRAPCRYPT_FAULT_COUNT", &count)
            .env("TMPDIR", s.p("tmp-count"));
        std::fs::create_dir_all(s.p("tmp-count")).unwrap();
        let o = run_cmd(&mut c, None, WC);
        assert_eq!(o.code, 0, "{o}");
    }
    let total = std::fs::read_to_string(&count).unwrap().lines().count() as u64;
    let (mut points, mut before_header, mut by_cs, mut unwiped, mut manual) = (0, 0, 0, 0, 0);
    for k in 1..=total + 1 {
        let img = s.copy(&plain.path, &format!("k{k}.img"));
        let tmp = s.p(&format!("tmp{k}"));
        let o = wc_encrypt_faulted(&img, &kf, &tmp, Some(k), torn);
        if o.signal.is_none() {
            assert_eq!(o.code, 0, "run past the last write point: {o}");
            assert_eq!(k, total + 1);
            assert_encrypted(&img, &kf, &plain, r);
            break;
        }
        assert_eq!(o.signal, Some(libc::SIGKILL), "kill point {k}: {o}");
        points += 1;
        let now = bytes(&img);
        if epoch(&img) == 0 {
            // No header on the device yet: the kept plaintext is untouched
            // (only the sacrificed tail may hold the copy of the head).
            assert!(
                now[..kept] == plain.bytes[..kept],
                "kill point {k}: data untouched"
            );
            before_header += 1;
            let o = wc_encrypt_faulted(&img, &kf, &s.p(&format!("tmp{k}-again")), None, false);
            assert_eq!(o.code, 0, "init again after kill point {k}: {o}");
            assert_encrypted(&img, &kf, &plain, r);
            continue;
        }
        let cd = CS.run(&["luksDump", &img]);
        assert_eq!(
            cd.code, 0,
            "kill point {k}: cryptsetup reads the header: {cd}"
        );
        assert_eq!(
            WC.run(&["luksDump", &img]).stdout,
            cd.stdout,
            "luksDump, kill point {k}"
        );
        let unlocks = test_pass(CS, &img, &kf, &[]) == 0;
        if !unlocks {
            // Only a torn header restore: the header landed in part over
            // the old head, whose copy is whole at the end; recovered by
            // copying it back, then the init runs again.
            assert!(torn, "kill point {k}: no keyslot opens");
            let sh = (r / 2) as usize;
            let end = now.len();
            assert!(
                now[end - sh..] == plain.bytes[..sh],
                "kill point {k}: head copy whole"
            );
            assert!(
                now[sh..kept] == plain.bytes[sh..kept],
                "kill point {k}: rest untouched"
            );
            let mut fixed = now.clone();
            fixed[..sh].copy_from_slice(&now[end - sh..]);
            std::fs::write(&img, &fixed).unwrap();
            manual += 1;
            let o = wc_encrypt_faulted(&img, &kf, &s.p(&format!("tmp{k}-again")), None, false);
            assert_eq!(o.code, 0, "init again after kill point {k}: {o}");
            assert_encrypted(&img, &kf, &plain, r);
            continue;
        }
        let in_reencryption = json(&img)["config"].get("requirements").is_some();
        if in_reencryption {
            if k % 3 == 0 {
                if hot_on_disk(&img) {
                    CS.ok(&["repair", "-q", "-d", &kf, &img]);
                }
                if json(&img)["config"].get("requirements").is_some() {
                    cs_resume_ok(&img, &kf);
                }
                by_cs += 1;
            } else {
                wc_resume_ok(&img, &kf);
            }
        } else if !tail_wiped(&img, &plain, r) {
            // Killed after the final header, before the copy of the head
            // was wiped (docs/reencrypt.md).
            unwiped += 1;
            let j = json(&img);
            let key = volume_key(CS, &img, &kf, &[]);
            assert_eq!(j["segments"].as_object().unwrap().len(), 1, "{j}");
            assert_eq!(dec_n(&img, r / 2, 512, kept as u64, &key), plain.kept(r));
            continue;
        }
        assert_encrypted(&img, &kf, &plain, r);
    }
    assert!(points > 40, "only {points} write points");
    println!(
        "{points} kill points{} exercised ({before_header} before the header reached the device, \
         {by_cs} finished by cryptsetup, {unwiped} after the final header with the head copy not yet wiped, \
         {manual} torn header restores recovered by hand)",
        if torn { " (torn writes)" } else { "" }
    );
}

#[test]
fn killed_at_every_write_then_resumed() {
    killed_at_every_write(false);
}

#[test]
fn torn_at_every_write_then_resumed() {
    killed_at_every_write(true);
}

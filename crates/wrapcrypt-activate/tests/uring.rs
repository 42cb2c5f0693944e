//! The data path on each FUSE transport chosen explicitly
//! (`WRAPCRYPT_FUSE_TRANSPORT=uring|dev`): the bytes written through the
//! opened device are the cipher's output, status reports the transport,
//! and on io_uring the data really moved in the ring threads.
//!
//! The whole activate.rs suite also runs on either transport with the
//! variable set for the test binary (docs/fuse-io-uring.md).

mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use wrapcrypt_activate::{close, status, ActivateError};

#[test]
fn server_child() {
    server_child_main();
}

const ENV: &str = "WRAPCRYPT_FUSE_TRANSPORT";

fn uring_possible() -> bool {
    if Path::new("/sys/module/fuse/parameters/enable_uring").exists() {
        return true;
    }
    eprintln!("skip: this kernel has no FUSE over io_uring (no fuse enable_uring parameter)");
    false
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    XorCipher {
        key: seed,
        sector: 512,
        poison: None,
    }
    .apply(0, &mut v[..len / 512 * 512])
    .unwrap();
    v
}

fn read_raw(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut v, off)
        .unwrap();
    v
}

/// Bytes the server's threads named `prefix*` moved by read/write calls
/// (`rchar + wchar` of /proc/PID/task/TID/io): the backing I/O is done by
/// whichever threads serve the requests.
fn thread_io(pid: u32, prefix: &str) -> u64 {
    let mut sum = 0;
    for t in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let io = fs::read_to_string(t.path().join("io")).unwrap_or_default();
        for l in io.lines() {
            if let Some(v) = l
                .strip_prefix("rchar: ")
                .or_else(|| l.strip_prefix("wchar: "))
            {
                sum += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    sum
}

fn dd(args: &[&str]) {
    let mut a = args.to_vec();
    a.push("status=none");
    must("dd", &a);
}

/// 4 MiB aligned write + read back through the block device, an unaligned
/// write through the FUSE file, then the ciphertext on disk is checked
/// against the test cipher. Returns the bytes moved by ring / dev threads.
fn data_path(transport: &str, sector: usize) -> (String, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 16 << 20);
    let name = unique(&format!("{transport}{sector}"));
    let _g = Guard::new(&name);
    let mut p = payload(&name, &img, "xor", sector);
    p.cfg.data_offset = 1 << 20;
    p.cfg.iv_tweak = 5;
    let info = open_with(&p, &[(ENV, transport)]).expect("open");
    let st = status(&name).expect("status");
    assert_eq!(st.info.fuse_transport, info.fuse_transport);
    let (ring0, dev0) = (
        thread_io(info.pid, "wrapcrypt-ring"),
        thread_io(info.pid, "wrapcrypt-fuse"),
    );
    let plain = random(4 << 20, 11);
    let src = dir.path().join("plain");
    fs::write(&src, &plain).unwrap();
    let d = info.mapper_path.to_str().unwrap().to_owned();
    dd(&[
        &format!("if={}", src.display()),
        &format!("of={d}"),
        "bs=1M",
        "seek=2",
        "oflag=direct",
        "conv=notrunc",
    ]);
    let back = dir.path().join("back");
    dd(&[
        &format!("if={d}"),
        &format!("of={}", back.display()),
        "bs=1M",
        "skip=2",
        "count=4",
        "iflag=direct",
    ]);
    assert_eq!(sha(&fs::read(&back).unwrap()), sha(&plain), "read back");
    let odd = random(3000, 12);
    OpenOptions::new()
        .write(true)
        .open(&info.fuse_file)
        .unwrap()
        .write_all_at(&odd, (8 << 20) + 1000)
        .unwrap();
    let moved = (
        thread_io(info.pid, "wrapcrypt-ring") - ring0,
        thread_io(info.pid, "wrapcrypt-fuse") - dev0,
    );
    close(&name).expect("close");

    let cipher = XorCipher {
        key: p.key,
        sector,
        poison: None,
    };
    let mut expect = plain.clone();
    cipher.apply((2 << 20) / 512 + 5, &mut expect).unwrap();
    assert_eq!(
        sha(&read_raw(&img, (1 << 20) + (2 << 20), 4 << 20)),
        sha(&expect),
        "ciphertext of the aligned write"
    );
    let iv = (8 << 20) / 512 + 5;
    let mut sec = read_raw(&img, (1 << 20) + (8 << 20), 8192);
    cipher.apply(iv, &mut sec).unwrap();
    let mut want = vec![0u8; 8192];
    cipher.apply(iv, &mut want).unwrap();
    want[1000..4000].copy_from_slice(&odd);
    assert_eq!(sec, want, "unaligned write landed and kept its neighbours");
    (info.fuse_transport, moved.0, moved.1)
}

fn uring_case(sector: usize) {
    if !uring_possible() {
        return;
    }
    let (t, ring, dev) = data_path("uring", sector);
    assert!(t.starts_with("io_uring ("), "status says {t:?}");
    // 4 MiB written + 4 MiB read back + the RMW, all by ring threads.
    assert!(ring >= 8 << 20, "ring threads moved only {ring} bytes");
    assert!(dev < 1 << 20, "/dev/fuse threads moved {dev} bytes");
}

#[test]
fn uring_transport_data_path_512() {
    uring_case(512);
}

#[test]
fn uring_transport_data_path_4096() {
    uring_case(4096);
}

#[test]
fn dev_transport_forced_data_path() {
    let (t, ring, dev) = data_path("dev", 4096);
    assert_eq!(
        t,
        "/dev/fuse (io_uring: forced by WRAPCRYPT_FUSE_TRANSPORT=dev)"
    );
    assert_eq!(ring, 0, "no ring threads on /dev/fuse");
    assert!(dev >= 8 << 20, "/dev/fuse workers moved only {dev} bytes");
}

#[test]
fn uring_aes_xts_ciphertext_decrypts_with_python_cryptography() {
    if !uring_possible() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 8 << 20);
    let name = unique("uxts");
    let _g = Guard::new(&name);
    let mut p = payload(&name, &img, "engine", 512);
    p.spec = Some("aes-xts-plain64".into());
    let key_hex: String = (0..64)
        .map(|i| format!("{:02x}", (i * 53 + 7) as u8))
        .collect();
    p.key_hex = Some(key_hex.clone());
    let info = open_with(&p, &[(ENV, "uring")]).expect("open");
    assert!(info.fuse_transport.starts_with("io_uring ("));
    let plain = random(1 << 20, 43);
    let src = dir.path().join("plain");
    fs::write(&src, &plain).unwrap();
    dd(&[
        &format!("if={}", src.display()),
        &format!("of={}", info.mapper_path.display()),
        "bs=1M",
        "seek=3",
        "oflag=direct",
        "conv=notrunc",
    ]);
    close(&name).unwrap();
    let script = r#"
import sys, hashlib
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key = bytes.fromhex(sys.argv[1]); data = open(sys.argv[2], "rb").read()[3 << 20:4 << 20]
out = b""
for i in range(0, len(data), 512):
    d = Cipher(algorithms.AES(key), modes.XTS(((3 << 20) // 512 + i // 512).to_bytes(16, "little"))).decryptor()
    out += d.update(data[i:i + 512]) + d.finalize()
print(hashlib.sha256(out).hexdigest())
"#;
    let got = must("python3", &["-c", script, &key_hex, img.to_str().unwrap()]);
    assert_eq!(got.trim(), sha(&plain));
}

#[test]
fn uring_read_only_refuses_writes_and_killed_server_is_detected() {
    if !uring_possible() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 8 << 20);
    let name = unique("uro");
    let _g = Guard::new(&name);
    let mut p = payload(&name, &img, "xor", 4096);
    p.cfg.read_only = true;
    let info = open_with(&p, &[(ENV, "uring")]).expect("open");
    assert!(info.fuse_transport.starts_with("io_uring ("));
    let before = sha(&fs::read(&img).unwrap());
    let e = OpenOptions::new().write(true).open(&info.fuse_file);
    assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::EROFS));
    let (rc, _) = sh(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", info.mapper_path.display()),
            "bs=4k",
            "count=1",
            "oflag=direct",
            "status=none",
        ],
    );
    assert_ne!(rc, 0, "write to a read-only device succeeded");
    let back = dir.path().join("back");
    dd(&[
        &format!("if={}", info.mapper_path.display()),
        &format!("of={}", back.display()),
        "bs=1M",
        "count=1",
        "iflag=direct",
    ]);
    let mut want = vec![0u8; 1 << 20];
    XorCipher {
        key: p.key,
        sector: 4096,
        poison: None,
    }
    .apply(0, &mut want)
    .unwrap();
    assert_eq!(sha(&fs::read(&back).unwrap()), sha(&want), "decrypted read");
    assert_eq!(sha(&fs::read(&img).unwrap()), before, "image unchanged");
    // SAFETY: kill of the server child we started.
    unsafe { libc::kill(info.pid as i32, libc::SIGKILL) };
    let t0 = std::time::Instant::now();
    loop {
        match status(&name) {
            Err(ActivateError::ServerDied(_)) | Err(ActivateError::NotActive(_)) => break,
            _ if t0.elapsed().as_secs() > 10 => panic!("dead server not detected in 10 s"),
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
    assert!(!info.mapper_path.exists());
}

/// An 8 MiB xor volume opened on `transport` with the test hook that makes
/// every io_uring REGISTER fail (a payload buffer too short: EINVAL).
struct RegisterFault {
    dir: tempfile::TempDir,
    img: std::path::PathBuf,
    name: String,
    payload: Payload,
    result: Result<wrapcrypt_activate::ActiveInfo, ActivateError>,
    _guard: Guard,
}

impl RegisterFault {
    fn open(tag: &str, transport: &str) -> RegisterFault {
        let dir = tempfile::tempdir().unwrap();
        let img = image(dir.path(), 8 << 20);
        let name = unique(tag);
        let guard = Guard::new(&name);
        let payload = payload(&name, &img, "xor", 4096);
        let result = open_with(
            &payload,
            &[
                (ENV, transport),
                ("WRAPCRYPT_FUSE_URING_FAULT", "short-payload"),
            ],
        );
        RegisterFault {
            dir,
            img,
            name,
            payload,
            result,
            _guard: guard,
        }
    }
}

#[test]
fn register_failure_falls_back_to_dev_fuse_and_data_path_works() {
    if !uring_possible() {
        return;
    }
    let f = RegisterFault::open("ufall", "auto");
    let (dir, img, name, p) = (&f.dir, &f.img, &f.name, &f.payload);
    let info = f.result.expect("open");
    assert_eq!(
        info.fuse_transport,
        "/dev/fuse (io_uring: REGISTER failed: Invalid argument (os error 22))"
    );
    let plain = random(1 << 20, 21);
    let src = dir.path().join("plain");
    fs::write(&src, &plain).unwrap();
    dd(&[
        &format!("if={}", src.display()),
        &format!("of={}", info.mapper_path.display()),
        "bs=1M",
        "oflag=direct",
        "conv=notrunc",
    ]);
    assert!(thread_io(info.pid, "wrapcrypt-fuse") >= 1 << 20);
    close(name).expect("close");
    let mut expect = plain;
    XorCipher {
        key: p.key,
        sector: 4096,
        poison: None,
    }
    .apply(0, &mut expect)
    .unwrap();
    assert_eq!(sha(&read_raw(img, 0, 1 << 20)), sha(&expect));
}

#[test]
fn forced_uring_with_register_failure_refuses_to_open() {
    if !uring_possible() {
        return;
    }
    let f = RegisterFault::open("ufail", "uring");
    let name = &f.name;
    let e = f.result.unwrap_err();
    assert!(e.to_string().contains("REGISTER failed"), "{e}");
    assert!(matches!(status(name), Err(ActivateError::NotActive(_))));
    assert!(!Path::new(&format!("/dev/mapper/{name}")).exists());
}

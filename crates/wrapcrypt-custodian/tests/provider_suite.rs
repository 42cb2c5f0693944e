//! The provider test suite, run against every provider, plus the
//! custodian's register changes, sealing, start-up and access control.
//! Every test starts its own daemon on a temporary socket and state dir.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wrapcrypt_provider::conformance::*;
use wrapcrypt_provider::{
    CustodianConfig, CustodianProvider, ErrorCode, KeyProvider, KeySpec, KeyState, Protection,
    ProviderError, Register, RewrapDirection, SoftProvider,
};
use wrapcrypt_sector::SectorCipher;

const DAEMON: &str = env!("CARGO_BIN_EXE_wrapcrypt-custodiand");
struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Daemon {
    fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        // The socket directory must be reachable by other uids for the
        // access-control tests; the state dir stays 0700.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut d = Daemon {
            child: None,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        d.spawn();
        d
    }

    fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--state-dir".into(),
            self.dir.path().join("state").into(),
            "--socket".into(),
            self.socket().into(),
        ];
        if !self.extra.iter().any(|e| e == "--tcti") {
            a.extend(["--tcti".into(), "none".into()]);
        }
        a.extend(self.extra.iter().map(OsString::from));
        a
    }

    fn spawn(&mut self) {
        let child = Command::new(DAEMON)
            .args(self.args())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for(&self.socket());
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("custodian.sock")
    }

    fn provider(&self) -> CustodianProvider {
        CustodianProvider::new(CustodianConfig::new(self.socket()))
    }

    /// SIGTERM, and check the daemon leaves cleanly and removes its socket.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                assert!(st.success(), "daemon exited with {st}");
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "daemon ignores SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!self.socket().exists(), "socket left behind");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_for(sock: &Path) {
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn suite_soft() {
    let foreign = Daemon::start(&[])
        .provider()
        .generate(&KeySpec::aes_256_xts())
        .unwrap();
    let p = SoftProvider::new();
    assert_eq!(p.protection().to_string(), "in-process");
    provider_suite(&p, &foreign);
}

#[test]
fn suite_custodian() {
    let mut d = Daemon::start(&[]);
    let p = d.provider();
    assert_eq!(p.protection().to_string(), "separate-process");
    let foreign = SoftProvider::new()
        .generate(&KeySpec::aes_256_xts())
        .unwrap();
    provider_suite(&p, &foreign);

    d.stop();
}

/// Buffers from `shared_buffer` are the memfd itself: sectors anywhere in
/// them are processed in place (what the FUSE workers do), equal OpenSSL's
/// XTS, from several threads at once, and across a daemon restart.
#[test]
fn shared_buffers_encrypt_in_place() {
    let mut d = Daemon::start(&[]);
    let p = d.provider();
    let imp = p.import(&key_0_63(), &KeySpec::aes_256_xts()).unwrap();
    let c: Arc<dyn SectorCipher> = p.open_cipher(&imp, 4096).unwrap();
    let plain = pattern(4096 * 6);
    let want = python_xts(&plain, 4096, 8 * 3);
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let (c, plain, want) = (c.clone(), plain.clone(), want.clone());
            std::thread::spawn(move || {
                let mut b = c
                    .shared_buffer(4096 * 8 + 100)
                    .expect("custodian offers memory");
                assert!(b.len() >= 4096 * 8 + 100);
                assert_eq!(b.as_ptr() as usize % 4096, 0, "page-aligned for O_DIRECT");
                let off = 4096 * (i % 2 + 1);
                for _ in 0..20 {
                    let d = &mut b[off..off + plain.len()];
                    d.copy_from_slice(&plain);
                    c.encrypt(8 * 3, d).unwrap();
                    assert!(d == &want[..]);
                    c.decrypt(8 * 3, d).unwrap();
                    assert!(d == &plain[..]);
                }
                b
            })
        })
        .collect();
    let mut bufs: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    // The daemon restarts: the buffer's session is reopened once, in place.
    d.stop();
    d.spawn();
    let b = &mut bufs[0];
    b[..plain.len()].copy_from_slice(&plain);
    c.encrypt(8 * 3, &mut b[..plain.len()]).unwrap();
    assert!(b[..plain.len()] == want[..]);
    // Misaligned lengths are refused before anything is sent.
    assert!(c.encrypt(0, &mut b[..100]).is_err());
    // A dropped buffer's memory is no longer taken for a shared one.
    drop(bufs);
    let mut own = plain.clone();
    c.encrypt(8 * 3, &mut own).unwrap();
    assert_eq!(own, want);
    // The soft provider needs no shared memory.
    let soft = SoftProvider::new()
        .open_cipher(
            &SoftProvider::from_clear_key(&key_0_63(), &KeySpec::aes_256_xts()).unwrap(),
            4096,
        )
        .unwrap();
    assert!(soft.shared_buffer(4096).is_none());
    d.stop();
}

#[test]
fn register_changes_like_a_coprocessor() {
    let mut d = Daemon::start(&[]);
    let p = d.provider();
    let spec = KeySpec::aes_256_xts();
    let st0 = p.status().unwrap();
    let c1 = st0.mkvp(Register::Current).unwrap().to_string();
    assert!(st0.mkvp(Register::New).is_none());
    assert!(st0.seal.starts_with("file ("), "{}", st0.seal);

    let a = p.import(&key_0_63(), &spec).unwrap();
    assert_eq!(a.wrapping_key().to_string(), format!("mkvp:{c1}"));
    // rewrap needs a NEW master key first
    let e = p.rewrap(&a, RewrapDirection::ToNew).unwrap_err();
    assert_eq!(e.code(), ErrorCode::EmptyRegister);

    p.load_new_master_key().unwrap();
    let n = p.status().unwrap().mkvp(Register::New).unwrap().to_string();
    let a_new = p.rewrap(&a, RewrapDirection::ToNew).unwrap();
    assert_eq!(p.validate(&a_new).unwrap().state, KeyState::New);
    assert_eq!(p.verification_pattern(&a_new).unwrap(), VP_KEY_0_63);
    assert_ne!(a_new.encode(), a.encode());

    p.set_master_key().unwrap();
    let st = p.status().unwrap();
    assert_eq!(st.mkvp(Register::Current), Some(n.as_str()));
    assert_eq!(st.mkvp(Register::Old), Some(c1.as_str()));
    assert!(st.mkvp(Register::New).is_none());
    let sa = p.validate(&a).unwrap();
    assert_eq!(
        (sa.state, sa.register),
        (KeyState::Old, Some(Register::Old))
    );
    assert_eq!(p.validate(&a_new).unwrap().state, KeyState::Current);
    // the old blob still opens, to the same effective key
    let mut x = pattern(1024);
    p.open_cipher(&a, 512).unwrap().encrypt(0, &mut x).unwrap();
    let mut y = pattern(1024);
    p.open_cipher(&a_new, 512)
        .unwrap()
        .encrypt(0, &mut y)
        .unwrap();
    assert_eq!(x, y);
    // from-old brings it to CURRENT; to-new of a CURRENT blob without NEW fails
    let a_cur = p.rewrap(&a, RewrapDirection::FromOld).unwrap();
    assert_eq!(p.validate(&a_cur).unwrap().state, KeyState::Current);
    assert_eq!(
        p.rewrap(&a_new, RewrapDirection::FromOld)
            .unwrap_err()
            .code(),
        ErrorCode::InvalidArgument
    );

    // registers survive a restart (sealed at rest)
    d.stop();
    d.spawn();
    assert_eq!(p.status().unwrap(), st);

    // a second change retires c1: blobs under it are invalid, with a reason
    p.load_new_master_key().unwrap();
    p.set_master_key().unwrap();
    let sa = p.validate(&a).unwrap();
    match &sa.state {
        KeyState::Invalid(why) => assert!(why.contains("in no register"), "{why}"),
        other => panic!("{other:?}"),
    }
    let e = p.open_cipher(&a, 512).err().unwrap();
    assert_eq!(e.code(), ErrorCode::UnknownWrappingKey);
    assert!(e.to_string().contains(&c1), "{e}");
    assert_eq!(p.validate(&a_new).unwrap().state, KeyState::Old);
    assert_eq!(p.verification_pattern(&a_new).unwrap(), VP_KEY_0_63);
    d.stop();
}

#[test]
fn init_when_not_auto_initialised() {
    let d = Daemon::start(&["--no-auto-init"]);
    let p = d.provider();
    let st = p.status().unwrap();
    assert!(st.registers.iter().all(|r| r.mkvp.is_none()));
    let e = p.generate(&KeySpec::aes_256_xts()).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotInitialized);
    p.init().unwrap();
    assert!(p.status().unwrap().mkvp(Register::Current).is_some());
    assert_eq!(p.init().unwrap_err().code(), ErrorCode::AlreadyInitialized);
    assert!(p.generate(&KeySpec::aes_256_xts()).is_ok());
}

/// Runs a raw HELLO (and optionally LOAD_NEW_MASTER_KEY) as uid `nobody`;
/// returns the status codes of the answers.
fn raw_client_as_nobody(sock: &Path, admin: bool) -> Vec<u16> {
    let script = format!(
        "import socket,struct,sys\n\
         s=socket.socket(socket.AF_UNIX); s.connect({sock:?})\n\
         def call(body):\n\
         \x20   s.sendall(struct.pack('>I',len(body))+body)\n\
         \x20   h=s.recv(4,socket.MSG_WAITALL)\n\
         \x20   if len(h)<4: return 'eof'\n\
         \x20   b=s.recv(struct.unpack('>I',h)[0],socket.MSG_WAITALL)\n\
         \x20   return str(struct.unpack('>H',b[2:4])[0])\n\
         out=[call(bytes.fromhex('0001000000010001'))]\n\
         if {admin}: out.append(call(bytes.fromhex('00320000')))\n\
         print(' '.join(out))\n",
        sock = sock.to_str().unwrap(),
        admin = if admin { "True" } else { "False" },
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            // The system interpreter: a per-user one (pyenv under /root) is
            // not reachable by uid 65534.
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect()
}

#[test]
fn other_users_are_refused_unless_allowed() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        panic!("this test switches to uid 65534 and must run as root (CI does)");
    }
    let d = Daemon::start(&[]);
    // PermissionDenied (3) on HELLO for a uid that is not listed
    assert_eq!(raw_client_as_nobody(&d.socket(), false), vec![3]);
    let d2 = Daemon::start(&["--allow-uid", "65534"]);
    // listed: HELLO ok (0), but master-key changes stay root-only (3)
    assert_eq!(raw_client_as_nobody(&d2.socket(), true), vec![0, 3]);
}

#[test]
fn started_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("run/custodian.sock");
    let state = dir.path().join("state");
    let args: Vec<OsString> = vec![
        "--state-dir".into(),
        state.clone().into(),
        "--socket".into(),
        sock.clone().into(),
        "--tcti".into(),
        "none".into(),
    ];
    let p = CustodianProvider::new(CustodianConfig::new(&sock).with_autostart(DAEMON, args));
    let w = p.import(&key_0_63(), &KeySpec::aes_256_xts()).unwrap();
    assert_eq!(p.verification_pattern(&w).unwrap(), VP_KEY_0_63);
    let pid: i32 = std::fs::read_to_string(state.join("custodiand.lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: stopping the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t = Instant::now();
    while sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(10), "daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    // without autostart, an absent daemon is a clear connect error
    let e = CustodianProvider::new(CustodianConfig::new(&sock))
        .generate(&KeySpec::aes_256_xts())
        .unwrap_err();
    assert!(matches!(e, ProviderError::Connect { .. }), "{e}");
}

/// swtpm and its state dir, removed when the test ends.
struct Swtpm(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_swtpm() -> (Swtpm, u16) {
    let dir = tempfile::tempdir().unwrap();
    // A port pair unlikely to collide between parallel test runs.
    let port = 20000 + (std::process::id() % 20000) as u16 * 2 % 20000;
    let child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", dir.path().display()))
        .arg("--server")
        .arg(format!("type=tcp,port={port}"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={}", port + 1))
        .args(["--flags", "not-need-init,startup-clear"])
        .spawn()
        .expect("swtpm is installed (scripts/install-deps.sh)");
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(20), "swtpm did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Swtpm(child, dir), port)
}

#[test]
fn master_keys_sealed_by_tpm() {
    let (_tpm, port) = start_swtpm();
    let tcti = format!("swtpm:port={port}");
    let mut d = Daemon::start(&["--tcti", &tcti]);
    let p = d.provider();
    let st = p.status().unwrap();
    assert_eq!(st.seal, format!("tpm2 ({tcti})"));
    assert_eq!(st.protection, Protection::SeparateProcess);
    let state = d.dir.path().join("state");
    assert!(state.join("storage.tpm").exists());
    assert!(!state.join("storage.key").exists());
    let w = p.import(&key_0_63(), &KeySpec::aes_256_xts()).unwrap();
    d.stop();
    d.spawn();
    assert_eq!(p.status().unwrap(), st);
    assert_eq!(p.verification_pattern(&w).unwrap(), VP_KEY_0_63);
    d.stop();
    // Without the TPM the sealed state cannot be opened.
    let out = Command::new(DAEMON)
        .args(["--state-dir".as_ref(), state.as_os_str()])
        .args([
            "--socket",
            "/nonexistent-dir-for-test/x.sock",
            "--tcti",
            "none",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sealed by a TPM"));
}

/// A small deterministic generator for the random batches below.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Protocol version 2: with a version-2 daemon the CRYPTs of a session go
/// through the shared-memory request ring, not the socket (the client's
/// counters and the daemon's own count in the ring header say so), and the
/// bytes equal the in-process soft cipher's and the version-1 socket
/// path's for random sector batches, from several threads, at 512- and
/// 4096-byte sectors. A killed daemon gives an error, not a hang, and a
/// restarted one serves the same session again.
#[test]
fn ring_fast_path_is_used_and_matches_soft_cipher() {
    let mut d = Daemon::start(&[]);
    let p = d.provider();
    let key = wrapcrypt_secret::SecretBytes::random(64).unwrap();
    let spec = KeySpec::aes_256_xts();
    let wkb = p.import(&key, &spec).unwrap();
    let soft_wkb = SoftProvider::from_clear_key(&key, &spec).unwrap();
    let mut v1cfg = CustodianConfig::new(d.socket());
    v1cfg.ring_threads = 0;
    let v1p = CustodianProvider::new(v1cfg);
    for ss in [512usize, 4096] {
        let soft = SoftProvider::new().open_cipher(&soft_wkb, ss).unwrap();
        let ring = p.open_session(&wkb, ss).unwrap();
        let v1 = v1p.open_session(&wkb, ss).unwrap();
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (ring, v1, soft) = (ring.clone(), v1.clone(), soft.clone());
                std::thread::spawn(move || {
                    let mut rng =
                        XorShift(0x9e37_79b9_7f4a_7c15 ^ ((t + 1) * 0x1234_5678) ^ ss as u64);
                    let mut buf = ring.shared_buffer(16 * ss + ss).expect("shared memory");
                    for _ in 0..200 {
                        let n = (rng.next() % 16 + 1) as usize * ss;
                        let off = (rng.next() % 2) as usize * ss;
                        let iv = rng.next() % (1 << 40) / 8 * 8;
                        let mut plain = vec![0u8; n];
                        rng.fill(&mut plain);
                        let mut want = plain.clone();
                        soft.encrypt(iv, &mut want).unwrap();
                        // In place in the shared buffer (the FUSE path).
                        let b = &mut buf[off..off + n];
                        b.copy_from_slice(&plain);
                        ring.encrypt(iv, b).unwrap();
                        assert!(b == &want[..], "ring encrypt differs from soft");
                        ring.decrypt(iv, b).unwrap();
                        assert!(b == &plain[..], "ring decrypt does not round-trip");
                        // The caller's own memory (copied through a pool slot).
                        let mut own = plain.clone();
                        ring.encrypt(iv, &mut own).unwrap();
                        assert_eq!(own, want);
                        // The version-1 socket path.
                        let mut old = plain.clone();
                        v1.encrypt(iv, &mut old).unwrap();
                        assert_eq!(old, want);
                        v1.decrypt(iv, &mut old).unwrap();
                        assert_eq!(old, plain);
                    }
                    buf
                })
            })
            .collect();
        let bufs: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let s = ring.stats();
        assert_eq!(s.socket_requests, 0, "{s:?}");
        assert_eq!(s.ring_requests, 4 * 200 * 3, "{s:?}");
        assert_eq!(
            s.daemon_served, s.ring_requests,
            "the daemon served them: {s:?}"
        );
        let s1 = v1.stats();
        assert_eq!(s1.ring_requests, 0, "{s1:?}");
        assert_eq!(s1.socket_requests, 4 * 200 * 2, "{s1:?}");
        drop(bufs);
    }
    // A killed daemon: errors, never a hang; a new one serves again.
    let ring = p.open_session(&wkb, 4096).unwrap();
    let mut buf = ring.shared_buffer(4096).unwrap();
    let mut want = vec![7u8; 4096];
    SoftProvider::new()
        .open_cipher(&soft_wkb, 4096)
        .unwrap()
        .encrypt(8, &mut want)
        .unwrap();
    buf.fill(7);
    ring.encrypt(8, &mut buf).unwrap();
    assert!(buf[..] == want[..]);
    let mut c = d.child.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    let t = Instant::now();
    buf.fill(7);
    assert!(ring.encrypt(8, &mut buf).is_err());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let _ = std::fs::remove_file(d.socket());
    d.spawn();
    buf.fill(7);
    ring.encrypt(8, &mut buf).unwrap();
    assert!(buf[..] == want[..]);
    assert!(ring.stats().daemon_served >= 1);
    d.stop();
}

/// Without a key manager: KMIP_STATUS reports no backend and no object
/// ids, STAGE_KMIP_KEY is refused as unsupported, and the state stays
/// version 1 (an older daemon reads it).
#[test]
fn kmip_requests_without_a_key_manager() {
    let d = Daemon::start(&[]);
    let p = d.provider();
    let k = p.kmip_status().unwrap();
    assert_eq!(k.backend, "");
    assert_eq!(k.registers.len(), 3);
    assert!(k.registers.iter().all(|r| r.object_id.is_empty()));
    assert_eq!(k.object_id(Register::Current), None);
    let cur = p
        .status()
        .unwrap()
        .mkvp(Register::Current)
        .unwrap()
        .to_string();
    let r = &k.registers[1];
    assert_eq!(
        (r.register, r.mkvp.as_str(), r.loaded),
        (Register::Current, cur.as_str(), true)
    );
    // Version 1 registers: magic 6 + nonce 12 + (6 + 3 × 33) + tag 16 bytes.
    let regs = std::fs::metadata(d.dir.path().join("state/registers.bin")).unwrap();
    assert_eq!(regs.len(), 6 + 12 + 105 + 16);
    let e = p.stage_kmip_key("1").unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unsupported, "{e}");
    assert!(e.to_string().contains("--kmip-config"), "{e}");
    // A bad key-manager configuration stops the start with one line.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("kmip.conf");
    std::fs::write(&conf, "server = 127.0.0.1:1\n").unwrap();
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = Command::new(DAEMON)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args(["--tcti", "none", "--kmip-config"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("ca = FILE is missing"), "{err}");
}

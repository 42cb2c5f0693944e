//! Live: PID 1 is not systemd here, so a generated unit's `ExecStart=` and
//! `ExecStop=` commands are run in order the way systemd runs them (empty
//! environment but PATH and INVOCATION_ID, stdin /dev/null, cwd /) against
//! a real LUKS2 image (cryptsetup luksFormat), opened through the real
//! FUSE + loop path. Passphrase entries are answered through the real
//! systemd-ask-password, with this test acting as the password agent
//! (the ask-file protocol of systemd's password agents).
//! Needs root, /dev/fuse and loop devices, as every open test does.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wrapcrypt_systemd::escape::{escape, split_exec};

use common::{release_bin, run_generator};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const ASK_DIR: &str = "/run/systemd/ask-password";

fn require_root() {
    let o = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "0",
        "live unit tests open volumes: run them as root (CI does)"
    );
}

/// A command as systemd starts a unit's process.
fn systemd_cmd(argv: &[String]) -> Command {
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .env(
            "INVOCATION_ID",
            format!("{:032x}", std::process::id() as u128 * 7919),
        )
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn run(argv: &[String]) -> Output {
    systemd_cmd(argv).output().expect("run unit command")
}

/// The `KEY=` lines of a unit, each split into words as systemd does.
fn exec_lines(unit: &str, key: &str) -> Vec<Vec<String>> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(split_exec)
        .collect()
}

/// An image formatted by cryptsetup with `pass`, fast PBKDF2.
fn luks_image(dir: &Path, name: &str, pass: &[u8]) -> PathBuf {
    let img = dir.join(name);
    fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
    let key = dir.join(format!("{name}.pass"));
    fs::write(&key, pass).unwrap();
    let o = Command::new("cryptsetup")
        .args(["luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2"])
        .args(["--pbkdf-force-iterations", "1000", "--key-file"])
        .arg(&key)
        .arg(&img)
        .output()
        .expect("cryptsetup (cryptsetup-bin)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::remove_file(&key).unwrap();
    img
}

/// Closes the volume at the end of a test, pass or fail.
struct Closer(String);

impl Drop for Closer {
    fn drop(&mut self) {
        let _ = Command::new(release_bin("wrapcrypt"))
            .args(["close", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// Generates units for `crypttab` and returns (unit text, output tree).
fn generate(dir: &Path, crypttab: &str, name: &str) -> (String, tempfile::TempDir) {
    let tab = dir.join("crypttab");
    fs::write(&tab, crypttab).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = run_generator(&tab, out.path(), Some(&release_bin("wrapcrypt")));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let unit = format!("wrapcrypt-open@{}.service", escape(name));
    let text = fs::read_to_string(out.path().join("normal").join(&unit)).unwrap();
    assert!(out
        .path()
        .join("normal/cryptsetup.target.requires")
        .join(&unit)
        .symlink_metadata()
        .is_ok());
    (text, out)
}

fn pattern(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn mapper(name: &str) -> PathBuf {
    PathBuf::from("/dev/mapper").join(name)
}

fn start_ok(start: &[String], name: &str) {
    let o = run(start);
    assert!(
        o.status.success(),
        "ExecStart {start:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        mapper(name).exists(),
        "/dev/mapper/{name} missing after ExecStart"
    );
}

fn stop_ok(stop: &[String], name: &str) {
    let o = run(stop);
    assert!(
        o.status.success(),
        "ExecStop: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        mapper(name).symlink_metadata().is_err(),
        "/dev/mapper/{name} still there after ExecStop"
    );
}

#[test]
fn key_file_entry_opens_writes_closes_and_reopens_through_its_unit() {
    require_root();
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("wcsd-key-{}", std::process::id());
    let _c = Closer(name.clone());
    let img = luks_image(dir.path(), "vol.img", b"key-file-secret");
    let key = dir.path().join("vol.key");
    fs::write(&key, b"key-file-secret").unwrap();
    let tab = format!(
        "# live test\n{name} {} {} luks,wrapcrypt,discard\n",
        img.display(),
        key.display()
    );
    let (unit, out) = generate(dir.path(), &tab, &name);
    let start = &exec_lines(&unit, "ExecStart")[0];
    let stop = &exec_lines(&unit, "ExecStop")[0];
    assert_eq!(start[0], release_bin("wrapcrypt").to_string_lossy());
    assert!(start.contains(&"--allow-discards".to_string()), "{start:?}");
    assert!(start.ends_with(&[img.to_string_lossy().into_owned(), name.clone()]));
    assert!(unit.contains(&format!("RequiresMountsFor={}", img.display())));

    start_ok(start, &name);
    // systemd-cryptsetup@NAME.service, as our drop-in leaves it, checks the
    // volume wrapcrypt opened.
    let dropin = out.path().join(format!(
        "early/systemd-cryptsetup@{}.service.d/90-wrapcrypt.conf",
        escape(&name)
    ));
    let check = exec_lines(&fs::read_to_string(dropin).unwrap(), "ExecStart");
    assert!(
        check[0].is_empty(),
        "the drop-in must reset ExecStart first"
    );
    let o = run(&check[1]);
    assert!(
        o.status.success(),
        "{:?}: {}",
        check[1],
        String::from_utf8_lossy(&o.stderr)
    );
    let data = pattern(1 << 20);
    let want = Sha256::digest(&data);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(mapper(&name))
            .unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    stop_ok(stop, &name);
    // The ciphertext on the image is not the data.
    let raw = fs::read(&img).unwrap();
    assert!(!raw.windows(64).any(|w| w == &data[..64]));

    start_ok(start, &name);
    let mut back = vec![0u8; data.len()];
    {
        let mut f = fs::File::open(mapper(&name)).unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.read_exact(&mut back).unwrap();
    }
    assert_eq!(
        Sha256::digest(&back),
        want,
        "data changed across close/open"
    );
    stop_ok(stop, &name);
    eprintln!("key-file unit cycle took {:?}", t0.elapsed());
}

/// Answers the asks of systemd-ask-password whose message names `needle`,
/// in order, with `answers`; returns how many it answered.
fn agent(
    needle: String,
    answers: Vec<Vec<u8>>,
    within: Duration,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut done: Vec<PathBuf> = Vec::new();
        let mut n = 0;
        while n < answers.len() && t0.elapsed() < within {
            std::thread::sleep(Duration::from_millis(50));
            let Ok(rd) = fs::read_dir(ASK_DIR) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let fname = e.file_name().to_string_lossy().into_owned();
                if !fname.starts_with("ask.") || done.contains(&p) {
                    continue;
                }
                let Ok(text) = fs::read_to_string(&p) else {
                    continue;
                };
                if !text.contains(&needle) {
                    continue;
                }
                let Some(sock) = text.lines().find_map(|l| l.strip_prefix("Socket=")) else {
                    continue;
                };
                let mut msg = b"+".to_vec();
                msg.extend_from_slice(&answers[n]);
                UnixDatagram::unbound()
                    .unwrap()
                    .send_to(&msg, sock)
                    .unwrap();
                done.push(p);
                n += 1;
            }
        }
        n
    })
}

fn wait(mut c: Child, within: Duration) -> Output {
    let t0 = Instant::now();
    while c.try_wait().unwrap().is_none() {
        if t0.elapsed() > within {
            let _ = c.kill();
            panic!("command did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    c.wait_with_output().unwrap()
}

#[test]
fn passphrase_entry_asks_through_systemd_ask_password_and_retries() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("wcsd-ask-{}", std::process::id());
    let _c = Closer(name.clone());
    let img = luks_image(dir.path(), "ask.img", b"asked secret");
    let tab = format!(
        "{name} {} none wrapcrypt,tries=2,timeout=60\n",
        img.display()
    );
    let (unit, _out) = generate(dir.path(), &tab, &name);
    let start = &exec_lines(&unit, "ExecStart")[0];
    let stop = &exec_lines(&unit, "ExecStop")[0];
    for w in ["--ask-password", "--tries", "2", "--timeout", "60"] {
        assert!(start.contains(&w.to_string()), "{w} missing in {start:?}");
    }
    // The first answer is wrong: --tries 2 asks again.
    let a = agent(
        img.to_string_lossy().into_owned(),
        vec![b"wrong".to_vec(), b"asked secret".to_vec()],
        Duration::from_secs(60),
    );
    let o = wait(systemd_cmd(start).spawn().unwrap(), Duration::from_secs(90));
    assert_eq!(a.join().unwrap(), 2);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("asked secret") && !err.contains("wrong\n"),
        "{err}"
    );
    assert!(mapper(&name).exists());
    stop_ok(stop, &name);
}

#[test]
fn prompts_go_to_systemd_ask_password_only_when_systemd_started_us_without_a_tty() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let img = luks_image(dir.path(), "detect.img", b"detected");
    let wc = release_bin("wrapcrypt").to_string_lossy().into_owned();
    let img_s = img.to_string_lossy().into_owned();
    let argv: Vec<String> = vec![
        wc.clone(),
        "open".into(),
        "--test-passphrase".into(),
        img_s.clone(),
    ];
    // INVOCATION_ID is inherited by whatever a service starts (a CI
    // runner's tests): with a parent other than PID 1, stdin is read as
    // before, nothing is there, exit 1 at once.
    let o = wait(systemd_cmd(&argv).spawn().unwrap(), Duration::from_secs(30));
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A passphrase piped in is used, whatever the environment.
    let mut c = systemd_cmd(&argv).stdin(Stdio::piped()).spawn().unwrap();
    c.stdin.take().unwrap().write_all(b"detected\n").unwrap();
    let o = wait(c, Duration::from_secs(30));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // As a unit's command: parent PID 1 (an orphan is re-parented to it,
    // as systemd's children have it for parent), INVOCATION_ID set, stdin
    // /dev/null, no --ask-password: asked through the agent.
    let name = format!("wcsd-auto-{}", std::process::id());
    let _c = Closer(name.clone());
    let err = dir.path().join("err");
    let script = format!(
        "(sleep 0.3; exec {wc} open {img_s} {name} </dev/null >/dev/null 2>{}) &",
        err.display()
    );
    let a = agent(
        img_s.clone(),
        vec![b"detected".to_vec()],
        Duration::from_secs(30),
    );
    let o = systemd_cmd(&["/bin/sh".into(), "-c".into(), script])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(
        a.join().unwrap(),
        1,
        "the orphaned open did not ask the agent"
    );
    let t0 = Instant::now();
    while !mapper(&name).exists() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        mapper(&name).exists(),
        "not opened: {}",
        fs::read_to_string(&err).unwrap_or_default()
    );
}

#[test]
fn headers_that_need_wrapcrypt_are_found_without_the_option() {
    // Probing reads the header only: no root needed beyond cryptsetup's
    // luksFormat on a file.
    let dir = tempfile::tempdir().unwrap();
    let wrapped = luks_image(dir.path(), "token.img", b"x");
    let token = dir.path().join("vp.json");
    fs::write(
        &token,
        format!(
            r#"{{"type":"waes-verification-pattern","keyslots":[],"verification-pattern":"{}"}}"#,
            "0".repeat(64)
        ),
    )
    .unwrap();
    let o = Command::new("cryptsetup")
        .args(["token", "import", "--json-file"])
        .arg(&token)
        .arg(&wrapped)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let clear = luks_image(dir.path(), "clear.img", b"x");
    let tab = format!(
        "wrapped {} none luks\nclear {} none luks\n",
        wrapped.display(),
        clear.display()
    );
    fs::write(dir.path().join("crypttab"), tab).unwrap();
    let out = tempfile::tempdir().unwrap();
    let o = run_generator(&dir.path().join("crypttab"), out.path(), None);
    assert!(o.status.success());
    assert!(out
        .path()
        .join("normal/wrapcrypt-open@wrapped.service")
        .exists());
    assert!(!out
        .path()
        .join("normal/wrapcrypt-open@clear.service")
        .exists());
}

/// Stops the custodian this test started (its pid is in the lock file).
struct StopCustodian(PathBuf);

impl Drop for StopCustodian {
    fn drop(&mut self) {
        if let Ok(pid) = fs::read_to_string(self.0.join("custodiand.lock")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

#[test]
fn wrapped_volume_opens_after_the_custodian_units_command() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("c.sock");
    let state = sock.with_extension("state");
    let _stop = StopCustodian(state.clone());

    // 1. The custodian unit's ExecStart, with the installed path replaced
    //    by the release build and a private socket and state dir added
    //    (the machine's default custodian is not this test's to touch).
    let unit =
        fs::read_to_string(common::packaging_dir().join("wrapcrypt-custodiand.service")).unwrap();
    let mut cust = exec_lines(&unit, "ExecStart").remove(0);
    assert_eq!(cust[0], "/usr/sbin/wrapcrypt-custodiand");
    cust[0] = release_bin("wrapcrypt-custodiand")
        .to_string_lossy()
        .into_owned();
    for a in [
        "--socket",
        sock.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ] {
        cust.push(a.into());
    }
    cust.extend(["--tcti".into(), "none".into()]);
    let o = run(&cust);
    assert!(
        o.status.success(),
        "custodian: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        sock.exists(),
        "Type=forking: the socket is there once the parent exits"
    );

    // 2. A waes volume on it; its crypttab line has no `wrapcrypt` option:
    //    the generator finds the cipher in the header.
    let img = dir.path().join("waes.img");
    fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
    let key = dir.path().join("waes.key");
    fs::write(&key, b"wrapped volume key file").unwrap();
    let o = Command::new(release_bin("wrapcrypt"))
        .args([
            "luksFormat",
            "-q",
            "--cipher",
            "waes-xts-plain64",
            "--pbkdf",
            "pbkdf2",
        ])
        .args(["--pbkdf-force-iterations", "1000", "--key-file"])
        .arg(&key)
        .arg(&img)
        .env("WRAPCRYPT_CUSTODIAN_SOCKET", &sock)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let name = format!("wcsd-waes-{}", std::process::id());
    let _c = Closer(name.clone());
    let tab = format!("{name} {} {} luks\n", img.display(), key.display());
    let (unit, _out) = generate(dir.path(), &tab, &name);
    assert!(unit.contains("Requires=wrapcrypt-custodiand.service"));
    let start = &exec_lines(&unit, "ExecStart")[0];
    let stop = &exec_lines(&unit, "ExecStop")[0];

    // 3. The volume unit's commands, with the custodian's socket.
    let with_sock = |argv: &[String]| {
        let mut c = systemd_cmd(argv);
        c.env("WRAPCRYPT_CUSTODIAN_SOCKET", &sock);
        c.output().unwrap()
    };
    let o = with_sock(start);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let data = pattern(256 << 10);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(mapper(&name))
            .unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    let o = with_sock(stop);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(mapper(&name).symlink_metadata().is_err());
    let o = with_sock(start);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut back = vec![0u8; data.len()];
    fs::File::open(mapper(&name))
        .unwrap()
        .read_exact(&mut back)
        .unwrap();
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    let o = with_sock(stop);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn an_unanswered_prompt_times_out_once_with_one_line() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let name = format!("wcsd-tmo-{}", std::process::id());
    let _c = Closer(name.clone());
    let img = luks_image(dir.path(), "tmo.img", b"never typed");
    let tab = format!("{name} {} none wrapcrypt,timeout=1s\n", img.display());
    let (unit, _out) = generate(dir.path(), &tab, &name);
    let start = &exec_lines(&unit, "ExecStart")[0];
    assert!(start.windows(2).any(|w| w == ["--tries", "3"]), "{start:?}");
    let t0 = Instant::now();
    let o = wait(systemd_cmd(start).spawn().unwrap(), Duration::from_secs(30));
    let took = t0.elapsed();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("Timer expired"), "{err}");
    // One prompt of 1 s, not three: a timeout is not a wrong passphrase.
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert!(mapper(&name).symlink_metadata().is_err());
}

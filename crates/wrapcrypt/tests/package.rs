//! `make deb`: the package built by scripts/build-deb.sh from the release
//! binaries installs on this machine with the real dpkg, works from its
//! installed layout, keeps the custodian's state on `remove` and deletes it
//! only on `purge`, after a warning. The machine is left as it was: the
//! package is purged at the end even when an assertion fails.
//!
//! Needs root and dpkg (CI is a disposable root machine). Refuses to run,
//! rather than touch them, when wrapcrypt is already installed or
//! /var/lib/wrapcrypt exists.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::wrapcrypt_bin;

const STATE: &str = "/var/lib/wrapcrypt";
const CUSTODIAN_STATE: &str = "/var/lib/wrapcrypt/custodian";
const UNIT_DIR: &str = "/usr/lib/systemd/system";
const GENERATOR: &str = "/usr/lib/systemd/system-generators/wrapcrypt-generator";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(c: &mut Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// dpkg with its lock shared with the other agents' apt-get: retried while
/// another frontend holds the lock, for up to five minutes.
fn dpkg(args: &[&str]) -> Output {
    let start = Instant::now();
    loop {
        let o = run(Command::new("dpkg").args(args));
        let locked = text(&o.stderr).contains("lock");
        if o.status.success() || !locked || start.elapsed() > Duration::from_secs(300) {
            return o;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `dpkg-query` status of the wrapcrypt package: "ii" installed, "rc"
/// removed with its configuration, "" unknown or purged.
fn package_status() -> String {
    let o = run(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}", "wrapcrypt"]));
    let s = text(&o.stdout).trim().to_string();
    if s.starts_with("un") {
        String::new()
    } else {
        s
    }
}

/// Serialises package tests of several checkouts on one machine.
struct MachineLock(#[allow(dead_code)] fs::File);

impl MachineLock {
    fn take() -> MachineLock {
        let f = fs::File::create("/run/lock/wrapcrypt-package-test.lock").expect("lock file");
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
        MachineLock(f)
    }
}

/// Purges the package on drop, so a failed assertion leaves no wrapcrypt
/// installed; restores /etc/wrapcrypt and /run/wrapcrypt as found.
struct Installed {
    etc_existed: bool,
    run_existed: bool,
}

impl Drop for Installed {
    fn drop(&mut self) {
        stop_custodian();
        if !package_status().is_empty() {
            let o = dpkg(&["--purge", "wrapcrypt"]);
            if !o.status.success() {
                eprintln!("cleanup: dpkg --purge wrapcrypt failed: {}", show(&o));
            }
        }
        if self.etc_existed && !Path::new("/etc/wrapcrypt").exists() {
            let _ = fs::create_dir("/etc/wrapcrypt");
        }
        if !self.run_existed {
            let _ = fs::remove_dir("/run/wrapcrypt");
        }
    }
}

/// Stops the system custodian started by this test (its pid is in the lock
/// file of its state directory) and waits until it has exited.
fn stop_custodian() {
    let lock = Path::new(CUSTODIAN_STATE).join("custodiand.lock");
    let Some(pid) = fs::read_to_string(lock)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    else {
        return;
    };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let is_custodian = fs::read_link(proc_dir.join("exe"))
        .map(|e| e.to_string_lossy().contains("wrapcrypt-custodiand"))
        .unwrap_or(false);
    if !is_custodian {
        return;
    }
    // SAFETY: stopping the daemon this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    while proc_dir.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !proc_dir.exists(),
        "custodian {pid} still runs after SIGTERM"
    );
    let _ = fs::remove_file("/run/wrapcrypt/custodian.sock");
}

/// The unit files to package: packaging/systemd's, else a temporary unit
/// written here (the `deploy` branch adds the real ones).
fn unit_dir(tmp: &Path) -> (PathBuf, Vec<String>) {
    let shipped = repo().join("packaging/systemd");
    let units = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".service") || n.ends_with(".socket"))
            .collect();
        v.sort();
        v
    };
    let found = units(&shipped);
    if !found.is_empty() {
        return (shipped, found);
    }
    let d = tmp.join("systemd");
    fs::create_dir(&d).unwrap();
    fs::write(
        d.join("wrapcrypt-custodiand.service"),
        "[Unit]\n\
         Description=wrapcrypt key custodian (package test fixture)\n\
         Documentation=man:wrapcrypt-custodiand(8)\n\n\
         [Service]\n\
         ExecStart=/usr/sbin/wrapcrypt-custodiand\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n",
    )
    .unwrap();
    (d.clone(), units(&d))
}

fn mode(p: &str) -> (u32, u32) {
    let m = fs::metadata(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    (m.permissions().mode() & 0o7777, m.uid())
}

#[test]
fn deb_installs_removes_keeps_state_and_purges() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the package test installs with dpkg: run it as root (CI does)"
    );
    let _lock = MachineLock::take();
    assert_eq!(
        package_status(),
        "",
        "wrapcrypt is installed on this machine; this test would purge it \
         (and its keys): remove it first (dpkg --purge wrapcrypt)"
    );
    assert!(
        !Path::new(STATE).exists(),
        "{STATE} exists; this test would delete it: move it away first"
    );

    let bin = wrapcrypt_bin();
    let bin_dir = bin.parent().unwrap().to_path_buf();
    assert!(
        bin_dir.join("wrapcrypt-custodiand").exists(),
        "{} missing: build the release binaries (make build)",
        bin_dir.join("wrapcrypt-custodiand").display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let (units_dir, units) = unit_dir(tmp.path());
    let with_generator = bin_dir.join("wrapcrypt-generator").exists();

    // Build.
    let t = Instant::now();
    let o = run(Command::new("bash")
        .arg(repo().join("scripts/build-deb.sh"))
        .env("WRAPCRYPT_BIN_DIR", &bin_dir)
        .env("DEB_OUT_DIR", tmp.path())
        .env("WRAPCRYPT_SYSTEMD_DIR", &units_dir));
    assert!(o.status.success(), "build-deb.sh: {}", show(&o));
    let deb = text(&o.stdout).lines().last().unwrap_or("").to_string();
    assert!(
        Path::new(&deb).is_file(),
        "no .deb at {deb:?}: {}",
        show(&o)
    );
    eprintln!("built {deb} in {:?}", t.elapsed());

    // Contents.
    let o = run(Command::new("dpkg-deb").args(["-c", &deb]));
    assert!(o.status.success(), "dpkg-deb -c: {}", show(&o));
    let listing = text(&o.stdout);
    let mut expected: Vec<String> = [
        "/usr/sbin/wrapcrypt",
        "/usr/sbin/wrapcrypt-custodiand",
        "/usr/share/man/man8/wrapcrypt.8.gz",
        "/usr/share/man/man8/wrapcrypt-luksFormat.8.gz",
        "/usr/share/man/man8/wrapcrypt-custodiand.8.gz",
        "/usr/share/bash-completion/completions/wrapcrypt",
        "/usr/share/zsh/vendor-completions/_wrapcrypt",
        "/usr/share/fish/vendor_completions.d/wrapcrypt.fish",
        "/usr/share/doc/wrapcrypt/copyright",
        "/usr/share/doc/wrapcrypt/changelog.gz",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.extend(units.iter().map(|u| format!("{UNIT_DIR}/{u}")));
    if with_generator {
        expected.push(GENERATOR.to_string());
    }
    let paths: Vec<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.'))
        .collect();
    for e in &expected {
        assert!(
            paths.contains(&e.as_str()),
            "{e} not in the package:\n{listing}"
        );
    }
    assert!(
        listing.lines().all(|l| l.contains(" root/root ")),
        "files not owned by root:\n{listing}"
    );
    let o = run(Command::new("dpkg-deb").args(["-f", &deb, "Depends"]));
    let depends = text(&o.stdout);
    assert!(depends.contains("libc6 (>= "), "Depends: {depends}");

    // lintian, when installed (scripts/install-deps.sh installs it).
    if Command::new("lintian").arg("--version").output().is_ok() {
        let o = run(Command::new("lintian").args([
            "--fail-on",
            "error,warning",
            "--info",
            "--display-info",
            &deb,
        ]));
        eprintln!("lintian:\n{}{}", text(&o.stdout), text(&o.stderr));
        assert!(o.status.success(), "lintian: {}", show(&o));
    } else {
        eprintln!("lintian not installed (scripts/install-deps.sh installs it): not run");
    }

    let version = text(&run(Command::new(&bin).arg("--version")).stdout);
    let guard = Installed {
        etc_existed: Path::new("/etc/wrapcrypt").exists(),
        run_existed: Path::new("/run/wrapcrypt").exists(),
    };

    // Install.
    let o = dpkg(&["-i", &deb]);
    assert!(o.status.success(), "dpkg -i: {}", show(&o));
    assert_eq!(package_status(), "ii", "dpkg -s after install");
    let o = run(Command::new("/usr/sbin/wrapcrypt").arg("--version"));
    assert!(o.status.success(), "installed --version: {}", show(&o));
    assert_eq!(text(&o.stdout), version, "installed --version");
    assert!(version.starts_with("wrapcrypt "), "{version}");

    for e in expected.iter().filter(|e| e.contains("/man8/")) {
        let o = run(Command::new("man")
            .args(["--warnings", "-l", e])
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8"));
        assert!(o.status.success(), "man -l {e}: {}", show(&o));
        let page = text(&o.stdout);
        assert!(
            page.contains("NAME") && page.contains("wrapcrypt"),
            "man -l {e}:\n{page}"
        );
        assert_eq!(text(&o.stderr), "", "man --warnings -l {e}");
    }
    for u in &units {
        let p = format!("{UNIT_DIR}/{u}");
        assert!(Path::new(&p).is_file(), "{p} not installed");
    }
    let o = run(Command::new("systemctl").args(["--root=/", "list-unit-files", "wrapcrypt*"]));
    for u in &units {
        assert!(
            text(&o.stdout).contains(u.as_str()),
            "systemctl list-unit-files: {}",
            show(&o)
        );
    }
    if with_generator {
        assert!(Path::new(GENERATOR).is_file(), "{GENERATOR} not installed");
    }
    assert_eq!(mode(STATE), (0o700, 0), "{STATE} mode, owner");
    assert_eq!(
        mode(CUSTODIAN_STATE),
        (0o700, 0),
        "{CUSTODIAN_STATE} mode, owner"
    );
    assert!(
        Path::new("/etc/wrapcrypt").is_dir(),
        "/etc/wrapcrypt not created"
    );

    // The installed CLI finds the installed daemon (find_daemon: beside
    // itself) and the daemon accepts the state directory postinst made:
    // it creates the CURRENT master key there.
    let o = run(Command::new("/usr/sbin/wrapcrypt")
        .args(["custodian", "status"])
        .env_remove("WRAPCRYPT_CUSTODIAN_SOCKET")
        .env_remove("WRAPCRYPT_CUSTODIAN_TCTI"));
    assert!(o.status.success(), "custodian status: {}", show(&o));
    let lock = fs::read_to_string(Path::new(CUSTODIAN_STATE).join("custodiand.lock"))
        .expect("custodian lock file in the packaged state dir");
    let exe = fs::read_link(format!("/proc/{}/exe", lock.trim())).expect("custodian pid");
    assert_eq!(
        exe,
        Path::new("/usr/sbin/wrapcrypt-custodiand"),
        "custodian executable"
    );
    stop_custodian();
    let sealed: Vec<_> = fs::read_dir(CUSTODIAN_STATE).unwrap().flatten().collect();
    assert!(sealed.len() >= 2, "custodian wrote no state: {sealed:?}");
    let fake = Path::new(CUSTODIAN_STATE).join("package-test.key");
    fs::write(&fake, b"not a key: written by tests/package.rs\n").unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o600)).unwrap();

    // Reinstalling (dpkg's upgrade path) keeps every key and tightens a
    // state dir an administrator loosened.
    fs::set_permissions(STATE, fs::Permissions::from_mode(0o755)).unwrap();
    let o = dpkg(&["-i", &deb]);
    assert!(o.status.success(), "dpkg -i again: {}", show(&o));
    assert_eq!(mode(STATE), (0o700, 0), "{STATE} after reinstall");
    assert!(fake.is_file(), "reinstall deleted {}", fake.display());
    assert_eq!(
        fs::read_dir(CUSTODIAN_STATE).unwrap().count(),
        sealed.len() + 1,
        "reinstall changed {CUSTODIAN_STATE}"
    );

    // Remove keeps the state.
    let o = dpkg(&["-r", "wrapcrypt"]);
    assert!(o.status.success(), "dpkg -r: {}", show(&o));
    for gone in [
        "/usr/sbin/wrapcrypt",
        "/usr/sbin/wrapcrypt-custodiand",
        GENERATOR,
    ] {
        assert!(
            !Path::new(gone).exists(),
            "{gone} still there after dpkg -r"
        );
    }
    for u in &units {
        assert!(
            !Path::new(&format!("{UNIT_DIR}/{u}")).exists(),
            "{u} kept after dpkg -r"
        );
    }
    assert_eq!(package_status(), "rc", "dpkg -s after remove");
    assert!(fake.is_file(), "dpkg -r deleted {}", fake.display());
    assert_eq!(
        fs::read_dir(CUSTODIAN_STATE).unwrap().count(),
        sealed.len() + 1,
        "dpkg -r changed {CUSTODIAN_STATE}"
    );
    assert_eq!(
        mode(CUSTODIAN_STATE),
        (0o700, 0),
        "{CUSTODIAN_STATE} after dpkg -r"
    );
    assert!(
        text(&o.stderr).contains(STATE),
        "dpkg -r says nothing of {STATE}: {}",
        show(&o)
    );

    // Purge warns, then deletes it.
    let o = dpkg(&["-P", "wrapcrypt"]);
    assert!(o.status.success(), "dpkg -P: {}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("purging {STATE}")) && err.contains("master keys"),
        "dpkg -P gave no warning: {}",
        show(&o)
    );
    assert!(
        !Path::new(STATE).exists(),
        "{STATE} still there after dpkg -P"
    );
    assert_eq!(package_status(), "", "dpkg -s after purge");
    if !guard.etc_existed {
        assert!(
            !Path::new("/etc/wrapcrypt").exists(),
            "/etc/wrapcrypt left after dpkg -P"
        );
    }
    drop(guard);
}

//! `systemd-analyze verify` on every unit the generator writes for the
//! golden crypttab files, on systemd-cryptsetup-generator's units for the
//! same lines with our drop-ins applied, and on packaging/systemd. PID 1
//! is not systemd here, so the units are verified offline against a root
//! directory (`--root`): the real wrapcrypt binaries in ROOT/usr/sbin,
//! units in ROOT/usr/lib/systemd/system (the normal generator output,
//! systemd's generator output, packaging) and the early output in
//! ROOT/etc/systemd/system, which outranks them as the early directory does.
//! The host's own units (/lib/systemd/system: cryptsetup.target,
//! umount.target, …) are copied in too, so the start transactions
//! systemd-analyze builds see the real targets and would show a cycle.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{golden_dir, packaging_dir, release_bin, run_generator, walk};

const SD_GENERATOR: &str = "/lib/systemd/system-generators/systemd-cryptsetup-generator";

/// Copies every file and symlink of `from` into `to`, keeping paths.
fn merge(from: &Path, to: &Path) {
    merge_if(from, to, |_| true)
}

/// [`merge`] for the paths whose last component passes `keep`.
fn merge_if(from: &Path, to: &Path, keep: impl Fn(&str) -> bool) {
    for (rel, p) in walk(from) {
        if !keep(rel.rsplit('/').next().unwrap()) {
            continue;
        }
        let dst = to.join(&rel);
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        let _ = fs::remove_file(&dst);
        let m = fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&p).unwrap(), &dst).unwrap();
        } else {
            fs::copy(&p, &dst).unwrap();
        }
    }
}

/// A root with the release binaries (hard links where possible).
fn root_with_binaries(root: &Path) {
    let sbin = root.join("usr/sbin");
    fs::create_dir_all(&sbin).unwrap();
    for b in ["wrapcrypt", "wrapcrypt-custodiand"] {
        let src = release_bin(b);
        if fs::hard_link(&src, sbin.join(b)).is_err() {
            fs::copy(&src, sbin.join(b)).unwrap();
        }
    }
    fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    merge(
        Path::new("/lib/systemd/system"),
        &root.join("usr/lib/systemd/system"),
    );
}

/// Runs `systemd-analyze verify --man=no --root=ROOT UNITS`.
fn verify(root: &Path, units: &[String]) -> (i32, String) {
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .arg(format!("--root={}", root.display()))
        .args(units)
        .env("LC_ALL", "C")
        .output()
        .expect("systemd-analyze (package systemd; scripts/install-deps.sh)");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A temp dir on the target dir's file system, so binaries hard-link.
fn tempdir() -> tempfile::TempDir {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::tempdir_in(base).unwrap()
}

fn check(name: &str) {
    assert!(
        Path::new(SD_GENERATOR).exists(),
        "{SD_GENERATOR} missing: install systemd (scripts/install-deps.sh)"
    );
    let tab = golden_dir().join(format!("{name}.crypttab"));
    let tmp = tempdir();
    let root = tmp.path().join("root");
    root_with_binaries(&root);
    let lib = root.join("usr/lib/systemd/system");

    let ours = tmp.path().join("ours");
    let o = run_generator(&tab, &ours, None);
    assert!(o.status.success());
    merge(&ours.join("normal"), &lib);
    merge(&ours.join("early"), &root.join("etc/systemd/system"));
    merge(&packaging_dir(), &lib);
    let handled: Vec<String> = fs::read_dir(ours.join("early"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".d")
                .to_string()
        })
        .collect();

    // systemd's units for the same lines; those for lines we skip are not
    // ours to verify (it warns about bad lines in its own way).
    let sd = tmp.path().join("sd");
    for d in ["n", "e", "l"] {
        fs::create_dir_all(sd.join(d)).unwrap();
    }
    // Its exit status is not ours to judge: it fails on duplicate names
    // after writing the other units.
    Command::new(SD_GENERATOR)
        .args(["n", "e", "l"].map(|d| sd.join(d)))
        .env("SYSTEMD_CRYPTTAB", &tab)
        .env("SYSTEMD_LOG_TARGET", "console")
        .output()
        .unwrap();
    merge_if(&sd.join("n"), &lib, |n| {
        !n.starts_with("systemd-cryptsetup@") || handled.iter().any(|h| h == n)
    });

    let mut units: Vec<String> = Vec::new();
    for e in fs::read_dir(ours.join("normal")).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        if n.starts_with("wrapcrypt-open@") {
            units.push(n);
        }
    }
    for e in fs::read_dir(ours.join("early")).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        let unit = n.strip_suffix(".d").unwrap().to_string();
        assert!(
            lib.join(&unit).exists(),
            "systemd-cryptsetup-generator wrote no {unit}: the drop-in would be idle"
        );
        units.push(unit);
    }
    assert!(units.len() >= 2, "{units:?}");
    units.sort();
    units.push("wrapcrypt-custodiand.service".into());
    // The targets that pull the units in load with their .requires/ and
    // .wants/ links. (verify does not report ordering cycles, measured:
    // a unit both After=local-fs.target and Before=local-fs-pre.target
    // passes; cycles are not checked here.)
    units.extend([
        "cryptsetup.target".into(),
        "local-fs.target".into(),
        "sysinit.target".into(),
    ]);
    let (code, stderr) = verify(&root, &units);
    assert_eq!(code, 0, "systemd-analyze verify {units:?}:\n{stderr}");
    assert!(
        stderr.trim().is_empty(),
        "warnings for {units:?}:\n{stderr}"
    );

    // The check has teeth: a unit with a typo and a missing command fails.
    fs::write(
        lib.join("wrapcrypt-broken.service"),
        "[Unit]\nDescription=x\nDefaultDependencies=no\nBogus=1\n[Service]\nExecStart=/usr/sbin/wrapcrypt-none\n",
    )
    .unwrap();
    let (code, stderr) = verify(&root, &["wrapcrypt-broken.service".to_string()]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("Bogus") && stderr.contains("wrapcrypt-none"),
        "{stderr}"
    );
}

#[test]
fn generated_units_for_every_option_verify() {
    check("all-options");
}

#[test]
fn generated_units_for_bad_lines_verify() {
    check("bad-lines");
}

#[test]
fn packaging_units_verify_alone() {
    let tmp = tempdir();
    let root = tmp.path().join("root");
    root_with_binaries(&root);
    merge(&packaging_dir(), &root.join("usr/lib/systemd/system"));
    let mut units: Vec<String> = fs::read_dir(packaging_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service") || n.ends_with(".socket"))
        .collect();
    units.sort();
    assert!(!units.is_empty());
    let (code, stderr) = verify(&root, &units);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.trim().is_empty(), "{stderr}");
    let text = fs::read_to_string(packaging_dir().join("wrapcrypt-custodiand.service")).unwrap();
    for d in [
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "MemoryDenyWriteExecute=yes",
        "LockPersonality=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "CapabilityBoundingSet=CAP_IPC_LOCK",
        "LimitMEMLOCK=infinity",
        "StateDirectory=wrapcrypt",
        "StateDirectoryMode=0700",
    ] {
        assert!(text.lines().any(|l| l == d), "{d} missing");
    }
}

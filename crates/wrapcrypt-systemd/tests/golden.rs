//! The generator run on the crypttab files in tests/golden/: its output
//! tree (files, symlinks) and its warnings compared byte for byte with
//! `NAME.expected`. `UPDATE_GOLDEN=1` rewrites the expected files.

mod common;

use std::fs;

use common::{golden_dir, run_generator, walk};

/// The generator's output as one text: every file with its contents,
/// every symlink with its target, then stderr. The crypttab's path (a
/// temp-independent checkout path) is replaced by `@CRYPTTAB@`.
fn render(name: &str) -> (String, i32) {
    let tab = golden_dir().join(format!("{name}.crypttab"));
    let tmp = tempfile::tempdir().unwrap();
    let o = run_generator(&tab, tmp.path(), None);
    let mut s = String::new();
    for (rel, p) in walk(tmp.path()) {
        let m = fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() {
            s += &format!("=== {rel} -> {}\n", fs::read_link(&p).unwrap().display());
        } else {
            s += &format!("=== {rel}\n{}", fs::read_to_string(&p).unwrap());
        }
    }
    s += "=== stderr\n";
    s += &String::from_utf8_lossy(&o.stderr);
    let s = s.replace(&tab.to_string_lossy().into_owned(), "@CRYPTTAB@");
    (s, o.status.code().unwrap_or(-1))
}

fn check(name: &str) {
    let (got, code) = render(name);
    assert_eq!(code, 0, "generator failed on {name}:\n{got}");
    let path = golden_dir().join(format!("{name}.expected"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&path, &got).unwrap();
    }
    let want = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    if got != want {
        let first = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{name}: output differs from {} at line {}:\n got: {:?}\nwant: {:?}",
            path.display(),
            first + 1,
            got.lines().nth(first),
            want.lines().nth(first)
        );
    }
}

#[test]
fn every_option_maps_as_the_golden_units_say() {
    check("all-options");
}

#[test]
fn bad_lines_give_one_warning_each() {
    check("bad-lines");
    let (got, _) = render("bad-lines");
    let stderr = got.split("=== stderr\n").nth(1).unwrap();
    for line in stderr.lines() {
        assert!(
            line.starts_with("wrapcrypt-generator: @CRYPTTAB@: "),
            "{line}"
        );
    }
    // 12 lines below the comment: 7 skipped, 2 refused, 1 left to systemd
    // silently (no wrapcrypt option, header unreadable), 1 with 4 ignored options.
    assert_eq!(stderr.lines().count(), 13, "{stderr}");
}

#[test]
fn a_missing_crypttab_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run_generator(&tmp.path().join("absent"), &tmp.path().join("out"), None);
    assert!(o.status.success());
    assert!(o.stderr.is_empty());
    assert!(walk(&tmp.path().join("out")).is_empty());
}

#[test]
fn wrong_arguments_are_refused_in_one_line() {
    let o = std::process::Command::new(common::generator())
        .args(["a", "b"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("usage"), "{e}");
}

#[test]
fn escaping_matches_systemd_escape() {
    use wrapcrypt_systemd::escape::{escape, escape_path};
    let names = [
        "luks-1",
        "a.b",
        ".hidden",
        "x y",
        "ü",
        "a/b",
        "back\\slash",
        "50%",
        "UP_low:9",
    ];
    let paths = [
        "/dev/disk/by-id/usb-KEY-part1",
        "/",
        "//dev//sda1/",
        "/srv/vol%1.img",
        "/dev/./x",
    ];
    let run = |args: &[&str], input: &str| {
        let o = std::process::Command::new("systemd-escape")
            .args(args)
            .arg("--")
            .arg(input)
            .output()
            .expect("systemd-escape (package systemd)");
        assert!(o.status.success(), "{input}");
        String::from_utf8(o.stdout).unwrap().trim_end().to_string()
    };
    for n in names {
        assert_eq!(escape(n), run(&[], n), "{n:?}");
    }
    for p in paths {
        assert_eq!(escape_path(p), run(&["--path"], p), "{p:?}");
    }
}

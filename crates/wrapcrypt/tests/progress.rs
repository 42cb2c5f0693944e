//! Progress of long work through the real binary: on a pseudo-terminal a
//! redrawn cryptsetup-style line, quiet when standard output is not a
//! terminal, `--progress-frequency` lines and `--progress-json` objects
//! anywhere, nothing with `--batch-mode`; and the work itself done (the
//! reencrypted volume opens with cryptsetup).

mod common;
mod wrapped_common;

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};

use common::*;
use wrapped_common::*;

/// Runs `c` with standard output on a fresh pseudo-terminal (stderr piped,
/// stdin empty): (exit code, bytes the terminal received, stderr).
fn on_pty(c: Command) -> (i32, String, String) {
    on_pty_stdin(c, b"")
}

/// [`on_pty`] with `input` on stdin.
fn on_pty_stdin(mut c: Command, input: &[u8]) -> (i32, String, String) {
    let (mut m, mut s) = (-1, -1);
    // SAFETY: openpty fills two fds; the other pointers may be null.
    let r = unsafe {
        libc::openpty(
            &mut m,
            &mut s,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened and are owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    c.stdin(Stdio::piped())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn on pty");
    // The Command holds the parent's copy of the slave: close it, so the
    // master reads EOF (EIO) once the child is gone.
    drop(c);
    {
        use std::io::Write;
        let mut i = child.stdin.take().expect("stdin");
        let _ = i.write_all(input);
    }
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    });
    let mut e = String::new();
    err.read_to_string(&mut e).unwrap();
    let st = child.wait().unwrap();
    let out = reader.join().unwrap();
    (
        st.code().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
        e,
    )
}

const CLEAR: &str = "\x1b[2K\r";

/// No trace of a progress display in `out`.
fn assert_no_progress(out: &str, what: &str) {
    for t in ["Progress:", "Finished,", "\x1b", "\r", "device_bytes"] {
        assert!(!out.contains(t), "{what}: {t:?} in {out:?}");
    }
}

/// A 64 MiB volume (48 MiB of data) formatted by wrapcrypt.
fn volume(s: &Scratch) -> (String, String) {
    let img = s.image("r.img", 64);
    let kf = s.key("kf", b"progress pass");
    format(WC, &img, &kf, FAST);
    (img, kf)
}

fn reencrypt_args<'a>(img: &'a str, kf: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["reencrypt", img, "-d", kf];
    a.extend_from_slice(FAST);
    a.extend_from_slice(extra);
    a
}

#[test]
fn reencrypt_draws_on_a_terminal_and_is_quiet_otherwise() {
    let s = Scratch::new();
    let (img, kf) = volume(&s);
    let (code, tty, err) = on_pty(WC.cmd(&reencrypt_args(&img, &kf, &[])));
    assert_eq!(code, 0, "{tty}{err}");
    // The last draw clears the line and ends it: 48 MiB of data.
    let fin = tty
        .rfind(&format!("{CLEAR}Finished, time "))
        .unwrap_or_else(|| panic!("no Finished line: {tty:?}"));
    let last = &tty[fin + CLEAR.len()..];
    assert!(
        last.contains(",   48 MiB written, speed ") && last.ends_with(" MiB/s\r\n"),
        "{last:?}"
    );
    // Every intermediate line is cryptsetup's.
    for l in tty.split(CLEAR).filter(|l| l.starts_with("Progress:")) {
        assert!(
            l.contains("%, ETA ") && l.contains(" MiB written, speed "),
            "{l:?}"
        );
    }
    assert_eq!(test_pass(CS, &img, &kf, &[]), 0, "cryptsetup opens it");

    // Not a terminal: nothing on stdout, and the work is still done.
    let o = WC.run(&reencrypt_args(&img, &kf, &[]));
    assert_eq!(o.code, 0, "{o}");
    assert_no_progress(&o.stdout, "pipe");
    assert_eq!(o.stdout, "");
    assert_eq!(test_pass(CS, &img, &kf, &[]), 0);

    // --batch-mode: quiet even on a terminal, as cryptsetup.
    let (code, tty, err) = on_pty(WC.cmd(&reencrypt_args(&img, &kf, &["-q"])));
    assert_eq!(code, 0, "{err}");
    assert_no_progress(&tty, "batch mode");
}

#[test]
fn progress_frequency_and_json_print_without_a_terminal() {
    let s = Scratch::new();
    let (img, kf) = volume(&s);
    let o = WC.run(&reencrypt_args(&img, &kf, &["--progress-frequency", "1"]));
    assert_eq!(o.code, 0, "{o}");
    assert!(
        !o.stdout.contains('\x1b') && !o.stdout.contains('\r'),
        "{o}"
    );
    let lines: Vec<&str> = o.stdout.lines().collect();
    let last = lines.last().expect("a line");
    assert!(
        last.starts_with("Finished, time ") && last.contains("   48 MiB written, speed "),
        "{o}"
    );
    for l in &lines[..lines.len() - 1] {
        assert!(l.starts_with("Progress: "), "{o}");
    }

    let o = WC.run(&reencrypt_args(&img, &kf, &["--progress-json"]));
    assert_eq!(o.code, 0, "{o}");
    let objs: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let last = objs.last().expect("a JSON line");
    let data = (48u64 << 20).to_string();
    assert_eq!(last["device"], img.as_str());
    assert_eq!(last["device_size"], data.as_str());
    assert_eq!(last["device_bytes"], data.as_str());
    assert_eq!(last["eta_ms"], "0");
    for k in ["speed", "time_ms"] {
        assert!(
            last[k].as_str().unwrap().parse::<u64>().is_ok(),
            "{k}: {last}"
        );
    }
    assert_eq!(test_pass(CS, &img, &kf, &[]), 0);
}

#[test]
fn luks_format_shows_its_wipe_on_a_terminal_only() {
    let s = Scratch::new();
    let img = s.image("f.img", 32);
    let kf = s.key("kf", b"format pass");
    let mut a = vec!["luksFormat", &img, &kf];
    a.extend_from_slice(FAST);
    // Not --batch-mode (that silences progress): the confirmation is
    // read from stdin, as cryptsetup reads it.
    let (code, tty, err) = on_pty_stdin(WC.cmd(&a), b"YES\n");
    assert_eq!(code, 0, "{tty}{err}");
    // The metadata and keyslots area: 16 MiB before the data.
    assert!(
        tty.contains(&format!("{CLEAR}Finished, time 00m"))
            && tty.contains(",   16 MiB written, speed "),
        "{tty:?}"
    );
    assert_eq!(test_pass(CS, &img, &kf, &[]), 0);

    let o = WC.run_stdin(&a, Some(b"YES\n"));
    assert_eq!(o.code, 0, "{o}");
    assert_no_progress(&o.stdout, "pipe");
    assert_eq!(test_pass(CS, &img, &kf, &[]), 0);
}

#[test]
fn benchmark_shows_rows_done_between_rows_on_a_terminal() {
    let (code, tty, err) = on_pty(WC.cmd(&["benchmark", "--pbkdf", "pbkdf2"]));
    assert_eq!(code, 0, "{err}");
    // Five PBKDF2 rows, each at column 0, progress drawn between them and
    // cleared at the end.
    let rows: Vec<&str> = tty
        .split("\r\n")
        .map(|l| l.rsplit(CLEAR).next().unwrap())
        .filter(|l| l.starts_with("PBKDF2-"))
        .collect();
    assert_eq!(rows.len(), 5, "{tty:?}");
    for r in &rows {
        assert!(
            r.ends_with("iterations per second for 256-bit key"),
            "{r:?}"
        );
    }
    assert!(tty.contains(" of 5 tests"), "no progress line: {tty:?}");
    assert!(tty.contains("Progress:  20.0%, ETA 00m"), "{tty:?}");
    assert!(tty.ends_with(CLEAR), "line left behind: {tty:?}");

    let o = WC.run(&["benchmark", "--pbkdf", "pbkdf2"]);
    assert_eq!(o.code, 0, "{o}");
    assert_no_progress(&o.stdout, "pipe");
    assert_eq!(
        o.stdout
            .lines()
            .filter(|l| l.starts_with("PBKDF2-"))
            .count(),
        5
    );
}

#[test]
fn reencipher_reports_keyslots_sealed() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let ka = s.key("ka", b"passphrase A");
    let kb = s.key("kb", b"passphrase B");
    let img = s.image("v.img", 20);
    format_waes(&c, &img, &ka);
    let mut a = vec!["luksAddKey", img.as_str(), "--key-file", &ka, &kb];
    a.extend(FAST);
    c.ok(&a);
    c.ok(&["custodian", "load-new-master-key"]);
    let o = c.wc(
        &[
            "reencipher",
            "--staged",
            &img,
            "--key-file",
            &ka,
            "--progress-json",
        ],
        Some(b"passphrase B\n"),
    );
    assert_eq!(o.code, 0, "{o}");
    let objs: Vec<serde_json::Value> = o
        .stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = objs.last().unwrap_or_else(|| panic!("no progress: {o}"));
    assert_eq!(last["unit"], "keyslots");
    assert_eq!((&last["done"], &last["total"]), (&"2".into(), &"2".into()));
    assert!(o.stdout.contains("Staged re-encipher"), "{o}");
    // The staged keyslots are real: two unbound keyslots were added.
    let j: serde_json::Value =
        serde_json::from_str(&CS.ok(&["luksDump", "--dump-json-metadata", &img]).stdout).unwrap();
    assert_eq!(j["keyslots"].as_object().unwrap().len(), 4, "{j}");

    // Without a terminal and without the options: nothing but the result.
    c.ok(&[
        "reencipher",
        "-q",
        "--staged",
        "--force",
        &img,
        "--key-file",
        &ka,
    ]);
}

//! Crash safety of the wrapped-key lifecycle: reencipher (staged, complete,
//! in-place), setkey and convert are killed (SIGKILL via
//! `WRAPCRYPT_FAULT_AT=k`) before each of their device writes in turn, on a
//! fresh copy of the same volume. After every kill the volume must open
//! with the old or the new blob — `validate` (passphrase → blob → provider,
//! VP equal to the stored one) exits 0, cryptsetup accepts the passphrase —
//! the data area is byte-for-byte unchanged, and re-running the command
//! finishes the job. Each case prints how many kill points it exercised.

mod common;
mod wrapped_common;

use std::collections::BTreeMap;

use common::*;
use wrapped_common::*;

const DATA_OFFSET: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Old,
    Staged,
    New,
}

struct Case<'a> {
    name: &'static str,
    base: String,
    /// "IMG" (also inside an argument) stands for the image under test.
    args: Vec<&'a str>,
    stdin: Option<&'a [u8]>,
    /// Classifies a volume (asserting it opens); panics when neither state.
    phase: &'a dyn Fn(&str) -> Phase,
    /// Arguments that finish the job from a crashed state.
    finish: Vec<&'a str>,
}

fn expand(args: &[&str], img: &str) -> Vec<String> {
    args.iter().map(|a| a.replace("IMG", img)).collect()
}

/// Runs a case at every kill point; returns the clean run's image and the
/// number of kill points.
fn run_case(s: &Scratch, c: &Custodian, case: &Case) -> (String, usize) {
    let data = sha256_from(&case.base, DATA_OFFSET);
    assert_eq!((case.phase)(&case.base), Phase::Old, "{}: base", case.name);
    let clean = s.copy(&case.base, &format!("{}-clean.img", case.name));
    let count = s.p(&format!("{}-writes", case.name));
    let mut cmd = c.cmd(&expand(&case.args, &clean));
    cmd.env("WRAPCRYPT_FAULT_COUNT", &count);
    let o = run_cmd(&mut cmd, case.stdin, WC);
    assert_eq!(o.code, 0, "{}: clean run: {o}", case.name);
    assert_eq!((case.phase)(&clean), Phase::New, "{}: clean run", case.name);
    let n = std::fs::read_to_string(&count)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(n >= 3, "{}: only {n} write points", case.name);
    let mut seen: BTreeMap<Phase, Vec<usize>> = BTreeMap::new();
    for k in 1..=n {
        let what = format!("{} killed before write {k}/{n}", case.name);
        let img = s.copy(&case.base, &format!("{}-k{k}.img", case.name));
        let mut cmd = c.cmd(&expand(&case.args, &img));
        cmd.env("WRAPCRYPT_FAULT_AT", k.to_string());
        let o = run_cmd(&mut cmd, case.stdin, WC);
        assert_eq!(o.signal, Some(libc::SIGKILL), "{what}: not killed: {o}");
        let p = (case.phase)(&img);
        assert_eq!(
            sha256_from(&img, DATA_OFFSET),
            data,
            "{what}: data area changed"
        );
        seen.entry(p).or_default().push(k);
        if p != Phase::New {
            let o = c.wc(&expand(&case.finish, &img), case.stdin);
            assert_eq!(o.code, 0, "{what}: finishing ({p:?}): {o}");
            assert_eq!((case.phase)(&img), Phase::New, "{what}: after finishing");
        }
        std::fs::remove_file(&img).ok();
    }
    println!(
        "{}: {n} kill points; states after the kill: {seen:?}",
        case.name
    );
    assert!(
        seen.contains_key(&Phase::Old),
        "{}: never old: {seen:?}",
        case.name
    );
    (clean, n)
}

fn token<'a>(j: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    j["tokens"]
        .as_object()?
        .values()
        .find(|t| t["type"] == kind)
}

fn json(img: &str) -> serde_json::Value {
    serde_json::from_str(&CS.ok(&["luksDump", "--dump-json-metadata", img]).stdout).unwrap()
}

/// The volume opens for both tools and validate passes; returns its report.
fn opens(c: &Custodian, img: &str, kf: &str) -> serde_json::Value {
    assert_eq!(
        test_pass(CS, img, kf, &[]),
        0,
        "{img}: cryptsetup --test-passphrase"
    );
    let (code, r) = c.validate(img, kf);
    assert_eq!(code, 0, "{img}: validate: {r}");
    r
}

fn fill_data(img: &str) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.seek(SeekFrom::Start(DATA_OFFSET)).unwrap();
    let d: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2246822519) >> 11) as u8)
        .collect();
    f.write_all(&d).unwrap();
}

#[test]
fn lifecycle_commands_survive_a_kill_at_every_write() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let ka = s.key("ka", b"passphrase A");
    let v = s.image("v.img", 18);
    format_waes(&c, &v, &ka);
    fill_data(&v);
    let vp_v = opens(&c, &v, &ka)["verification-pattern"]
        .as_str()
        .unwrap()
        .to_string();
    let mut total = 0;

    // 1. reencipher --staged (CURRENT -> NEW)
    c.ok(&["custodian", "load-new-master-key"]);
    let staged_phase = |img: &str| {
        let r = opens(&c, img, &ka);
        assert_eq!(r["verification-pattern"], vp_v.as_str());
        if r["reencipher-staged"].is_null() {
            Phase::Old
        } else {
            Phase::New
        }
    };
    let (staged, n) = run_case(
        &s,
        &c,
        &Case {
            name: "reencipher --staged",
            base: v.clone(),
            args: vec!["reencipher", "--staged", "IMG", "--key-file", &ka],
            stdin: None,
            phase: &staged_phase,
            finish: vec![
                "reencipher",
                "--staged",
                "--force",
                "IMG",
                "--key-file",
                &ka,
            ],
        },
    );
    total += n;

    // 2. reencipher --complete after set-master-key
    c.ok(&["custodian", "set-master-key"]);
    let complete_phase = |img: &str| {
        let r = opens(&c, img, &ka);
        assert_eq!(r["verification-pattern"], vp_v.as_str());
        match (r["reencipher-staged"].is_null(), r["register"].as_str()) {
            (false, Some("OLD")) => Phase::Old,
            (true, Some("CURRENT")) => Phase::New,
            other => panic!("{img}: neither staged nor completed: {other:?} {r}"),
        }
    };
    let (completed, n) = run_case(
        &s,
        &c,
        &Case {
            name: "reencipher --complete",
            base: staged,
            args: vec!["reencipher", "--complete", "IMG", "--key-file", &ka],
            stdin: None,
            phase: &complete_phase,
            finish: vec!["reencipher", "--complete", "IMG", "--key-file", &ka],
        },
    );
    total += n;

    // 3. reencipher --from-old --in-place on the volume never staged
    let inplace_phase = |img: &str| {
        let r = opens(&c, img, &ka);
        assert_eq!(r["verification-pattern"], vp_v.as_str());
        match (r["reencipher-staged"].is_null(), r["register"].as_str()) {
            (true, Some("OLD")) => Phase::Old,
            (false, Some("OLD")) => Phase::Staged,
            (true, Some("CURRENT")) => Phase::New,
            other => panic!("{img}: unexpected state {other:?} {r}"),
        }
    };
    let (_, n) = run_case(
        &s,
        &c,
        &Case {
            name: "reencipher --from-old --in-place",
            base: v.clone(),
            args: vec![
                "reencipher",
                "--from-old",
                "--in-place",
                "IMG",
                "--key-file",
                &ka,
            ],
            stdin: None,
            phase: &inplace_phase,
            finish: vec![
                "reencipher",
                "--from-old",
                "--in-place",
                "--force",
                "IMG",
                "--key-file",
                &ka,
            ],
        },
    );
    total += n;

    // 4. setkey --force with another volume's blob
    let w = s.image("w.img", 18);
    format_waes(&c, &w, &ka);
    let wkb = s.p("w.wkb");
    CS.ok(&[
        "luksDump",
        "-q",
        "--dump-volume-key",
        "--volume-key-file",
        &wkb,
        "--key-file",
        &ka,
        &w,
    ]);
    let vp_w = opens(&c, &w, &ka)["verification-pattern"]
        .as_str()
        .unwrap()
        .to_string();
    let setkey_phase = |img: &str| {
        let r = opens(&c, img, &ka);
        let vp = r["verification-pattern"].as_str().unwrap();
        if vp == vp_v {
            Phase::Old
        } else {
            assert_eq!(vp, vp_w, "{img}: {r}");
            assert!(r["reencipher-staged"].is_null(), "{r}");
            Phase::New
        }
    };
    let args = vec![
        "setkey",
        "-q",
        "--force",
        "IMG",
        "--volume-key-file",
        &wkb,
        "--key-file",
        &ka,
    ];
    let (_, n) = run_case(
        &s,
        &c,
        &Case {
            name: "setkey --force",
            base: completed,
            args: args.clone(),
            stdin: None,
            phase: &setkey_phase,
            finish: args,
        },
    );
    total += n;

    // 5. convert aes-xts-plain64 -> waes-xts-plain64, two keyslots
    let kb = s.key("kb", b"passphrase B");
    let a = s.image("a.img", 18);
    format(WC, &a, &ka, &[]);
    assert_eq!(add_key(WC, &a, &ka, &kb, Some(1)).code, 0);
    fill_data(&a);
    let clear = volume_key(CS, &a, &ka, &[]);
    let clear_vp = python_vp(&clear);
    let convert_phase = |img: &str| {
        let j = json(img);
        let cipher = j["segments"]["0"]["encryption"]
            .as_str()
            .unwrap()
            .to_string();
        for k in [&ka, &kb] {
            assert_eq!(test_pass(CS, img, k, &[]), 0, "{img}: {k}");
            assert_eq!(test_pass(WC, img, k, &[]), 0, "{img}: {k}");
        }
        match cipher.as_str() {
            "aes-xts-plain64" => {
                assert_eq!(volume_key(CS, img, &kb, &[]), clear);
                assert!(token(&j, "waes-provider").is_none());
                Phase::Old
            }
            "waes-xts-plain64" => {
                for k in [&ka, &kb] {
                    assert_eq!(opens(&c, img, k)["verification-pattern"], clear_vp.as_str());
                }
                Phase::New
            }
            other => panic!("{img}: cipher {other}"),
        }
    };
    let (_, n) = run_case(
        &s,
        &c,
        &Case {
            name: "convert --cipher waes-xts-plain64",
            base: a,
            args: vec![
                "convert",
                "-q",
                "IMG",
                "--cipher",
                "waes-xts-plain64",
                "--key-file",
                &ka,
            ],
            stdin: Some(b"passphrase B\n"),
            phase: &convert_phase,
            finish: vec![
                "convert",
                "-q",
                "IMG",
                "--cipher",
                "waes-xts-plain64",
                "--key-file",
                &ka,
                "--header-backup-file",
                "IMG.again",
            ],
        },
    );
    total += n;
    println!("lifecycle crash safety: {total} kill points in all");
}

//! Crash safety: every metadata-changing command is killed (SIGKILL, via
//! `WRAPCRYPT_FAULT_AT=k`) right before each of its device writes in turn,
//! on a fresh copy of the same volume. Afterwards the volume must be in the
//! old or the new state as a whole: the credentials of one of them open it
//! with wrapcrypt and cryptsetup alike, the volume key is unchanged, and
//! cryptsetup parses the header — after `wrapcrypt repair` when the two
//! header copies disagree, which must then leave them equal.

mod common;

use std::collections::BTreeMap;

use common::*;

/// What a probe of a crashed volume saw.
struct Seen {
    /// Key file name → whether it opens (both tools agree, or the probe fails).
    opens: BTreeMap<&'static str, bool>,
    /// cryptsetup's JSON dump.
    json: serde_json::Value,
    /// The label as cryptsetup shows it.
    label: String,
    /// Keyslot ids in the header, ascending.
    slots: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Old,
    New,
}

struct Case {
    name: &'static str,
    /// Arguments; "IMG" stands for the image, "K:x" for key file x.
    args: Vec<&'static str>,
    /// Key files to probe after a crash.
    probe: Vec<&'static str>,
    /// Old or new state, or why it is neither.
    classify: fn(&Seen) -> Result<Phase, String>,
    /// Fewest write points the command may have.
    min_writes: usize,
}

const KEYS: &[(&str, &[u8])] = &[
    ("ka", b"passphrase A, keyslot 0"),
    ("kb", b"passphrase B, keyslot 1"),
    ("kc", b"passphrase C, new"),
];
const TOKEN: &str = r#"{"type":"x-crash-test","keyslots":[],"note":"kept as written"}"#;

/// A 3 MiB volume: keyslot 0 opens with ka, keyslot 1 with kb.
fn prepare(s: &Scratch) -> (String, String) {
    for (name, data) in KEYS {
        s.key(name, data);
    }
    s.key("token.json", TOKEN.as_bytes());
    let img = s.image("base.img", 3);
    let mut opts = FAST.to_vec();
    opts.extend(["--luks2-keyslots-size", "1m"]);
    format(WC, &img, &s.p("ka"), &opts);
    let o = add_key(CS, &img, &s.p("ka"), &s.p("kb"), Some(1));
    assert_eq!(o.code, 0, "prepare: {o}");
    let vk = same_volume_key(&img, &s.p("ka"), &[]);
    (img, vk)
}

fn expand(s: &Scratch, args: &[&str], img: &str) -> Vec<String> {
    args.iter()
        .map(|a| match a.strip_prefix("K:") {
            _ if *a == "IMG" => img.to_string(),
            Some(k) => s.p(k),
            None => a.to_string(),
        })
        .collect()
}

/// Which probe keys open, asking both tools; they must agree.
fn opens(
    s: &Scratch,
    img: &str,
    keys: &[&'static str],
    what: &str,
) -> BTreeMap<&'static str, bool> {
    keys.iter()
        .map(|&k| {
            let w = test_pass(WC, img, &s.p(k), &[]);
            let c = test_pass(CS, img, &s.p(k), &[]);
            assert!(
                (w == 0 && c == 0) || (w == 2 && c == 2),
                "{what}: {k}: wrapcrypt exit {w}, cryptsetup exit {c}"
            );
            (k, w == 0)
        })
        .collect()
}

fn label(img: &str) -> String {
    let o = CS.ok(&["luksDump", img]);
    let line = o
        .stdout
        .lines()
        .find(|l| l.starts_with("Label:"))
        .expect("Label line");
    let v = line["Label:".len()..].trim();
    if v == "(no label)" {
        String::new()
    } else {
        v.to_string()
    }
}

/// Probes a volume after a crash (or a clean run) and checks the invariants
/// common to every command.
fn probe(s: &Scratch, img: &str, case: &Case, vk: &str, what: &str) -> Seen {
    let [p, sec] = header_copies(img);
    let torn = match (&p, &sec) {
        (Some(p), Some(s)) => p != s,
        _ => true,
    };
    // wrapcrypt reads the volume as it is (read-only, no repair).
    let before = bytes(img);
    let wc_view: Vec<(&str, i32)> = case
        .probe
        .iter()
        .map(|&k| (k, test_pass(WC, img, &s.p(k), &[])))
        .collect();
    assert_same_bytes(
        &before,
        &bytes(img),
        &format!("{what}: --test-passphrase wrote"),
    );
    if torn {
        // cryptsetup copes with the unrepaired volume too (on a copy: it
        // recovers the other copy by itself when it can write).
        let copy = s.copy(img, "torn-copy.img");
        CS.ok(&["luksDump", &copy]);
        for &(k, code) in &wc_view {
            let c = test_pass(CS, &copy, &s.p(k), &[]);
            assert_eq!(c, code, "{what}: torn volume, {k}: cryptsetup vs wrapcrypt");
        }
        let r = WC.run(&["repair", "-q", img]);
        assert_eq!(r.code, 0, "{what}: wrapcrypt repair: {r}");
    }
    assert_copies_agree(img, &format!("{what} (torn: {torn})"));
    let mut seen = Seen {
        opens: opens(s, img, &case.probe, what),
        json: serde_json::from_str(&CS.ok(&["luksDump", "--dump-json-metadata", img]).stdout)
            .expect("cryptsetup JSON"),
        label: label(img),
        slots: vec![],
    };
    seen.slots = seen.json["keyslots"]
        .as_object()
        .expect("keyslots")
        .keys()
        .map(|k| k.parse().expect("keyslot id"))
        .collect();
    seen.slots.sort();
    for &(k, code) in &wc_view {
        assert_eq!(code == 0, seen.opens[k], "{what}: {k} before/after repair");
    }
    let opener = seen
        .opens
        .iter()
        .find(|(_, &o)| o)
        .map(|(k, _)| *k)
        .unwrap_or_else(|| panic!("{what}: no credential opens the volume"));
    assert_eq!(
        volume_key(CS, img, &s.p(opener), &[]),
        vk,
        "{what}: volume key changed"
    );
    seen
}

fn run_case(case: Case) {
    let s = Scratch::new();
    let (base, vk) = prepare(&s);
    let img = s.p("v.img");
    // Count the write points of a clean run.
    std::fs::copy(&base, &img).unwrap();
    let count_file = s.p("writes");
    let args = expand(&s, &case.args, &img);
    let mut c = WC.cmd(&args);
    c.env("WRAPCRYPT_FAULT_COUNT", &count_file);
    let o = run_cmd(&mut c, None, WC);
    assert_eq!(o.code, 0, "{}: clean run: {o}", case.name);
    let n = std::fs::read_to_string(&count_file)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(n >= case.min_writes, "{}: only {n} write points", case.name);
    let clean = probe(&s, &img, &case, &vk, &format!("{} clean", case.name));
    assert_eq!(
        (case.classify)(&clean),
        Ok(Phase::New),
        "{}: clean run",
        case.name
    );

    let mut phases = vec![];
    for k in 1..=n + 1 {
        let what = format!("{} killed before write {k}/{n}", case.name);
        std::fs::copy(&base, &img).unwrap();
        let mut c = WC.cmd(&args);
        c.env("WRAPCRYPT_FAULT_AT", k.to_string());
        let o = run_cmd(&mut c, None, WC);
        if k <= n {
            assert_eq!(o.signal, Some(libc::SIGKILL), "{what}: not killed: {o}");
        } else {
            assert_eq!(o.code, 0, "{what}: a fault point past the last write: {o}");
        }
        let seen = probe(&s, &img, &case, &vk, &what);
        let phase = (case.classify)(&seen).unwrap_or_else(|e| panic!("{what}: {e}"));
        phases.push(phase);
    }
    // Killed before the first write nothing changed; the commit point lies
    // somewhere in between, and phases never go back from new to old.
    assert_eq!(
        phases[0],
        Phase::Old,
        "{}: killed before any write",
        case.name
    );
    assert_eq!(phases[n], Phase::New, "{}: completed run", case.name);
    let first_new = phases.iter().position(|&p| p == Phase::New).unwrap();
    assert!(
        phases[first_new..].iter().all(|&p| p == Phase::New),
        "{}: phases went back: {phases:?}",
        case.name
    );
    eprintln!(
        "crash {}: {n} kill points exercised; old state for k < {}, new from k = {} ({phases:?})",
        case.name,
        first_new + 1,
        first_new + 1
    );
}

fn open_set(seen: &Seen) -> Vec<&'static str> {
    seen.opens
        .iter()
        .filter(|(_, &o)| o)
        .map(|(k, _)| *k)
        .collect()
}

fn add_key_case() -> Case {
    Case {
        name: "luksAddKey",
        args: [
            &["luksAddKey", "-q"][..],
            FAST,
            &["IMG", "-d", "K:ka", "-S", "5", "K:kc"],
        ]
        .concat(),
        probe: vec!["ka", "kb", "kc"],
        classify: |s| match (&open_set(s)[..], &s.slots[..]) {
            (["ka", "kb"], [0, 1]) => Ok(Phase::Old),
            (["ka", "kb", "kc"], [0, 1, 5]) => Ok(Phase::New),
            (o, k) => Err(format!("opening keys {o:?}, keyslots {k:?}")),
        },
        min_writes: 3,
    }
}

fn remove_key_case() -> Case {
    Case {
        name: "luksRemoveKey",
        args: vec!["luksRemoveKey", "-q", "IMG", "-d", "K:kb"],
        probe: vec!["ka", "kb"],
        classify: |s| match (&open_set(s)[..], &s.slots[..]) {
            (["ka", "kb"], [0, 1]) => Ok(Phase::Old),
            (["ka"], [0]) => Ok(Phase::New),
            (o, k) => Err(format!("opening keys {o:?}, keyslots {k:?}")),
        },
        min_writes: 2,
    }
}

#[test]
fn crash_add_key() {
    run_case(add_key_case());
}

#[test]
fn crash_remove_key() {
    run_case(remove_key_case());
}

#[test]
fn crash_change_key() {
    run_case(Case {
        name: "luksChangeKey",
        args: [
            &["luksChangeKey", "-q"][..],
            FAST,
            &["IMG", "-d", "K:kb", "K:kc"],
        ]
        .concat(),
        probe: vec!["ka", "kb", "kc"],
        classify: |s| match (&open_set(s)[..], &s.slots[..]) {
            (["ka", "kb"], [0, 1]) => Ok(Phase::Old),
            (["ka", "kc"], [0, 1]) => Ok(Phase::New),
            (o, k) => Err(format!("opening keys {o:?}, keyslots {k:?}")),
        },
        min_writes: 3,
    });
}

#[test]
fn crash_kill_slot() {
    run_case(Case {
        name: "luksKillSlot",
        args: vec!["luksKillSlot", "-q", "IMG", "1"],
        probe: vec!["ka", "kb"],
        classify: |s| match (&open_set(s)[..], &s.slots[..]) {
            (["ka", "kb"], [0, 1]) => Ok(Phase::Old),
            (["ka"], [0]) => Ok(Phase::New),
            (o, k) => Err(format!("opening keys {o:?}, keyslots {k:?}")),
        },
        min_writes: 2,
    });
}

#[test]
fn crash_convert_key() {
    run_case(Case {
        name: "luksConvertKey",
        args: [
            &[
                "luksConvertKey",
                "-q",
                "IMG",
                "-d",
                "K:kb",
                "--pbkdf",
                "argon2id",
            ][..],
            FAST_ARGON,
        ]
        .concat(),
        probe: vec!["ka", "kb"],
        classify: |s| {
            let kdf = s.json["keyslots"]["1"]["kdf"]["type"]
                .as_str()
                .unwrap_or("none");
            match (&open_set(s)[..], &s.slots[..], kdf) {
                (["ka", "kb"], [0, 1], "pbkdf2") => Ok(Phase::Old),
                (["ka", "kb"], [0, 1], "argon2id") => Ok(Phase::New),
                (o, k, f) => Err(format!("opening keys {o:?}, keyslots {k:?}, KDF {f}")),
            }
        },
        min_writes: 3,
    });
}

#[test]
fn crash_config_label() {
    run_case(Case {
        name: "config --label",
        args: vec!["config", "IMG", "--label", "crash-label"],
        probe: vec!["ka", "kb"],
        classify: |s| match (&open_set(s)[..], &s.slots[..], s.label.as_str()) {
            (["ka", "kb"], [0, 1], "") => Ok(Phase::Old),
            (["ka", "kb"], [0, 1], "crash-label") => Ok(Phase::New),
            (o, k, l) => Err(format!("opening keys {o:?}, keyslots {k:?}, label {l:?}")),
        },
        min_writes: 2,
    });
}

#[test]
fn crash_token_import() {
    run_case(Case {
        name: "token import",
        args: vec![
            "token",
            "import",
            "IMG",
            "--json-file",
            "K:token.json",
            "--token-id",
            "2",
        ],
        probe: vec!["ka", "kb"],
        classify: |s| {
            let tokens = s.json["tokens"].as_object().cloned().unwrap_or_default();
            let want: serde_json::Value = serde_json::from_str(TOKEN).unwrap();
            match (
                &open_set(s)[..],
                &s.slots[..],
                tokens.len(),
                tokens.get("2"),
            ) {
                (["ka", "kb"], [0, 1], 0, None) => Ok(Phase::Old),
                (["ka", "kb"], [0, 1], 1, Some(t)) if *t == want => Ok(Phase::New),
                (o, k, n, t) => Err(format!(
                    "opening keys {o:?}, keyslots {k:?}, {n} tokens, token 2 {t:?}"
                )),
            }
        },
        min_writes: 2,
    });
}

/// A write torn part-way (power loss inside a header write, which SIGKILL
/// before a write cannot produce): the image is built from the volume
/// before and after a clean run, with the bytes of earlier writes taken
/// from "after" and the torn copy new only up to `cut`. A torn primary must
/// fall back to the old secondary, a torn secondary must leave the new
/// primary in force; both tools must agree, and `wrapcrypt repair` must make
/// the copies equal.
#[test]
fn torn_header_writes() {
    // (case, keyslot area written before the header?)
    for (case, area_first) in [(add_key_case(), true), (remove_key_case(), false)] {
        let s = Scratch::new();
        let (base, vk) = prepare(&s);
        let post_img = s.p("post.img");
        std::fs::copy(&base, &post_img).unwrap();
        WC.ok(&expand(&s, &case.args, &post_img));
        let (pre, post) = (bytes(&base), bytes(&post_img));
        let hs = header_copies(&base)[0].as_ref().unwrap().hdr_size as usize;
        let mut cases = 0;
        for secondary in [false, true] {
            for cut in [512, 4096, 4096 + 1024] {
                let mut img = pre.clone();
                if area_first {
                    img[2 * hs..].copy_from_slice(&post[2 * hs..]);
                }
                let start = if secondary {
                    img[..hs].copy_from_slice(&post[..hs]);
                    hs
                } else {
                    0
                };
                img[start..start + cut].copy_from_slice(&post[start..start + cut]);
                let path = s.p("torn.img");
                std::fs::write(&path, &img).unwrap();
                let what = format!(
                    "{}: {} copy torn after {cut} bytes",
                    case.name,
                    if secondary { "secondary" } else { "primary" }
                );
                let seen = probe(&s, &path, &case, &vk, &what);
                let phase = (case.classify)(&seen).unwrap_or_else(|e| panic!("{what}: {e}"));
                let want = if secondary { Phase::New } else { Phase::Old };
                assert_eq!(phase, want, "{what}");
                cases += 1;
            }
        }
        eprintln!("torn {}: {cases} torn header writes recovered", case.name);
    }
}

//! LUKS2 headers in every reencryption state cryptsetup 2.6.1 writes, made
//! at test time with cryptsetup-bin on small image files: right after
//! `cryptsetup reencrypt --init-only`, and part-way through an offline
//! reencryption stopped by SIGINT (cryptsetup finishes the hotzone, writes
//! the header and exits: segments are then partly old, partly new).
//!
//! Each header must parse without repair, re-encode to the same bytes in
//! both copies, dump (`luksDump`, `--dump-json-metadata`) exactly as
//! cryptsetup does, and describe through `Metadata::reencrypt_state` the
//! reencryption that the cryptsetup command line asked for.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wrapcrypt_format::dump::{luks2_dump, luks2_json_dump, Luks2BinaryInfo};
use wrapcrypt_format::luks2::{
    Copy, Luks2Header, ReencryptDirection, ReencryptInfo, ReencryptMode, MAX_METADATA_PREFIX,
};

const PASS: &str = "testpass";
const FAST: [&str; 4] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
const OFFLINE: &str = "--force-offline-reencrypt";

fn have_cryptsetup() -> bool {
    let ok = Command::new("cryptsetup")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: cryptsetup-bin is not installed (scripts/install-deps.sh installs it)");
    }
    ok
}

fn run(args: &[&str]) -> Vec<u8> {
    let out = Command::new("cryptsetup")
        .args(args)
        .output()
        .expect("cryptsetup runs");
    assert!(
        out.status.success(),
        "cryptsetup {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pw"), PASS).expect("pw");
        Dir { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).to_str().expect("utf8 path").to_string()
    }
    fn blank(&self, name: &str, mib: u64) -> String {
        std::fs::File::create(self.path(name))
            .and_then(|f| f.set_len(mib << 20))
            .expect("image");
        self.s(name)
    }
    /// `cryptsetup luksFormat` of a fresh image, with `extra` options.
    fn format(&self, name: &str, mib: u64, extra: &[&str]) -> String {
        let img = self.blank(name, mib);
        let pw = self.s("pw");
        let mut a = vec!["luksFormat", "-q", "--type", "luks2", "--key-file", &pw];
        a.extend_from_slice(&FAST);
        a.extend_from_slice(extra);
        a.push(&img);
        run(&a);
        img
    }
}

fn be64(b: &[u8], o: usize) -> u64 {
    u64::from_be_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

fn seqid(hdr: &Path) -> u64 {
    let mut b = vec![0u8; 24];
    use std::io::Read;
    std::fs::File::open(hdr)
        .and_then(|mut f| f.read_exact(&mut b))
        .map(|_| be64(&b, 16))
        .unwrap_or(0)
}

fn sector_at(dev: &Path, offset: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut b = vec![0u8; 512];
    std::fs::File::open(dev)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(offset))?;
            f.read_exact(&mut b)
        })
        .expect("read data sector");
    b
}

/// Runs `cryptsetup ARGS` (an offline reencryption of a header in
/// reencryption state) and stops it with SIGINT once it has written the
/// header `steps` times or, with `probe` (device and offset), once the data
/// there has been rewritten (resilience `none` writes the header only at
/// the end, or when interrupted), so the header is left part-way.
fn interrupt(args: &[&str], hdr: &Path, steps: u64, probe: Option<(&Path, u64)>) {
    let start = seqid(hdr);
    let before = probe.map(|(dev, off)| sector_at(dev, off));
    let rewritten = || match (probe, &before) {
        (Some((dev, off)), Some(b)) => sector_at(dev, off) != *b,
        _ => false,
    };
    let mut child = Command::new("cryptsetup")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cryptsetup runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            panic!("cryptsetup {args:?} ended ({st}) before it could be interrupted");
        }
        if seqid(hdr) >= start + steps || rewritten() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cryptsetup {args:?} made no progress"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "kill");
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("interrupted"),
        "cryptsetup {args:?} was not interrupted: {} {err}",
        out.status
    );
}

/// What the cryptsetup command asked for.
#[derive(Clone, Copy)]
struct Want {
    mode: ReencryptMode,
    direction: ReencryptDirection,
    resilience: &'static str,
    requirement: &'static str,
    moved: bool,
    midway: bool,
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn flagged(json: &Value, flag: &str) -> Option<u32> {
    json["segments"].as_object()?.iter().find_map(|(k, s)| {
        ids(&s["flags"])
            .iter()
            .any(|f| f == flag)
            .then(|| k.parse().expect("id"))
    })
}

fn digest_listing(json: &Value, member: &str, id: u32) -> Option<u32> {
    json["digests"].as_object()?.iter().find_map(|(k, d)| {
        ids(&d[member])
            .contains(&id.to_string())
            .then(|| k.parse().expect("id"))
    })
}

/// The checks every reencryption header must pass; returns its state.
fn check(name: &str, hdr: &Path, want: &Want) -> ReencryptInfo {
    let mut buf = std::fs::read(hdr).expect("read header");
    buf.truncate(MAX_METADATA_PREFIX);
    let loaded = Luks2Header::parse(&buf).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        loaded.needs_repair.is_none(),
        "{name}: {:?}",
        loaded.needs_repair
    );
    let h = &loaded.header;
    let hs = h.hdr_size as usize;

    // Re-encoding the unchanged header gives both copies byte for byte.
    let p = h.encode_copy(Copy::Primary).expect("encode");
    let s = h.encode_copy(Copy::Secondary).expect("encode");
    assert!(p == buf[..hs], "{name}: primary copy not byte-identical");
    assert!(
        s == buf[hs..2 * hs],
        "{name}: secondary copy not byte-identical"
    );

    // luksDump and --dump-json-metadata as cryptsetup prints them.
    let b = loaded
        .primary_binary
        .as_ref()
        .expect("primary binary header");
    let info = Luks2BinaryInfo {
        version: b.version,
        hdr_size: b.hdr_size,
        seqid: b.seqid,
        label: &b.label,
        checksum_alg: &b.checksum_alg,
        salt: b.salt,
        uuid: &b.uuid,
        subsystem: &b.subsystem,
        hdr_offset: b.hdr_offset,
    };
    let json = h.json_value();
    let hdrs = hdr.to_str().expect("utf8");
    let mut ours = String::new();
    luks2_dump(&info, &json, &mut ours);
    let theirs = String::from_utf8(run(&["luksDump", hdrs])).expect("utf8");
    assert_eq!(ours, theirs, "{name}: luksDump");
    let mut ours = String::new();
    luks2_json_dump(&json, &mut ours);
    let theirs = String::from_utf8(run(&["luksDump", "--dump-json-metadata", hdrs])).expect("utf8");
    assert_eq!(ours, theirs, "{name}: --dump-json-metadata");

    // The state, against what was asked and the JSON as cryptsetup wrote it.
    let st = h
        .meta
        .reencrypt_state()
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .unwrap_or_else(|| panic!("{name}: no reencryption state"));
    assert_eq!(st.mode, want.mode, "{name}: mode");
    assert_eq!(st.direction, want.direction, "{name}: direction");
    assert_eq!(
        st.resilience.as_str(),
        want.resilience,
        "{name}: resilience"
    );
    assert_eq!(st.requirement, want.requirement, "{name}: requirement");
    let ks = &json["keyslots"][st.keyslot.to_string()];
    assert_eq!(ks["type"], "reencrypt", "{name}");
    assert_eq!(ks["area"]["type"], want.resilience, "{name}");
    if let Some(shift) = st.resilience.shift_size() {
        assert_eq!(ks["area"]["shift_size"], shift.to_string(), "{name}");
    }
    assert_eq!(Some(st.previous_segment), flagged(&json, "backup-previous"));
    assert_eq!(Some(st.final_segment), flagged(&json, "backup-final"));
    assert_eq!(st.moved_segment, flagged(&json, "backup-moved-segment"));
    assert_eq!(
        st.moved_segment.is_some(),
        want.moved,
        "{name}: moved segment"
    );
    assert_eq!(
        st.old_digest,
        digest_listing(&json, "segments", st.previous_segment)
    );
    assert_eq!(
        st.new_digest,
        digest_listing(&json, "segments", st.final_segment)
    );
    assert_eq!(
        st.old_digest.is_none(),
        want.mode == ReencryptMode::Encrypt,
        "{name}: old key"
    );
    assert_eq!(
        st.new_digest.is_none(),
        want.mode == ReencryptMode::Decrypt,
        "{name}: new key"
    );
    assert_eq!(
        st.verification_digest,
        digest_listing(&json, "keyslots", st.keyslot)
    );
    assert!(st.verification_digest.is_some(), "{name}: v2+ digest");
    assert_eq!(!st.is_initial(), want.midway, "{name}: progress {st:?}");
    // The regular segments cover the data without gaps (unless the data
    // moves: then the shift leaves room between them), rewritten data at
    // the start (forward) or at the end (backward) of it.
    let seg = |id: u32| &h.meta.segments[&id];
    let mut regular: Vec<u32> = st
        .old_segments
        .iter()
        .chain(&st.new_segments)
        .copied()
        .collect();
    regular.sort_by_key(|&id| seg(id).offset);
    for w in regular.windows(2) {
        if st.resilience.shift_size().is_some() {
            assert!(seg(w[0]).end() <= Some(seg(w[1]).offset), "{name}: {w:?}");
            continue;
        }
        assert_eq!(seg(w[0]).end(), Some(seg(w[1]).offset), "{name}: gap {w:?}");
    }
    if want.midway {
        let first_new = st.new_segments.iter().map(|&i| seg(i).offset).min();
        let first_old = st.old_segments.iter().map(|&i| seg(i).offset).min();
        // (Where data moves, the part not yet moved keeps its place.)
        if st.resilience.shift_size().is_none() {
            assert_eq!(
                first_new < first_old,
                want.direction == ReencryptDirection::Forward,
                "{name}: {st:?}"
            );
        }
        assert!(st.processed.is_some() || st.remaining.is_some(), "{name}");
        assert_ne!(st.processed, Some(0), "{name}");
    }
    st
}

/// One reencryption: how to start it, how to resume it, what it is.
struct Case {
    name: &'static str,
    /// Makes the device(s); returns the file holding the header.
    setup: fn(&Dir) -> String,
    /// `cryptsetup reencrypt` options (without --init-only, key, device).
    opts: &'static [&'static str],
    /// The header is detached (in `hdr.img`).
    header: bool,
    /// A data offset rewritten early, to stop a run that writes no header
    /// on the way.
    probe: Option<u64>,
    /// Header writes to wait for before stopping it (decryption that moves
    /// data goes in hotzones of the shift size, two writes each, whatever
    /// `--hotzone-size` says).
    steps: u64,
    want: Want,
}

const V2: &str = "online-reencrypt-v2";

fn luks(d: &Dir) -> String {
    d.format("dev.img", 64, &[])
}

fn luks512(d: &Dir) -> String {
    d.format("dev.img", 64, &["--sector-size", "512"])
}

fn plain(d: &Dir) -> String {
    d.blank("dev.img", 64)
}

fn luks_detached(d: &Dir) -> String {
    d.blank("hdr.img", 16);
    let hdr = d.s("hdr.img");
    d.format("dev.img", 64, &["--header", &hdr]);
    hdr
}

fn want(
    mode: ReencryptMode,
    direction: ReencryptDirection,
    resilience: &'static str,
    moved: bool,
) -> Want {
    Want {
        mode,
        direction,
        resilience,
        requirement: V2,
        moved,
        midway: false,
    }
}

/// Not covered: `--resilience datashift-journal`, which cryptsetup refuses
/// for every layout made here: the journal must hold the moved segment (the
/// whole metadata and keyslots area), and the keyslots area left over is
/// always smaller than that.
fn cases() -> Vec<Case> {
    use ReencryptDirection::*;
    use ReencryptMode::*;
    vec![
        Case {
            name: "key change, checksum",
            setup: luks,
            opts: &["--resilience", "checksum"],
            header: false,
            probe: None,
            steps: 6,
            want: want(Reencrypt, Forward, "checksum", false),
        },
        Case {
            name: "key change, journal",
            setup: luks,
            opts: &["--resilience", "journal"],
            header: false,
            probe: None,
            steps: 6,
            want: want(Reencrypt, Forward, "journal", false),
        },
        Case {
            name: "key change, none",
            setup: luks,
            opts: &["--resilience", "none"],
            header: false,
            probe: Some(16 << 20),
            steps: 6,
            want: want(Reencrypt, Forward, "none", false),
        },
        Case {
            name: "key change moving data, datashift",
            setup: luks,
            opts: &["--reduce-device-size", "8M"],
            header: false,
            probe: None,
            steps: 6,
            want: want(Reencrypt, Backward, "datashift", false),
        },
        Case {
            name: "cipher and sector size change",
            setup: luks512,
            opts: &[
                "--cipher",
                "aes-cbc-essiv:sha256",
                "--key-size",
                "256",
                "--sector-size",
                "4096",
            ],
            header: false,
            probe: None,
            steps: 6,
            want: want(Reencrypt, Forward, "checksum", false),
        },
        Case {
            name: "encrypt, reduce device size",
            setup: plain,
            opts: &["--encrypt", "--reduce-device-size", "8M"],
            header: false,
            probe: None,
            steps: 6,
            want: want(Encrypt, Backward, "datashift", true),
        },
        Case {
            name: "encrypt, detached header",
            setup: plain,
            opts: &["--encrypt"],
            header: true,
            probe: None,
            steps: 6,
            want: want(Encrypt, Forward, "checksum", false),
        },
        Case {
            name: "decrypt, detached header",
            setup: luks_detached,
            opts: &["--decrypt"],
            header: true,
            probe: None,
            steps: 6,
            want: want(Decrypt, Backward, "checksum", false),
        },
        Case {
            name: "decrypt moving data, header moved out",
            setup: luks,
            opts: &["--decrypt"],
            header: true,
            probe: None,
            steps: 2,
            want: Want {
                requirement: "online-reencrypt-v3",
                ..want(Decrypt, Forward, "datashift-checksum", true)
            },
        },
    ]
}

/// `reencrypt --init-only`, then the resumed run stopped part-way.
fn init_and_interrupt(case: &Case) -> [ReencryptInfo; 2] {
    let d = Dir::new();
    let made = (case.setup)(&d);
    let dev = d.s("dev.img");
    let pw = d.s("pw");
    let hdr = if case.header {
        d.s("hdr.img")
    } else {
        dev.clone()
    };
    // cryptsetup creates a header file that does not exist yet.
    if case.header && made != hdr {
        let _ = std::fs::remove_file(&hdr);
    }
    let mut base = vec!["reencrypt", "-q", OFFLINE, "--key-file", &pw];
    if case.header {
        base.extend_from_slice(&["--header", &hdr]);
    }
    let mut init = base.clone();
    init.push("--init-only");
    init.extend_from_slice(&FAST);
    init.extend_from_slice(case.opts);
    init.push(&dev);
    run(&init);
    let first = check(
        &format!("{} (init)", case.name),
        Path::new(&hdr),
        &case.want,
    );

    let mut resume = base;
    resume.extend_from_slice(&["--hotzone-size", "64k", &dev]);
    let probe = case.probe.map(|off| (Path::new(&dev), off));
    interrupt(&resume, Path::new(&hdr), case.steps, probe);
    let midway = Want {
        midway: true,
        ..case.want
    };
    let second = check(
        &format!("{} (part-way)", case.name),
        Path::new(&hdr),
        &midway,
    );
    [first, second]
}

#[test]
fn every_reencryption_state_parses_roundtrips_and_dumps() {
    if !have_cryptsetup() {
        return;
    }
    for case in cases() {
        let [init, mid] = init_and_interrupt(&case);
        eprintln!(
            "{}: init {:?}/{:?}, part-way new {:?} old {:?} ({:?} bytes done)",
            case.name,
            init.new_segments,
            init.old_segments,
            mid.new_segments,
            mid.old_segments,
            mid.processed
        );
    }
}

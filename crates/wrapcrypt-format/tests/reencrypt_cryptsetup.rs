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

use serde_json::{json, Value};
use wrapcrypt_format::dump::{luks2_dump, luks2_json_dump, Luks2BinaryInfo};
use wrapcrypt_format::luks2::{
    Area, Copy, CopyError, Luks2Header, ParseError, ReencryptDirection, ReencryptInfo,
    ReencryptMode, Section, ValidateError, MAX_METADATA_PREFIX,
};

mod oracle;
use oracle::{cryptsetup as run, FAST, PASS};

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

/// Runs `cryptsetup ARGS` and kills it (SIGKILL) while a hotzone is being
/// rewritten: both header copies then flag that segment `in-reencryption`,
/// the state a crash or power cut leaves.
fn crash(args: &[&str], hdr: &Path) {
    // Reads just the two copies: the poll must be quick, as the hotzone is.
    let hot = || {
        use std::io::Read;
        let mut f = std::fs::File::open(hdr).expect("open header");
        let mut b = vec![0u8; 4096];
        if f.read_exact(&mut b).is_err() {
            return false;
        }
        let hs = be64(&b, 8) as usize;
        if !(0x4000..=0x400000).contains(&hs) {
            return false;
        }
        b.resize(2 * hs, 0);
        if f.read_exact(&mut b[4096..]).is_err() {
            return false;
        }
        // Both copies written in full (checksums match, same seqid).
        let done = |r: &[u8]| {
            wrapcrypt_format::luks2::binary::verify("sha256", r).is_ok()
                && r.windows(15).any(|w| w == b"in-reencryption")
        };
        done(&b[..hs]) && done(&b[hs..]) && be64(&b, 16) == be64(&b, hs + 16)
    };
    let mut child = Command::new("cryptsetup")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cryptsetup runs");
    let pid = child.id() as libc::pid_t;
    let signal = |sig| {
        // SAFETY: kill(2) on the pid of a child we have not reaped yet.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill");
    };
    // Stopped (state T): its last write has returned.
    let stopped = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('T')))
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            panic!("cryptsetup {args:?} ended ({st}) before it could be killed mid-hotzone");
        }
        assert!(
            Instant::now() < deadline,
            "cryptsetup {args:?} made no progress"
        );
        if hot() {
            // Freeze it and look again: kill only a clean mid-hotzone
            // state, not one where the next header write has begun.
            signal(libc::SIGSTOP);
            while !stopped() {
                std::thread::sleep(Duration::from_micros(100));
            }
            if hot() {
                break;
            }
            signal(libc::SIGCONT);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    signal(libc::SIGKILL);
    child.wait().expect("wait");
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
    /// Killed mid-hotzone.
    crash: bool,
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
    assert_eq!(st.needs_recovery(), want.crash, "{name}: hotzone {st:?}");
    if let Some(hz) = st.hotzone {
        // The cut-off hotzone has the final layout; a crypt one holds data
        // under both keys, and cryptsetup assigns it to both digests (the
        // plain side has none); a plain one (decryption) to none.
        let crypt = h.meta.segments[&hz].kind == "crypt";
        assert_eq!(crypt, st.new_digest.is_some(), "{name}: hotzone type");
        let holders = [st.old_digest, st.new_digest];
        for d in holders.into_iter().flatten().filter(|_| crypt) {
            let listed = ids(&json["digests"][d.to_string()]["segments"]);
            assert!(listed.contains(&hz.to_string()), "{name}: hotzone digests");
        }
    }
    // The regular segments cover the data without gaps (unless the data
    // moves: then the shift leaves room between them), rewritten data at
    // the start (forward) or at the end (backward) of it.
    let seg = |id: u32| &h.meta.segments[&id];
    let mut regular: Vec<u32> = st
        .old_segments
        .iter()
        .chain(&st.new_segments)
        .chain(&st.hotzone)
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
    /// Also kill a run mid-hotzone (resilience `none` never records one).
    crash: bool,
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
        crash: false,
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
            crash: true,
            want: want(Reencrypt, Forward, "checksum", false),
        },
        Case {
            name: "key change, journal",
            setup: luks,
            opts: &["--resilience", "journal"],
            header: false,
            probe: None,
            steps: 6,
            crash: true,
            want: want(Reencrypt, Forward, "journal", false),
        },
        Case {
            name: "key change, none",
            setup: luks,
            opts: &["--resilience", "none"],
            header: false,
            probe: Some(16 << 20),
            steps: 6,
            crash: false,
            want: want(Reencrypt, Forward, "none", false),
        },
        Case {
            name: "key change moving data, datashift",
            setup: luks,
            opts: &["--reduce-device-size", "8M"],
            header: false,
            probe: None,
            steps: 6,
            crash: true,
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
            crash: true,
            want: want(Reencrypt, Forward, "checksum", false),
        },
        Case {
            name: "encrypt, reduce device size",
            setup: plain,
            opts: &["--encrypt", "--reduce-device-size", "8M"],
            header: false,
            probe: None,
            steps: 6,
            crash: true,
            want: want(Encrypt, Backward, "datashift", true),
        },
        Case {
            name: "encrypt, detached header",
            setup: plain,
            opts: &["--encrypt"],
            header: true,
            probe: None,
            steps: 6,
            crash: true,
            want: want(Encrypt, Forward, "checksum", false),
        },
        Case {
            name: "decrypt, detached header",
            setup: luks_detached,
            opts: &["--decrypt"],
            header: true,
            probe: None,
            steps: 6,
            crash: true,
            want: want(Decrypt, Backward, "checksum", false),
        },
        Case {
            name: "decrypt moving data, header moved out",
            setup: luks,
            opts: &["--decrypt"],
            header: true,
            probe: None,
            steps: 2,
            crash: true,
            want: Want {
                requirement: "online-reencrypt-v3",
                ..want(Decrypt, Forward, "datashift-checksum", true)
            },
        },
    ]
}

/// `reencrypt --init-only`, then the resumed run stopped part-way, then
/// (where the resilience records hotzones) a resumed run killed mid-hotzone.
fn init_and_interrupt(case: &Case) -> Vec<ReencryptInfo> {
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

    let mut resume = base.clone();
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
    if !case.crash {
        return vec![first, second];
    }
    // Larger hotzones, so the kill lands inside one.
    let mut resume = base;
    resume.extend_from_slice(&["--hotzone-size", "1M", &dev]);
    crash(&resume, Path::new(&hdr));
    let crashed = Want {
        crash: true,
        ..midway
    };
    let third = check(
        &format!("{} (crashed)", case.name),
        Path::new(&hdr),
        &crashed,
    );
    vec![first, second, third]
}

#[test]
fn every_reencryption_state_parses_roundtrips_and_dumps() {
    if !have_cryptsetup() {
        return;
    }
    for case in cases() {
        for st in init_and_interrupt(&case) {
            eprintln!(
                "{}: new {:?} old {:?} hotzone {:?} ({:?} bytes done)",
                case.name, st.new_segments, st.old_segments, st.hotzone, st.processed
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Bad reencryption metadata: a header made by cryptsetup, its JSON edited in
// both copies (checksums re-sealed).

/// A header part-way through a key change (segments 0 new, 1 old, 2
/// backup-previous, 3 backup-final; keyslots 0 old, 1 new, 2 reencrypt;
/// digests 0 old, 1 new, 2 verification), and one right after
/// `--init-only` of a data-moving key change (datashift area). Both copies
/// of each header (2 × hdr_size bytes).
fn fixtures() -> &'static (Vec<u8>, Vec<u8>) {
    static FX: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    FX.get_or_init(|| {
        let d = Dir::new();
        let pw = d.s("pw");
        let read = |img: &str| {
            let mut b = std::fs::read(img).expect("read");
            let hs = be64(&b, 8) as usize;
            b.truncate(2 * hs);
            b
        };
        let dev = d.format("mid.img", 64, &[]);
        let mut a = vec!["reencrypt", "-q", OFFLINE, "--key-file", &pw, "--init-only"];
        a.extend_from_slice(&FAST);
        a.push(&dev);
        run(&a);
        let resume = ["reencrypt", "-q", OFFLINE, "--key-file", &pw];
        let resume = [&resume[..], &["--hotzone-size", "64k", &dev]].concat();
        interrupt(&resume, Path::new(&dev), 6, None);
        let mid = read(&dev);
        let dev = d.format("shift.img", 64, &[]);
        let mut a = vec!["reencrypt", "-q", OFFLINE, "--key-file", &pw, "--init-only"];
        a.extend_from_slice(&FAST);
        a.extend_from_slice(&["--reduce-device-size", "8M", &dev]);
        run(&a);
        (mid, read(&dev))
    })
}

fn json_of(buf: &[u8]) -> Value {
    let hs = be64(buf, 8) as usize;
    let area = &buf[4096..hs];
    let end = area.iter().position(|&c| c == 0).expect("NUL");
    serde_json::from_slice(&area[..end]).expect("json")
}

/// Both copies of `buf` with the JSON after `edit`, checksums re-sealed.
fn edited(buf: &[u8], edit: &dyn Fn(&mut Value)) -> Vec<u8> {
    let mut j = json_of(buf);
    edit(&mut j);
    let text = serde_json::to_string(&j).expect("json");
    let hs = be64(buf, 8) as usize;
    let mut out = buf.to_vec();
    for copy in [0, hs] {
        let area = &mut out[copy + 4096..copy + hs];
        area.fill(0);
        area[..text.len()].copy_from_slice(text.as_bytes());
        wrapcrypt_format::luks2::binary::seal("sha256", &mut out[copy..copy + hs]).expect("seal");
    }
    out
}

/// True if `cryptsetup luksDump` accepts the header `buf` (in a 64 MiB image).
fn cryptsetup_accepts(buf: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("edited.img");
    std::fs::write(&img, buf).expect("write");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .and_then(|f| f.set_len(64 << 20))
        .expect("size");
    Command::new("cryptsetup")
        .arg("luksDump")
        .arg(&img)
        .output()
        .expect("cryptsetup runs")
        .status
        .success()
}

/// Blanks the free-text reason so errors compare on what they name.
fn norm(e: ValidateError) -> ValidateError {
    match e {
        ValidateError::Invalid {
            section, id, field, ..
        } => ValidateError::Invalid {
            section,
            id,
            field,
            reason: String::new(),
        },
        e => e,
    }
}

fn invalid(section: Section, id: Option<u32>, field: &str) -> ValidateError {
    ValidateError::Invalid {
        section,
        id,
        field: field.into(),
        reason: String::new(),
    }
}

/// Sets the member at JSON pointer `ptr` (its parent must be an object).
fn set(v: &mut Value, ptr: &str, val: Value) {
    let (parent, key) = ptr.rsplit_once('/').expect("pointer");
    v.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no object at {parent}"))
        .insert(key.to_string(), val);
}

type Edit = fn(&mut Value);

/// Id of the digest assigned to reencrypt keyslot 2 (cryptsetup makes a
/// new one, with a new id, at each update).
fn verification_digest(j: &Value) -> String {
    j["digests"]
        .as_object()
        .and_then(|d| {
            d.iter()
                .find(|(_, d)| ids(&d["keyslots"]).contains(&"2".into()))
        })
        .map(|(k, _)| k.clone())
        .expect("verification digest")
}

/// Headers cryptsetup refuses (luksDump fails): wrapcrypt refuses them with
/// the typed error that names section, id and field, in both copies.
#[test]
fn bad_reencryption_headers_are_typed_errors() {
    if !have_cryptsetup() {
        return;
    }
    use Section::*;
    let (mid, shift) = fixtures();
    let cases: Vec<(&str, &Vec<u8>, ValidateError, Edit)> = vec![
        (
            "backup segment first",
            mid,
            invalid(Segments, Some(0), "flags"),
            |j| set(j, "/segments/0/flags", json!(["backup-previous"])),
        ),
        (
            "regular segment after a backup segment",
            mid,
            invalid(Segments, Some(3), "flags"),
            |j| {
                j["segments"]["3"].as_object_mut().unwrap().remove("flags");
            },
        ),
        (
            "dynamic regular segment before another",
            mid,
            invalid(Segments, Some(0), "size"),
            |j| set(j, "/segments/0/size", json!("dynamic")),
        ),
        (
            "regular segments overlap",
            mid,
            ValidateError::Overlap {
                a: Area::Segment(0),
                b: Area::Segment(1),
            },
            |j| set(j, "/segments/1/offset", json!("16777216")),
        ),
        (
            "regular segment of size 0",
            mid,
            invalid(Segments, Some(0), "size"),
            |j| set(j, "/segments/0/size", json!("0")),
        ),
        (
            "no backup-final segment",
            mid,
            invalid(Segments, None, "flags"),
            |j| set(j, "/segments/3/flags", json!(["backup-other"])),
        ),
        (
            "no backup-previous segment",
            mid,
            invalid(Segments, None, "flags"),
            |j| set(j, "/segments/2/flags", json!(["backup-moved-segment"])),
        ),
        (
            "regular segment in neither layout",
            mid,
            invalid(Segments, Some(0), "type"),
            |j| set(j, "/segments/0/encryption", json!("serpent-xts-plain64")),
        ),
        (
            "regular segment in neither layout (sector size)",
            mid,
            invalid(Segments, Some(1), "type"),
            |j| set(j, "/segments/1/sector_size", json!(512)),
        ),
        (
            "in-reencryption segment without the final layout",
            mid,
            invalid(Segments, Some(1), "flags"),
            |j| {
                set(j, "/segments/1/flags", json!(["in-reencryption"]));
                set(j, "/segments/3/encryption", json!("serpent-xts-plain64"));
                set(j, "/segments/0/encryption", json!("serpent-xts-plain64"));
            },
        ),
        (
            "backup crypt segment without a digest",
            mid,
            invalid(Segments, Some(3), "digests"),
            |j| set(j, "/digests/1/segments", json!(["0"])),
        ),
        (
            "reencrypt keyslot key_size 2",
            mid,
            invalid(Keyslots, Some(2), "key_size"),
            |j| set(j, "/keyslots/2/key_size", json!(2)),
        ),
        (
            "unknown reencryption mode",
            mid,
            invalid(Keyslots, Some(2), "mode"),
            |j| set(j, "/keyslots/2/mode", json!("sideways")),
        ),
        (
            "reencryption direction missing",
            mid,
            ValidateError::Missing {
                section: Keyslots,
                id: Some(2),
                field: "direction",
            },
            |j| {
                j["keyslots"]["2"]
                    .as_object_mut()
                    .unwrap()
                    .remove("direction");
            },
        ),
        (
            "unknown reencryption direction",
            mid,
            invalid(Keyslots, Some(2), "direction"),
            |j| set(j, "/keyslots/2/direction", json!("up")),
        ),
        (
            "checksum area without hash",
            mid,
            ValidateError::Missing {
                section: Keyslots,
                id: Some(2),
                field: "hash",
            },
            |j| {
                j["keyslots"]["2"]["area"]
                    .as_object_mut()
                    .unwrap()
                    .remove("hash");
            },
        ),
        (
            "checksum block size not a power of 2",
            mid,
            invalid(Keyslots, Some(2), "sector_size"),
            |j| set(j, "/keyslots/2/area/sector_size", json!(3072)),
        ),
        (
            "checksum block size below 512",
            mid,
            invalid(Keyslots, Some(2), "sector_size"),
            |j| set(j, "/keyslots/2/area/sector_size", json!(256)),
        ),
        (
            "datashift of 0 bytes",
            shift,
            invalid(Keyslots, Some(2), "shift_size"),
            |j| set(j, "/keyslots/2/area/shift_size", json!("0")),
        ),
        (
            "datashift not a multiple of 512",
            shift,
            invalid(Keyslots, Some(2), "shift_size"),
            |j| set(j, "/keyslots/2/area/shift_size", json!("8389000")),
        ),
        (
            "datashift area without shift_size",
            shift,
            ValidateError::Missing {
                section: Keyslots,
                id: Some(2),
                field: "shift_size",
            },
            |j| {
                j["keyslots"]["2"]["area"]
                    .as_object_mut()
                    .unwrap()
                    .remove("shift_size");
            },
        ),
        (
            "two reencrypt keyslots",
            mid,
            invalid(Keyslots, Some(3), "type"),
            |j| {
                // Keyslot 2's area split in two, one for each.
                let mut k = j["keyslots"]["2"].clone();
                let off: u64 = k["area"]["offset"].as_str().unwrap().parse().unwrap();
                k["area"]["offset"] = json!((off + 4096).to_string());
                k["area"]["size"] = json!("4096");
                j["keyslots"]["2"]["area"]["size"] = json!("4096");
                j["keyslots"]["3"] = k;
                let vd = verification_digest(j);
                j["digests"][vd]["keyslots"] = json!(["2", "3"]);
            },
        ),
        (
            "reencrypt keyslot without the requirement",
            mid,
            invalid(Keyslots, Some(2), "type"),
            |j| {
                j["config"].as_object_mut().unwrap().remove("requirements");
            },
        ),
        (
            "requirement without a reencrypt keyslot",
            mid,
            invalid(Config, None, "requirements"),
            |j| {
                let vd = verification_digest(j);
                j["keyslots"].as_object_mut().unwrap().remove("2");
                j["digests"].as_object_mut().unwrap().remove(&vd);
            },
        ),
        (
            "reencrypt keyslot area over keyslot 1's",
            mid,
            ValidateError::Overlap {
                a: Area::Keyslot(1),
                b: Area::Keyslot(2),
            },
            |j| {
                let off = j["keyslots"]["1"]["area"]["offset"].clone();
                j["keyslots"]["2"]["area"]["offset"] = off;
            },
        ),
    ];
    let mut disagreements = Vec::new();
    for (name, base, want, edit) in cases {
        let buf = edited(base, &edit);
        match Luks2Header::parse(&buf) {
            Err(ParseError::BothDamaged { primary, secondary }) => {
                for err in [*primary, *secondary] {
                    match err {
                        CopyError::Json { err, .. } => assert_eq!(norm(err), want, "{name}"),
                        other => panic!("{name}: expected a JSON error, got {other:?}"),
                    }
                }
            }
            Err(e) => panic!("{name}: expected BothDamaged, got {e:?}"),
            Ok(_) => panic!("{name}: accepted"),
        }
        if cryptsetup_accepts(&buf) {
            disagreements.push(name);
        }
    }
    assert!(
        disagreements.is_empty(),
        "cryptsetup luksDump accepts what wrapcrypt refuses: {disagreements:?}"
    );
}

/// Headers cryptsetup accepts (luksDump prints them) but whose
/// reencryption cannot be resumed: they parse, and `reencrypt_state` names
/// what is wrong.
#[test]
fn unresumable_reencryption_states_are_typed_errors() {
    if !have_cryptsetup() {
        return;
    }
    use Section::*;
    let (mid, _) = fixtures();
    let cases: Vec<(&str, ValidateError, Edit)> = vec![
        (
            // cryptsetup takes the first of each; wrapcrypt refuses to guess.
            "two backup-previous segments",
            invalid(Segments, Some(3), "flags"),
            |j| {
                set(
                    j,
                    "/segments/3/flags",
                    json!(["backup-final", "backup-previous"]),
                )
            },
        ),
        (
            "no verification digest",
            invalid(Keyslots, Some(2), "digests"),
            |j| {
                let vd = verification_digest(j);
                j["digests"][vd]["keyslots"] = json!([]);
            },
        ),
        (
            "unknown resilience type",
            invalid(Keyslots, Some(2), "type"),
            |j| set(j, "/keyslots/2/area/type", json!("mirror")),
        ),
        (
            "key change ending in a plain layout",
            invalid(Segments, Some(3), "type"),
            |j| {
                let s = j["segments"]["3"].as_object_mut().unwrap();
                s.insert("type".into(), json!("linear"));
                for m in ["iv_tweak", "encryption", "sector_size"] {
                    s.remove(m);
                }
                j["digests"]["1"]["segments"] = json!(["0"]);
            },
        ),
    ];
    for (name, want, edit) in cases {
        let buf = edited(mid, &edit);
        let l = Luks2Header::parse(&buf).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(l.needs_repair.is_none(), "{name}");
        let got = l.header.meta.reencrypt_state().map_err(norm);
        assert_eq!(got, Err(want), "{name}");
        assert!(cryptsetup_accepts(&buf), "{name}: cryptsetup refuses it");
    }
}

/// Members wrapcrypt does not know, in every reencryption object, survive
/// parsing and re-encoding byte for byte; cryptsetup accepts and prints
/// such a header as wrapcrypt does.
#[test]
fn unknown_members_of_reencryption_metadata_are_kept() {
    if !have_cryptsetup() {
        return;
    }
    let (mid, _) = fixtures();
    let buf = edited(mid, &|j| {
        set(j, "/keyslots/2/x-note", json!("kept"));
        set(j, "/keyslots/2/area/x-area", json!([1, "2", {"3": null}]));
        set(j, "/segments/0/x-seg", json!({"a": true}));
        set(j, "/segments/2/flags", json!(["backup-previous", "x-flag"]));
        set(j, "/segments/3/x-seg", json!(-1));
        set(j, "/config/requirements/optional", json!(["x-opt"]));
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("unknown.img");
    std::fs::write(&img, &buf).expect("write");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .and_then(|f| f.set_len(64 << 20))
        .expect("size");
    let st = check(
        "unknown members",
        &img,
        &Want {
            midway: true,
            ..want(
                ReencryptMode::Reencrypt,
                ReencryptDirection::Forward,
                "checksum",
                false,
            )
        },
    );
    assert_eq!(st.previous_segment, 2);
    let l = Luks2Header::parse(&buf).expect("parse");
    assert_eq!(l.header.meta.to_json(), json_of(&buf));
}

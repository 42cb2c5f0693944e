//! Shared helpers of the integration tests: run the real `wrapcrypt` binary
//! and cryptsetup-bin (the live oracle) on small image files in temp dirs.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Fast PBKDF2 settings (keyslots and digests).
pub const FAST: &[&str] = &["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
/// Fast Argon2 cost (add `--pbkdf argon2i|argon2id`).
pub const FAST_ARGON: &[&str] = &["--pbkdf-force-iterations", "4", "--pbkdf-memory", "32"];

/// The folder of cryptsetup's reference images.
pub const TESTDATA: &str = "/work/shared/testdata/cryptsetup";

/// The wrapcrypt binary under test: `$WRAPCRYPT_BIN`, else the one cargo
/// built for this test run, else `target/{release,debug}/wrapcrypt`.
pub fn wrapcrypt_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WRAPCRYPT_BIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_wrapcrypt") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("wrapcrypt");
        if p.exists() {
            return p;
        }
    }
    panic!("wrapcrypt binary not found: build it or set WRAPCRYPT_BIN");
}

/// Which implementation runs a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// The binary under test.
    Wrapcrypt,
    /// cryptsetup-bin, the reference.
    Cryptsetup,
}

pub use Tool::{Cryptsetup as CS, Wrapcrypt as WC};

/// Both tools, for "either direction" loops.
pub const BOTH: [Tool; 2] = [WC, CS];

impl Tool {
    /// The program to run.
    pub fn program(self) -> PathBuf {
        match self {
            Tool::Wrapcrypt => wrapcrypt_bin(),
            Tool::Cryptsetup => PathBuf::from("cryptsetup"),
        }
    }

    /// The other tool.
    pub fn other(self) -> Tool {
        match self {
            Tool::Wrapcrypt => Tool::Cryptsetup,
            Tool::Cryptsetup => Tool::Wrapcrypt,
        }
    }

    /// A command for this tool with `args`.
    pub fn cmd<S: AsRef<std::ffi::OsStr>>(self, args: &[S]) -> Command {
        let mut c = Command::new(self.program());
        c.args(args);
        // Untranslated messages, so tests can match them.
        c.env("LC_ALL", "C");
        c
    }

    /// Runs with `args` and no stdin.
    pub fn run<S: AsRef<std::ffi::OsStr>>(self, args: &[S]) -> Out {
        self.run_stdin(args, None)
    }

    /// Runs with `args`, feeding `stdin` when given.
    pub fn run_stdin<S: AsRef<std::ffi::OsStr>>(self, args: &[S], stdin: Option<&[u8]>) -> Out {
        let mut c = self.cmd(args);
        run_cmd(&mut c, stdin, self)
    }

    /// Runs and asserts exit 0.
    pub fn ok<S: AsRef<std::ffi::OsStr>>(self, args: &[S]) -> Out {
        let o = self.run(args);
        assert_eq!(o.code, 0, "{self:?} {} failed: {o}", show(args));
        o
    }
}

/// Runs a prepared command.
pub fn run_cmd(c: &mut Command, stdin: Option<&[u8]>, tool: Tool) -> Out {
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", tool.program()));
    if let Some(data) = stdin {
        let mut si = child.stdin.take().expect("stdin");
        // The program may exit before reading everything: ignore EPIPE.
        let _ = si.write_all(data);
    }
    let o = child.wait_with_output().expect("wait");
    Out {
        code: o.status.code().unwrap_or(-1),
        signal: std::os::unix::process::ExitStatusExt::signal(&o.status),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn show<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The outcome of one command.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// The signal that ended it, if any.
    pub signal: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {} (signal {:?})\n--- stdout\n{}--- stderr\n{}",
            self.code, self.signal, self.stdout, self.stderr
        )
    }
}

/// Where scratch dirs go: `$WRAPCRYPT_TEST_TMPDIR`, else /dev/shm when it is
/// a roomy tmpfs (every header write is fsynced; on tmpfs that costs
/// nothing), else the system temp dir.
fn scratch_root() -> PathBuf {
    if let Some(d) = std::env::var_os("WRAPCRYPT_TEST_TMPDIR") {
        return PathBuf::from(d);
    }
    let shm = Path::new("/dev/shm");
    // SAFETY: statvfs fills the zeroed struct; the path is a NUL-terminated literal.
    let free = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c"/dev/shm".as_ptr(), &mut st) == 0 {
            st.f_bavail as u64 * st.f_frsize as u64
        } else {
            0
        }
    };
    if free > (2 << 30) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A temp dir with helpers for images and key files.
pub struct Scratch {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
}

impl Scratch {
    /// A fresh scratch dir.
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("wrapcrypt-it-")
                .tempdir_in(scratch_root())
                .expect("tempdir"),
        }
    }

    /// A path inside the scratch dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A path as a String (for argv).
    pub fn p(&self, name: &str) -> String {
        self.path(name).to_string_lossy().into_owned()
    }

    /// A sparse image file of `mib` MiB.
    pub fn image(&self, name: &str, mib: u64) -> String {
        let f = std::fs::File::create(self.path(name)).expect("create image");
        f.set_len(mib << 20).expect("size image");
        self.p(name)
    }

    /// A key file with `content`.
    pub fn key(&self, name: &str, content: &[u8]) -> String {
        std::fs::write(self.path(name), content).expect("write key file");
        self.p(name)
    }

    /// Copies `src` into the scratch dir as `name`.
    pub fn copy(&self, src: &str, name: &str) -> String {
        std::fs::copy(src, self.path(name)).expect("copy image");
        self.p(name)
    }

    /// Decompresses `file.xz` of the reference images as `name`.
    pub fn xz(&self, file: &str, name: &str) -> String {
        let out = std::fs::File::create(self.path(name)).expect("create");
        let st = Command::new("xz")
            .arg("-dkc")
            .arg(Path::new(TESTDATA).join(file))
            .stdout(out)
            .status()
            .expect("run xz");
        assert!(st.success(), "xz -dkc {file} failed");
        self.p(name)
    }

    /// Unpacks a reference `.tar.xz` into the scratch dir.
    pub fn untar(&self, file: &str) {
        let st = Command::new("tar")
            .arg("xJf")
            .arg(Path::new(TESTDATA).join(file))
            .arg("-C")
            .arg(self.dir.path())
            .status()
            .expect("run tar");
        assert!(st.success(), "tar xJf {file} failed");
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// Collects the hex bytes printed after "MK dump:" up to the next line that
/// is not indented. Accepts cryptsetup's spaced, wrapped layout and a single
/// run of hex on one line.
pub fn parse_mk_dump(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut in_dump = false;
    for line in text.lines() {
        if in_dump {
            if line.starts_with([' ', '\t']) && !line.trim().is_empty() {
                push_hex(line, &mut out);
                continue;
            }
            break;
        }
        if let Some(rest) = line.trim_start().strip_prefix("MK dump:") {
            in_dump = true;
            push_hex(rest, &mut out);
        }
    }
    (in_dump && !out.is_empty()).then_some(out)
}

fn push_hex(s: &str, out: &mut String) {
    for tok in s.split_whitespace() {
        assert!(
            tok.len() % 2 == 0 && tok.bytes().all(|b| b.is_ascii_hexdigit()),
            "unexpected token {tok:?} in MK dump"
        );
        out.push_str(&tok.to_ascii_lowercase());
    }
}

/// The volume key (hex) that `tool` prints with `--dump-volume-key`, using
/// key file `kf` and `extra` options (e.g. `-S 1`, `--header h`).
pub fn volume_key(tool: Tool, img: &str, kf: &str, extra: &[&str]) -> String {
    let mut args = vec!["luksDump", "--dump-volume-key", "-q", img, "-d", kf];
    args.extend_from_slice(extra);
    let o = tool.run(&args);
    assert_eq!(o.code, 0, "{tool:?} --dump-volume-key on {img}: {o}");
    parse_mk_dump(&o.stdout)
        .unwrap_or_else(|| panic!("{tool:?}: no MK dump in output of {img}: {o}"))
}

/// Exit code of `open --test-passphrase` by `tool` with key file `kf`.
pub fn test_pass(tool: Tool, img: &str, kf: &str, extra: &[&str]) -> i32 {
    let mut args = vec!["open", "--test-passphrase", img, "-d", kf];
    args.extend_from_slice(extra);
    tool.run(&args).code
}

/// Asserts that both tools unlock `img` with key file `kf`.
pub fn assert_opens_both(img: &str, kf: &str, extra: &[&str], what: &str) {
    for t in BOTH {
        let mut args = vec!["open", "--test-passphrase", img, "-d", kf];
        args.extend_from_slice(extra);
        let o = t.run(&args);
        assert_eq!(o.code, 0, "{what}: {t:?} --test-passphrase {kf}: {o}");
    }
}

/// Asserts that neither tool unlocks `img` with key file `kf` (exit 2).
pub fn assert_rejected_both(img: &str, kf: &str, extra: &[&str], what: &str) {
    for t in BOTH {
        let mut args = vec!["open", "--test-passphrase", img, "-d", kf];
        args.extend_from_slice(extra);
        let o = t.run(&args);
        assert_eq!(o.code, 2, "{what}: {t:?} --test-passphrase {kf}: {o}");
    }
}

/// Both tools print the same volume key; returns it.
pub fn same_volume_key(img: &str, kf: &str, extra: &[&str]) -> String {
    let a = volume_key(WC, img, kf, extra);
    let b = volume_key(CS, img, kf, extra);
    assert_eq!(a, b, "volume keys differ on {img}");
    a
}

/// luksFormat by `tool` with passphrase file `kf` and options.
pub fn format(tool: Tool, img: &str, kf: &str, opts: &[&str]) {
    let mut args = vec!["luksFormat", "-q", "--type", "luks2"];
    args.extend_from_slice(opts);
    args.push(img);
    args.push(kf);
    tool.ok(&args);
}

/// luksAddKey by `tool`: unlock with `old`, add `new` (into `slot`).
pub fn add_key(tool: Tool, img: &str, old: &str, new: &str, slot: Option<u32>) -> Out {
    let s = slot.map(|s| s.to_string());
    let mut args = vec!["luksAddKey", "-q"];
    args.extend_from_slice(FAST);
    args.extend_from_slice(&[img, "-d", old]);
    if let Some(s) = &s {
        args.extend_from_slice(&["-S", s]);
    }
    args.push(new);
    tool.run(&args)
}

/// The raw JSON area text of the primary header (up to the NUL padding).
pub fn raw_json(img: &str) -> String {
    let data = std::fs::read(img).expect("read image");
    let start = 4096;
    let end = data[start..]
        .iter()
        .position(|&b| b == 0)
        .map(|n| start + n)
        .expect("NUL after JSON");
    String::from_utf8(data[start..end].to_vec()).expect("JSON is UTF-8")
}

/// Replaces the string values of `"salt"` and `"digest"` members (random
/// by design) with a placeholder, keeping everything else as written.
pub fn mask_random(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    loop {
        let next = ["\"salt\"", "\"digest\""]
            .iter()
            .filter_map(|k| rest.find(k).map(|i| (i, k.len())))
            .min();
        let Some((i, klen)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i + klen]);
        rest = &rest[i + klen..];
        // Keep the separator (":" with optional spaces), then skip the string.
        let colon = rest.find('"').expect("value string");
        out.push_str(&rest[..colon]);
        rest = &rest[colon + 1..];
        let close = rest.find('"').expect("end of value");
        out.push_str("\"*\"");
        rest = &rest[close + 1..];
    }
}

/// The binary fields of one LUKS2 header copy that tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInfo {
    /// Header size (metadata area size) in bytes.
    pub hdr_size: u64,
    /// Sequence id (epoch).
    pub seqid: u64,
    /// Label, subsystem and UUID fields as stored.
    pub label: Vec<u8>,
    /// UUID field as stored.
    pub uuid: Vec<u8>,
    /// The JSON area.
    pub json: Vec<u8>,
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

/// Reads both header copies of a LUKS2 image (primary at 0, secondary at
/// hdr_size); `None` for a copy whose magic is missing.
pub fn header_copies(img: &str) -> [Option<CopyInfo>; 2] {
    let d = bytes(img);
    let read = |off: usize, magic: &[u8]| -> Option<CopyInfo> {
        if d.len() < off + 4096 || &d[off..off + 6] != magic {
            return None;
        }
        let hdr_size = be64(&d[off + 8..]);
        let end = off + hdr_size as usize;
        if !(16384..=4 << 20).contains(&hdr_size) || d.len() < end {
            return None;
        }
        Some(CopyInfo {
            hdr_size,
            seqid: be64(&d[off + 16..]),
            label: d[off + 24..off + 72].to_vec(),
            uuid: d[off + 168..off + 208].to_vec(),
            json: d[off + 4096..end].to_vec(),
        })
    };
    let p = read(0, b"LUKS\xba\xbe");
    let soff = p.as_ref().map(|c| c.hdr_size as usize).unwrap_or(16384);
    [p, read(soff, b"SKUL\xba\xbe")]
}

/// Both header copies exist, carry the same seqid, label, UUID and JSON area,
/// and `cryptsetup repair` has nothing to rewrite (it recovers a copy with a
/// bad checksum or stale seqid silently, so "nothing to do" means the file
/// is byte-identical afterwards).
pub fn assert_copies_agree(img: &str, what: &str) {
    let [p, s] = header_copies(img);
    let p = p.unwrap_or_else(|| panic!("{what}: primary header copy missing"));
    let s = s.unwrap_or_else(|| panic!("{what}: secondary header copy missing"));
    assert_eq!(p.seqid, s.seqid, "{what}: seqids of the header copies");
    assert!(p == s, "{what}: header copies differ");
    let before = bytes(img);
    let r = CS.run(&["repair", "-q", img]);
    assert_eq!(r.code, 0, "{what}: cryptsetup repair: {r}");
    assert_same_bytes(
        &before,
        &bytes(img),
        &format!("{what}: cryptsetup repair rewrote"),
    );
}

/// Reads a whole file.
pub fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).expect("read file")
}

/// Asserts two byte strings are equal without printing megabytes.
pub fn assert_same_bytes(a: &[u8], b: &[u8], what: &str) {
    if a != b {
        let first = a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!(
            "{what}: contents differ (lengths {} and {}, first difference at byte {first})",
            a.len(),
            b.len()
        );
    }
}

#[test]
fn mk_dump_parser_handles_both_layouts() {
    let cs = "LUKS header information for x\nCipher name:   \taes\nMK bits:       \t256\nMK dump:\t59 4d 02 50 af 07 79 ed fe 13 84 8b 80 2e 0a 58 \n\t\tdb 02 83 7e af cc 62 23 cd 75 a9 1d 03 4c 87 47 \n";
    let wc = "MK dump:\t594d0250af0779edfe13848b802e0a58db02837eafcc6223cd75a91d034c8747\n";
    let want = "594d0250af0779edfe13848b802e0a58db02837eafcc6223cd75a91d034c8747";
    assert_eq!(parse_mk_dump(cs).as_deref(), Some(want));
    assert_eq!(parse_mk_dump(wc).as_deref(), Some(want));
    assert_eq!(parse_mk_dump("nothing here\n"), None);
    assert_eq!(
        mask_random(r#"{"salt":"abc=","x":1,"digest" : "q"}"#),
        r#"{"salt":"*","x":1,"digest" : "*"}"#
    );
}

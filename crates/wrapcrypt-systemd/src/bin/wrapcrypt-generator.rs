//! wrapcrypt-generator NORMAL-DIR [EARLY-DIR LATE-DIR]: a systemd
//! generator that writes `wrapcrypt-open@NAME.service` units for the
//! crypttab entries wrapcrypt opens (docs/systemd.md). Reads the crypttab
//! named by `SYSTEMD_CRYPTTAB` (default /etc/crypttab), like
//! systemd-cryptsetup-generator; `WRAPCRYPT_BIN` names the wrapcrypt
//! binary in `Exec*=` lines (default /usr/sbin/wrapcrypt).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use wrapcrypt_systemd::crypttab::Entry;
use wrapcrypt_systemd::probe::{self, Probe};
use wrapcrypt_systemd::unit::{Content, Dir, Settings};

const DEFAULT_BIN: &str = "/usr/sbin/wrapcrypt";

/// Reads the header an entry names (its `header=`, else its device).
fn probe_entry(e: &Entry) -> Probe {
    let path = e
        .options
        .iter()
        .rev()
        .find(|o| o.name == "header")
        .and_then(|o| o.value.as_deref())
        .and_then(|v| wrapcrypt_systemd::crypttab::Device::parse(v).ok())
        .unwrap_or_else(|| e.device.clone())
        .path();
    read_header(Path::new(&path)).map_or(Probe::Unknown, |b| probe::probe(&b))
}

fn read_header(p: &Path) -> Option<Vec<u8>> {
    let f = fs::File::open(p).ok()?;
    let mut b = Vec::new();
    f.take(probe::PROBE_MIN as u64).read_to_end(&mut b).ok()?;
    let size = probe::header_size(&b)?;
    let mut f = fs::File::open(p).ok()?;
    b.clear();
    (&mut f).take(size as u64).read_to_end(&mut b).ok()?;
    Some(b)
}

fn write(root: &Path, rel: &str, c: &Content) -> std::io::Result<()> {
    let path = root.join(rel);
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    let _ = fs::remove_file(&path);
    match c {
        Content::File(t) => fs::write(&path, t),
        Content::Symlink(t) => std::os::unix::fs::symlink(t, &path),
    }
}

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.len() != 1 && args.len() != 3 {
        eprintln!(
            "wrapcrypt-generator: usage: wrapcrypt-generator NORMAL-DIR [EARLY-DIR LATE-DIR]"
        );
        return ExitCode::from(1);
    }
    let normal = &args[0];
    let early = args.get(1).unwrap_or(normal);
    let source = std::env::var("SYSTEMD_CRYPTTAB").unwrap_or_else(|_| "/etc/crypttab".to_string());
    let text = match fs::read_to_string(&source) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wrapcrypt-generator: cannot read {source}: {e}");
            return ExitCode::from(1);
        }
    };
    let settings = Settings {
        wrapcrypt: std::env::var("WRAPCRYPT_BIN").unwrap_or_else(|_| DEFAULT_BIN.to_string()),
        source: source.clone(),
    };
    let g = wrapcrypt_systemd::generate(&text, &settings, probe_entry);
    for w in &g.warnings {
        eprintln!("wrapcrypt-generator: {source}: {w}");
    }
    let mut failed = false;
    for o in &g.outputs {
        let root = match o.dir {
            Dir::Normal => normal,
            Dir::Early => early,
        };
        if let Err(e) = write(root, &o.path, &o.content) {
            eprintln!(
                "wrapcrypt-generator: cannot write {}: {e}",
                root.join(&o.path).display()
            );
            failed = true;
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

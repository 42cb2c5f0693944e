//! Daemon configuration: a root-only `key = value` file, then flags.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/wrapcrypt/custodian";
/// Default configuration file (read only if present).
pub const DEFAULT_CONFIG: &str = "/etc/wrapcrypt/custodian.conf";
const DEFAULT_TPM: &str = "/dev/tpmrm0";

/// Everything the daemon needs to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Sealed master keys, lock and log live here.
    pub state_dir: PathBuf,
    /// The Unix socket clients connect to.
    pub socket: PathBuf,
    /// TCTI of the TPM that seals master keys (None: root-only file).
    pub tcti: Option<String>,
    /// Non-root uids allowed to use (not administer) the custodian.
    pub allow_uids: Vec<u32>,
    /// Create CURRENT on first start, so a new user needs no set-up.
    pub auto_init: bool,
    /// Fork into the background once ready (on-demand start).
    pub daemonize: bool,
    /// Key-manager configuration: master keys are KMIP objects.
    pub kmip_config: Option<PathBuf>,
}

/// The daemon's command line (clap: `--help`, one-line errors, and the
/// man page `wrapcrypt-custodiand(8)` from the same declaration).
#[derive(clap::Parser, Debug)]
#[command(
    name = "wrapcrypt-custodiand",
    version,
    about = "wrapcrypt key custodian: holds the master keys that wrap volume keys",
    long_about = "The key custodian holds the master keys (registers CURRENT, NEW, OLD) \
that wrap wrapcrypt volume keys, sealed to the TPM when one is configured, and \
performs the sector crypto of waes-xts-plain64 volumes for FUSE servers over a \
Unix socket, so no effective volume key exists outside its locked memory. \
Started on demand by wrapcrypt or as wrapcrypt-custodiand.service.\n\n\
The configuration file holds `key = value` lines (state_dir, socket, tcti, \
allow_uids, auto_init, kmip_config); flags override it. It must be owned by root and \
writable by its owner only."
)]
struct Flags {
    /// Configuration file (default /etc/wrapcrypt/custodian.conf, if present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// State directory: sealed master keys, lock and log.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Unix socket clients connect to.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// TPM that seals master keys (a TCTI such as device:/dev/tpmrm0 or
    /// swtpm:port=N), or `none` for a root-only file.
    #[arg(long, value_name = "TCTI")]
    tcti: Option<String>,
    /// A non-root uid allowed to use (not administer) the custodian; repeatable.
    #[arg(long = "allow-uid", value_name = "UID")]
    allow_uid: Vec<u32>,
    /// Do not create the CURRENT master key on first start.
    #[arg(long)]
    no_auto_init: bool,
    /// Fork into the background once ready (on-demand start).
    #[arg(long)]
    daemonize: bool,
    /// Key-manager configuration (server, CA, client certificate and key
    /// files, host group): master keys are created in and fetched from a
    /// KMIP server (docs/kmip.md).
    #[arg(long, value_name = "FILE")]
    kmip_config: Option<PathBuf>,
    /// Write the man page wrapcrypt-custodiand.8 into DIR and exit.
    #[arg(long, value_name = "DIR", hide = true)]
    generate_man: Option<PathBuf>,
}

/// What the command line asks for.
pub enum Invocation {
    /// Run the daemon.
    Run(Config),
    /// Print this (help, version) and exit 0.
    Print(String),
}

impl Config {
    /// Parses flags (after the program name), reading the config file first.
    #[cfg(test)]
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Config, String> {
        match Self::invocation(args)? {
            Invocation::Run(c) => Ok(c),
            Invocation::Print(s) => Err(s),
        }
    }

    /// Parses the command line: run, or print help / version / man page.
    pub fn invocation(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, String> {
        use clap::Parser;
        let argv = std::iter::once(OsString::from("wrapcrypt-custodiand")).chain(args);
        let f = match Flags::try_parse_from(argv) {
            Ok(f) => f,
            Err(e) => {
                return match e.kind() {
                    clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion => {
                        Ok(Invocation::Print(e.render().to_string()))
                    }
                    // One line: clap's first line, without its "error: ".
                    _ => Err(e
                        .render()
                        .to_string()
                        .lines()
                        .next()
                        .unwrap_or("invalid arguments")
                        .trim_start_matches("error: ")
                        .to_string()),
                };
            }
        };
        if let Some(dir) = &f.generate_man {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_mangen::Man::new(Flags::command())
                .section("8")
                .manual("System Administration")
                .render(&mut out)
                .map_err(|e| e.to_string())?;
            let path = dir.join("wrapcrypt-custodiand.8");
            std::fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))?;
            return Ok(Invocation::Print(String::new()));
        }
        let mut c = Config {
            state_dir: DEFAULT_STATE_DIR.into(),
            socket: wrapcrypt_provider::custodian::DEFAULT_SOCKET.into(),
            tcti: None,
            allow_uids: Vec::new(),
            auto_init: true,
            daemonize: false,
            kmip_config: None,
        };
        let mut tcti: Option<String> = None;
        let file = f
            .config
            .clone()
            .or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()));
        if let Some(file) = file {
            c.read_file(&file, &mut tcti)?;
        }
        if let Some(d) = f.state_dir {
            c.state_dir = d;
        }
        if let Some(s) = f.socket {
            c.socket = s;
        }
        if f.tcti.is_some() {
            tcti = f.tcti;
        }
        c.allow_uids.extend(f.allow_uid);
        if f.no_auto_init {
            c.auto_init = false;
        }
        c.daemonize = f.daemonize;
        if f.kmip_config.is_some() {
            c.kmip_config = f.kmip_config;
        }
        c.tcti = match tcti.as_deref() {
            Some("none") => None,
            Some(t) => Some(t.to_string()),
            None => Path::new(DEFAULT_TPM)
                .exists()
                .then(|| format!("device:{DEFAULT_TPM}")),
        };
        Ok(Invocation::Run(c))
    }

    fn read_file(&mut self, path: &Path, tcti: &mut Option<String>) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if (m.uid() != 0 && m.uid() != me) || m.mode() & 0o022 != 0 {
            return Err(format!(
                "{}: must be owned by root and writable by its owner only",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("{}:{}: expected key = value", path.display(), n + 1))?;
            match k {
                "state_dir" => self.state_dir = v.into(),
                "socket" => self.socket = v.into(),
                "tcti" => *tcti = Some(v.into()),
                "allow_uids" => {
                    for u in v.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                        self.allow_uids.push(parse_uid(u)?);
                    }
                }
                "auto_init" => self.auto_init = v == "true",
                "kmip_config" => self.kmip_config = Some(v.into()),
                _ => return Err(format!("{}:{}: unknown key {k}", path.display(), n + 1)),
            }
        }
        Ok(())
    }
}

fn parse_uid(s: &str) -> Result<u32, String> {
    s.parse().map_err(|_| format!("not a uid: {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_then_flags() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("c.conf");
        std::fs::write(
            &f,
            "# custodian\nstate_dir = /x\nallow_uids = 7, 8\ntcti = none\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Config::parse(os(&["--config", f.to_str().unwrap(), "--socket", "/s"])).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/x"));
        assert_eq!(c.socket, PathBuf::from("/s"));
        assert_eq!(c.allow_uids, vec![7, 8]);
        assert_eq!(c.tcti, None);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(Config::parse(os(&["--config", f.to_str().unwrap()])).is_err());
        assert!(Config::parse(os(&["--bogus"])).is_err());
        let c = Config::parse(os(&["--tcti", "swtpm:port=1", "--no-auto-init"])).unwrap();
        assert_eq!(c.tcti.as_deref(), Some("swtpm:port=1"));
        assert!(!c.auto_init);
    }
}

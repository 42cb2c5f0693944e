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
}

/// Usage text.
pub const USAGE: &str = "usage: wrapcrypt-custodiand [--config FILE] [--state-dir DIR] \
[--socket PATH] [--tcti TCTI|none] [--allow-uid UID]... [--no-auto-init] [--daemonize]";

impl Config {
    /// Parses flags (after the program name), reading the config file first.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Config, String> {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| {
                a.into_string()
                    .map_err(|_| "arguments must be UTF-8".to_string())
            })
            .collect::<Result<_, _>>()?;
        let mut c = Config {
            state_dir: DEFAULT_STATE_DIR.into(),
            socket: wrapcrypt_provider::custodian::DEFAULT_SOCKET.into(),
            tcti: None,
            allow_uids: Vec::new(),
            auto_init: true,
            daemonize: false,
        };
        let mut tcti: Option<String> = None;
        let file = match args.iter().position(|a| a == "--config") {
            Some(i) => Some(PathBuf::from(
                args.get(i + 1).ok_or("--config needs a file")?,
            )),
            None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        if let Some(f) = file {
            c.read_file(&f, &mut tcti)?;
        }
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{a} needs a value"))
            };
            match a.as_str() {
                "--config" => {
                    val()?;
                }
                "--state-dir" => c.state_dir = val()?.into(),
                "--socket" => c.socket = val()?.into(),
                "--tcti" => tcti = Some(val()?),
                "--allow-uid" => c.allow_uids.push(parse_uid(&val()?)?),
                "--no-auto-init" => c.auto_init = false,
                "--daemonize" => c.daemonize = true,
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown option {other}\n{USAGE}")),
            }
        }
        c.tcti = match tcti.as_deref() {
            Some("none") => None,
            Some(t) => Some(t.to_string()),
            None => Path::new(DEFAULT_TPM)
                .exists()
                .then(|| format!("device:{DEFAULT_TPM}")),
        };
        Ok(c)
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

//! Running wrapcrypt on a host of the fleet. A simulated host is this
//! machine with its own custodian socket, state and key-manager file
//! (environment variables naming paths, never secrets); in production the
//! same argument lists run over ssh or an agent (docs/fleet.md). Each
//! command is a child that dies with its coordinator thread
//! (PR_SET_PDEATHSIG), so a killed coordinator leaves no step running
//! that a resume could race.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::hosts::HostSpec;

/// A command on a host failed.
#[derive(Clone, Debug)]
pub struct HostError {
    /// Its exit code (`None`: it could not run or was killed).
    pub code: Option<i32>,
    /// The line to report.
    pub line: String,
}

/// One register as `custodian status --json` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reg {
    /// Its MKVP (lower-case hex), if it holds a key.
    pub mkvp: Option<String>,
    /// Its KMIP object id, if KMIP-backed.
    pub object_id: Option<String>,
}

/// The custodian's registers.
#[derive(Clone, Debug, Default)]
pub struct Registers {
    pub new: Reg,
    pub current: Reg,
    pub old: Reg,
    /// Whether a key manager is configured.
    pub kmip: bool,
}

/// One volume as `keys list --json` reports it (header only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeState {
    pub uuid: String,
    /// MKVP (lower-case hex) of the key wrapping the volume key.
    pub wrapping_mkvp: Option<String>,
    /// A staged re-encipher is recorded.
    pub staged: bool,
}

/// How to run wrapcrypt on one host.
pub struct HostRunner {
    program: PathBuf,
    spec: HostSpec,
}

/// Normalises `mkvp:HEX` / `HEX` to lower-case hex.
pub fn mkvp(s: &str) -> String {
    s.trim_start_matches("mkvp:").to_ascii_lowercase()
}

impl HostRunner {
    /// A runner of `program` (the wrapcrypt binary) for `spec`.
    pub fn new(program: &Path, spec: &HostSpec) -> HostRunner {
        HostRunner {
            program: program.to_path_buf(),
            spec: spec.clone(),
        }
    }

    /// Runs `wrapcrypt ARGS` on the host; its standard output on success.
    pub fn run(&self, args: &[&str]) -> Result<String, HostError> {
        let mut c = Command::new(&self.program);
        c.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (var, val) in [
            ("WRAPCRYPT_CUSTODIAN_SOCKET", &self.spec.socket),
            ("WRAPCRYPT_CUSTODIAN_KMIP_CONFIG", &self.spec.kmip_config),
            ("WRAPCRYPT_CUSTODIAN_TCTI", &self.spec.tcti),
        ] {
            match val {
                Some(v) => c.env(var, v),
                None => c.env_remove(var),
            };
        }
        // The coordinator's own test hooks are not the host's.
        for var in [
            "WRAPCRYPT_FLEET_FAULT_AT",
            "WRAPCRYPT_FAULT_AT",
            "WRAPCRYPT_FAULT_COUNT",
        ] {
            c.env_remove(var);
        }
        // SAFETY: prctl is async-signal-safe; it only sets this child's
        // parent-death signal.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let what = format!("wrapcrypt {}", args.first().copied().unwrap_or(""));
        let out = c.output().map_err(|e| HostError {
            code: None,
            line: format!("cannot run {}: {e}", self.program.display()),
        })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("no message")
            .to_string();
        Err(HostError {
            code: out.status.code(),
            line: format!(
                "{what}{}: {line}",
                match out.status.code() {
                    Some(c) => format!(" (exit {c})"),
                    None => " (killed)".into(),
                }
            ),
        })
    }

    fn json(&self, args: &[&str]) -> Result<Value, HostError> {
        let out = self.run(args)?;
        serde_json::from_str(out.trim()).map_err(|e| HostError {
            code: None,
            line: format!("wrapcrypt {}: unreadable JSON: {e}", args.join(" ")),
        })
    }

    /// `custodian status --json`: the registers and their KMIP ids.
    pub fn registers(&self) -> Result<Registers, HostError> {
        let v = self.json(&["custodian", "status", "--json"])?;
        let reg = |name: &str| Reg {
            mkvp: v["registers"][name].as_str().map(mkvp),
            object_id: v["kmip"]["registers"][name]["object-id"]
                .as_str()
                .map(str::to_string),
        };
        Ok(Registers {
            new: reg("NEW"),
            current: reg("CURRENT"),
            old: reg("OLD"),
            kmip: v.get("kmip").is_some_and(|k| !k.is_null()),
        })
    }

    /// `keys list --json DEVICE…`: each volume's UUID, wrapping key and
    /// staged flag, by device; a device that cannot be read is an error.
    pub fn volumes(&self) -> Result<BTreeMap<String, Result<VolumeState, String>>, HostError> {
        let mut args = vec!["keys", "list", "--json"];
        args.extend(self.spec.volumes.iter().map(|v| v.device.as_str()));
        let v = self.json(&args)?;
        let mut out = BTreeMap::new();
        for e in v["volumes"].as_array().into_iter().flatten() {
            let Some(dev) = e["device"].as_str() else {
                continue;
            };
            if !self.spec.volumes.iter().any(|x| x.device == dev) {
                continue; // /etc/crypttab entries keys list adds
            }
            let st = match e["error"].as_str() {
                Some(err) => Err(err.to_string()),
                None => Ok(VolumeState {
                    uuid: e["uuid"].as_str().unwrap_or_default().to_string(),
                    wrapping_mkvp: e["wrapping-key"].as_str().map(mkvp),
                    staged: e["reencipher-staged"].as_bool().unwrap_or(false),
                }),
            };
            out.insert(dev.to_string(), st);
        }
        Ok(out)
    }
}

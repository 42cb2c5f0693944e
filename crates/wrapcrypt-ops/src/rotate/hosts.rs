//! The coordinator's hosts file (docs/fleet.md, "Hosts file"): per host a
//! name, its group, how its custodian is reached and its volumes with the
//! key file that unlocks each for reencipher. No secret is in the file:
//! key files are paths read on the host.
//!
//! ```text
//! group = web                      # default group of the sections below
//! [host web1]
//! socket = /run/sim/web1/c.sock    # WRAPCRYPT_CUSTODIAN_SOCKET on that host
//! kmip_config = /run/sim/web1/kmip.conf
//! volume = /dev/sdb2 key-file=/etc/wrapcrypt/sdb2.key
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One volume of a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    /// The device (path on the host).
    pub device: String,
    /// The key file whose passphrase unlocks a keyslot (path on the host).
    pub key_file: String,
}

/// One host and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSpec {
    /// Its name (also the `--host` of its inventory records).
    pub name: String,
    /// Its host group.
    pub group: String,
    /// The custodian socket (`WRAPCRYPT_CUSTODIAN_SOCKET`); `None`: the
    /// host's default custodian.
    pub socket: Option<String>,
    /// The host's key-manager file (`WRAPCRYPT_CUSTODIAN_KMIP_CONFIG`).
    pub kmip_config: Option<String>,
    /// The TPM of a simulated host (`WRAPCRYPT_CUSTODIAN_TCTI`).
    pub tcti: Option<String>,
    /// Its volumes.
    pub volumes: Vec<VolumeSpec>,
}

/// Parses a hosts file's text; errors name the line.
pub fn parse(text: &str, what: &str) -> Result<Vec<HostSpec>, String> {
    let mut default_group: Option<String> = None;
    let mut hosts: Vec<HostSpec> = vec![];
    for (n, raw) in text.lines().enumerate() {
        let at = |m: &str| format!("{what} line {}: {m}", n + 1);
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(sec) = line.strip_prefix('[') {
            let sec = sec
                .strip_suffix(']')
                .ok_or_else(|| at("a section is [host NAME]"))?;
            let name = sec
                .trim()
                .strip_prefix("host")
                .map(str::trim)
                .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
                .ok_or_else(|| at("a section is [host NAME]"))?;
            if hosts.iter().any(|h| h.name == name) {
                return Err(at(&format!("host {name} is listed twice")));
            }
            hosts.push(HostSpec {
                name: name.to_string(),
                group: default_group.clone().unwrap_or_default(),
                socket: None,
                kmip_config: None,
                tcti: None,
                volumes: vec![],
            });
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| at("expected key = value"))?;
        if v.is_empty() {
            return Err(at(&format!("{k} needs a value")));
        }
        let Some(h) = hosts.last_mut() else {
            match k {
                "group" => default_group = Some(v.to_string()),
                _ => return Err(at(&format!("{k} belongs in a [host NAME] section"))),
            }
            continue;
        };
        match k {
            "group" => h.group = v.to_string(),
            "socket" => h.socket = Some(v.to_string()),
            "kmip_config" => h.kmip_config = Some(v.to_string()),
            "tcti" => h.tcti = Some(v.to_string()),
            "volume" => {
                let mut it = v.split_whitespace();
                let device = it.next().unwrap_or_default().to_string();
                let mut key_file = None;
                for opt in it {
                    match opt.split_once('=') {
                        Some(("key-file", p)) if !p.is_empty() => key_file = Some(p.to_string()),
                        _ => {
                            return Err(at(&format!("unknown volume option {opt} (key-file=PATH)")))
                        }
                    }
                }
                let key_file = key_file.ok_or_else(|| {
                    at("a volume needs key-file=PATH (passphrases never go on a command line)")
                })?;
                if h.volumes.iter().any(|x| x.device == device) {
                    return Err(at(&format!("{device} is listed twice for {}", h.name)));
                }
                h.volumes.push(VolumeSpec { device, key_file });
            }
            other => return Err(at(&format!("unknown key {other}"))),
        }
    }
    for h in &hosts {
        if h.group.is_empty() {
            return Err(format!("{what}: host {} has no group", h.name));
        }
    }
    Ok(hosts)
}

/// Reads the hosts file and keeps the hosts of `group`.
pub fn read(path: &Path, group: &str) -> Result<Vec<HostSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let hosts: Vec<_> = parse(&text, &path.display().to_string())?
        .into_iter()
        .filter(|h| h.group == group)
        .collect();
    if hosts.is_empty() {
        return Err(format!("{}: no host of group {group}", path.display()));
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_volumes() {
        let t = "group = web\n[host a]\nsocket = /s/a.sock # c\nvolume = /d/1 key-file=/k/1\nvolume = /d/2 key-file=/k/2\n[host b]\ngroup = db\nvolume = /d/3 key-file=/k/3\n";
        let h = parse(t, "f").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].group, "web");
        assert_eq!(h[0].socket.as_deref(), Some("/s/a.sock"));
        assert_eq!(h[0].volumes[1].key_file, "/k/2");
        assert_eq!(h[1].group, "db");
        assert!(parse("[host a]\ngroup = g\nvolume = /d/1\n", "f")
            .unwrap_err()
            .contains("line 3: a volume needs key-file"));
        assert!(parse("[host a]\n[host a]\n", "f")
            .unwrap_err()
            .contains("twice"));
        assert!(parse("[host a]\n", "f").unwrap_err().contains("no group"));
        assert!(parse("socket = x\n", "f").unwrap_err().contains("line 1"));
    }
}

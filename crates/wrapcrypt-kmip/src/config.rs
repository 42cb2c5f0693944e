//! The key-manager configuration file (`--kmip-config FILE`): `key = value`
//! lines naming the KMIP server, the CA, the host's client certificate and
//! key files, and the host group. Nothing secret is in it; the private key
//! is read from its own file by the TLS stack (docs/kmip.md, "Custodian backend").
//!
//! The same format as `wrapcrypt-custodiand --kmip-config` (a binary crate,
//! whose parser the CLI cannot reach); `wrapcrypt fleet` reads it from here.
//! The custodian can switch to this module (same behaviour, same tests).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ClientConfig;

/// Prefix of the KMIP Name of master keys the custodian creates.
pub const DEFAULT_PREFIX: &str = "wrapcrypt-mk";

/// A parsed key-manager configuration.
#[derive(Clone, Debug)]
pub struct KmipConfig {
    /// Server, CA, client certificate and key, timeout.
    pub client: ClientConfig,
    /// The host group: the Object Group of the keys created.
    pub group: String,
    /// Name prefix: keys are named `PREFIX-GROUP-SECONDS-RANDOM`.
    pub prefix: String,
}

fn owner_ok(path: &Path, mode_mask: u32, what: &str) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if (m.uid() != 0 && m.uid() != me) || m.mode() & mode_mask != 0 {
        return Err(format!("{}: {what}", path.display()));
    }
    Ok(())
}

impl KmipConfig {
    /// Reads and checks `path` (owned by root or this user, writable by its
    /// owner only; the client key file readable by its owner only).
    pub fn read(path: &Path) -> Result<KmipConfig, String> {
        owner_ok(
            path,
            0o022,
            "must be owned by root and writable by its owner only",
        )?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("/"));
        let mut server = None;
        let (mut ca, mut cert, mut key) = (None, None, None);
        let mut group = None;
        let mut prefix = DEFAULT_PREFIX.to_string();
        let mut timeout = Duration::from_secs(10);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |msg: &str| format!("{}:{}: {msg}", path.display(), n + 1);
            let (k, v) = line
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| at("expected key = value"))?;
            // Relative file names are relative to the configuration file.
            let file = |v: &str| -> PathBuf { base.join(v) };
            match k {
                "server" => {
                    let (h, p) = v
                        .rsplit_once(':')
                        .ok_or_else(|| at("server must be HOST:PORT"))?;
                    let p: u16 = p.parse().map_err(|_| at("server port is not a number"))?;
                    let h = h.trim_start_matches('[').trim_end_matches(']');
                    server = Some((h.to_string(), p));
                }
                "ca" => ca = Some(file(v)),
                "cert" => cert = Some(file(v)),
                "key" => key = Some(file(v)),
                "group" => {
                    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
                        return Err(at("group must be one word"));
                    }
                    group = Some(v.to_string());
                }
                "name_prefix" => prefix = v.to_string(),
                "timeout" => {
                    let s: u64 = v
                        .parse()
                        .ok()
                        .filter(|s| (1..=300).contains(s))
                        .ok_or_else(|| at("timeout must be 1..300 seconds"))?;
                    timeout = Duration::from_secs(s);
                }
                _ => return Err(at(&format!("unknown key {k}"))),
            }
        }
        let need = |what: &str| format!("{}: {what} is missing", path.display());
        let (host, port) = server.ok_or_else(|| need("server = HOST:PORT"))?;
        let ca = ca.ok_or_else(|| need("ca = FILE"))?;
        let cert = cert.ok_or_else(|| need("cert = FILE"))?;
        let key = key.ok_or_else(|| need("key = FILE"))?;
        let group = group.ok_or_else(|| need("group = NAME"))?;
        owner_ok(
            &key,
            0o077,
            "the KMIP client key must be owned by root (or this user) and mode 0600",
        )?;
        let mut client = ClientConfig::new(&host, port, &ca, &cert, &key);
        client.timeout = timeout;
        Ok(KmipConfig {
            client,
            group,
            prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn parses_and_checks() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("kmip.conf");
        std::fs::write(d.path().join("host.key"), "k").unwrap();
        std::fs::set_permissions(
            d.path().join("host.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(
            &f,
            "# key manager\nserver = 127.0.0.1:5696\nca = ca.pem\ncert = host.pem\nkey = host.key\ngroup = web\ntimeout = 5\n",
        )
        .unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = KmipConfig::read(&f).unwrap();
        assert_eq!((c.client.host.as_str(), c.client.port), ("127.0.0.1", 5696));
        assert_eq!(c.client.ca, d.path().join("ca.pem"));
        assert_eq!(c.group, "web");
        assert_eq!(c.prefix, DEFAULT_PREFIX);
        assert_eq!(c.client.timeout, Duration::from_secs(5));
        std::fs::set_permissions(
            d.path().join("host.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(KmipConfig::read(&f).unwrap_err().contains("mode 0600"));
        std::fs::write(&f, "server = nowhere\n").unwrap();
        assert!(KmipConfig::read(&f).unwrap_err().contains("HOST:PORT"));
        std::fs::write(&f, "bogus = 1\n").unwrap();
        assert!(KmipConfig::read(&f).unwrap_err().contains("unknown key"));
    }
}

//! cryptsetup-style command line: `ACTION [options] ARGS…`, options
//! anywhere, `--opt value`, `--opt=value`, short options `-d FILE`, `-q`.

use std::collections::BTreeMap;

use crate::exit::CliError;

/// Options that take a value, with their short forms.
const VALUED: &[(&str, Option<char>)] = &[
    ("key-file", Some('d')),
    ("keyfile-size", Some('l')),
    ("keyfile-offset", None),
    ("new-keyfile", None),
    ("new-keyfile-size", None),
    ("new-keyfile-offset", None),
    ("key-slot", Some('S')),
    ("new-key-slot", None),
    ("header", None),
    ("header-backup-file", None),
    ("volume-key-file", None),
    ("master-key-file", None),
    ("uuid", None),
    ("label", None),
    ("subsystem", None),
    ("luks2-metadata-size", None),
    ("luks2-keyslots-size", None),
    ("sector-size", None),
    ("cipher", Some('c')),
    ("key-size", Some('s')),
    ("hash", Some('h')),
    ("pbkdf", None),
    ("pbkdf-memory", None),
    ("pbkdf-parallel", None),
    ("pbkdf-force-iterations", None),
    ("iter-time", Some('i')),
    ("token-id", None),
    ("token-type", None),
    ("json-file", None),
    ("type", Some('M')),
    ("priority", None),
    ("offset", Some('o')),
    ("align-payload", None),
    ("key-description", None),
    ("key-provider", None),
    ("pin-file", None),
    ("tries", Some('T')),
    ("timeout", Some('t')),
    ("tpm2-device", None),
    ("tpm2-pcrs", None),
    ("pkcs11-token-uri", None),
    ("provider-state", None),
];

/// Flags without a value.
const FLAGS: &[(&str, Option<char>)] = &[
    ("batch-mode", Some('q')),
    ("verbose", Some('v')),
    ("debug", None),
    ("verify-passphrase", Some('y')),
    ("test-passphrase", None),
    ("readonly", Some('r')),
    ("allow-discards", None),
    ("dump-json-metadata", None),
    ("dump-volume-key", None),
    ("dump-master-key", None),
    ("token-only", None),
    ("token-replace", None),
    ("unbound", None),
    ("json", None),
    ("disable-locks", None),
    ("force-password", None),
    ("staged", None),
    ("in-place", None),
    ("complete", None),
    ("to-new", None),
    ("from-old", None),
    ("force", None),
    ("persistent", None),
    ("disable-keyring", None),
    ("disable-external-tokens", None),
    ("help", None),
    ("version", Some('V')),
    ("deferred", None),
    ("tpm2-with-pin", None),
    ("foreground", None),
];

/// Parsed command line.
#[derive(Debug, Default)]
pub struct Args {
    /// The action name (first positional).
    pub action: String,
    /// Remaining positionals.
    pub pos: Vec<String>,
    values: BTreeMap<&'static str, String>,
    flags: Vec<&'static str>,
}

fn canonical(name: &str) -> &str {
    match name {
        "master-key-file" => "volume-key-file",
        "dump-master-key" => "dump-volume-key",
        other => other,
    }
}

impl Args {
    /// Parses argv (without the program name).
    pub fn parse(argv: &[String]) -> Result<Args, CliError> {
        let mut a = Args::default();
        let mut positional = Vec::new();
        let mut i = 0;
        let mut only_pos = false;
        while i < argv.len() {
            let arg = &argv[i];
            i += 1;
            if only_pos || arg == "-" || !arg.starts_with('-') {
                positional.push(arg.clone());
                continue;
            }
            if arg == "--" {
                only_pos = true;
                continue;
            }
            if let Some(long) = arg.strip_prefix("--") {
                let (name, inline) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                let name = canonical(name);
                if let Some(&(n, _)) = VALUED.iter().find(|(n, _)| *n == name) {
                    let v = match inline {
                        Some(v) => v,
                        None => {
                            let v = argv.get(i).cloned().ok_or_else(|| {
                                CliError::usage(format!("Option --{n} requires an argument."))
                            })?;
                            i += 1;
                            v
                        }
                    };
                    a.values.insert(n, v);
                } else if let Some(&(n, _)) = FLAGS.iter().find(|(n, _)| *n == name) {
                    if inline.is_some() {
                        return Err(CliError::usage(format!(
                            "Option --{n} does not take an argument."
                        )));
                    }
                    a.flags.push(n);
                } else {
                    return Err(CliError::usage(format!("Unknown option --{name}.")));
                }
                continue;
            }
            // Short options, possibly grouped (-qv) or with attached value (-S1).
            let chars: Vec<char> = arg[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                if let Some(&(n, _)) = VALUED.iter().find(|(_, s)| *s == Some(c)) {
                    let rest: String = chars[j..].iter().collect();
                    let v = if !rest.is_empty() {
                        rest
                    } else {
                        let v = argv.get(i).cloned().ok_or_else(|| {
                            CliError::usage(format!("Option -{c} requires an argument."))
                        })?;
                        i += 1;
                        v
                    };
                    a.values.insert(n, v);
                    break;
                } else if let Some(&(n, _)) = FLAGS.iter().find(|(_, s)| *s == Some(c)) {
                    a.flags.push(n);
                } else {
                    return Err(CliError::usage(format!("Unknown option -{c}.")));
                }
            }
        }
        let mut it = positional.into_iter();
        a.action = it.next().unwrap_or_default();
        a.pos = it.collect();
        Ok(a)
    }

    /// Value of a valued option.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Whether a flag is present.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.contains(&name)
    }

    /// A numeric option.
    pub fn num<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, CliError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| CliError::usage(format!("Invalid numeric value for --{name}: {v}"))),
        }
    }

    /// A size in bytes with cryptsetup's optional unit suffix: K, M, G, T,
    /// P, E (any case) alone or with "iB" are powers of 1024, with "B"
    /// powers of 1000 (`16k`, `4MiB`, `1GB`).
    pub fn size(&self, name: &str) -> Result<Option<u64>, CliError> {
        let Some(v) = self.get(name) else {
            return Ok(None);
        };
        let bad = || CliError::usage(format!("Invalid size value for --{name}: {v}"));
        let digits = v.bytes().take_while(u8::is_ascii_digit).count();
        let (num, unit) = v.split_at(digits);
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mut chars = unit.chars();
        let exp = match chars.next().map(|c| c.to_ascii_uppercase()) {
            None => return Ok(Some(n)),
            Some(c) => "KMGTPE".find(c).ok_or_else(bad)? as u32 + 1,
        };
        let base: u64 = match chars.as_str() {
            "" | "iB" => 1024,
            "B" => 1000,
            _ => return Err(bad()),
        };
        base.checked_pow(exp)
            .and_then(|m| n.checked_mul(m))
            .map(Some)
            .ok_or_else(bad)
    }

    /// The n-th positional after the action, or a usage error naming it.
    pub fn pos(&self, n: usize, what: &str) -> Result<&str, CliError> {
        self.pos.get(n).map(String::as_str).ok_or_else(|| {
            CliError::usage(format!(
                "Command {} requires {what} as argument.",
                self.action
            ))
        })
    }

    /// Whether confirmations are skipped.
    pub fn batch(&self) -> bool {
        self.flag("batch-mode")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Args {
        Args::parse(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn options_anywhere_and_forms() {
        let a = p(&[
            "luksAddKey",
            "-q",
            "dev",
            "--key-file=k",
            "-S3",
            "new",
            "--pbkdf",
            "pbkdf2",
        ]);
        assert_eq!(a.action, "luksAddKey");
        assert_eq!(a.pos, vec!["dev", "new"]);
        assert_eq!(a.get("key-file"), Some("k"));
        assert_eq!(a.get("key-slot"), Some("3"));
        assert_eq!(a.get("pbkdf"), Some("pbkdf2"));
        assert!(a.batch());
    }

    #[test]
    fn aliases_and_dash() {
        let a = p(&["luksFormat", "--master-key-file", "mk", "-d", "-", "dev"]);
        assert_eq!(a.get("volume-key-file"), Some("mk"));
        assert_eq!(a.get("key-file"), Some("-"));
        assert_eq!(a.pos, vec!["dev"]);
    }

    #[test]
    fn sizes_take_cryptsetup_units() {
        let cases = [
            ("16384", Some(16384)),
            ("16k", Some(16384)),
            ("16K", Some(16384)),
            ("16KiB", Some(16384)),
            ("4m", Some(4 << 20)),
            ("4MiB", Some(4 << 20)),
            ("16KB", Some(16000)),
            ("16b", None),
            ("0x4000", None),
            ("16k5", None),
            ("k", None),
            ("99999999999E", None),
        ];
        for (v, want) in cases {
            let a = p(&["luksFormat", "--luks2-metadata-size", v]);
            match want {
                Some(n) => assert_eq!(a.size("luks2-metadata-size").unwrap(), Some(n), "{v}"),
                None => assert_eq!(a.size("luks2-metadata-size").unwrap_err().code, 1, "{v}"),
            }
        }
        assert_eq!(
            p(&["luksFormat"]).size("luks2-metadata-size").unwrap(),
            None
        );
    }

    #[test]
    fn unknown_option_is_usage_error() {
        let e = Args::parse(&["x".into(), "--nope".into()]).unwrap_err();
        assert_eq!(e.code, 1);
    }
}

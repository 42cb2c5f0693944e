//! From a crypttab entry to the `wrapcrypt open` command line and the
//! unit's dependencies. Each crypttab option is mapped to an option
//! `wrapcrypt open` really has, ignored with a warning (it only tunes
//! dm-crypt or unlocking in a way wrapcrypt lacks), or refuses the entry
//! (it says the volume is not LUKS: plain, swap, tcrypt, …).

use crate::crypttab::{Device, Entry, Key};

/// What to do with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write units for it.
    Open(Plan),
    /// Leave it to systemd-cryptsetup, with the reason (a warning).
    Refuse(String),
}

/// The mapped entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Options of `wrapcrypt open`, before DEVICE and NAME.
    pub args: Vec<String>,
    /// One line per option that was ignored.
    pub warnings: Vec<String>,
    /// `nofail`: cryptsetup.target wants the unit instead of requiring it.
    pub nofail: bool,
    /// `noauto`: no dependency from cryptsetup.target at all.
    pub noauto: bool,
    /// `header=`.
    pub header: Option<Device>,
    /// `x-systemd.device-timeout=`, in seconds.
    pub device_timeout: Option<u64>,
    /// Whether the passphrase may be asked (no key file).
    pub asks: bool,
}

/// Options accepted without any effect on the command: they only tune
/// dm-crypt or plain mode, which wrapcrypt's FUSE path does not have.
const IGNORED: &[&str] = &[
    "same-cpu-crypt",
    "submit-from-crypt-cpus",
    "no-read-workqueue",
    "no-write-workqueue",
    "verify",
    "cipher",
    "hash",
    "size",
    "offset",
    "skip",
    "sector-size",
    "x-initrd.attach",
    "silent",
    "password-echo",
    "keyfile-erase",
    "try-empty-password",
    "_netdev",
    "luks2",
];

/// Types of volume wrapcrypt does not open.
const REFUSED: &[&str] = &[
    "plain",
    "swap",
    "tmp",
    "tcrypt",
    "tcrypt-hidden",
    "tcrypt-system",
    "tcrypt-veracrypt",
    "veracrypt-pim",
    "bitlk",
];

/// Parses a systemd time span (`30`, `30s`, `2min`, `1h`, `1d`, `500ms`, `infinity`)
/// into whole seconds (rounded up); 0 and `infinity` mean no limit.
pub fn parse_secs(v: &str) -> Option<u64> {
    if v == "infinity" {
        return Some(0);
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mul_us: u64 = match unit.trim() {
        "" | "s" | "sec" => 1_000_000,
        "us" | "usec" => 1,
        "ms" | "msec" => 1000,
        "m" | "min" => 60_000_000,
        "h" | "hr" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return None,
    };
    Some((n.checked_mul(mul_us)?).div_ceil(1_000_000))
}

/// Maps an entry.
pub fn plan(e: &Entry) -> Decision {
    let mut p = Plan::default();
    let mut token_types: Vec<&str> = Vec::new();
    let mut tpm2_device: Option<String> = None;
    let (mut readonly, mut discard, mut headless) = (false, false, false);
    let (mut tries, mut timeout) = (None, None);
    let (mut kf_size, mut kf_offset, mut key_slot) = (None, None, None);
    let w = |p: &mut Plan, m: String| p.warnings.push(format!("{}: {m}", e.name));
    for o in &e.options {
        let name = o.name.as_str();
        let val = o.value.as_deref();
        if REFUSED.contains(&name) || name.starts_with("tcrypt-") {
            return Decision::Refuse(format!(
                "{}: option {name} names a volume type wrapcrypt does not open (LUKS only)",
                e.name
            ));
        }
        let need = |p: &mut Plan| -> Option<String> {
            match val {
                Some(v) if !v.is_empty() => Some(v.to_string()),
                _ => {
                    p.warnings
                        .push(format!("{}: option {name} needs a value, ignored", e.name));
                    None
                }
            }
        };
        let number = |p: &mut Plan| -> Option<u64> {
            let v = need(p)?;
            let n = v.parse().ok();
            if n.is_none() {
                p.warnings.push(format!(
                    "{}: option {name}={v} is not a number, ignored",
                    e.name
                ));
            }
            n
        };
        match name {
            "wrapcrypt" | "luks" => {}
            "discard" => discard = true,
            "readonly" | "read-only" => readonly = true,
            "nofail" => p.nofail = true,
            "headless" => match val {
                None | Some("yes" | "true" | "1" | "on") => headless = true,
                Some("no" | "false" | "0" | "off") => headless = false,
                Some(v) => w(&mut p, format!("option headless={v} is not a boolean, ignored")),
            },
            "noauto" => p.noauto = true,
            "tries" => tries = number(&mut p).or(tries),
            "key-slot" => key_slot = number(&mut p).or(key_slot),
            "keyfile-size" => kf_size = number(&mut p).or(kf_size),
            "keyfile-offset" => kf_offset = number(&mut p).or(kf_offset),
            "timeout" | "x-systemd.device-timeout" => {
                if let Some(v) = need(&mut p) {
                    match parse_secs(&v) {
                        Some(s) if name == "timeout" => timeout = Some(s),
                        Some(s) => p.device_timeout = Some(s),
                        None => w(&mut p, format!("option {name}={v} is not a time span, ignored")),
                    }
                }
            }
            "header" => {
                if let Some(v) = need(&mut p) {
                    match Device::parse(&v) {
                        Ok(d) => p.header = Some(d),
                        Err(m) => {
                            return Decision::Refuse(format!("{}: header=: {m}", e.name));
                        }
                    }
                }
            }
            "tpm2-device" => {
                if let Some(v) = need(&mut p) {
                    token_types.push("systemd-tpm2");
                    if v != "auto" {
                        tpm2_device = Some(v);
                    }
                }
            }
            "pkcs11-uri" => {
                if let Some(v) = need(&mut p) {
                    token_types.push("systemd-pkcs11");
                    if v != "auto" {
                        w(&mut p, format!(
                            "pkcs11-uri={v}: the URI recorded in the volume's systemd-pkcs11 token is used"
                        ));
                    }
                }
            }
            "keyfile-timeout" => w(
                &mut p,
                "option keyfile-timeout= is not supported (no passphrase fallback when the key file is missing), ignored".into(),
            ),
            "fido2-device" | "fido2-cid" | "fido2-rp" => w(
                &mut p,
                format!("option {name}= is not supported (wrapcrypt has no FIDO2 token handler), ignored"),
            ),
            n if IGNORED.contains(&n) => w(
                &mut p,
                format!("option {n} has no effect on wrapcrypt volumes, ignored"),
            ),
            n => w(&mut p, format!("unknown option {n}, ignored")),
        }
    }
    let a = &mut p.args;
    match &e.key {
        Key::File(k) => {
            a.extend(["--key-file".into(), k.clone()]);
            if let Some(n) = kf_size {
                a.extend(["--keyfile-size".into(), n.to_string()]);
            }
            if let Some(n) = kf_offset {
                a.extend(["--keyfile-offset".into(), n.to_string()]);
            }
        }
        Key::Ask => p.asks = !headless,
    }
    if !matches!(e.key, Key::File(_)) && (kf_size.is_some() || kf_offset.is_some()) {
        p.warnings.push(format!(
            "{}: keyfile-size=/keyfile-offset= without a key file, ignored",
            e.name
        ));
    }
    let a = &mut p.args;
    if let Some(s) = key_slot {
        a.extend(["--key-slot".into(), s.to_string()]);
    }
    if let Some(h) = &p.header {
        a.extend(["--header".into(), h.path()]);
    }
    if readonly {
        a.push("--readonly".into());
    }
    if discard {
        a.push("--allow-discards".into());
    }
    match token_types.as_slice() {
        [] => {}
        [t] => a.extend(["--token-type".into(), t.to_string()]),
        _ => {} // both: every token is tried
    }
    if let Some(d) = tpm2_device {
        a.extend(["--tpm2-device".into(), d]);
    }
    if headless && matches!(e.key, Key::Ask) {
        a.push("--token-only".into());
    }
    if p.asks {
        // crypttab's default is 3 tries (wrapcrypt open's is 1).
        a.extend(["--tries".into(), tries.unwrap_or(3).to_string()]);
        if let Some(t) = timeout {
            a.extend(["--timeout".into(), t.to_string()]);
        }
        a.push("--ask-password".into());
    } else if tries.is_some() || timeout.is_some() {
        p.warnings.push(format!(
            "{}: tries=/timeout= apply to passphrase prompts; the entry has {}, ignored",
            e.name,
            if headless { "headless" } else { "a key file" }
        ));
    }
    Decision::Open(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypttab::parse;

    fn one(line: &str) -> Decision {
        plan(&parse(line).entries[0])
    }

    #[test]
    fn options_map_to_open_flags() {
        let Decision::Open(p) =
            one("v /dev/sda1 none discard,read-only,tries=5,timeout=2min,wrapcrypt")
        else {
            panic!()
        };
        assert_eq!(
            p.args,
            [
                "--readonly",
                "--allow-discards",
                "--tries",
                "5",
                "--timeout",
                "120",
                "--ask-password"
            ]
        );
        assert!(p.warnings.is_empty());
        let Decision::Open(p) = one("v /dev/sda1 /k tries=5,bogus,tpm2-device=/dev/tpmrm0") else {
            panic!()
        };
        assert_eq!(p.args[..2], ["--key-file", "/k"]);
        assert!(p
            .args
            .ends_with(&["--tpm2-device".to_string(), "/dev/tpmrm0".to_string()]));
        assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
        assert!(matches!(
            one("v /dev/sda1 /dev/urandom swap"),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn time_spans() {
        assert_eq!(parse_secs("30"), Some(30));
        assert_eq!(parse_secs("1500ms"), Some(2));
        assert_eq!(parse_secs("1h"), Some(3600));
        assert_eq!(parse_secs("1d"), Some(86400));
        assert_eq!(parse_secs("10us"), Some(1));
        assert_eq!(parse_secs("infinity"), Some(0));
        assert_eq!(parse_secs("soon"), None);
    }
}

//! crypttab(5): one volume per line, `NAME DEVICE [KEY [OPTIONS]]`,
//! blanks between fields, `#` comments. Parsing is sans-I/O: text in,
//! entries and warnings out; a bad line becomes a warning naming its line
//! number, never an abort, as systemd's generator does.

/// Where the backing device (or a detached header) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// An absolute path (a device node or an image file).
    Path(String),
    /// `UUID=`, `PARTUUID=`, `LABEL=` or `PARTLABEL=`: a udev link.
    Tag {
        /// `UUID`, `PARTUUID`, `LABEL`, `PARTLABEL`.
        tag: &'static str,
        /// The value after `=`.
        value: String,
    },
}

impl Device {
    /// Parses the device field.
    pub fn parse(s: &str) -> Result<Device, String> {
        for (tag, _) in TAGS {
            if let Some(v) = s.strip_prefix(tag).and_then(|r| r.strip_prefix('=')) {
                if v.is_empty() || v.contains('/') {
                    return Err(format!("invalid {tag}= value {s:?}"));
                }
                return Ok(Device::Tag {
                    tag,
                    value: v.to_string(),
                });
            }
        }
        if !s.starts_with('/') {
            return Err(format!(
                "device {s:?} is neither an absolute path nor UUID=/PARTUUID=/LABEL=/PARTLABEL="
            ));
        }
        Ok(Device::Path(s.to_string()))
    }

    /// The path the device has once it exists.
    pub fn path(&self) -> String {
        match self {
            Device::Path(p) => p.clone(),
            Device::Tag { tag, value } => {
                let dir = TAGS.iter().find(|(t, _)| t == tag).map(|(_, d)| *d);
                // udev encodes blanks and slashes in labels as \x20-style.
                let v = if tag.ends_with("LABEL") {
                    udev_encode(value)
                } else if *tag == "UUID" || *tag == "PARTUUID" {
                    value.to_ascii_lowercase()
                } else {
                    value.clone()
                };
                format!("/dev/disk/{}/{v}", dir.unwrap_or("by-uuid"))
            }
        }
    }

    /// Whether the path is a device node (under /dev), so that it has a
    /// `.device` unit; otherwise it is a file on a mounted file system.
    pub fn is_block(&self) -> bool {
        self.path().starts_with("/dev/")
    }
}

const TAGS: [(&str, &str); 4] = [
    ("UUID", "by-uuid"),
    ("PARTUUID", "by-partuuid"),
    ("LABEL", "by-label"),
    ("PARTLABEL", "by-partlabel"),
];

fn udev_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"#+-.:=@_".contains(&b) || b >= 0x80 {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Where the passphrase comes from (third field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// Absent, `none` or `-`: asked (token, then passphrase prompt).
    Ask,
    /// A key file.
    File(String),
}

/// One option of the fourth field, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opt {
    /// The name (before `=`).
    pub name: String,
    /// The value after `=`, if any.
    pub value: Option<String>,
}

/// One crypttab line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    /// The mapping name (`/dev/mapper/NAME`).
    pub name: String,
    /// The backing device.
    pub device: Device,
    /// The key.
    pub key: Key,
    /// The options, in order.
    pub options: Vec<Opt>,
}

impl Entry {
    /// Whether the option `name` is present (last one wins for values).
    pub fn has(&self, name: &str) -> bool {
        self.options.iter().any(|o| o.name == name)
    }
}

/// A warning about one crypttab line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong and what was done.
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// A parse result: the good entries and one warning per bad line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Crypttab {
    /// The entries, in file order.
    pub entries: Vec<Entry>,
    /// One for each line that was skipped.
    pub warnings: Vec<Warning>,
}

/// Parses crypttab text.
pub fn parse(text: &str) -> Crypttab {
    let mut out = Crypttab::default();
    let mut names: Vec<String> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(n, line) {
            Ok(e) => {
                if names.contains(&e.name) {
                    out.warnings.push(Warning {
                        line: n,
                        message: format!("duplicate name {:?}, line skipped", e.name),
                    });
                    continue;
                }
                names.push(e.name.clone());
                out.entries.push(e);
            }
            Err(msg) => out.warnings.push(Warning {
                line: n,
                message: format!("{msg}, line skipped"),
            }),
        }
    }
    out
}

fn parse_line(n: usize, line: &str) -> Result<Entry, String> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 2 {
        return Err("needs at least NAME and DEVICE".into());
    }
    if f.len() > 4 {
        return Err(format!(
            "has {} fields, at most 4 (NAME DEVICE KEY OPTIONS)",
            f.len()
        ));
    }
    let name = f[0];
    if name.contains('/') || name == "." || name == ".." || name.len() > 127 {
        return Err(format!("invalid name {name:?}"));
    }
    let device = Device::parse(f[1])?;
    let key = match f.get(2).copied() {
        None | Some("none") | Some("-") => Key::Ask,
        Some(p) if p.starts_with('/') => Key::File(p.to_string()),
        Some(p) => return Err(format!("key file {p:?} is not an absolute path")),
    };
    let mut options = Vec::new();
    if let Some(o) = f.get(3) {
        for item in o.split(',').filter(|s| !s.is_empty()) {
            let (name, value) = match item.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (item.to_string(), None),
            };
            options.push(Opt { name, value });
        }
    }
    Ok(Entry {
        line: n,
        name: name.to_string(),
        device,
        key,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fields_and_comments() {
        let t = parse(
            "# c\n\nroot UUID=ABC-1 none luks,discard\nbad\n\
             home /dev/sdb2 /etc/k tries=3\nroot /dev/x\nx rel k\n",
        );
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.entries[0].device.path(), "/dev/disk/by-uuid/abc-1");
        assert_eq!(t.entries[1].key, Key::File("/etc/k".into()));
        assert_eq!(
            t.entries[1].options[0],
            Opt {
                name: "tries".into(),
                value: Some("3".into())
            }
        );
        assert_eq!(t.warnings.len(), 3, "{:?}", t.warnings);
        assert!(t.warnings[0].to_string().starts_with("line 4: "));
        assert!(t.warnings[1].message.contains("duplicate"));
    }

    #[test]
    fn labels_are_udev_encoded() {
        let d = Device::parse("LABEL=my disk").unwrap();
        assert_eq!(d.path(), "/dev/disk/by-label/my\\x20disk");
    }
}

//! systemd's name escaping (`systemd-escape`, `systemd-escape --path`) and
//! the quoting of command-line words in `Exec*=` lines.

/// Escapes a string as `systemd-escape` does: `/` becomes `-`, ASCII
/// letters, digits, `:`, `_` and `.` (not leading) stay, everything else
/// becomes `\xNN`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Escapes a path as `systemd-escape --path` does: the path is simplified
/// (repeated and trailing `/`, `.` components dropped), the leading `/`
/// removed, and the root becomes `-`.
pub fn escape_path(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return "-".into();
    }
    escape(&parts.join("/"))
}

/// The `.device` unit of a device node path.
pub fn device_unit(path: &str) -> String {
    format!("{}.device", escape_path(path))
}

/// Quotes one word of an `Exec*=` line: `%` specifiers and `$` variables
/// are doubled so systemd passes them literally; words with blanks,
/// quotes or backslashes are put in double quotes with C escapes.
pub fn exec_word(w: &str) -> String {
    let lit = w.replace('%', "%%").replace('$', "$$");
    let plain = !lit.is_empty()
        && !lit
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\' || c == ';');
    if plain {
        return lit;
    }
    let mut out = String::from("\"");
    for c in lit.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            _ => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Splits an `Exec*=` value back into words (the inverse of joining
/// [`exec_word`]s with spaces), undoing `%%`, `$$` and the quoting.
pub fn split_exec(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            '\\' if quoted => match it.next() {
                Some('n') => cur.push('\n'),
                Some('t') => cur.push('\t'),
                Some(o) => cur.push(o),
                None => {}
            },
            '%' | '$' if it.peek() == Some(&c) => {
                it.next();
                cur.push(c);
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_escape_like_systemd_escape() {
        assert_eq!(escape("luks-1"), "luks\\x2d1");
        assert_eq!(escape(".x y"), "\\x2ex\\x20y");
        assert_eq!(escape("a/b"), "a-b");
        assert_eq!(escape_path("/"), "-");
        assert_eq!(escape_path("//dev//sda1/"), "dev-sda1");
        assert_eq!(
            device_unit("/dev/disk/by-uuid/0b1c-2d"),
            "dev-disk-by\\x2duuid-0b1c\\x2d2d.device"
        );
    }

    #[test]
    fn exec_words_round_trip() {
        for w in ["plain", "a b", "50%", "$HOME", "q\"x", "back\\slash", ""] {
            let line = format!("/bin/x {} end", exec_word(w));
            assert_eq!(split_exec(&line), vec!["/bin/x", w, "end"], "{w:?}");
        }
    }
}

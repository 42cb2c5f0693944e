//! packaging/man/wrapcrypt-crypttab.5 renders with `man --warnings -l`
//! without a warning and documents every option the generator maps.

use std::path::Path;
use std::process::Command;

#[test]
fn crypttab_man_page_renders_without_warnings_and_names_every_option() {
    let page =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/man/wrapcrypt-crypttab.5");
    let o = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&page)
        .env("LC_ALL", "C")
        .env("MANWIDTH", "80")
        .output()
        .expect("man (package man-db)");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.trim().is_empty(), "man warnings:\n{err}");
    // Overstrike bold/underline (`c\x08c`) if man kept formatting.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&o.stdout).chars() {
        if c == '\x08' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    // Rendering hyphenates at line ends; join words back for the search.
    let flat = text
        .replace("-\n", "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for opt in [
        "wrapcrypt",
        "luks",
        "discard",
        "readonly",
        "read-only",
        "tries=",
        "timeout=",
        "nofail",
        "noauto",
        "header=",
        "tpm2-device=",
        "pkcs11-uri=",
        "keyfile-timeout=",
        "keyfile-size=",
        "keyfile-offset=",
        "key-slot=",
        "x-systemd.device-timeout=",
        "SYSTEMD_CRYPTTAB",
    ] {
        assert!(flat.contains(opt), "{opt} not documented");
    }
}

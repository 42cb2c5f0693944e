//! `refresh NAME [--allow-discards] [--persistent]` of real FUSE + loop
//! activations (docs/actions.md): the passphrase is checked as cryptsetup
//! does (wrong: exit 2, nothing changed), the server takes the new flags
//! while I/O goes on (blkdiscard zeroes a range only while discards are
//! on), `status` shows them, and `--persistent` writes cryptsetup's
//! `allow-discards` config flag (cryptsetup luksDump "Flags:") into both
//! header copies. Needs root, FUSE and loop devices.

mod common;

use std::process::{Command, Stdio};

use common::*;

struct Close(String);
impl Drop for Close {
    fn drop(&mut self) {
        let _ = WC.cmd(&["close", &self.0]).stderr(Stdio::null()).status();
    }
}

fn status_json(name: &str) -> serde_json::Value {
    let o = WC.run(&["status", "--json", name]);
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|_| panic!("status --json: {o}"))
}

fn cs_flags(img: &str) -> String {
    let o = CS.ok(&["luksDump", img]).stdout;
    o.lines()
        .find_map(|l| l.strip_prefix("Flags:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no Flags: in {o}"))
}

fn dd(args: &[&str]) -> bool {
    Command::new("dd")
        .args(args)
        .arg("status=none")
        .status()
        .unwrap()
        .success()
}

fn write_dev(s: &Scratch, name: &str, data: &[u8]) {
    let f = s.key("w.bin", data);
    assert!(dd(&[
        &format!("if={f}"),
        &format!("of=/dev/mapper/{name}"),
        "bs=64k",
        "oflag=direct",
        "conv=fsync,notrunc",
    ]));
}

fn read_dev(s: &Scratch, name: &str, len: usize) -> Vec<u8> {
    let out = s.p("r.bin");
    assert!(dd(&[
        &format!("if=/dev/mapper/{name}"),
        &format!("of={out}"),
        "bs=64k",
        &format!("count={}", len / 65536),
        "iflag=direct",
    ]));
    std::fs::read(out).unwrap()
}

fn blkdiscard(name: &str, off: u64, len: u64) -> bool {
    Command::new("blkdiscard")
        .args([
            "-o",
            &off.to_string(),
            "-l",
            &len.to_string(),
            &format!("/dev/mapper/{name}"),
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add((i >> 9) as u8) | 1)
        .collect()
}

#[test]
fn refresh_changes_discards_live_and_persistent_writes_the_header_flag() {
    let s = Scratch::new();
    let img = s.image("r.img", 32);
    let kf = s.key("pass", b"refresh-pass");
    let bad = s.key("bad", b"wrong-pass");
    format(CS, &img, &kf, FAST);
    assert_eq!(cs_flags(&img), "(no flags)");
    let name = format!("wcrefresh{}", std::process::id());
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    let _guard = Close(name.clone());
    let data = pattern(1 << 20, 5);
    write_dev(&s, &name, &data);
    assert_eq!(status_json(&name)["discards"], false);

    // Not active: 4. A wrong passphrase: 2, nothing changed.
    let o = WC.run(&["refresh", "wcrefresh-none", "--key-file", &kf]);
    assert_eq!(o.code, 4, "{o}");
    let o = WC.run(&["refresh", &name, "--allow-discards", "--key-file", &bad]);
    assert_eq!(o.code, 2, "{o}");
    assert_eq!(o.stderr.trim().lines().count(), 1, "{o}");
    assert_eq!(status_json(&name)["discards"], false);
    // Read-only cannot change on refresh: 1.
    let o = WC.run(&["refresh", &name, "--readonly", "--key-file", &kf]);
    assert_eq!(o.code, 1, "{o}");

    // Discards on: blkdiscard of the first 64 KiB zeroes it (as encrypted
    // zeros), the rest of the data is unchanged, status says so.
    let t0 = std::time::Instant::now();
    let o = WC.run(&["refresh", &name, "--allow-discards", "--key-file", &kf]);
    assert_eq!(o.code, 0, "{o}");
    eprintln!("refresh took {:?}", t0.elapsed());
    assert!(o.stderr.is_empty(), "{o}");
    assert_eq!(status_json(&name)["discards"], true);
    assert!(WC
        .ok(&["status", &name])
        .stdout
        .contains("flags:   discards"));
    assert!(blkdiscard(&name, 0, 65536), "blkdiscard with discards on");
    let got = read_dev(&s, &name, 1 << 20);
    assert!(
        got[..65536].iter().all(|&b| b == 0),
        "discarded range reads zeros"
    );
    assert!(got[65536..] == data[65536..], "the rest is unchanged");
    // The ciphertext there is not zeros (nothing about it leaks).
    let offset = 16usize << 20;
    assert!(bytes(&img)[offset..offset + 65536].iter().any(|&b| b != 0));
    // Not stored without --persistent.
    assert_eq!(cs_flags(&img), "(no flags)");

    // I/O goes on across refreshes.
    let more = pattern(1 << 20, 9);
    write_dev(&s, &name, &more);
    WC.ok(&["refresh", &name, "--key-file", &kf]);
    assert_eq!(status_json(&name)["discards"], false);
    assert!(read_dev(&s, &name, 1 << 20) == more);
    // Discards off: the server refuses them (EOPNOTSUPP), nothing is
    // zeroed. (The loop driver reports that first refusal as done and
    // stops sending discards: blkdiscard's exit status says nothing.)
    blkdiscard(&name, 0, 65536);
    assert!(
        read_dev(&s, &name, 1 << 20) == more,
        "nothing discarded while off"
    );
    assert!(
        !blkdiscard(&name, 0, 65536),
        "the loop device passes no more discards"
    );

    // --persistent: cryptsetup's flag in both header copies; cryptsetup
    // still unlocks the volume.
    let o = WC.run(&[
        "refresh",
        &name,
        "--allow-discards",
        "--persistent",
        "--key-file",
        &kf,
    ]);
    assert_eq!(o.code, 0, "{o}");
    // The loop device stopped passing discards when one was refused above
    // (Linux >= 6.10): refresh says so in one line.
    assert!(o.stderr.contains("stopped passing discards"), "{o}");
    assert_eq!(cs_flags(&img), "allow-discards");
    assert_copies_agree(&img, "after refresh --persistent");
    let json: serde_json::Value = serde_json::from_str(&raw_json(&img)).unwrap();
    assert_eq!(
        json["config"]["flags"],
        serde_json::json!(["allow-discards"])
    );
    assert_eq!(test_pass(CS, &img, &kf, &[]), 0);
    assert_eq!(status_json(&name)["discards"], true);
    // Without --allow-discards, the header's flag keeps them on (as open).
    WC.ok(&["refresh", &name, "--key-file", &kf]);
    assert_eq!(status_json(&name)["discards"], true);
    // --persistent without it clears the flag.
    WC.ok(&["refresh", &name, "--persistent", "--key-file", &kf]);
    assert_eq!(cs_flags(&img), "(no flags)");
    assert_eq!(status_json(&name)["discards"], false);
    assert_copies_agree(&img, "after clearing");

    // A persistent flag is honoured by the next open, whose loop device
    // passes discards again.
    WC.ok(&[
        "refresh",
        &name,
        "--allow-discards",
        "--persistent",
        "--key-file",
        &kf,
    ]);
    WC.ok(&["close", &name]);
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    assert_eq!(status_json(&name)["discards"], true);
    assert!(blkdiscard(&name, 65536, 65536), "discards after re-open");
    let got = read_dev(&s, &name, 1 << 20);
    assert!(got[65536..131072].iter().all(|&b| b == 0));
    assert!(got[131072..] == more[131072..]);
}

#[test]
fn open_persistent_stores_the_flag_after_activation() {
    let s = Scratch::new();
    let img = s.image("o.img", 32);
    let kf = s.key("pass", b"open-persistent");
    format(CS, &img, &kf, FAST);
    let name = format!("wcopenp{}", std::process::id());
    WC.ok(&[
        "open",
        &img,
        &name,
        "--allow-discards",
        "--persistent",
        "--key-file",
        &kf,
    ]);
    let guard = Close(name.clone());
    assert_eq!(cs_flags(&img), "allow-discards");
    assert_eq!(status_json(&name)["discards"], true);
    WC.ok(&["close", &name]);
    drop(guard);
    // A failed activation stores nothing: the name is taken.
    let other = s.image("o2.img", 32);
    format(CS, &other, &kf, FAST);
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    let _guard = Close(name.clone());
    let o = WC.run(&[
        "open",
        &other,
        &name,
        "--allow-discards",
        "--persistent",
        "--key-file",
        &kf,
    ]);
    assert_eq!(o.code, 5, "{o}");
    assert_eq!(cs_flags(&other), "(no flags)");
}

#[test]
fn refresh_of_plain_and_luks2_only_persistent() {
    let s = Scratch::new();
    let img = s.image("p.img", 8);
    let name = format!("wcrefreshp{}", std::process::id());
    let o = WC.run_stdin(&["open", "--type", "plain", &img, &name], Some(b"pp\n"));
    assert_eq!(o.code, 0, "{o}");
    let _guard = Close(name.clone());
    // Plain: no header to store flags in.
    let o = WC.run(&["refresh", &name, "--allow-discards", "--persistent"]);
    assert_eq!(o.code, 1, "{o}");
    assert_eq!(status_json(&name)["discards"], false);
    WC.ok(&["refresh", &name, "--allow-discards"]);
    assert_eq!(status_json(&name)["discards"], true);
    assert!(blkdiscard(&name, 0, 65536));
    assert!(read_dev(&s, &name, 65536).iter().all(|&b| b == 0));
}

/// `refresh --persistent` killed before each of its header writes (and
/// with each write torn): the header always holds the old or the new
/// flags (cryptsetup luksDump agrees, cryptsetup unlocks it), the device
/// stays open with its data, and the flag never goes back once new.
#[test]
fn refresh_persistent_is_crash_safe() {
    let s = Scratch::new();
    let img = s.image("c.img", 32);
    let kf = s.key("pass", b"refresh-crash");
    format(CS, &img, &kf, FAST);
    let name = format!("wcrefreshc{}", std::process::id());
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    let _guard = Close(name.clone());
    let data = pattern(1 << 20, 11);
    write_dev(&s, &name, &data);
    let args = [
        "refresh",
        name.as_str(),
        "--allow-discards",
        "--persistent",
        "--key-file",
        kf.as_str(),
    ];
    let reset = || {
        WC.ok(&["refresh", &name, "--persistent", "--key-file", &kf]);
        assert_eq!(cs_flags(&img), "(no flags)");
    };
    let count = s.p("writes");
    let mut c = WC.cmd(&args);
    c.env("WRAPCRYPT_FAULT_COUNT", &count);
    let o = run_cmd(&mut c, None, WC);
    assert_eq!(o.code, 0, "clean run: {o}");
    let n = std::fs::read_to_string(&count).unwrap().lines().count();
    assert!(n >= 2, "only {n} header writes");
    for torn in [false, true] {
        let mut seen = vec![];
        for k in 1..=n {
            reset();
            let mut c = WC.cmd(&args);
            c.env("WRAPCRYPT_FAULT_AT", k.to_string());
            if torn {
                c.env("WRAPCRYPT_FAULT_TORN", "1");
            }
            let o = run_cmd(&mut c, None, WC);
            let what = format!("killed at write {k}/{n} (torn: {torn})");
            assert_eq!(o.signal, Some(libc::SIGKILL), "{what}: {o}");
            let flags = cs_flags(&img);
            assert!(
                flags == "(no flags)" || flags == "allow-discards",
                "{what}: {flags}"
            );
            assert_eq!(test_pass(CS, &img, &kf, &[]), 0, "{what}");
            assert!(read_dev(&s, &name, 1 << 20) == data, "{what}: data");
            seen.push(flags == "allow-discards");
        }
        assert!(!seen[0], "killed before the first write: old flags");
        if let Some(i) = seen.iter().position(|&x| x) {
            assert!(seen[i..].iter().all(|&x| x), "went back: {seen:?}");
        }
    }
}

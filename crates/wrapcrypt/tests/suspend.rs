//! luksSuspend / luksResume on real FUSE + loop activations (docs/suspend.md):
//! I/O blocks while suspended, the server's memory loses the key, a wrong
//! passphrase leaves the device suspended, the right one lets the blocked
//! read complete with the right data, close of a suspended device does not
//! hang, and a waes volume (private custodian) survives the round trip.
//! Needs root, FUSE and loop devices.

mod common;
mod support_mem;
mod wrapped_common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use wrapped_common::{format_waes, Custodian};

struct Close(String);
impl Drop for Close {
    fn drop(&mut self) {
        let _ = WC.cmd(&["close", &self.0]).stderr(Stdio::null()).status();
    }
}

fn state(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(format!("/run/wrapcrypt/{name}/state.json")).unwrap())
        .unwrap()
}

fn status_json(name: &str) -> serde_json::Value {
    let o = WC.run(&["status", "--json", name]);
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|_| panic!("status --json: {o}"))
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// 1 MiB of pattern written to the device (direct I/O, synced).
fn write_data(s: &Scratch, name: &str, seed: u8) -> Vec<u8> {
    let data: Vec<u8> = (0..1usize << 20)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add((i >> 9) as u8))
        .collect();
    let f = s.key(&format!("data{seed}"), &data);
    let st = Command::new("dd")
        .args([
            &format!("if={f}"),
            &format!("of=/dev/mapper/{name}"),
            "bs=1M",
            "count=1",
            "oflag=direct",
            "conv=fsync",
            "status=none",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "dd write");
    data
}

/// A direct 1 MiB read of the device into `out`, in the background.
fn start_read(name: &str, out: &str) -> Child {
    Command::new("dd")
        .args([
            &format!("if=/dev/mapper/{name}"),
            &format!("of={out}"),
            "bs=1M",
            "count=1",
            "iflag=direct",
            "status=none",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(c: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn key_hits(pid: u32, key: &[u8]) -> usize {
    let needles = support_mem::xts512_needles(key);
    support_mem::find(&support_mem::process_memory(pid), &needles).len()
}

#[test]
fn suspend_blocks_io_drops_the_key_and_resume_completes_it() {
    let s = Scratch::new();
    let img = s.image("v.img", 32);
    let kf = s.key("pass", b"suspend-pass");
    let bad = s.key("bad", b"wrong-pass");
    let mut args = vec!["luksFormat", "-q", img.as_str(), kf.as_str()];
    args.extend(FAST);
    WC.ok(&args);
    let key = hex::decode(volume_key(CS, &img, &kf, &[])).unwrap();
    let name = format!("wcsusp{}", std::process::id());
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    let _guard = Close(name.clone());
    let data = write_data(&s, &name, 7);
    let pid = state(&name)["pid"].as_u64().unwrap() as u32;
    let before = key_hits(pid, &key);
    assert!(
        before > 0,
        "control: the key is not found in the live server"
    );

    // Not active: cryptsetup's exit 4.
    let o = WC.run(&["luksSuspend", "wcsusp-none"]);
    assert_eq!(o.code, 4, "{o}");
    assert!(o.stderr.contains("wcsusp-none is not active"), "{o}");

    WC.ok(&["luksSuspend", &name]);
    assert_eq!(status_json(&name)["suspended"], true);
    let o = WC.ok(&["status", &name]);
    assert!(o.stdout.contains("is active (suspended)"), "{o}");
    let o = WC.run(&["luksSuspend", &name]);
    assert_ne!(o.code, 0, "second suspend: {o}");

    let out = s.p("read");
    let mut dd = start_read(&name, &out);
    assert!(
        wait_for(&mut dd, Duration::from_secs(1)).is_none(),
        "a read completed on a suspended device"
    );
    let after = key_hits(pid, &key);
    println!("key needles in server memory: {before} before suspend, {after} while suspended");
    assert_eq!(after, 0, "key material left in the suspended server");

    let o = WC.run(&["luksResume", &name, "--key-file", &bad]);
    assert_eq!(o.code, 2, "wrong passphrase: {o}");
    assert_eq!(status_json(&name)["suspended"], true);
    assert!(
        dd.try_wait().unwrap().is_none(),
        "read ended after a failed resume"
    );

    let t0 = Instant::now();
    WC.ok(&["luksResume", &name, "--key-file", &kf]);
    let st = wait_for(&mut dd, Duration::from_secs(10)).expect("read still blocked after resume");
    assert!(st.success(), "dd after resume failed");
    println!("blocked read completed {:?} after resume", t0.elapsed());
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&data));
    assert_eq!(status_json(&name)["suspended"], false);
    let o = WC.run(&["luksResume", &name, "--key-file", &kf]);
    assert_ne!(o.code, 0, "resume of a running device: {o}");
    assert!(o.stderr.contains("is not suspended"), "{o}");
    // Writes work again and the data survives close/open.
    let data2 = write_data(&s, &name, 11);
    WC.ok(&["close", &name]);
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    let out2 = s.p("read2");
    let mut dd = start_read(&name, &out2);
    assert!(wait_for(&mut dd, Duration::from_secs(10))
        .unwrap()
        .success());
    assert_eq!(sha256(&std::fs::read(&out2).unwrap()), sha256(&data2));
}

#[test]
fn close_of_a_suspended_device_with_a_blocked_read_ends() {
    let s = Scratch::new();
    let img = s.image("v.img", 32);
    let kf = s.key("pass", b"suspend-close");
    let mut args = vec!["luksFormat", "-q", img.as_str(), kf.as_str()];
    args.extend(FAST);
    WC.ok(&args);
    let name = format!("wcsuspc{}", std::process::id());
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    let _guard = Close(name.clone());
    write_data(&s, &name, 3);
    let pid = state(&name)["pid"].as_u64().unwrap() as i32;
    WC.ok(&["luksSuspend", &name]);
    let mut dd = start_read(&name, &s.p("read"));
    assert!(wait_for(&mut dd, Duration::from_secs(1)).is_none());
    let t0 = Instant::now();
    WC.ok(&["close", &name]);
    let took = t0.elapsed();
    println!("close of a suspended device took {took:?}");
    assert!(took < Duration::from_secs(8), "close took {took:?}");
    let st = wait_for(&mut dd, Duration::from_secs(5)).expect("blocked read never ended");
    assert!(
        !st.success(),
        "a read of a suspended, closed device succeeded"
    );
    assert!(!std::path::Path::new(&format!("/dev/mapper/{name}")).exists());
    assert!(!std::path::Path::new(&format!("/run/wrapcrypt/{name}")).exists());
    // Gone, or a zombie not yet reaped by whoever adopted it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let running = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'));
    assert!(!running, "server still running: {stat}");
    assert_eq!(WC.run(&["status", &name]).code, 4);
}

#[test]
fn waes_volume_suspends_and_resumes_with_its_data() {
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let img = s.image("w.img", 32);
    let kf = s.key("pass", b"waes-suspend");
    format_waes(&c, &img, &kf);
    let name = format!("wcsuspw{}", std::process::id());
    c.ok(&["open", &img, &name, "--key-file", &kf]);
    let _guard = Close(name.clone());
    let data = write_data(&s, &name, 5);
    c.ok(&["luksSuspend", &name]);
    assert_eq!(status_json(&name)["suspended"], true);
    let out = s.p("read");
    let mut dd = start_read(&name, &out);
    assert!(wait_for(&mut dd, Duration::from_secs(1)).is_none());
    c.ok(&["luksResume", &name, "--key-file", &kf]);
    let st = wait_for(&mut dd, Duration::from_secs(10)).expect("read blocked after resume");
    assert!(st.success());
    assert_eq!(sha256(&std::fs::read(&out).unwrap()), sha256(&data));
    c.ok(&["close", &name]);
}

/// The FUSE connection id of `name`'s mount (its anonymous device minor).
fn fuse_connection(name: &str) -> String {
    let mp = format!("/run/wrapcrypt/{name}/fuse");
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mi
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(mp.as_str()))
        .unwrap_or_else(|| panic!("{mp} not mounted"));
    let dev = line.split(' ').nth(2).unwrap();
    dev.split_once(':').unwrap().1.to_string()
}

#[test]
fn a_session_that_ends_while_suspended_releases_the_held_requests() {
    let s = Scratch::new();
    let img = s.image("v.img", 32);
    let kf = s.key("pass", b"suspend-abort");
    let mut args = vec!["luksFormat", "-q", img.as_str(), kf.as_str()];
    args.extend(FAST);
    WC.ok(&args);
    let name = format!("wcsuspa{}", std::process::id());
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    let _guard = Close(name.clone());
    write_data(&s, &name, 9);
    let pid = state(&name)["pid"].as_u64().unwrap() as u32;
    WC.ok(&["luksSuspend", &name]);
    let mut dd = start_read(&name, &s.p("read"));
    assert!(wait_for(&mut dd, Duration::from_secs(1)).is_none());
    // The kernel ends the session (as on a forced unmount): no close, no
    // abort request; the server must notice and let its held workers go.
    let conn = fuse_connection(&name);
    if !std::path::Path::new("/sys/fs/fuse/connections/")
        .join(&conn)
        .exists()
    {
        // fusectl, as systemd mounts it at boot (left mounted: shared, harmless).
        let st = Command::new("mount")
            .args(["-t", "fusectl", "fusectl", "/sys/fs/fuse/connections"])
            .status()
            .unwrap();
        assert!(st.success(), "mount fusectl");
    }
    std::fs::write(format!("/sys/fs/fuse/connections/{conn}/abort"), "1").unwrap();
    let st = wait_for(&mut dd, Duration::from_secs(5)).expect("read still blocked");
    assert!(!st.success());
    let t0 = Instant::now();
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
            .unwrap_or(false)
    };
    while alive() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !alive(),
        "server still running {:?} after the session ended",
        t0.elapsed()
    );
    println!("server ended {:?} after the connection abort", t0.elapsed());
    // Whatever is left is cleaned up by status/close.
    assert_eq!(WC.run(&["status", &name]).code, 4);
    assert!(!std::path::Path::new(&format!("/dev/mapper/{name}")).exists());
    assert!(!std::path::Path::new(&format!("/run/wrapcrypt/{name}")).exists());
}

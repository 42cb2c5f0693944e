//! Online reencryption (issue 11 item 4): the volume stays open through
//! wrapcrypt's FUSE server with an ext4 file system mounted and I/O
//! running; `reencrypt --active-name` runs inside the server. After it:
//! fsck is clean and every file's hash is unchanged, also after a reopen.
//! Pause and resume: SIGINT, and `close` mid-way, then a reopen (the split
//! view) and `--resume-only --active-name` go on.

mod common;
mod reencrypt_common;
mod wrapped_common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use reencrypt_common::*;

fn online_args<'a>(name: &'a str, kf: &'a str, img: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["reencrypt", "-q", "--active-name", name, "-d", kf];
    a.extend_from_slice(extra);
    a.extend_from_slice(FAST);
    a.push(img);
    a
}

#[test]
fn online_under_a_mounted_filesystem_with_io_running() {
    let s = Scratch::new();
    let kf = s.key("pw", b"online reencryption");
    let img = s.image("o.img", 16 + 160);
    format(CS, &img, &kf, FAST);
    let old_key = volume_key(CS, &img, &kf, &[]);
    let name = format!("wcon{}", std::process::id());
    let mnt = s.p("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let _a = Active {
        name: name.clone(),
        mnt: mnt.clone(),
    };
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    sh_ok(&format!(
        "mkfs.ext4 -q -F /dev/mapper/{name} && mount /dev/mapper/{name} {mnt}"
    ));
    // Files written before, and a writer and a reader running during the
    // reencryption; every file's hash is recorded as it is written.
    sh_ok(&format!(
        "cd {mnt} && for i in $(seq 1 24); do head -c 2M /dev/urandom > f$i; done && sync && sha256sum f* > {sums}",
        sums = s.p("sums")
    ));
    let bg = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {mnt} && for i in $(seq 1 40); do head -c 1M /dev/urandom > g$i && sync && sha256sum g$i >> {live}; cat f* > /dev/null; done",
            live = s.p("live")
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = || {
        std::fs::read_to_string(s.path("live"))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    while lines() == 0 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let during = lines();
    let o = WC.run(&online_args(&name, &kf, &img, &["--hotzone-size", "2M"]));
    assert_eq!(o.code, 0, "online reencrypt: {o}");
    let during = lines() - during;
    assert!(during > 0, "no file was written while the reencryption ran");
    let st = WC.ok(&["status", &name]);
    assert!(st.stdout.contains("reencryption: finished"), "{st}");
    let bg = bg.wait_with_output().unwrap();
    assert!(bg.status.success(), "background I/O failed");
    let check = format!(
        "cd {mnt} && sha256sum -c --quiet {} {}",
        s.p("sums"),
        s.p("live")
    );
    sh_ok(&check);
    sh_ok(&format!("umount {mnt} && fsck.ext4 -fn /dev/mapper/{name}"));
    WC.ok(&["close", &name]);

    // The header is a plain LUKS2 header under a new key; both tools open
    // it, and the files are intact after a reopen.
    let j = json(&img);
    assert_eq!(j["segments"].as_object().unwrap().len(), 1, "{j}");
    assert!(j["config"].get("requirements").is_none(), "{j}");
    assert_ne!(volume_key(CS, &img, &kf, &[]), old_key, "key changed");
    assert_eq!(test_pass(CS, &img, &kf, &[]), 0);
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    sh_ok(&format!("mount /dev/mapper/{name} {mnt}"));
    sh_ok(&check);
    let n = sh_ok(&format!("cat {} {} | wc -l", s.p("sums"), s.p("live")));
    println!(
        "online reencryption under ext4 with I/O running: {during} files written during it, {} files checked",
        n.trim()
    );
}

#[test]
fn online_paused_by_sigint_and_by_close_then_resumed() {
    let s = Scratch::new();
    let (img, kf, h) = seeded(&s, "p.img", 16 + 48, "4096");
    let name = format!("wcop{}", std::process::id());
    let _a = Active {
        name: name.clone(),
        mnt: s.p("unused"),
    };
    let dev = format!("/dev/mapper/{name}");
    WC.ok(&["open", &img, &name, "--key-file", &kf]);

    // SIGINT: stops after the hotzone in flight; status says paused.
    interrupt_cmd(
        WC.cmd(&online_args(&name, &kf, &img, &["--hotzone-size", "1M"])),
        &img,
        6,
    );
    let st = WC.ok(&["status", &name]);
    assert!(st.stdout.contains("reencryption: paused at"), "{st}");
    let first = json(&img)["segments"]["0"]["size"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(first > 0 && first < 48 << 20, "{first}");
    assert_eq!(sha256_file(&dev), h, "data while paused");

    // Resumed, then stopped by close while it runs.
    let resume = online_args(&name, &kf, &img, &["--resume-only", "--hotzone-size", "1M"]);
    let start = seqid(&img);
    let child = WC
        .cmd(&resume)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while seqid(&img) < start + 4 {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    WC.ok(&["close", &name]);
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success(), "the run went on after close");
    let j = json(&img);
    assert!(
        j["config"].get("requirements").is_some(),
        "finished already: {j}"
    );
    let second = j["segments"]["0"]["size"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(
        second > first,
        "no progress after resume: {first} -> {second}"
    );

    // Reopened in the middle (the split view), resumed online to the end.
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    assert_eq!(sha256_file(&dev), h, "data after close mid-way");
    let o = WC.run(&resume);
    assert_eq!(o.code, 0, "resume: {o}");
    assert_eq!(sha256_file(&dev), h, "data after the end");
    WC.ok(&["close", &name]);
    assert!(json(&img)["config"].get("requirements").is_none());
    assert_eq!(
        data_hash(&img, &kf, "4096"),
        h,
        "cryptsetup's key decrypts it"
    );
    assert!(!Path::new(&dev).exists());
    println!("paused at {first} bytes (SIGINT), at {second} bytes (close), then finished");
}

#[test]
fn offline_reencrypt_of_an_open_device_is_refused() {
    let s = Scratch::new();
    let (img, kf, _) = seeded(&s, "b.img", 24, "4096");
    let name = format!("wcob{}", std::process::id());
    let _a = Active {
        name: name.clone(),
        mnt: s.p("unused"),
    };
    WC.ok(&["open", &img, &name, "--key-file", &kf]);
    let before = sha256_file(&img);
    let mut a = vec!["reencrypt", "-q", "-d", &kf];
    a.extend_from_slice(FAST);
    a.push(&img);
    let o = WC.run(&a);
    assert_eq!(o.code, 5, "{o}");
    assert_eq!(o.stderr.trim().lines().count(), 1, "{o}");
    assert!(o.stderr.contains(&format!("--active-name {name}")), "{o}");
    assert_eq!(sha256_file(&img), before, "nothing changed");
    // A sector size change cannot happen online.
    let o = WC.run(&online_args(&name, &kf, &img, &["--sector-size", "512"]));
    assert_eq!(o.code, 1, "{o}");
    assert!(o.stderr.contains("sector size"), "{o}");
    assert_eq!(sha256_file(&img), before, "nothing changed");
}

#[test]
fn online_onto_a_custodian_key_keeps_the_data() {
    let s = Scratch::new();
    let c = wrapped_common::Custodian::new(&s);
    let (img, kf, h) = seeded(&s, "w.img", 16 + 32, "4096");
    let name = format!("wcow{}", std::process::id());
    let _a = Active {
        name: name.clone(),
        mnt: s.p("unused"),
    };
    let dev = format!("/dev/mapper/{name}");
    c.ok(&["open", &img, &name, "--key-file", &kf]);
    let o = c.wc(
        &online_args(
            &name,
            &kf,
            &img,
            &["--cipher", "waes-xts-plain64", "--hotzone-size", "2M"],
        ),
        None,
    );
    assert_eq!(o.code, 0, "online onto waes: {o}");
    assert_eq!(sha256_file(&dev), h, "data served after the switch");
    c.ok(&["close", &name]);
    let (code, v) = c.validate(&img, &kf);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["verification-pattern-matches"], true, "{v}");
    c.ok(&["open", &img, &name, "--key-file", &kf]);
    assert_eq!(
        sha256_file(&dev),
        h,
        "data through the custodian after a reopen"
    );
}

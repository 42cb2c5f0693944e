//! Online encryption (issue 11 items 1 and 4): `reencrypt --encrypt
//! --header H DEVICE NAME` initializes, activates the plaintext device as
//! NAME in mid-encryption and encrypts it through NAME's FUSE server while
//! an ext4 file system on it is mounted and written. After it: fsck clean,
//! every file's hash unchanged, the device holds AES-XTS ciphertext of the
//! file system under the key cryptsetup reads from the header (decrypted
//! independently with Python `cryptography`). Also the `--init-only NAME`
//! + `--resume-only --active-name NAME` split and bad input.

mod common;
mod reencrypt_common;

use std::process::{Command, Stdio};

use common::*;
use reencrypt_common::*;

/// A plaintext image of `mib` MiB holding ext4 with `files` files of 1 MiB;
/// returns (image, SHA-256 list file of the files).
fn plain_fs(s: &Scratch, name: &str, mib: u64, files: u32) -> (String, String) {
    let img = s.image(name, mib);
    let mnt = s.p(&format!("{name}.mnt"));
    std::fs::create_dir_all(&mnt).unwrap();
    let sums = s.p(&format!("{name}.sums"));
    sh_ok(&format!(
        "mkfs.ext4 -q -F {img} && mount -o loop {img} {mnt} && cd {mnt} && \
         for i in $(seq 1 {files}); do head -c 1M /dev/urandom > f$i; done && \
         sha256sum f* > {sums} && cd / && umount {mnt}"
    ));
    (img, sums)
}

/// The volume key of the finished header, and the data's sector size.
fn key_and_sector(img: &str, hdr: &str, kf: &str) -> (String, String) {
    let key = volume_key(CS, img, kf, &["--header", hdr]);
    let j = json(hdr);
    let seg = &j["segments"]["0"];
    assert_eq!(seg["type"], "crypt", "{j}");
    assert_eq!(seg["offset"], "0", "{j}");
    (key, seg["sector_size"].to_string())
}

#[test]
fn encrypt_and_activate_then_online_with_a_mounted_filesystem() {
    let s = Scratch::new();
    let kf = s.key("pw", b"online encryption");
    let (img, sums) = plain_fs(&s, "p.img", 96, 40);
    let hdr = s.image("p.hdr", 16);
    let name = format!("wcoe{}", std::process::id());
    let mnt = s.p("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let _a = Active {
        name: name.clone(),
        mnt: mnt.clone(),
    };

    // Initialize and activate only: the volume is open in mid-encryption.
    let mut args = vec![
        "reencrypt",
        "-q",
        "--encrypt",
        "--init-only",
        "--header",
        &hdr,
        "-d",
        &kf,
    ];
    args.extend_from_slice(FAST);
    args.extend_from_slice(&[&img, &name]);
    WC.ok(&args);
    let st = WC.ok(&["status", &name]).stdout;
    assert!(st.contains("reencryption: in progress (encrypt)"), "{st}");
    sh_ok(&format!("mount /dev/mapper/{name} {mnt}"));
    sh_ok(&format!("cd {mnt} && sha256sum -c --quiet {sums}"));

    // Files written while the encryption runs through the server.
    let live = s.p("live");
    let bg = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {mnt} && for i in $(seq 1 30); do head -c 512K /dev/urandom > g$i && sync && sha256sum g$i >> {live}; cat f* > /dev/null; done"
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let lines = || {
        std::fs::read_to_string(&live)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    while lines() == 0 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = lines();
    let o = WC.run(&[
        "reencrypt",
        "-q",
        "--resume-only",
        "--active-name",
        &name,
        "--header",
        &hdr,
        "-d",
        &kf,
        "--hotzone-size",
        "2M",
        &img,
    ]);
    assert_eq!(o.code, 0, "online encryption: {o}");
    let during = lines() - before;
    assert!(bg.wait_with_output().unwrap().status.success());
    let st = WC.ok(&["status", &name]).stdout;
    assert!(st.contains("reencryption: finished"), "{st}");
    sh_ok(&format!("cd {mnt} && sha256sum -c --quiet {sums} {live}"));
    sh_ok(&format!("umount {mnt} && fsck.ext4 -fn /dev/mapper/{name}"));
    let logical = sh_ok(&format!("sha256sum < /dev/mapper/{name}"))[..64].to_string();
    WC.ok(&["close", &name]);

    // The image is ciphertext now: an independent AES-XTS decryption under
    // the key cryptsetup reads from the header gives the file system the
    // activation served.
    assert_ne!(sha256_file(&img), logical);
    let (key, sector) = key_and_sector(&img, &hdr, &kf);
    assert_eq!(xts(&["dec", &img, "0", &sector], &key), logical);
    assert_eq!(test_pass(CS, &img, &kf, &["--header", &hdr]), 0);
    println!("online encryption under ext4: {during} files written during it");
}

#[test]
fn encrypt_with_new_name_runs_to_the_end_and_bad_input_changes_nothing() {
    let s = Scratch::new();
    let kf = s.key("pw", b"online encryption 2");
    let (img, sums) = plain_fs(&s, "q.img", 48, 12);
    let hdr = s.image("q.hdr", 16);
    let name = format!("wcof{}", std::process::id());
    let mnt = s.p("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let _a = Active {
        name: name.clone(),
        mnt: mnt.clone(),
    };
    let plain = sha256_file(&img);
    let zero_hdr = sha256_file(&hdr);
    let unchanged = |what: &str| {
        assert_eq!(sha256_file(&img), plain, "{what}: device changed");
        assert_eq!(sha256_file(&hdr), zero_hdr, "{what}: header changed");
    };

    // NEW_NAME needs --encrypt.
    let o = WC.run(&["reencrypt", "-q", "-d", &kf, &img, &name]);
    assert_eq!(o.code, 1, "{o}");
    assert_eq!(o.stderr.trim().lines().count(), 1, "{o}");
    unchanged("NEW_NAME without --encrypt");
    // Online encryption with a data shift (no detached header) is refused.
    let o = WC.run(&[
        "reencrypt",
        "-q",
        "--encrypt",
        "--reduce-device-size",
        "32M",
        "-d",
        &kf,
        &img,
        &name,
    ]);
    assert_eq!(o.code, 1, "{o}");
    assert!(o.stderr.contains("--header"), "{o}");
    unchanged("online data shift");
    // The name is taken: exit 5, nothing written.
    let other = s.image("other.img", 20);
    format(WC, &other, &kf, FAST);
    WC.ok(&["open", &other, &name, "--key-file", &kf]);
    let mut args = vec!["reencrypt", "-q", "--encrypt", "--header", &hdr, "-d", &kf];
    args.extend_from_slice(FAST);
    args.extend_from_slice(&[&img, &name]);
    let o = WC.run(&args);
    assert_eq!(o.code, 5, "{o}");
    assert!(o.stderr.contains("already exists"), "{o}");
    unchanged("name in use");
    WC.ok(&["close", &name]);

    // One command: initialize, activate, encrypt online to the end.
    let o = WC.run(&args);
    assert_eq!(o.code, 0, "{o}");
    let st = WC.ok(&["status", &name]).stdout;
    assert!(st.contains("reencryption: finished"), "{st}");
    let served = sh_ok(&format!("sha256sum < /dev/mapper/{name}"))[..64].to_string();
    assert_eq!(served, plain, "the activation serves the former plaintext");
    // (mounting writes the superblock: hash again after it)
    sh_ok(&format!(
        "mount /dev/mapper/{name} {mnt} && cd {mnt} && sha256sum -c --quiet {sums} && cd / && umount {mnt}"
    ));
    let logical = sh_ok(&format!("sha256sum < /dev/mapper/{name}"))[..64].to_string();
    WC.ok(&["close", &name]);
    let (key, sector) = key_and_sector(&img, &hdr, &kf);
    assert_eq!(xts(&["dec", &img, "0", &sector], &key), logical);
    let j = json(&hdr);
    assert!(j["config"].get("requirements").is_none(), "{j}");
}

/// Online decryption (`reencrypt --decrypt --header H --active-name NAME`,
/// backward): paused by SIGINT (the split view, old layout below the
/// boundary, serves the same data), closed and reopened in the middle,
/// resumed online with ext4 mounted and written; at the end the image is
/// the plain file system itself.
#[test]
fn decrypt_online_paused_reopened_and_finished() {
    let s = Scratch::new();
    let kf = s.key("pw", b"online decryption");
    let (img, sums) = plain_fs(&s, "d.img", 64, 20);
    let hdr = s.image("d.hdr", 16);
    let mut args = vec!["reencrypt", "-q", "--encrypt", "--header", &hdr, "-d", &kf];
    args.extend_from_slice(FAST);
    args.push(&img);
    WC.ok(&args);
    let name = format!("wcod{}", std::process::id());
    let dev = format!("/dev/mapper/{name}");
    let mnt = s.p("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let _a = Active {
        name: name.clone(),
        mnt: mnt.clone(),
    };
    let open = ["open", "--header", &hdr, "-d", &kf, &img, &name];
    WC.ok(&open);
    let h0 = sha256_file(&dev);
    assert_ne!(sha256_file(&img), h0, "encrypted before");

    let decrypt = |extra: &[&str]| {
        let mut a = vec![
            "reencrypt",
            "-q",
            "--header",
            &hdr,
            "--active-name",
            &name,
            "-d",
            &kf,
            "--hotzone-size",
            "1M",
        ];
        a.extend_from_slice(extra);
        a.push(&img);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    interrupt_cmd(WC.cmd(&decrypt(&["--decrypt"])), &hdr, 6);
    let st = WC.ok(&["status", &name]).stdout;
    assert!(st.contains("reencryption: paused at"), "{st}");
    assert_eq!(sha256_file(&dev), h0, "data while paused");
    let j = json(&hdr);
    assert!(
        j["config"].get("requirements").is_some(),
        "finished already: {j}"
    );

    // Reopened in the middle: the backward split view.
    WC.ok(&["close", &name]);
    WC.ok(&open);
    let st = WC.ok(&["status", &name]).stdout;
    assert!(st.contains("(decrypt, backward)"), "{st}");
    assert_eq!(sha256_file(&dev), h0, "data after a reopen mid-way");

    // Resumed online under a mounted, written file system.
    sh_ok(&format!("mount {dev} {mnt}"));
    let live = s.p("live");
    let bg = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {mnt} && for i in $(seq 1 20); do head -c 512K /dev/urandom > g$i && sync && sha256sum g$i >> {live}; cat f* > /dev/null; done"
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let o = WC.run(&decrypt(&["--resume-only"]));
    assert_eq!(o.code, 0, "online decryption: {o}");
    assert!(bg.wait_with_output().unwrap().status.success());
    assert!(WC
        .ok(&["status", &name])
        .stdout
        .contains("reencryption: finished"));
    sh_ok(&format!("cd {mnt} && sha256sum -c --quiet {sums} {live}"));
    sh_ok(&format!("umount {mnt} && fsck.ext4 -fn {dev}"));
    let logical = sha256_file(&dev);
    WC.ok(&["close", &name]);

    // The image is the plain file system; the header is a linear layout.
    assert_eq!(sha256_file(&img), logical, "plain on disk");
    let j = json(&hdr);
    assert_eq!(j["segments"]["0"]["type"], "linear", "{j}");
    assert!(j["config"].get("requirements").is_none(), "{j}");
    sh_ok(&format!(
        "mount -o loop,ro {img} {mnt} && cd {mnt} && sha256sum -c --quiet {sums} {live}; r=$?; cd /; umount {mnt}; exit $r"
    ));
}

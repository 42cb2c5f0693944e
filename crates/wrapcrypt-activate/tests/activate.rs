//! Real FUSE, real loop devices, as root: the activation data path.

mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;
use wrapcrypt_activate::{close, is_backing_in_use, list, status, ActivateError};

#[test]
fn server_child() {
    server_child_main();
}

fn dev(info: &wrapcrypt_activate::ActiveInfo) -> String {
    info.mapper_path.to_str().unwrap().to_owned()
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    XorCipher {
        key: seed,
        sector: 512,
        poison: None,
    }
    .apply(0, &mut v[..len / 512 * 512])
    .unwrap();
    v
}

fn sha(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn read_raw(path: &Path, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    File::open(path)
        .unwrap()
        .read_exact_at(&mut v, off)
        .unwrap();
    v
}

/// Writes through the block device with O_DIRECT (dd), then checks the
/// backing bytes are exactly the test cipher's encryption at the right IVs.
fn check_ciphertext(sector: usize, data_offset: u64, iv_tweak: u64) {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 8 << 20);
    let header = random(data_offset as usize, 99);
    File::options()
        .write(true)
        .open(&img)
        .unwrap()
        .write_all_at(&header, 0)
        .unwrap();
    let name = unique(&format!("raw{sector}"));
    let _g = Guard::new(&name);
    let mut p = payload(&name, &img, "xor", sector);
    p.cfg.data_offset = data_offset;
    p.cfg.iv_tweak = iv_tweak;
    let info = open(&p).expect("open");
    assert_eq!(info.data_size, (8 << 20) - data_offset);
    let plain = random(1 << 20, 7);
    let src = dir.path().join("plain");
    fs::write(&src, &plain).unwrap();
    // At byte 64 KiB of the segment.
    must(
        "dd",
        &[
            &format!("if={}", src.display()),
            &format!("of={}", dev(&info)),
            "bs=64k",
            "seek=1",
            "oflag=direct",
            "conv=notrunc",
            "status=none",
        ],
    );
    // Unaligned write through the decrypted file: read-modify-write.
    let odd = random(3000, 8);
    OpenOptions::new()
        .write(true)
        .open(&info.fuse_file)
        .unwrap()
        .write_all_at(&odd, (2 << 20) + 1000)
        .unwrap();
    close(&name).expect("close");

    let cipher = XorCipher {
        key: p.key,
        sector,
        poison: None,
    };
    let mut expect = plain.clone();
    cipher.encrypt_at(&mut expect, (64 << 10) / 512 + iv_tweak);
    assert_eq!(
        read_raw(&img, data_offset + (64 << 10), 1 << 20),
        expect,
        "ciphertext of aligned write"
    );
    let iv = (2 << 20) / 512 + iv_tweak;
    let mut sec = read_raw(&img, data_offset + (2 << 20), 8192);
    cipher.apply(iv, &mut sec).unwrap();
    // Before the write the image held zero ciphertext: its plaintext.
    let mut want = vec![0u8; 8192];
    cipher.apply(iv, &mut want).unwrap();
    want[1000..4000].copy_from_slice(&odd);
    assert_eq!(sec, want, "unaligned write landed and kept its neighbours");
    assert_eq!(
        read_raw(&img, 0, data_offset as usize),
        header,
        "header area untouched"
    );
}

trait EncryptAt {
    fn encrypt_at(&self, data: &mut [u8], iv: u64);
}
impl EncryptAt for XorCipher {
    fn encrypt_at(&self, data: &mut [u8], iv: u64) {
        self.apply(iv, data).unwrap()
    }
}

#[test]
fn raw_ciphertext_is_the_test_cipher_output_512() {
    check_ciphertext(512, 4096, 0);
}

#[test]
fn raw_ciphertext_is_the_test_cipher_output_4096_with_offset_and_tweak() {
    check_ciphertext(4096, 1 << 20, 12345);
}

#[test]
fn ext4_survives_close_and_reopen_and_fsck_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 72 << 20);
    let name = unique("ext4");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    let mut p = payload(&name, &img, "xor", 4096);
    p.cfg.data_offset = 8 << 20;
    let mut g = Guard::new(&name);
    let info = open(&p).expect("open");
    must("mkfs.ext4", &["-q", "-F", &dev(&info)]);
    must("mount", &[&dev(&info), m]);
    g.mounts.push(mnt.clone());
    let big = random(5 << 20, 3);
    fs::write(mnt.join("big.bin"), &big).unwrap();
    fs::create_dir(mnt.join("d")).unwrap();
    for i in 0..50 {
        fs::write(
            mnt.join("d").join(format!("f{i}")),
            format!("file {i}\n").repeat(i + 1),
        )
        .unwrap();
    }
    must("umount", &[m]);
    g.mounts.clear();
    close(&name).expect("close");
    assert!(!info.mapper_path.exists());

    let info = open(&p).expect("reopen");
    must("mount", &[&dev(&info), m]);
    g.mounts.push(mnt.clone());
    assert_eq!(sha(&fs::read(mnt.join("big.bin")).unwrap()), sha(&big));
    assert_eq!(
        fs::read_to_string(mnt.join("d/f9")).unwrap(),
        "file 9\n".repeat(10)
    );
    must("umount", &[m]);
    g.mounts.clear();
    must("fsck.ext4", &["-n", "-f", &dev(&info)]);
    close(&name).expect("close");
    // The plaintext superblock magic must not appear in the backing.
    let raw = read_raw(&img, (8 << 20) + 1024 + 56, 2);
    assert_ne!(raw, [0x53, 0xef], "ext4 magic visible: data not encrypted");
}

#[test]
fn parallel_direct_readers_and_writers() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 64 << 20);
    let name = unique("par");
    let _g = Guard::new(&name);
    let info = open(&payload(&name, &img, "xor", 4096)).expect("open");
    let d = dev(&info);
    let region = 16usize << 20;
    let srcs: Vec<_> = (0..4)
        .map(|i| {
            let f = dir.path().join(format!("src{i}"));
            fs::write(&f, random(region, 100 + i)).unwrap();
            f
        })
        .collect();
    let write = |i: usize, src: &Path, d: &str| {
        must(
            "dd",
            &[
                &format!("if={}", src.display()),
                &format!("of={d}"),
                "bs=1M",
                &format!("seek={}", i * 16),
                "oflag=direct",
                "conv=notrunc",
                "status=none",
            ],
        );
    };
    let read_sha = |i: usize, d: &str| -> String {
        let out = must(
            "sh",
            &[
                "-c",
                &format!(
                    "dd if={d} bs=1M skip={} count=16 iflag=direct status=none | sha256sum",
                    i * 16
                ),
            ],
        );
        out.split_whitespace().next().unwrap().to_owned()
    };
    std::thread::scope(|s| {
        for (i, src) in srcs.iter().enumerate() {
            let d = &d;
            s.spawn(move || write(i, src, d));
        }
    });
    let new: Vec<_> = (2..4)
        .map(|i| {
            let f = dir.path().join(format!("new{i}"));
            fs::write(&f, random(region, 200 + i as u64)).unwrap();
            f
        })
        .collect();
    // Readers of regions 0 and 1 run while regions 2 and 3 are rewritten.
    let sums: Vec<String> = std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .flat_map(|i| (0..2).map(move |_| i))
            .map(|i| {
                let d = &d;
                s.spawn(move || read_sha(i, d))
            })
            .collect();
        for (k, f) in new.iter().enumerate() {
            let d = &d;
            s.spawn(move || write(k + 2, f, d));
        }
        readers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let want0 = sha(&fs::read(&srcs[0]).unwrap());
    let want1 = sha(&fs::read(&srcs[1]).unwrap());
    assert_eq!(sums, vec![want0.clone(), want0, want1.clone(), want1]);
    for (k, f) in new.iter().enumerate() {
        assert_eq!(read_sha(k + 2, &d), sha(&fs::read(f).unwrap()));
    }
}

#[test]
fn read_only_open_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 16 << 20);
    let name = unique("ro");
    let _g = Guard::new(&name);
    let mut p = payload(&name, &img, "xor", 512);
    let info = open(&p).expect("open");
    must(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", dev(&info)),
            "bs=1M",
            "count=2",
            "oflag=direct",
            "status=none",
        ],
    );
    let before = must(
        "sh",
        &[
            "-c",
            &format!(
                "dd if={} bs=1M count=2 iflag=direct status=none | sha256sum",
                dev(&info)
            ),
        ],
    );
    close(&name).unwrap();
    let raw_before = read_raw(&img, 0, 16 << 20);

    p.cfg.read_only = true;
    let info = open(&p).expect("open read-only");
    assert!(info.read_only);
    let (rc, out) = sh(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", dev(&info)),
            "bs=4k",
            "count=1",
            "oflag=direct",
            "conv=notrunc",
        ],
    );
    assert_ne!(rc, 0, "write to read-only block device succeeded: {out}");
    let e = OpenOptions::new()
        .write(true)
        .open(&info.fuse_file)
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    let after = must(
        "sh",
        &[
            "-c",
            &format!(
                "dd if={} bs=1M count=2 iflag=direct status=none | sha256sum",
                dev(&info)
            ),
        ],
    );
    assert_eq!(before, after);
    close(&name).unwrap();
    assert_eq!(read_raw(&img, 0, 16 << 20), raw_before);
}

#[test]
fn second_open_of_same_backing_or_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 16 << 20);
    let img2 = dir.path().join("other.img");
    File::create(&img2).unwrap().set_len(16 << 20).unwrap();
    let name = unique("dupa");
    let name2 = unique("dupb");
    let _g = Guard::new(&name);
    let _g2 = Guard::new(&name2);
    open(&payload(&name, &img, "xor", 512)).expect("open");
    assert_eq!(is_backing_in_use(&img), Some(name.clone()));
    assert_eq!(is_backing_in_use(&img2), None);
    assert!(list().contains(&name));

    let e = open(&payload(&name2, &img, "xor", 512)).unwrap_err();
    assert_eq!(e.exit_code(), 5, "{e}");
    assert!(e.to_string().contains("in use"), "{e}");
    let e = open(&payload(&name, &img2, "xor", 512)).unwrap_err();
    assert_eq!(e.exit_code(), 5, "{e}");
    assert!(e.to_string().contains("already exists"), "{e}");
    // The refused attempts left nothing behind.
    assert!(!Path::new("/run/wrapcrypt").join(&name2).exists());
    assert!(!Path::new("/dev/mapper").join(&name2).exists());
    assert!(status(&name).is_ok());
}

#[test]
fn close_of_mounted_device_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 32 << 20);
    let name = unique("busy");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let mut g = Guard::new(&name);
    let info = open(&payload(&name, &img, "xor", 4096)).expect("open");
    must("mkfs.ext4", &["-q", "-F", &dev(&info)]);
    must("mount", &[&dev(&info), mnt.to_str().unwrap()]);
    g.mounts.push(mnt.clone());
    let e = close(&name).unwrap_err();
    assert!(matches!(e, ActivateError::Busy(_)), "{e}");
    assert_eq!(e.exit_code(), 5);
    let st = status(&name).expect("still active");
    assert!(st.in_use);
    fs::write(mnt.join("still-works"), b"yes").unwrap();
    must("umount", &[mnt.to_str().unwrap()]);
    g.mounts.clear();
    assert!(!status(&name).unwrap().in_use);
    close(&name).expect("close after umount");
}

#[test]
fn killed_server_is_detected_and_volume_reopens_clean() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 96 << 20);
    let name = unique("kill");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    let mut g = Guard::new(&name);
    let p = payload(&name, &img, "xor", 4096);
    let info = open(&p).expect("open");
    must("mkfs.ext4", &["-q", "-F", &dev(&info)]);
    must("mount", &[&dev(&info), m]);
    g.mounts.push(mnt.clone());
    fs::write(mnt.join("before"), b"durable").unwrap();
    must("sync", &[]);
    let mut writer = std::process::Command::new("dd")
        .args([
            "if=/dev/urandom",
            &format!("of={m}/during"),
            "bs=1M",
            "count=60",
            "oflag=direct",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    unsafe { libc::kill(info.pid as i32, libc::SIGKILL) };
    let _ = writer.wait();
    must("umount", &[m]);
    g.mounts.clear();
    assert!(matches!(status(&name), Err(ActivateError::ServerDied(_))));
    assert!(!list().contains(&name));
    assert!(!info.mapper_path.exists());
    let loopdev = info
        .loop_device
        .as_ref()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let backing =
        fs::read_to_string(format!("/sys/block/{loopdev}/loop/backing_file")).unwrap_or_default();
    assert!(!backing.contains(&name), "loop device still attached");
    assert!(matches!(status(&name), Err(ActivateError::NotActive(_))));

    let info = open(&p).expect("reopen");
    must("mount", &[&dev(&info), m]); // replays the journal
    g.mounts.push(mnt.clone());
    assert_eq!(fs::read(mnt.join("before")).unwrap(), b"durable");
    must("umount", &[m]);
    g.mounts.clear();
    must("fsck.ext4", &["-n", "-f", &dev(&info)]);
    close(&name).unwrap();
}

#[test]
fn cipher_failure_gives_eio_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 8 << 20);
    let name = unique("eio");
    let _g = Guard::new(&name);
    let mut p = payload(&name, &img, "xor", 4096);
    // IV sectors of bytes [1 MiB, 1 MiB + 64 KiB) fail.
    p.poison = Some((2048, 2048 + 128));
    let info = open(&p).expect("open");
    let d = dev(&info);
    let (rc, _) = sh(
        "dd",
        &[
            &format!("if={d}"),
            "of=/dev/null",
            "bs=64k",
            "skip=16",
            "count=1",
            "iflag=direct",
        ],
    );
    assert_ne!(rc, 0, "read of poisoned sectors succeeded");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&info.fuse_file)
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let e = f.read_at(&mut buf, 1 << 20).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let (rc, _) = sh(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={d}"),
            "bs=1M",
            "seek=1",
            "count=1",
            "oflag=direct",
            "conv=notrunc",
        ],
    );
    assert_ne!(rc, 0, "write over poisoned sectors succeeded");
    // Healthy sectors still work.
    must(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={d}"),
            "bs=1M",
            "seek=3",
            "count=1",
            "oflag=direct",
            "conv=notrunc",
            "status=none",
        ],
    );
    close(&name).unwrap();
    // Requests touching a failing sector write nothing (other requests of
    // the same dd may have landed, as on a disk with bad sectors).
    assert!(
        read_raw(&img, 1 << 20, 64 << 10).iter().all(|&b| b == 0),
        "failed write changed the backing"
    );
    assert!(read_raw(&img, 3 << 20, 1 << 20).iter().any(|&b| b != 0));
}

#[test]
fn discard_zeroes_only_with_allow_discards() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 8 << 20);
    for allow in [false, true] {
        let name = unique(&format!("disc{allow}"));
        let _g = Guard::new(&name);
        let mut p = payload(&name, &img, "xor", 4096);
        p.cfg.allow_discards = allow;
        let info = open(&p).expect("open");
        let d = dev(&info);
        must(
            "dd",
            &[
                "if=/dev/urandom",
                &format!("of={d}"),
                "bs=1M",
                "count=8",
                "oflag=direct",
                "status=none",
            ],
        );
        let range_sum = || {
            must(
                "sh",
                &[
                    "-c",
                    &format!("dd if={d} bs=1M skip=1 count=2 iflag=direct status=none | sha256sum"),
                ],
            )
        };
        let before = range_sum();
        let raw_before = read_raw(&img, 1 << 20, 2 << 20);
        // Discard is advisory: the kernel reports success even when refused.
        let (rc, out) = sh("blkdiscard", &["-o", "1048576", "-l", "2097152", &d]);
        let zero_sum = must("sh", &["-c", "head -c 2097152 /dev/zero | sha256sum"]);
        let got = range_sum();
        if allow {
            assert_eq!(rc, 0, "{out}");
            assert_eq!(got, zero_sum, "discarded range does not read as zeros");
            close(&name).unwrap();
            let mut want = vec![0u8; 2 << 20];
            XorCipher {
                key: p.key,
                sector: 4096,
                poison: None,
            }
            .apply((1 << 20) / 512, &mut want)
            .unwrap();
            assert_eq!(
                read_raw(&img, 1 << 20, 2 << 20),
                want,
                "zeroing is encrypted zeros"
            );
        } else {
            assert_eq!(got, before, "data changed by a refused discard");
            close(&name).unwrap();
            assert_eq!(read_raw(&img, 1 << 20, 2 << 20), raw_before);
        }
    }
}

#[test]
fn status_reports_state_and_close_removes_everything() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 16 << 20);
    let name = unique("stat");
    let _g = Guard::new(&name);
    let mut p = payload(&name, &img, "xor", 512);
    p.cfg.data_size = Some(4 << 20);
    p.cfg.data_offset = 2 << 20;
    p.cfg.extra_status.insert("provider".into(), "test".into());
    p.cfg
        .extra_status
        .insert("protection".into(), "in-process".into());
    let info = open(&p).expect("open");
    let st = status(&name).unwrap();
    assert_eq!(st.info, info);
    assert!(!st.in_use);
    assert_eq!(info.data_size, 4 << 20);
    assert!(!info.dynamic_size);
    assert_eq!(info.cipher, "test-xor");
    assert_eq!(info.extra["protection"], "in-process");
    assert!(info.loop_direct_io, "loop device without direct I/O");
    let loopdev = info.loop_device.clone().unwrap();
    assert_eq!(fs::read_link(&info.mapper_path).unwrap(), loopdev);
    let sysname = loopdev.file_name().unwrap().to_str().unwrap().to_owned();
    let sys = |f: &str| {
        fs::read_to_string(format!("/sys/block/{sysname}/{f}"))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(sys("size"), ((4u64 << 20) / 512).to_string());
    assert_eq!(sys("queue/logical_block_size"), "512");
    assert_eq!(sys("loop/dio"), "1");
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(format!("/run/wrapcrypt/{name}/state.json")).unwrap())
            .unwrap();
    assert_eq!(state["pid"], info.pid);
    close(&name).unwrap();
    assert!(!Path::new("/run/wrapcrypt").join(&name).exists());
    assert!(!info.mapper_path.exists());
    assert!(
        !fs::read_to_string(format!("/sys/block/{sysname}/loop/backing_file"))
            .unwrap_or_default()
            .contains(&name)
    );
    assert!(matches!(close(&name), Err(ActivateError::NotActive(_))));
    assert!(crate_process_gone(info.pid));
}

fn crate_process_gone(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z")
}

#[test]
fn failed_open_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 1 << 20);
    let name = unique("fail");
    let _g = Guard::new(&name);
    let mut p = payload(&name, &img, "xor", 4096);
    p.cfg.data_offset = 2 << 20;
    let e = open(&p).unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(!Path::new("/run/wrapcrypt").join(&name).exists());
    assert!(!Path::new("/dev/mapper").join(&name).exists());

    // A child that never reports is killed at the timeout.
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("4711");
    let t = std::time::Instant::now();
    let e = wrapcrypt_activate::spawn(cmd, b"", Duration::from_millis(300)).unwrap_err();
    assert!(matches!(e, ActivateError::Timeout(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let sleepers = must(
        "sh",
        &["-c", "ps -eo args= | grep -cx 'sleep 4711' || true"],
    );
    assert_eq!(sleepers.trim(), "0", "timed-out child still running");
}

/// The real software engine end to end: what lands in the backing decrypts
/// with Python `cryptography`'s AES-XTS (OpenSSL) under the same key, with
/// tweak = 512-byte sector number + iv_tweak (plain64).
#[test]
fn engine_aes_xts_ciphertext_decrypts_with_python_cryptography() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 8 << 20);
    let name = unique("xts");
    let _g = Guard::new(&name);
    let mut p = payload(&name, &img, "engine", 4096);
    p.spec = Some("aes-xts-plain64".into());
    let key_hex: String = (0..64)
        .map(|i| format!("{:02x}", (i * 37 + 11) as u8))
        .collect();
    p.key_hex = Some(key_hex.clone());
    p.cfg.data_offset = 1 << 20;
    p.cfg.iv_tweak = 3;
    let info = open(&p).expect("open");
    let plain = random(1 << 20, 42);
    let src = dir.path().join("plain");
    fs::write(&src, &plain).unwrap();
    must(
        "dd",
        &[
            &format!("if={}", src.display()),
            &format!("of={}", dev(&info)),
            "bs=1M",
            "seek=2",
            "oflag=direct",
            "conv=notrunc",
            "status=none",
        ],
    );
    close(&name).unwrap();
    let script = r#"
import sys, hashlib
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
key = bytes.fromhex(sys.argv[1]); path = sys.argv[2]; off = int(sys.argv[3]); iv = int(sys.argv[4])
data = open(path, "rb").read()[off:off + (1 << 20)]
out = b""
for i in range(0, len(data), 4096):
    d = Cipher(algorithms.AES(key), modes.XTS((iv + i // 512).to_bytes(16, "little"))).decryptor()
    out += d.update(data[i:i + 4096]) + d.finalize()
print(hashlib.sha256(out).hexdigest())
"#;
    let off = (1u64 << 20) + (2 << 20);
    let iv = (2u64 << 20) / 512 + 3;
    let got = must(
        "python3",
        &[
            "-c",
            script,
            &key_hex,
            img.to_str().unwrap(),
            &off.to_string(),
            &iv.to_string(),
        ],
    );
    assert_eq!(got.trim(), sha(&plain));
}

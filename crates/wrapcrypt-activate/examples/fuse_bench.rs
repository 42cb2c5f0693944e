//! Throughput of the FUSE + loop data path.
//!
//! `fuse_bench [--size-mib N] [--dir DIR] [--cipher null|xor|SPEC] [--rand-ops N]`
//!
//! Measures, on an image file of N MiB (default 1024) in DIR (default
//! /var/tmp): the raw file with O_DIRECT, then the volume opened through the
//! server with the `null` cipher and with the chosen cipher (default
//! `aes-xts-plain64` from wrapcrypt-sector's engine, random key; `xor` is a
//! cheap keystream for isolating server overhead). For each: sequential O_DIRECT write (+ fdatasync) and read
//! in 1 MiB blocks, and 4 KiB O_DIRECT random reads with 1 and 4 threads.
//! Prints one JSON object per line; server RSS idle and under load too.
//! `fuse_bench --open NAME IMAGE CIPHER` / `--close NAME` open and close a
//! volume for manual experiments.

use serde::{Deserialize, Serialize};
use serde_json::json;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wrapcrypt_activate::{ReadyPipe, ServeConfig};
use wrapcrypt_sector::{SectorCipher, SectorError};

const MIB: usize = 1 << 20;

struct Buf(*mut u8, usize);
unsafe impl Send for Buf {}
impl Buf {
    fn new(len: usize) -> Self {
        let p = unsafe { alloc_zeroed(Layout::from_size_align(len, 4096).unwrap()) };
        Buf(p, len)
    }
    fn get(&mut self) -> &mut [u8] {
        unsafe { std::slice::from_raw_parts_mut(self.0, self.1) }
    }
}
impl Drop for Buf {
    fn drop(&mut self) {
        unsafe { dealloc(self.0, Layout::from_size_align(self.1, 4096).unwrap()) }
    }
}

struct NullCipher;
impl SectorCipher for NullCipher {
    fn sector_size(&self) -> usize {
        4096
    }
    fn encrypt(&self, _: u64, _: &mut [u8]) -> Result<(), SectorError> {
        Ok(())
    }
    fn decrypt(&self, _: u64, _: &mut [u8]) -> Result<(), SectorError> {
        Ok(())
    }
}

/// XOR with a per-sector keystream (cheap, for isolating server overhead).
struct XorCipher;
impl XorCipher {
    fn apply(&self, iv: u64, d: &mut [u8]) {
        for (i, s) in d.chunks_mut(4096).enumerate() {
            let k = (iv + 8 * i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            for w in s.chunks_exact_mut(8) {
                let x = u64::from_ne_bytes(w.try_into().unwrap()) ^ k;
                w.copy_from_slice(&x.to_ne_bytes());
            }
        }
    }
}
impl SectorCipher for XorCipher {
    fn sector_size(&self) -> usize {
        4096
    }
    fn encrypt(&self, iv: u64, d: &mut [u8]) -> Result<(), SectorError> {
        self.apply(iv, d);
        Ok(())
    }
    fn decrypt(&self, iv: u64, d: &mut [u8]) -> Result<(), SectorError> {
        self.apply(iv, d);
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
struct Payload {
    cfg: ServeConfig,
    cipher: String,
}

/// Key length for a spec: XTS takes two keys; 256-bit AES otherwise.
fn key_bytes(spec: &wrapcrypt_sector::CipherSpec) -> usize {
    if spec.to_string().contains("xts") {
        64
    } else {
        32
    }
}

fn serve() -> ! {
    let ready = ReadyPipe::stdout().unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = ReadyPipe::read_secret(&mut buf).unwrap();
    let p: Payload = serde_json::from_slice(&buf[..n]).unwrap();
    let cipher: Arc<dyn SectorCipher> = match p.cipher.as_str() {
        "null" => Arc::new(NullCipher),
        "xor" => Arc::new(XorCipher),
        spec => {
            // The real software engine with a random key of the spec's size.
            let spec = wrapcrypt_sector::CipherSpec::parse(spec).expect("cipher spec");
            let key = wrapcrypt_secret::SecretBytes::random(key_bytes(&spec)).unwrap();
            Arc::from(wrapcrypt_sector::new_soft_cipher(&spec, &key, 4096).expect("engine"))
        }
    };
    let mut ready = Some(ready);
    let r = wrapcrypt_activate::run_server(p.cfg, cipher, |res| {
        let _ = ready.take().unwrap().send(res);
    });
    std::process::exit(i32::from(r.is_err()))
}

fn open_direct(path: &Path, write: bool) -> File {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn emit(target: &str, test: &str, bytes: u64, secs: f64, extra: serde_json::Value) {
    let mut v = json!({"target": target, "test": test, "bytes": bytes, "secs": (secs * 1e4).round() / 1e4,
        "mb_s": ((bytes as f64 / secs / 1e6) * 10.0).round() / 10.0});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    println!("{v}");
}

fn seq_write(path: &Path, size: u64) -> f64 {
    let f = open_direct(path, true);
    let mut b = Buf::new(MIB);
    b.get()
        .iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = (i * 131) as u8);
    let t = Instant::now();
    let mut off = 0;
    while off < size {
        f.write_all_at(b.get(), off).unwrap();
        off += MIB as u64;
    }
    f.sync_data().unwrap();
    t.elapsed().as_secs_f64()
}

fn seq_read(path: &Path, size: u64) -> f64 {
    let f = open_direct(path, false);
    let mut b = Buf::new(MIB);
    let t = Instant::now();
    let mut off = 0;
    while off < size {
        f.read_exact_at(b.get(), off).unwrap();
        off += MIB as u64;
    }
    t.elapsed().as_secs_f64()
}

fn rand_read(path: &Path, size: u64, ops: u64, jobs: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    std::thread::scope(|s| {
        for j in 0..jobs {
            let done = Arc::clone(&done);
            s.spawn(move || {
                let f = open_direct(path, false);
                let mut b = Buf::new(4096);
                let mut x = 0x1234_5678_9abc_def0u64 ^ (j + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                while done.fetch_add(1, Ordering::Relaxed) < ops {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let off = (x % (size / 4096)) * 4096;
                    f.read_exact_at(b.get(), off).unwrap();
                }
            });
        }
    });
    t.elapsed().as_secs_f64()
}

fn run_suite(target: &str, path: &Path, size: u64, rand_ops: u64, pid: Option<u32>) {
    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = pid.map(|pid| {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    });
    let s = seq_write(path, size);
    emit(
        target,
        "seq_write",
        size,
        s,
        json!({"block": MIB, "jobs": 1}),
    );
    let s = seq_read(path, size);
    emit(
        target,
        "seq_read",
        size,
        s,
        json!({"block": MIB, "jobs": 1}),
    );
    for jobs in [1, 4] {
        let s = rand_read(path, size, rand_ops, jobs);
        emit(
            target,
            "rand_read",
            rand_ops * 4096,
            s,
            json!({"block": 4096, "jobs": jobs, "iops": (rand_ops as f64 / s).round()}),
        );
    }
    stop.store(true, Ordering::Relaxed);
    if let (Some(h), Some(pid)) = (sampler, pid) {
        h.join().unwrap();
        println!(
            "{}",
            json!({"target": target, "test": "server_rss", "rss_load_kib": peak.load(Ordering::Relaxed), "rss_after_kib": rss_kib(pid)})
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        serve();
    }
    // Manual experiments: `--open NAME IMAGE CIPHER` / `--close NAME`.
    if args.get(1).map(String::as_str) == Some("--open") {
        let mut cfg = ServeConfig::new(&args[2], &args[3]);
        cfg.cipher_desc = args[4].clone();
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.arg("--serve");
        let payload = serde_json::to_vec(&Payload {
            cfg,
            cipher: args[4].clone(),
        })
        .unwrap();
        let info = wrapcrypt_activate::spawn(cmd, &payload, Duration::from_secs(30)).expect("open");
        println!("{}", serde_json::to_string(&info).unwrap());
        return;
    }
    if args.get(1).map(String::as_str) == Some("--close") {
        wrapcrypt_activate::close(&args[2]).expect("close");
        return;
    }
    let opt = |k: &str, d: &str| -> String {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| d.to_owned())
    };
    let size = opt("--size-mib", "1024").parse::<u64>().unwrap() * MIB as u64;
    let dir = PathBuf::from(opt("--dir", "/var/tmp"));
    let cipher = opt("--cipher", "aes-xts-plain64");
    let rand_ops: u64 = opt("--rand-ops", "20000").parse().unwrap();
    let img = dir.join(format!("wrapcrypt-fuse-bench-{}.img", std::process::id()));
    let _cleanup = Cleanup(img.clone());
    let f = File::create(&img).unwrap();
    f.set_len(size).unwrap();
    drop(f);
    seq_write(&img, size); // allocate the blocks first: every target overwrites
    run_suite("raw", &img, size, rand_ops, None);
    for c in ["null".to_owned(), cipher] {
        let name = format!("wcbench-{}-{c}", std::process::id());
        let mut cfg = ServeConfig::new(&name, &img);
        cfg.cipher_desc = c.clone();
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.arg("--serve");
        let payload = serde_json::to_vec(&Payload {
            cfg,
            cipher: c.clone(),
        })
        .unwrap();
        let info = wrapcrypt_activate::spawn(cmd, &payload, Duration::from_secs(30)).expect("open");
        std::thread::sleep(Duration::from_millis(200));
        println!(
            "{}",
            json!({"target": c, "test": "server_rss", "rss_idle_kib": rss_kib(info.pid), "loop_direct_io": info.loop_direct_io, "backing_direct_io": info.backing_direct_io})
        );
        run_suite(&c, &info.mapper_path, size, rand_ops, Some(info.pid));
        wrapcrypt_activate::close(&name).expect("close");
    }
}

struct Cleanup(PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

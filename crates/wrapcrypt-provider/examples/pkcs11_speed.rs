//! Sector throughput of the `pkcs11` provider's token-composed AES-XTS
//! (4 KiB sectors) on SoftHSM2 in-process and through `p11-kit server`,
//! against the in-process software engine, for `make bench`. The last line
//! is JSON for scripts.
//!
//! Creates its own SoftHSM2 token in a temporary directory; needs
//! softhsm2-util and p11-kit (scripts/install-deps.sh).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wrapcrypt_provider::xts::aes_256_xts;
use wrapcrypt_provider::{KeyProvider, KeySpec, Mechanism, Pkcs11Provider};
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::SectorCipher;

const SOFTHSM: &str = "/usr/lib/softhsm/libsofthsm2.so";
const P11_KIT_CLIENT: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";
const SECTOR: usize = 4096;
const CALL: usize = 128 << 10;
const PIN: &[u8] = b"speed-pin";

/// MB/s of `op` over `total` bytes in CALL-byte requests on `threads` threads.
fn speed(c: &Arc<dyn SectorCipher>, total: usize, threads: usize, encrypt: bool) -> f64 {
    let per = total / threads;
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|i| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0x5au8; CALL];
                let mut done = 0;
                while done < per {
                    let iv = ((i * per + done) / 512) as u64;
                    if encrypt {
                        c.encrypt(iv, &mut buf).expect("encrypt");
                    } else {
                        c.decrypt(iv, &mut buf).expect("decrypt");
                    }
                    done += CALL;
                }
            })
        })
        .collect();
    hs.into_iter().for_each(|h| h.join().expect("thread"));
    total as f64 / t.elapsed().as_secs_f64() / 1e6
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("tokens")).expect("mkdir");
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.path().join("tokens").display()
        ),
    )
    .expect("conf");
    for t in ["local", "remote"] {
        let ok = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                t,
                "--so-pin",
                "so-speed",
                "--pin",
                "speed-pin",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("softhsm2-util")
            .success();
        assert!(ok, "softhsm2-util --init-token failed");
    }
    let sock = dir.path().join("p11-kit.sock");
    let server = Server(
        Command::new("p11-kit")
            .env("SOFTHSM2_CONF", &conf)
            .args(["server", "-f", "-n"])
            .arg(&sock)
            .args(["--provider", SOFTHSM, "pkcs11:token=remote"])
            .stdout(Stdio::null())
            .spawn()
            .expect("p11-kit"),
    );
    let t = Instant::now();
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "p11-kit server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Read by SoftHSM and p11-kit's client when they are loaded, below.
    std::env::set_var("SOFTHSM2_CONF", &conf);
    std::env::set_var(
        "P11_KIT_SERVER_ADDRESS",
        format!("unix:path={}", sock.display()),
    );
    let pin = SecretBytes::copy_from(PIN);

    let local = Pkcs11Provider::open(
        &format!("pkcs11:token=local;object=kek?module-path={SOFTHSM}"),
        Some(&pin),
    )
    .expect("open local token");
    local
        .create_wrapping_key("kek", &[1])
        .expect("wrapping key");
    let wkb = local.generate(&KeySpec::aes_256_xts()).expect("generate");
    let in_process = local.open_cipher(&wkb, SECTOR).expect("open_cipher");

    let remote = Pkcs11Provider::open(
        &format!("pkcs11:token=remote;object=kek?module-path={P11_KIT_CLIENT}"),
        Some(&pin),
    )
    .expect("open token through p11-kit");
    // p11-kit forwards no AES key wrap (docs/pkcs11.md §7): the provider
    // makes a token-held key (WKB mechanism 3); the data path is the same.
    let held = remote.generate(&KeySpec::aes_256_xts()).expect("generate");
    assert_eq!(held.mechanism(), Mechanism::Pkcs11TokenHeld);
    let through = remote.open_cipher(&held, SECTOR).expect("remote cipher");
    let key = SecretBytes::random(64).expect("random");
    // The same composition over session objects made from a clear key: the
    // data path before token-held keys, for comparison.
    let through_session = remote
        .open_cipher_from_clear_key(&key, SECTOR)
        .expect("remote cipher from a clear key");
    let soft: Arc<dyn SectorCipher> = Arc::new(aes_256_xts(&key, SECTOR).expect("xts"));

    let mut json = Vec::new();
    for (name, c, total) in [
        ("software", &soft, 256usize << 20),
        ("softhsm_in_process", &in_process, 128 << 20),
        ("softhsm_via_p11_kit_server", &through, 32 << 20),
        (
            "softhsm_via_p11_kit_server_session_key",
            &through_session,
            32 << 20,
        ),
    ] {
        for threads in [1, 2] {
            let e = speed(c, total, threads, true);
            let d = speed(c, total, threads, false);
            println!(
                "pkcs11_speed: {name:<40} {threads} thread(s), {} KiB calls: encrypt {e:7.0} MB/s, decrypt {d:7.0} MB/s",
                CALL >> 10
            );
            json.push(format!(
                "\"{name}_t{threads}_encrypt_mb_s\":{e:.0},\"{name}_t{threads}_decrypt_mb_s\":{d:.0}"
            ));
        }
    }
    drop((in_process, through, through_session));
    drop(server);
    println!("{{{}}}", json.join(","));
}

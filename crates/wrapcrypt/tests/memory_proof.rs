//! The proof that matters, clear-key half: with a clear-key volume open and
//! under I/O, the FUSE server's core dump holds neither the volume key nor
//! any AES round key of either XTS half (MADV_DONTDUMP), while its live
//! memory does (the control that shows the search would find them).
//! Needs root, FUSE, loop devices and gdb's gcore (installed by
//! scripts/install-deps.sh).

mod common;
mod support_mem;
mod wrapped_common;

use std::path::PathBuf;
use std::process::Command;

fn bin() -> PathBuf {
    // The binary cargo built for this test run (same profile).
    PathBuf::from(env!("CARGO_BIN_EXE_wrapcrypt"))
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn clear_key_server_core_dump_has_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v.img");
    let kf = dir.path().join("vk");
    let pf = dir.path().join("pass");
    let mut key = vec![0u8; 64];
    wrapcrypt_secret::fill_random(&mut key).unwrap();
    std::fs::write(&kf, &key).unwrap();
    std::fs::write(&pf, b"memproof").unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(48 << 20)
        .unwrap();
    run(Command::new(bin())
        .args([
            "luksFormat",
            "-q",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
        ])
        .arg("--volume-key-file")
        .arg(&kf)
        .arg("--key-file")
        .arg(&pf)
        .arg(&img));
    std::fs::remove_file(&kf).unwrap();
    let name = format!("wcmem{}", std::process::id());
    run(Command::new(bin())
        .arg("open")
        .arg(&img)
        .arg(&name)
        .arg("--key-file")
        .arg(&pf));
    struct Close(String);
    impl Drop for Close {
        fn drop(&mut self) {
            let _ = Command::new(bin()).args(["close", &self.0]).status();
        }
    }
    let _guard = Close(name.clone());
    // I/O through the engine, both directions.
    random_io(&name, 0, 4);
    let state = active_state(&name);
    let pid = state["pid"].as_u64().unwrap() as u32;
    let needles = support_mem::xts512_needles(&key);

    // Control: the live server does hold the key schedule (in locked,
    // non-dumpable memory), so the needles are the right ones.
    let live = support_mem::find(&support_mem::process_memory(pid), &needles);
    assert!(
        !live.is_empty(),
        "control failed: key schedule not found in live server memory"
    );

    let core_prefix = dir.path().join("core");
    run(Command::new("gcore")
        .arg("-o")
        .arg(&core_prefix)
        .arg(pid.to_string()));
    let core = std::fs::read(format!("{}.{pid}", core_prefix.display())).unwrap();
    assert!(core.len() > 1 << 20, "core file suspiciously small");
    let hits = support_mem::find(&core, &needles);
    if !hits.is_empty() {
        // Say where: which mapping of the process the hit came from.
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        for (name, n) in &needles {
            if let Some(off) = memchr::memmem::find(&core, n) {
                println!(
                    "{name} at core offset {off:#x}: {}",
                    support_mem::core_vaddr_mapping(&core, off, &maps)
                );
            }
        }
    }
    println!(
        "core dump of FUSE server: {} bytes, {} needles, {} hits (live memory: {} hits)",
        core.len(),
        needles.len(),
        hits.len(),
        live.len()
    );
    assert!(hits.is_empty(), "key material in core dump: {hits:?}");
}

/// The wrapped half: a waes volume open through the custodian and under
/// I/O. Neither the FUSE server nor a CLI process that holds the unlocked
/// blob has the effective key or any round key in memory; the custodian
/// (the key holder) does — the control that shows the search works. The
/// test knows the effective key only because it imported a known key.
#[test]
fn wrapped_key_never_in_cli_or_server_memory() {
    use wrapcrypt_provider::{CustodianConfig, CustodianProvider, KeyProvider, KeySpec};

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("c.sock");
    let wc = |args: &[&str]| {
        let mut c = Command::new(bin());
        c.args(args).env("WRAPCRYPT_CUSTODIAN_SOCKET", &sock);
        c
    };
    // Starts the private custodian on demand.
    run(&mut wc(&["custodian", "status"]));
    let prov = CustodianProvider::new(CustodianConfig::new(&sock));
    let mut key = vec![0u8; 64];
    wrapcrypt_secret::fill_random(&mut key).unwrap();
    let clear = wrapcrypt_secret::SecretBytes::copy_from(&key);
    let wkb = prov.import(&clear, &KeySpec::aes_256_xts()).unwrap();
    drop(clear);
    let wkb_file = dir.path().join("key.wkb");
    std::fs::write(&wkb_file, wkb.encode()).unwrap();
    let img = dir.path().join("w.img");
    let pf = dir.path().join("pass");
    std::fs::write(&pf, b"wrapped-proof").unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(48 << 20)
        .unwrap();
    let (img_s, pf_s, wkb_s) = (
        img.to_str().unwrap(),
        pf.to_str().unwrap(),
        wkb_file.to_str().unwrap(),
    );
    run(&mut wc(&[
        "luksFormat",
        "-q",
        "--cipher",
        "waes-xts-plain64",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--volume-key-file",
        wkb_s,
        "--key-file",
        pf_s,
        img_s,
    ]));
    let name = format!("wcwmem{}", std::process::id());
    run(&mut wc(&["open", img_s, &name, "--key-file", pf_s]));
    struct Close(String, PathBuf);
    impl Drop for Close {
        fn drop(&mut self) {
            let _ = Command::new(bin())
                .args(["close", &self.0])
                .env("WRAPCRYPT_CUSTODIAN_SOCKET", &self.1)
                .status();
        }
    }
    let _guard = Close(name.clone(), sock.clone());
    random_io(&name, 0, 4);
    let needles = support_mem::xts512_needles(&key);

    // The key holder: the custodian has the key schedule (control).
    let pgrep = Command::new("pgrep")
        .args(["-f", &format!("wrapcrypt-custodiand.*{}", sock.display())])
        .output()
        .unwrap();
    let cpid: u32 = String::from_utf8_lossy(&pgrep.stdout)
        .lines()
        .next()
        .expect("custodian pid")
        .trim()
        .parse()
        .unwrap();
    struct Stop(u32);
    impl Drop for Stop {
        fn drop(&mut self) {
            // The custodian this test started on demand.
            // SAFETY: signalling a pid this test found for its own daemon.
            unsafe { libc::kill(self.0 as i32, libc::SIGTERM) };
        }
    }
    let _stop = Stop(cpid);
    let holder = support_mem::find(&support_mem::process_memory(cpid), &needles);
    assert!(
        !holder.is_empty(),
        "control failed: key schedule not found in the custodian"
    );

    // The FUSE server, under I/O.
    let state = active_state(&name);
    let spid = state["pid"].as_u64().unwrap() as u32;
    let in_server = support_mem::find(&support_mem::process_memory(spid), &needles);

    // A CLI holding the unlocked blob.
    let in_cli = cli_holding_blob(wc(&add_key_args(pf_s, img_s)), &needles, &wkb.encode());
    println!(
        "custodian (key holder): {} hits; FUSE server: {} hits; CLI with unlocked blob: {} hits ({} needles)",
        holder.len(),
        in_server.len(),
        in_cli.len(),
        needles.len()
    );
    assert!(
        in_server.is_empty(),
        "key material in FUSE server memory: {in_server:?}"
    );
    assert!(in_cli.is_empty(), "key material in CLI memory: {in_cli:?}");
}

/// Every process of the tree rooted at `pid` (p11-kit server may serve a
/// connection from a child), read from /proc/PID/task/*/children.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let c = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(c.split_whitespace().filter_map(|s| s.parse::<u32>().ok()));
            }
        }
        i += 1;
    }
    out
}

/// The wrapped half through PKCS#11: a waes volume whose key SoftHSM2
/// holds inside `p11-kit server` (another process; the volume key is a
/// token-held key, WKB mechanism 3, because p11-kit forwards no AES key
/// wrap), opened by the CLI through p11-kit's client module with
/// `--pin-file`, under I/O. Neither the FUSE server nor a CLI process that
/// holds the unlocked blob has the effective key or any round key in
/// memory; the p11-kit server process tree (SoftHSM2, the key holder) does
/// — the control. The test knows the key because `convert` imported a
/// clear-key volume's key of its choosing.
#[test]
fn pkcs11_key_through_p11_kit_server_never_in_cli_or_server_memory() {
    let p11 = wrapped_common::P11KitServer::start("proof");
    let d = p11.dir.path();
    let pin_file = p11.pin_file.clone();
    let wc = |args: &[&str]| p11.wc(args);
    let uri = p11.uri("wc-kek");

    let mut key = vec![0u8; 64];
    wrapcrypt_secret::fill_random(&mut key).unwrap();
    let kf = d.join("vk");
    std::fs::write(&kf, &key).unwrap();
    let img = d.join("p.img");
    let pf = d.join("pass");
    std::fs::write(&pf, b"pkcs11-proof").unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(48 << 20)
        .unwrap();
    let (img_s, pf_s, kf_s, pin_s) = (
        img.to_str().unwrap(),
        pf.to_str().unwrap(),
        kf.to_str().unwrap(),
        pin_file.to_str().unwrap(),
    );
    run(&mut wc(&[
        "luksFormat",
        "-q",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--volume-key-file",
        kf_s,
        "--key-file",
        pf_s,
        img_s,
    ]));
    std::fs::remove_file(&kf).unwrap();
    // The clear key goes into the token (as a token-held key) once, here.
    run(&mut wc(&[
        "convert",
        "-q",
        img_s,
        "--cipher",
        "waes-xts-plain64",
        "--key-provider",
        &uri,
        "--pin-file",
        pin_s,
        "--key-file",
        pf_s,
    ]));
    let _ = std::fs::remove_file(format!("{img_s}.wrapcrypt-convert.bak"));
    let dump = run(&mut wc(&["luksDump", img_s]));
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("waes-xts-plain64"), "{dump}");
    assert!(dump.contains("Provider:   pkcs11"), "{dump}");

    let name = format!("wcpmem{}", std::process::id());
    run(&mut wc(&[
        "open",
        img_s,
        &name,
        "--key-file",
        pf_s,
        "--pin-file",
        pin_s,
    ]));
    struct Close(String);
    impl Drop for Close {
        fn drop(&mut self) {
            let _ = Command::new(bin()).args(["close", &self.0]).status();
        }
    }
    let _guard = Close(name.clone());
    // Known plaintext through the volume; the ciphertext on the image must
    // be AES-XTS under the key (Python `cryptography`): the token's key is
    // the one the needles are made from.
    let plain: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    let pfile = d.join("plain");
    std::fs::write(&pfile, &plain).unwrap();
    run(Command::new("dd")
        .arg(format!("if={}", pfile.display()))
        .arg(format!("of=/dev/mapper/{name}"))
        .args(["bs=1M", "oflag=direct", "status=none"]));
    random_io(&name, 1, 5);
    let state = active_state(&name);
    let data_offset = state["data_offset"].as_u64().unwrap();
    let ss = state["sector_size"].as_u64().unwrap();
    let iv0 = state["iv_tweak"].as_u64().unwrap();
    let spid = state["pid"].as_u64().unwrap() as u32;
    let kfile = d.join("key-for-python");
    std::fs::write(&kfile, &key).unwrap();
    let out = run(Command::new("python3").arg("-c").arg(format!(
        "from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes\n\
         k=open('{}','rb').read(); f=open('{}','rb'); f.seek({data_offset}); c=f.read(1<<20)\n\
         t=lambda i: ({iv0}+i*{ss}//512).to_bytes(16,'little')\n\
         p=b''.join(Cipher(algorithms.AES(k),modes.XTS(t(i))).decryptor().update(c[i*{ss}:(i+1)*{ss}]) for i in range(len(c)//{ss}))\n\
         import sys; sys.stdout.buffer.write(p)",
        kfile.display(),
        img.display()
    )));
    std::fs::remove_file(&kfile).unwrap();
    assert!(
        out.stdout == plain,
        "image is not AES-XTS of the data under the key"
    );
    let needles = support_mem::xts512_needles(&key);

    // The key holder: SoftHSM2 inside the p11-kit server's process tree.
    let tree = process_tree(p11.pid());
    let holder: Vec<String> = tree
        .iter()
        .flat_map(|&p| support_mem::find(&support_mem::process_memory(p), &needles))
        .collect();
    assert!(
        !holder.is_empty(),
        "control failed: key schedule not found in the p11-kit server processes {tree:?}"
    );

    // The FUSE server, under I/O.
    let in_server = support_mem::find(&support_mem::process_memory(spid), &needles);

    // A CLI holding the unlocked blob (the convert's output, which luksDump
    // cannot print without the passphrase: found by its magic and provider).
    let in_cli = cli_holding_blob(
        wc(&add_key_args(pf_s, img_s)),
        &needles,
        b"WCWK\x00\x01\x01\x00pkcs11",
    );
    println!(
        "p11-kit server tree {tree:?} (key holder): {} hits; FUSE server: {} hits; CLI with unlocked blob: {} hits ({} needles)",
        holder.len(),
        in_server.len(),
        in_cli.len(),
        needles.len()
    );
    assert!(
        in_server.is_empty(),
        "key material in FUSE server memory: {in_server:?}"
    );
    assert!(in_cli.is_empty(), "key material in CLI memory: {in_cli:?}");
}

/// luksAddKey of `img`, unlocking with key file `pf`; the new passphrase
/// comes on stdin (see [`cli_holding_blob`]).
fn add_key_args<'a>(pf: &'a str, img: &'a str) -> [&'a str; 8] {
    [
        "luksAddKey",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        pf,
        img,
    ]
}

/// Runs `cmd` (a luksAddKey that unlocks with the existing passphrase and
/// then waits for the new one on stdin), and while it waits, holding the
/// unlocked blob, searches its whole memory for `needles`. `blob` (bytes of
/// the unlocked blob) must be found: the control that the scan sees what
/// the CLI holds. The command then finishes normally.
fn cli_holding_blob(mut cmd: Command, needles: &[(String, Vec<u8>)], blob: &[u8]) -> Vec<String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut cli = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = cli.id();
    let mut blocked = false;
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
        if wchan.contains("pipe_read") || wchan.contains("wait_woken") {
            blocked = true;
            break;
        }
    }
    assert!(blocked, "CLI did not reach the new-passphrase prompt");
    let mem = support_mem::process_memory(pid);
    let hits = support_mem::find(&mem, needles);
    assert!(
        memchr::memmem::find(&mem, blob).is_some(),
        "control failed: the CLI should hold the unlocked blob"
    );
    cli.stdin.take().unwrap().write_all(b"second\n").unwrap();
    assert!(cli.wait().unwrap().success());
    hits
}

/// Direct I/O through the engine, both directions: 4 MiB of random data
/// written from MiB `seek` on, then MiB 0..`read_mib` read back.
fn random_io(name: &str, seek: u32, read_mib: u32) {
    run(Command::new("dd")
        .args([
            "if=/dev/urandom",
            "bs=1M",
            "count=4",
            "oflag=direct",
            "status=none",
        ])
        .arg(format!("seek={seek}"))
        .arg(format!("of=/dev/mapper/{name}")));
    run(Command::new("dd")
        .args(["of=/dev/null", "bs=1M", "iflag=direct", "status=none"])
        .arg(format!("count={read_mib}"))
        .arg(format!("if=/dev/mapper/{name}")));
}

/// The opened volume's state file (`/run/wrapcrypt/NAME/state.json`).
fn active_state(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(format!("/run/wrapcrypt/{name}/state.json")).unwrap())
        .unwrap()
}

/// The verification pattern (zkey's: AES-XTS of 32 zero bytes, tweak 0)
/// of a clear AES-256-XTS key, by the software engine.
fn clear_vp(key: &[u8]) -> String {
    let spec = wrapcrypt_sector::CipherSpec::parse("aes-xts-plain64").unwrap();
    let k = wrapcrypt_secret::SecretBytes::copy_from(key);
    let c = wrapcrypt_sector::new_soft_cipher(&spec, &k, 512).unwrap();
    let mut buf = vec![0u8; 512];
    c.encrypt(0, &mut buf).unwrap();
    hex::encode(&buf[..32])
}

/// The new key of a volume reencrypted onto the custodian, which the test
/// does not know: the pair of AES-256 key schedules found in the
/// custodian's memory snapshots `holder` whose XTS key reproduces the
/// volume's new verification pattern (from `luksDump --json`).
fn new_key_from_custodian(c: &wrapped_common::Custodian, img: &str, holder: &[Vec<u8>]) -> Vec<u8> {
    let d = c.ok(&["luksDump", "--json", img]);
    let d: serde_json::Value = serde_json::from_str(d.stdout.trim()).unwrap();
    let vp = d["wrapped-key"]["verification-pattern"]
        .as_str()
        .expect("new VP")
        .to_string();
    let mut found: Vec<[u8; 32]> = Vec::new();
    for m in holder {
        for k in support_mem::aes256_schedules(m) {
            if !found.contains(&k) {
                found.push(k);
            }
        }
    }
    found
        .iter()
        .flat_map(|a| found.iter().map(move |b| [&a[..], &b[..]].concat()))
        .find(|k| clear_vp(k) == vp)
        .unwrap_or_else(|| {
            panic!(
                "control failed: none of the {} AES-256 schedules in the custodian's memory makes the new VP",
                found.len()
            )
        })
}

/// `reencrypt --cipher waes-xts-plain64` of a clear-key volume: the new
/// key is generated inside the custodian and the data moves through its
/// session, so the reencrypting process never holds it. While the run
/// goes on it is stopped (SIGSTOP) a few times and its memory and the
/// custodian's are read. The new key is not known to the test: it is
/// recovered from the custodian's memory (each AES-256 schedule found
/// there, paired, must reproduce the volume's new verification pattern),
/// then searched for in the reencrypting process: 0 hits. Control: the
/// old clear key, which the process must hold to decrypt, is found there.
#[test]
fn reencrypt_onto_custodian_key_never_in_reencrypting_process() {
    use wrapped_common::Custodian;
    let s = common::Scratch::new();
    let c = Custodian::new(&s);
    let kf = s.key("pw", b"reencrypt-proof");
    let img = s.image("r.img", 16 + 128);
    common::format(common::CS, &img, &kf, common::FAST);
    let old_key = hex::decode(common::volume_key(common::CS, &img, &kf, &[])).unwrap();
    let old_needles = support_mem::xts512_needles(&old_key);
    let cpid: u32 = std::fs::read_to_string(s.path("c.state").join("custodiand.lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let mut args = vec![
        "reencrypt",
        "-q",
        "--cipher",
        "waes-xts-plain64",
        "--hotzone-size",
        "256K",
        "--key-file",
        &kf,
    ];
    args.extend_from_slice(common::FAST);
    args.push(&img);
    let mut child = c
        .cmd(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (mut snaps, mut holder) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        // SAFETY: pausing and resuming the child this test spawned.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        snaps.push(support_mem::process_memory(pid));
        holder.push(support_mem::process_memory(cpid));
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    }
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "reencrypt: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        snaps.len() >= 2,
        "the run ended before two snapshots ({}): make the volume larger",
        snaps.len()
    );
    // The new key, from the custodian's memory.
    let new_key = new_key_from_custodian(&c, &img, &holder);
    assert_ne!(new_key, old_key);
    let needles = support_mem::xts512_needles(&new_key);
    let (mut hits, mut old_hits) = (Vec::new(), 0);
    for m in &snaps {
        hits.extend(support_mem::find(m, &needles));
        old_hits += support_mem::find(m, &old_needles).len();
    }
    println!(
        "reencrypt onto a custodian key: {} snapshots of the reencrypting process; new key: {} hits of {} needles; old clear key (control): {old_hits} hits; the new key recovered from the custodian's memory",
        snaps.len(),
        hits.len(),
        needles.len()
    );
    assert!(
        old_hits > 0,
        "control failed: the old clear key is not in the reencrypting process"
    );
    assert!(
        hits.is_empty(),
        "new key material in the reencrypting process: {hits:?}"
    );
}

/// Online `reencrypt --cipher waes-xts-plain64 --active-name` of an open
/// clear-key volume: the run is inside the FUSE server, so the server and
/// the client are stopped (SIGSTOP) a few times mid-run and read. The new
/// key, recovered from the custodian's memory as above, is in neither;
/// the old clear key (control) is in the server, which serves it.
#[test]
fn online_reencrypt_onto_custodian_key_never_in_server_or_client() {
    use wrapped_common::Custodian;
    let s = common::Scratch::new();
    let c = Custodian::new(&s);
    let kf = s.key("pw", b"online-proof");
    let img = s.image("o.img", 16 + 128);
    common::format(common::CS, &img, &kf, common::FAST);
    let old_key = hex::decode(common::volume_key(common::CS, &img, &kf, &[])).unwrap();
    let cpid: u32 = std::fs::read_to_string(s.path("c.state").join("custodiand.lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let name = format!("wcomem{}", std::process::id());
    c.ok(&["open", &img, &name, "--key-file", &kf]);
    struct Close(String, PathBuf);
    impl Drop for Close {
        fn drop(&mut self) {
            let _ = Command::new(bin())
                .args(["close", &self.0])
                .env("WRAPCRYPT_CUSTODIAN_SOCKET", &self.1)
                .status();
        }
    }
    let _guard = Close(name.clone(), s.path("c.sock"));
    let spid = active_state(&name)["pid"].as_u64().unwrap() as u32;
    let mut args = vec![
        "reencrypt",
        "-q",
        "--active-name",
        &name,
        "--cipher",
        "waes-xts-plain64",
        "--hotzone-size",
        "256K",
        "--key-file",
        &kf,
    ];
    args.extend_from_slice(common::FAST);
    args.push(&img);
    let mut child = c
        .cmd(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (mut server, mut client, mut holder) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(150));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        random_io(&name, 8, 4);
        // SAFETY: pausing and resuming processes this test started.
        unsafe {
            libc::kill(spid as i32, libc::SIGSTOP);
            libc::kill(pid as i32, libc::SIGSTOP);
        }
        server.push(support_mem::process_memory(spid));
        client.push(support_mem::process_memory(pid));
        holder.push(support_mem::process_memory(cpid));
        unsafe {
            libc::kill(pid as i32, libc::SIGCONT);
            libc::kill(spid as i32, libc::SIGCONT);
        }
    }
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "online reencrypt: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(server.len() >= 2, "the run ended before two snapshots");
    let new_key = new_key_from_custodian(&c, &img, &holder);
    let needles = support_mem::xts512_needles(&new_key);
    let old_needles = support_mem::xts512_needles(&old_key);
    let hits = |snaps: &[Vec<u8>], n: &[(String, Vec<u8>)]| -> usize {
        snaps.iter().map(|m| support_mem::find(m, n).len()).sum()
    };
    let (in_server, in_client) = (hits(&server, &needles), hits(&client, &needles));
    let old_in_server = hits(&server, &old_needles);
    println!(
        "online reencrypt onto a custodian key: {} snapshots; new key ({} needles): FUSE server {in_server} hits, client {in_client} hits; old clear key in the server (control): {old_in_server} hits",
        server.len(),
        needles.len()
    );
    assert!(
        old_in_server > 0,
        "control failed: the old key is not in the server"
    );
    assert_eq!(in_server, 0, "new key material in the FUSE server");
    assert_eq!(in_client, 0, "new key material in the client");
}

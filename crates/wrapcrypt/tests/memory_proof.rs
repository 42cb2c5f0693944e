//! The proof that matters, clear-key half: with a clear-key volume open and
//! under I/O, the FUSE server's core dump holds neither the volume key nor
//! any AES round key of either XTS half (MADV_DONTDUMP), while its live
//! memory does (the control that shows the search would find them).
//! Needs root, FUSE, loop devices and gdb's gcore (installed by
//! scripts/install-deps.sh).

mod support_mem;

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
    run(Command::new("dd")
        .args([
            "if=/dev/urandom",
            "bs=1M",
            "count=4",
            "oflag=direct",
            "status=none",
        ])
        .arg(format!("of=/dev/mapper/{name}")));
    run(Command::new("dd")
        .args([
            "of=/dev/null",
            "bs=1M",
            "count=4",
            "iflag=direct",
            "status=none",
        ])
        .arg(format!("if=/dev/mapper/{name}")));
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("/run/wrapcrypt/{name}/state.json")).unwrap(),
    )
    .unwrap();
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
    println!(
        "core dump of FUSE server: {} bytes, {} needles, {} hits (live memory: {} hits)",
        core.len(),
        needles.len(),
        hits.len(),
        live.len()
    );
    assert!(hits.is_empty(), "key material in core dump: {hits:?}");
}

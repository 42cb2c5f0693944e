//! Crash safety of online reencryption (issue 11 item 5, "offline and
//! online"): the FUSE server that runs the reencryption of its open volume
//! is killed (SIGKILL, `WRAPCRYPT_FAULT_AT=k` inherited from `open`)
//! before each of its device writes in turn, with checksum and journal
//! resilience (`none` protects nothing by design), and with the k-th write
//! torn. After each kill the dead activation is
//! closed, `reencrypt --resume-only` (wrapcrypt, or cryptsetup for every
//! third point) finishes offline, and the data decrypts (Python
//! `cryptography`, the key cryptsetup reads) to the data written before.

mod common;
mod reencrypt_common;

use std::process::Stdio;

use common::*;
use reencrypt_common::*;

/// Opens `img` as `name` with `env` for the server, runs the online
/// resume to whatever end, and closes the activation (dead or not).
fn online_run(img: &str, kf: &str, name: &str, env: &[(&str, &str)]) -> Out {
    let mut open = WC.cmd(&["open", img, name, "--key-file", kf]);
    for (k, v) in env {
        open.env(k, v);
    }
    let o = run_cmd(&mut open, None, WC);
    assert_eq!(o.code, 0, "open: {o}");
    let r = WC.run(&[
        "reencrypt",
        "-q",
        "--resume-only",
        "--active-name",
        name,
        "--key-file",
        kf,
        "--hotzone-size",
        "1M",
        img,
    ]);
    let _ = WC
        .cmd(&["close", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        !std::path::Path::new(&format!("/dev/mapper/{name}")).exists(),
        "close after the run left the mapping"
    );
    r
}

fn killed_online_at_every_write(resilience: &str, torn: bool) -> u64 {
    let s = Scratch::new();
    let (img, kf, h) = seeded(&s, "base.img", 16 + 4, "4096");
    let old_key = volume_key(CS, &img, &kf, &[]);
    let mut init = vec![
        "reencrypt",
        "-q",
        "--init-only",
        "--resilience",
        resilience,
        "--key-file",
        &kf,
    ];
    init.extend_from_slice(FAST);
    init.push(&img);
    WC.ok(&init);
    let name = format!(
        "wcoc{}{}{}",
        std::process::id(),
        &resilience[..2],
        torn as u8
    );

    // How many writes the server's run has.
    let count = s.p("count");
    let probe = s.copy(&img, "probe.img");
    let r = online_run(&probe, &kf, &name, &[("WRAPCRYPT_FAULT_COUNT", &count)]);
    assert_eq!(r.code, 0, "uninterrupted online run: {r}");
    assert_eq!(data_hash(&probe, &kf, "4096"), h);
    let points = std::fs::read_to_string(&count).unwrap().lines().count() as u64;
    assert!(points >= 6, "only {points} write points");

    let (mut by_wc, mut by_cs, mut finished_before) = (0, 0, 0);
    for k in 1..=points {
        let at = k.to_string();
        let mut env = vec![("WRAPCRYPT_FAULT_AT", at.as_str())];
        if torn {
            env.push(("WRAPCRYPT_FAULT_TORN", "1"));
        }
        let img_k = s.copy(&img, &format!("k{k}.img"));
        let r = online_run(&img_k, &kf, &name, &env);
        assert_ne!(r.code, 0, "point {k}: the server was not killed: {r}");
        assert_eq!(r.stderr.trim().lines().count(), 1, "point {k}: {r}");
        // Whatever state the kill left, both tools print the same luksDump.
        let wd = WC.run(&["luksDump", &img_k]);
        let cd = CS.run(&["luksDump", &img_k]);
        assert_eq!(
            (wd.code, &wd.stdout),
            (cd.code, &cd.stdout),
            "luksDump after point {k}"
        );
        if json(&img_k)["config"].get("requirements").is_none() {
            // Killed after the final header (wiping the old keyslots'
            // areas): the reencryption is finished already.
            finished_before += 1;
        } else if k % 3 == 0 {
            by_cs += 1;
            // cryptsetup recovers an interrupted hotzone only in `repair`
            // (with the passphrase); its repair of the last one finalizes.
            let hot = json(&img_k)["segments"]
                .as_object()
                .unwrap()
                .values()
                .any(|g| g["flags"].to_string().contains("in-reencryption"));
            if hot {
                CS.ok(&["repair", "-q", "-d", &kf, &img_k]);
            }
            if json(&img_k)["config"].get("requirements").is_some() {
                CS.ok(&[
                    "reencrypt",
                    "-q",
                    "--force-offline-reencrypt",
                    "--resume-only",
                    "-d",
                    &kf,
                    &img_k,
                ]);
            }
        } else {
            by_wc += 1;
            let o = wc_resume(&img_k, &kf, &["-q"]);
            assert_eq!(o.code, 0, "point {k}: resume: {o}");
        }
        assert_finished(&img_k, &kf, &old_key);
        assert_eq!(data_hash(&img_k, &kf, "4096"), h, "point {k}: data");
        std::fs::remove_file(&img_k).unwrap();
    }
    println!(
        "online {resilience}{}: {points} points: {by_wc} finished by wrapcrypt, {by_cs} by cryptsetup, {finished_before} already finished",
        if torn { " (torn)" } else { "" }
    );
    points
}

#[test]
fn online_server_killed_at_every_write_then_resumed() {
    let mut total = 0;
    for r in ["checksum", "journal"] {
        let n = killed_online_at_every_write(r, false);
        println!("online {r}: server killed before each of its {n} writes, each resumed");
        total += n;
    }
    println!("online kill points exercised: {total}");
}

#[test]
fn online_server_torn_at_every_write_then_resumed() {
    let mut total = 0;
    for r in ["checksum", "journal"] {
        let n = killed_online_at_every_write(r, true);
        println!("online {r}: a torn write at each of {n} points, each resumed");
        total += n;
    }
    println!("online torn points exercised: {total}");
}

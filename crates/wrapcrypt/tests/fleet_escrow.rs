//! `wrapcrypt fleet escrow` / `fleet restore-header` against a real PyKMIP
//! server (scripts/kmip-server.sh): a clear-key LUKS2 volume and a waes
//! volume (whose 2048-bit wrapped key makes a 1 MiB keyslot, so its escrow
//! spans many part objects) are escrowed, their headers destroyed, and
//! restored from the key manager: the restored bytes equal the backup
//! cryptsetup's luksHeaderBackup takes, cryptsetup opens the volume with
//! the same volume key, the waes volume validates. Re-escrowing replaces
//! every object of the earlier escrow. Bad input (no escrow, a tampered
//! part, no header and no --uuid, the key manager down) changes no byte.

mod common;
#[path = "../../wrapcrypt-kmip/tests/common/mod.rs"]
mod kmip_common;
mod wrapped_common;

use std::os::unix::fs::{FileExt, PermissionsExt};

use common::*;
use kmip_common::KmipServer;
use serde_json::{json, Value};
use wrapcrypt_kmip::{KmipClient, LocateQuery, ObjectType};
use wrapped_common::*;

fn write_conf(path: &str, kms: &KmipServer, port: u16) {
    std::fs::write(
        path,
        format!(
            "server = 127.0.0.1:{port}\nca = {}\ncert = {}\nkey = {}\ngroup = db\ntimeout = 10\n",
            kms.path("ca.pem").display(),
            kms.path("client.pem").display(),
            kms.path("client.key").display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn json_of(o: &Out) -> Value {
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o}"))
}

/// luksHeaderBackup's bytes, taken by cryptsetup.
fn cs_backup(s: &Scratch, img: &str, name: &str) -> Vec<u8> {
    let f = s.p(name);
    CS.ok(&["luksHeaderBackup", img, "--header-backup-file", &f]);
    bytes(&f)
}

/// Zeroes the first `len` bytes of `img` (the header and keyslots area).
fn wipe(img: &str, len: usize) {
    let f = std::fs::OpenOptions::new().write(true).open(img).unwrap();
    f.write_all_at(&vec![0u8; len], 0).unwrap();
    f.sync_all().unwrap();
}

fn objects(k: &mut KmipClient, name: String) -> Vec<String> {
    k.locate(&LocateQuery {
        name: Some(name),
        group: Some("db-escrow".into()),
        object_type: Some(ObjectType::OpaqueObject),
        ..LocateQuery::default()
    })
    .unwrap()
}

fn assert_one_line(o: &Out, code: i32, needle: &str) {
    assert_eq!(o.code, code, "{o}");
    assert_eq!(o.stderr.trim().lines().count(), 1, "{o}");
    assert!(o.stderr.contains(needle), "{o}");
}

#[test]
fn header_escrow_round_trip_and_bad_input() {
    let t0 = std::time::Instant::now();
    let mut kms = KmipServer::start("escrow");
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let conf = s.p("kmip.conf");
    write_conf(&conf, &kms, kms.port);
    let kf = s.key("pass", b"escrow passphrase");
    let kf2 = s.key("pass2", b"second escrow passphrase");

    let v1 = s.image("v1.img", 24);
    format(WC, &v1, &kf, FAST);
    let v2 = s.image("v2.img", 24);
    format_waes(&c, &v2, &kf);
    let u1 = WC.ok(&["luksUUID", &v1]).stdout.trim().to_string();
    let u2 = WC.ok(&["luksUUID", &v2]).stdout.trim().to_string();
    let key1 = volume_key(CS, &v1, &kf, &[]);
    let b1 = cs_backup(&s, &v1, "v1.bak");
    let b2 = cs_backup(&s, &v2, "v2.bak");
    let (code, vp2) = c.validate(&v2, &kf);
    assert_eq!(code, 0, "{vp2}");

    // Escrow both in one call.
    let e = json_of(&WC.ok(&[
        "fleet",
        "escrow",
        "--kmip-config",
        &conf,
        "--host",
        "db1",
        "--json",
        &v1,
        &v2,
    ]));
    assert_eq!(e["group"], "db-escrow", "{e}");
    let rows = e["escrowed"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{e}");
    assert_eq!(rows[0]["uuid"], u1.as_str());
    assert_eq!(rows[0]["backup-bytes"], b1.len());
    assert_eq!(rows[1]["backup-bytes"], b2.len());
    // Only the non-zero blocks are stored: the unused keyslots area is not.
    for r in rows {
        assert!(
            r["stored-bytes"].as_u64().unwrap() * 4 < r["backup-bytes"].as_u64().unwrap(),
            "{r}"
        );
    }
    // The waes keyslot alone is 256 B x 4000 stripes: many parts.
    let parts2 = rows[1]["parts"].as_u64().unwrap();
    assert!(parts2 >= 20, "{e}");
    let mut k = KmipClient::connect(&kms.config()).unwrap();
    assert_eq!(objects(&mut k, format!("wrapcrypt-hdr-{u1}")).len(), 1);
    assert_eq!(
        objects(&mut k, format!("wrapcrypt-hdr-{u2}-part")).len() as u64,
        parts2
    );
    let index: Value =
        serde_json::from_slice(&k.get_opaque(rows[0]["index"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(index["host"], "db1", "{index}");
    assert_eq!(index["device"], v1.as_str(), "{index}");
    assert_eq!(
        index["backup-sha256"].as_str().unwrap(),
        sha256_hex(&b1),
        "{index}"
    );

    // v1 loses its header and keyslots: no longer LUKS.
    wipe(&v1, b1.len());
    assert_ne!(CS.run(&["isLuks", &v1]).code, 0);
    // Without a header the volume must be named.
    let before = bytes(&v1);
    let o = WC.run(&["fleet", "restore-header", "--kmip-config", &conf, &v1]);
    assert_one_line(&o, 1, "--uuid");
    // An unknown UUID.
    let o = WC.run(&[
        "fleet",
        "restore-header",
        "--kmip-config",
        &conf,
        "--uuid",
        "00000000-0000-4000-8000-000000000000",
        "--batch-mode",
        &v1,
    ]);
    assert_one_line(&o, 4, "No header escrow");
    assert!(bytes(&v1) == before, "a refused restore changed the device");

    let r = json_of(&WC.ok(&[
        "fleet",
        "restore-header",
        "--kmip-config",
        &conf,
        "--uuid",
        &u1,
        "--batch-mode",
        "--json",
        &v1,
    ]));
    assert_eq!(
        r["escrowed-from"],
        json!({"host": "db1", "device": v1}),
        "{r}"
    );
    assert_same_bytes(&bytes(&v1)[..b1.len()], &b1, "restored v1 header");
    assert_eq!(
        volume_key(CS, &v1, &kf, &[]),
        key1,
        "volume key after restore"
    );
    assert_eq!(test_pass(WC, &v1, &kf, &[]), 0);

    // The waes volume: wiped, restored (its UUID taken from --uuid), validates.
    wipe(&v2, b2.len());
    WC.ok(&[
        "fleet",
        "restore-header",
        "--kmip-config",
        &conf,
        "--uuid",
        &u2,
        "--batch-mode",
        &v2,
    ]);
    assert_same_bytes(&bytes(&v2)[..b2.len()], &b2, "restored v2 header");
    let (code, vp2_after) = c.validate(&v2, &kf);
    assert_eq!(code, 0, "{vp2_after}");
    assert_eq!(
        vp2_after["stored-verification-pattern"], vp2["stored-verification-pattern"],
        "{vp2_after}"
    );
    assert!(!vp2["stored-verification-pattern"].is_null(), "{vp2}");

    // A new keyslot, escrowed again: the earlier index and every earlier
    // part are destroyed, only after the new index is stored.
    let first = objects(&mut k, format!("wrapcrypt-hdr-{u1}"));
    let first_parts = objects(&mut k, format!("wrapcrypt-hdr-{u1}-part"));
    assert_eq!(add_key(WC, &v1, &kf, &kf2, None).code, 0);
    let b1b = cs_backup(&s, &v1, "v1b.bak");
    let e = json_of(&WC.ok(&["fleet", "escrow", "--kmip-config", &conf, "--json", &v1]));
    let replaced: Vec<String> = e["escrowed"][0]["replaced"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    let mut want: Vec<String> = first.iter().chain(&first_parts).cloned().collect();
    want.sort();
    let mut got = replaced.clone();
    got.sort();
    assert_eq!(got, want, "{e}");
    let second = objects(&mut k, format!("wrapcrypt-hdr-{u1}"));
    assert_eq!(second.len(), 1);
    assert_ne!(second, first);
    assert_eq!(
        objects(&mut k, format!("wrapcrypt-hdr-{u1}-part")).len() as u64,
        e["escrowed"][0]["parts"].as_u64().unwrap()
    );
    // Restore without --uuid (the header is readable, an old one would do):
    // the device gets the newest escrow, with both keyslots.
    let stale_img = s.image("v1-stale.img", 24);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&stale_img)
        .unwrap()
        .write_all_at(&b1, 0)
        .unwrap();
    WC.ok(&[
        "fleet",
        "restore-header",
        "--kmip-config",
        &conf,
        "--batch-mode",
        &stale_img,
    ]);
    assert_same_bytes(&bytes(&stale_img)[..b1b.len()], &b1b, "newest escrow");
    assert_eq!(test_pass(CS, &stale_img, &kf2, &[]), 0);

    // A tampered part: a newer index naming a part whose bytes differ from
    // its digest is refused before any write.
    let good: Value = serde_json::from_slice(&k.get_opaque(&second[0]).unwrap()).unwrap();
    let bogus_part = k
        .register_opaque(
            &format!("wrapcrypt-hdr-{u1}-part"),
            &["db-escrow"],
            b"not the backup",
        )
        .unwrap();
    let mut bad = good.clone();
    bad["parts"][0] = bogus_part.clone().into();
    bad["escrowed-at"] = (good["escrowed-at"].as_u64().unwrap() + 10).into();
    k.register_opaque(
        &format!("wrapcrypt-hdr-{u1}"),
        &["db-escrow"],
        bad.to_string().as_bytes(),
    )
    .unwrap();
    wipe(&v1, b1b.len());
    let before = bytes(&v1);
    let o = WC.run(&[
        "fleet",
        "restore-header",
        "--kmip-config",
        &conf,
        "--uuid",
        &u1,
        "--batch-mode",
        &v1,
    ]);
    assert_one_line(&o, 4, "does not match its digest");
    assert!(bytes(&v1) == before, "a damaged escrow changed the device");

    // A device that cannot be read escrows nothing (all are read first).
    let n_before = objects(&mut k, format!("wrapcrypt-hdr-{u2}")).len();
    let o = WC.run(&["fleet", "escrow", "--kmip-config", &conf, &v2, &v1]);
    assert_ne!(o.code, 0, "{o}");
    assert_eq!(o.stderr.trim().lines().count(), 1, "{o}");
    assert_eq!(
        objects(&mut k, format!("wrapcrypt-hdr-{u2}")).len(),
        n_before
    );

    // The key manager down: one line, exit 1, nothing written.
    kms.stop();
    let o = WC.run(&[
        "fleet",
        "restore-header",
        "--kmip-config",
        &conf,
        "--uuid",
        &u1,
        "--batch-mode",
        &v1,
    ]);
    assert_one_line(&o, 1, "unreachable");
    assert!(bytes(&v1) == before);
    kms.restart();
    write_conf(&conf, &kms, kms.port);
    eprintln!("header escrow test: {:.1?}", t0.elapsed());
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

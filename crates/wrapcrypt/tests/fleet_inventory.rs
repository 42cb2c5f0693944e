//! `wrapcrypt fleet register` / `fleet inventory` against a real PyKMIP
//! server (scripts/kmip-server.sh): two simulated hosts (two `--host`
//! names), three volumes (two waes volumes sharing one effective key: an
//! image copy given a new UUID; one aes volume), a header changed after
//! registering (luksAddKey), a master-key change in the custodian. Flags
//! are asserted exactly; the records are looked up in the server with
//! wrapcrypt_kmip directly.

mod common;
#[path = "../../wrapcrypt-kmip/tests/common/mod.rs"]
mod kmip_common;
mod wrapped_common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use kmip_common::KmipServer;
use serde_json::Value;
use wrapcrypt_kmip::{KmipClient, LocateQuery, ObjectType};
use wrapped_common::*;

fn write_conf(path: &Path, kms: &KmipServer, port: u16, group: &str) {
    write_conf_as(path, kms, port, group, "client");
}

fn write_conf_as(path: &Path, kms: &KmipServer, port: u16, group: &str, id: &str) {
    std::fs::write(
        path,
        format!(
            "server = 127.0.0.1:{port}\nca = {}\ncert = {}\nkey = {}\ngroup = {group}\ntimeout = 10\n",
            kms.path("ca.pem").display(),
            kms.path(&format!("{id}.pem")).display(),
            kms.path(&format!("{id}.key")).display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn uuid_of(img: &str) -> String {
    WC.ok(&["luksUUID", img]).stdout.trim().to_string()
}

fn inventory(conf: &str, extra: &[&str]) -> Value {
    let mut args = vec!["fleet", "inventory", "--kmip-config", conf, "--json"];
    args.extend_from_slice(extra);
    let o = WC.ok(&args);
    serde_json::from_str(o.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {o}"))
}

/// uuid -> (flags, header-checked) of an inventory.
fn flags(inv: &Value) -> std::collections::BTreeMap<String, (Vec<String>, bool)> {
    inv["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let f = v["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            (
                v["uuid"].as_str().unwrap().to_string(),
                (f, v["header-checked"].as_bool().unwrap()),
            )
        })
        .collect()
}

fn fl(f: &[&str], checked: bool) -> (Vec<String>, bool) {
    (f.iter().map(|s| s.to_string()).collect(), checked)
}

#[test]
fn fleet_inventory() {
    let t0 = std::time::Instant::now();
    let kms = KmipServer::start("fleet");
    let s = Scratch::new();
    let c = Custodian::new(&s);
    let conf = s.p("kmip.conf");
    write_conf(Path::new(&conf), &kms, kms.port, "web");
    let kf = s.key("pass", b"fleet passphrase");
    let kf2 = s.key("pass2", b"second passphrase");

    // host1: a waes volume. host2: a copy of it with a new UUID (same
    // wrapped key, same VP: one effective key on two volumes) and an aes one.
    let v1 = s.image("v1.img", 20);
    format_waes(&c, &v1, &kf);
    let v2 = s.copy(&v1, "v2.img");
    WC.ok(&[
        "luksUUID",
        "-q",
        "--uuid",
        "5e1f0c2a-0000-4000-8000-00000000f1ee",
        &v2,
    ]);
    let v3 = s.image("v3.img", 20);
    format(WC, &v3, &kf, FAST);
    let (u1, u2, u3) = (uuid_of(&v1), uuid_of(&v2), uuid_of(&v3));
    assert_ne!(u1, u2);

    let o = WC.ok(&[
        "fleet",
        "register",
        "--kmip-config",
        &conf,
        "--host",
        "host1",
        &v1,
    ]);
    assert!(o.stdout.contains(&u1), "{o}");
    let o = WC.ok(&[
        "fleet",
        "register",
        "--kmip-config",
        &conf,
        "--host",
        "host2",
        "--json",
        &v2,
        &v3,
    ]);
    let reg: Value = serde_json::from_str(o.stdout.trim()).unwrap();
    assert_eq!(reg["group"], "web-inventory", "{reg}");
    assert_eq!(reg["registered"].as_array().unwrap().len(), 2, "{reg}");

    // The records really are Opaque Objects in the server.
    let mut k = KmipClient::connect(&kms.config()).unwrap();
    let group = |k: &mut KmipClient| {
        k.locate(&LocateQuery {
            group: Some("web-inventory".into()),
            object_type: Some(ObjectType::OpaqueObject),
            ..LocateQuery::default()
        })
        .unwrap()
    };
    assert_eq!(group(&mut k).len(), 3);
    let by_name = |k: &mut KmipClient, u: &str| {
        k.locate(&LocateQuery {
            name: Some(format!("wrapcrypt-vol-{u}")),
            ..LocateQuery::default()
        })
        .unwrap()
    };
    let first_v1 = by_name(&mut k, &u1);
    assert_eq!(first_v1.len(), 1);
    let rec: Value = serde_json::from_slice(&k.get_opaque(&first_v1[0]).unwrap()).unwrap();
    assert_eq!(rec["host"], "host1");
    assert_eq!(rec["device"], v1.as_str());
    assert_eq!(rec["cipher"], "waes-xts-plain64");
    assert_eq!(rec["provider"], "custodian");
    assert_eq!(rec["header-bytes"], 2 * 16384);
    assert_eq!(
        rec["header-sha256"].as_str().unwrap(),
        sha256_prefix(&v1, 2 * 16384)
    );
    let status: Value =
        serde_json::from_str(c.ok(&["custodian", "status", "--json"]).stdout.trim()).unwrap();
    let mk1 = status["registers"]["CURRENT"].as_str().unwrap().to_string();
    assert_eq!(rec["wrapping-key"], format!("mkvp:{mk1}"), "{rec} {status}");

    // Re-registering replaces the record: one object per name.
    let o = WC.ok(&[
        "fleet",
        "register",
        "--kmip-config",
        &conf,
        "--host",
        "host1",
        &v1,
    ]);
    assert!(o.stdout.contains("replaced"), "{o}");
    let second_v1 = by_name(&mut k, &u1);
    assert_eq!(second_v1.len(), 1);
    assert_ne!(second_v1, first_v1);
    assert_eq!(group(&mut k).len(), 3);

    // host2 changes v3's header behind the inventory's back.
    let o = add_key(WC, &v3, &kf, &kf2, None);
    assert_eq!(o.code, 0, "{o}");

    let inv = inventory(&conf, &["--host", "host2"]);
    assert_eq!(inv["reference"], "most-common", "{inv}");
    assert_eq!(inv["reference-wrapping-key"], format!("mkvp:{mk1}"));
    let want: std::collections::BTreeMap<_, _> = [
        (u1.clone(), fl(&["vp-collision"], false)),
        (u2.clone(), fl(&["vp-collision"], true)),
        (u3.clone(), fl(&["header-changed"], true)),
    ]
    .into_iter()
    .collect();
    assert_eq!(flags(&inv), want, "{inv}");
    let v3rec = inv["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["uuid"] == u3.as_str())
        .unwrap();
    assert!(v3rec["verification-pattern"].is_null());
    assert!(v3rec["wrapping-key"].is_null());
    assert_eq!(v3rec["cipher"], "aes-xts-plain64");

    // host1 checks only its own volume; v3's change is not visible there.
    let inv = inventory(&conf, &["--host", "host1"]);
    let want: std::collections::BTreeMap<_, _> = [
        (u1.clone(), fl(&["vp-collision"], true)),
        (u2.clone(), fl(&["vp-collision"], false)),
        (u3.clone(), fl(&[], false)),
    ]
    .into_iter()
    .collect();
    assert_eq!(flags(&inv), want, "{inv}");

    // A new master key in the custodian: both waes volumes are on the old one.
    c.ok(&["custodian", "load-new-master-key"]);
    c.ok(&["custodian", "set-master-key"]);
    let status: Value =
        serde_json::from_str(c.ok(&["custodian", "status", "--json"]).stdout.trim()).unwrap();
    let mk2 = status["registers"]["CURRENT"].as_str().unwrap().to_string();
    assert_ne!(mk1, mk2);
    let inv = inventory(&conf, &["--host", "host2", "--current-mkvp", &mk2]);
    assert_eq!(inv["reference"], "current-mkvp");
    let want: std::collections::BTreeMap<_, _> = [
        (u1.clone(), fl(&["vp-collision", "old-master-key"], false)),
        (u2.clone(), fl(&["vp-collision", "old-master-key"], true)),
        (u3.clone(), fl(&["header-changed"], true)),
    ]
    .into_iter()
    .collect();
    assert_eq!(flags(&inv), want, "{inv}");

    // The table names the same volumes and flags.
    let o = WC.ok(&[
        "fleet",
        "inventory",
        "--kmip-config",
        &conf,
        "--host",
        "host2",
    ]);
    assert_eq!(o.stdout.lines().count(), 5, "{o}");
    assert!(
        o.stdout.contains("header-changed") && o.stdout.contains(&u3),
        "{o}"
    );

    // A register interrupted between Register and Destroy leaves an older
    // duplicate: the newest record wins, the older id is reported as stale;
    // the next register removes both. A foreign object in the group is skipped.
    let v3id = by_name(&mut k, &u3);
    let mut old: Value = serde_json::from_slice(&k.get_opaque(&v3id[0]).unwrap()).unwrap();
    old["registered-at"] = 1.into();
    old["header-sha256"] = "00".into();
    let name3 = format!("wrapcrypt-vol-{u3}");
    let dup = k
        .register_opaque(&name3, &["web-inventory"], old.to_string().as_bytes())
        .unwrap();
    let junk = k
        .register_opaque("not-a-record", &["web-inventory"], b"junk")
        .unwrap();
    let inv = inventory(&conf, &["--host", "host2", "--current-mkvp", &mk2]);
    assert_eq!(flags(&inv), want, "{inv}");
    assert_eq!(inv["stale"], serde_json::json!([dup]), "{inv}");
    assert_eq!(inv["skipped"][0]["id"], junk.as_str(), "{inv}");
    WC.ok(&[
        "fleet",
        "register",
        "--kmip-config",
        &conf,
        "--host",
        "host2",
        &v3,
    ]);
    assert_eq!(by_name(&mut k, &u3).len(), 1);
    let inv = inventory(&conf, &["--host", "host2", "--current-mkvp", &mk2]);
    assert_eq!(inv["stale"], serde_json::json!([]), "{inv}");
    let v3flags = &flags(&inv)[&u3];
    assert_eq!(v3flags, &fl(&[], true), "re-registered: header known again");
    k.destroy(&junk).unwrap();

    // Bad input: the key manager down (a closed port), a device that is
    // not LUKS, a bad --current-mkvp. One line each, cryptsetup's codes.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = s.p("down.conf");
    write_conf(Path::new(&down), &kms, port, "web");
    let o = WC.run(&["fleet", "inventory", "--kmip-config", &down]);
    assert_eq!(o.code, 1, "{o}");
    assert_eq!(o.stderr.trim().lines().count(), 1, "{o}");
    assert!(o.stderr.contains("unreachable"), "{o}");
    let plain = s.image("plain.img", 4);
    let o = WC.run(&["fleet", "register", "--kmip-config", &conf, &plain]);
    assert_ne!(o.code, 0, "{o}");
    assert_eq!(o.stderr.trim().lines().count(), 1, "{o}");
    assert_eq!(
        group(&mut k).len(),
        3,
        "nothing registered for a bad device"
    );
    let o = WC.run(&[
        "fleet",
        "inventory",
        "--kmip-config",
        &conf,
        "--current-mkvp",
        "xyz",
    ]);
    assert_eq!(o.code, 1, "{o}");
    // A client certificate of another CA: refused, one line.
    let rogue = s.p("rogue.conf");
    write_conf_as(Path::new(&rogue), &kms, kms.port, "web", "rogue");
    let o = WC.run(&["fleet", "inventory", "--kmip-config", &rogue]);
    eprintln!("rogue certificate: exit {} {}", o.code, o.stderr.trim());
    assert_eq!(o.code, 2, "{o}");
    assert_eq!(o.stderr.trim().lines().count(), 1, "{o}");
    // Another certificate identity (CN) sees none of these records: PyKMIP
    // objects belong to the CN that registered them (docs/fleet.md).
    let other = s.p("other.conf");
    write_conf_as(Path::new(&other), &kms, kms.port, "web", "other");
    let inv = inventory(&other, &[]);
    assert_eq!(inv["volumes"].as_array().unwrap().len(), 0, "{inv}");
    eprintln!("fleet_inventory: {:.1?}", t0.elapsed());
}

/// sha256 (hex) of a file's first `len` bytes.
fn sha256_prefix(path: &str, len: usize) -> String {
    use sha2::{Digest, Sha256};
    let b = std::fs::read(path).unwrap();
    hex::encode(Sha256::digest(&b[..len]))
}

//! The KMIP client against a real PyKMIP server (scripts/kmip-server.sh).

mod common;

use std::time::Instant;

use common::KmipServer;
use wrapcrypt_kmip::ops::attr;
use wrapcrypt_kmip::{
    CryptographicAlgorithm, KeySpec, KmipClient, KmipError, LocateQuery, ObjectType, Operation,
    ResultReason, RevocationReasonCode, State,
};

fn state(c: &mut KmipClient, id: &str) -> State {
    c.get_attributes(id, &[attr::STATE])
        .unwrap()
        .state()
        .expect("State attribute")
}

#[test]
fn key_lifecycle_create_activate_locate_get_revoke_destroy() {
    let server = KmipServer::start("lifecycle");
    let t = Instant::now();
    let mut c = KmipClient::connect(&server.config()).expect("connect with the client certificate");
    eprintln!("lifecycle: TLS connect took {:.2?}", t.elapsed());

    let t = Instant::now();
    let id = c
        .create(&KeySpec::aes256_kek(
            "wrapcrypt-mk-web-1",
            &["wrapcrypt:web", "wrapcrypt:all"],
        ))
        .expect("Create");
    eprintln!("lifecycle: Create took {:.2?}", t.elapsed());
    assert_eq!(state(&mut c, &id), State::PreActive);
    c.activate(&id).expect("Activate");

    // Locate by name, by group, by group and state.
    let by_name = c
        .locate(&LocateQuery {
            name: Some("wrapcrypt-mk-web-1".into()),
            ..LocateQuery::default()
        })
        .unwrap();
    assert_eq!(by_name, vec![id.clone()]);
    let other = c
        .create(&KeySpec::aes256_kek("wrapcrypt-mk-db-1", &["wrapcrypt:db"]))
        .unwrap();
    for (group, want) in [
        ("wrapcrypt:web", vec![id.clone()]),
        ("wrapcrypt:db", vec![other.clone()]),
    ] {
        let got = c
            .locate(&LocateQuery {
                group: Some(group.into()),
                ..LocateQuery::default()
            })
            .unwrap();
        assert_eq!(got, want, "group {group}");
    }
    let active_web = c
        .locate(&LocateQuery {
            group: Some("wrapcrypt:all".into()),
            state: Some(State::Active),
            object_type: Some(ObjectType::SymmetricKey),
            ..LocateQuery::default()
        })
        .unwrap();
    assert_eq!(active_web, vec![id.clone()]);
    assert!(c
        .locate(&LocateQuery {
            name: Some("no-such-key".into()),
            ..LocateQuery::default()
        })
        .unwrap()
        .is_empty());

    // Get: 32 bytes, into locked memory, the same each time.
    let t = Instant::now();
    let key = c.get_symmetric_key(&id, 32).expect("Get");
    eprintln!("lifecycle: Get took {:.2?}", t.elapsed());
    assert_eq!(key.len(), 32);
    assert!(key.expose_secret().iter().any(|&b| b != 0));
    let again = c.get_symmetric_key(&id, 32).unwrap();
    assert!(key.ct_eq(again.expose_secret()));
    let other_key = c.get_symmetric_key(&other, 32).unwrap();
    assert!(!key.ct_eq(other_key.expose_secret()));
    assert_eq!(format!("{key:?}"), "SecretBytes([REDACTED]; 32 bytes)");
    assert!(key.is_locked(), "the key is in mlocked memory");
    // Asking for another length is refused, naming the object.
    let e = c.get_symmetric_key(&id, 16).unwrap_err();
    assert!(matches!(e, KmipError::WrongObject { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!("KMIP object {id} is 256 bits long, not 128")
    );

    // Get Attributes.
    let a = c.get_attributes(&id, &[]).expect("Get Attributes");
    assert_eq!(a.id, id);
    assert_eq!(a.state(), Some(State::Active));
    assert_eq!(a.object_type(), Some(ObjectType::SymmetricKey));
    assert_eq!(a.algorithm(), Some(CryptographicAlgorithm::Aes));
    assert_eq!(a.length(), Some(256));
    assert_eq!(a.usage_mask(), Some(0x04 | 0x08 | 0x10 | 0x20));
    assert_eq!(a.names(), vec!["wrapcrypt-mk-web-1".to_owned()]);
    let mut groups = a.groups();
    groups.sort();
    assert_eq!(
        groups,
        vec!["wrapcrypt:all".to_owned(), "wrapcrypt:web".to_owned()]
    );

    // An Active key cannot be destroyed.
    let e = c.destroy(&id).unwrap_err();
    assert_eq!(e.reason(), Some(ResultReason::PermissionDenied), "{e}");
    eprintln!("lifecycle: destroy of an active key: {e}");

    // Revoke: Cessation Of Operation deactivates, Key Compromise compromises.
    c.revoke(
        &id,
        RevocationReasonCode::CessationOfOperation,
        Some("master key rotated"),
    )
    .expect("Revoke");
    assert_eq!(state(&mut c, &id), State::Deactivated);
    c.revoke(&other, RevocationReasonCode::KeyCompromise, Some("test"))
        .expect("Revoke (compromise)");
    assert_eq!(state(&mut c, &other), State::Compromised);
    // A Pre-Active key cannot be revoked for a reason other than compromise.
    let pre = c
        .create(&KeySpec::aes256_kek("wrapcrypt-pre", &[]))
        .unwrap();
    let e = c
        .revoke(&pre, RevocationReasonCode::Superseded, None)
        .unwrap_err();
    assert_eq!(e.reason(), Some(ResultReason::IllegalOperation), "{e}");

    // Destroy, then Get of the destroyed and of an unknown id.
    for x in [&id, &other, &pre] {
        c.destroy(x).expect("Destroy");
    }
    for x in [id.as_str(), "424242"] {
        let e = c.get_symmetric_key(x, 32).unwrap_err();
        match &e {
            KmipError::Operation {
                op,
                reason,
                message,
            } => {
                assert_eq!(*op, Operation::Get);
                assert_eq!(*reason, ResultReason::ItemNotFound);
                assert!(message.contains(x), "{message}");
            }
            e => panic!("expected Item Not Found, got {e}"),
        }
        eprintln!("lifecycle: get of {x}: {e}");
        assert!(!e.to_string().contains('\n'));
    }
    // The session survives failed operations.
    assert!(c.locate(&LocateQuery::default()).unwrap().is_empty());
}

#[test]
fn objects_belong_to_the_certificate_identity() {
    let server = KmipServer::start("identity");
    let mut owner = KmipClient::connect(&server.config()).unwrap();
    let id = owner.create(&KeySpec::aes256_kek("mine", &["g"])).unwrap();
    owner.activate(&id).unwrap();

    // PyKMIP's default policy: another certificate CN cannot see the object.
    let mut other = KmipClient::connect(&server.config_as("other")).unwrap();
    let e = other.get_symmetric_key(&id, 32).unwrap_err();
    eprintln!("identity: get by another identity: {e}");
    assert!(
        matches!(
            e.reason(),
            Some(ResultReason::PermissionDenied | ResultReason::ItemNotFound)
        ),
        "{e}"
    );
    assert!(other
        .locate(&LocateQuery {
            group: Some("g".into()),
            ..LocateQuery::default()
        })
        .unwrap()
        .is_empty());
    assert_eq!(owner.get_symmetric_key(&id, 32).unwrap().len(), 32);
}

#[test]
fn clients_without_a_valid_certificate_are_refused() {
    let server = KmipServer::start("refused");

    // A client certificate from another CA: the TLS handshake fails.
    let mut cfg = server.config();
    cfg.identity = Some(server.identity("rogue"));
    let r = KmipClient::connect(&cfg).and_then(|mut c| c.locate(&LocateQuery::default()));
    let e = r.unwrap_err();
    eprintln!("refused: rogue CA: {e}");
    assert!(
        matches!(e, KmipError::Tls { .. } | KmipError::Io { .. }),
        "{e}"
    );

    // No client certificate at all.
    let r = KmipClient::connect(&server.config_without_certificate())
        .and_then(|mut c| c.locate(&LocateQuery::default()));
    let e = r.unwrap_err();
    eprintln!("refused: no certificate: {e}");
    assert!(
        matches!(e, KmipError::Tls { .. } | KmipError::Io { .. }),
        "{e}"
    );

    // Signed by the right CA but without the clientAuth extended key usage:
    // the server's OpenSSL refuses it in the handshake (PyKMIP's own check
    // for the usage, after the handshake, is never reached).
    let e = KmipClient::connect(&server.config_as("noeku"))
        .and_then(|mut c| c.locate(&LocateQuery::default()))
        .unwrap_err();
    eprintln!("refused: no clientAuth usage: {e}");
    assert!(
        matches!(&e, KmipError::Tls { detail, .. } if detail.contains("unsupported certificate")),
        "{e}"
    );

    // An expired client certificate.
    let mut cfg = server.config();
    cfg.identity = Some(server.identity("expired"));
    let e = KmipClient::connect(&cfg)
        .and_then(|mut c| c.locate(&LocateQuery::default()))
        .unwrap_err();
    eprintln!("refused: expired certificate: {e}");
    assert!(
        matches!(&e, KmipError::Tls { detail, .. } if detail.contains("certificate expired")),
        "{e}"
    );

    // The client does not trust a server outside its CA bundle.
    let mut cfg = server.config();
    cfg.ca = server.path("rogue-ca.pem");
    let e = KmipClient::connect(&cfg).unwrap_err();
    eprintln!("refused: untrusted server: {e}");
    assert!(
        matches!(&e, KmipError::Tls { detail, .. } if detail.contains("server certificate")),
        "{e}"
    );

    // A server that is down.
    let mut cfg = server.config();
    cfg.port = 1;
    let e = KmipClient::connect(&cfg).unwrap_err();
    assert!(matches!(e, KmipError::Connect { .. }), "{e}");

    // After all that, the real client still works.
    let mut c = KmipClient::connect(&server.config()).unwrap();
    assert!(c.locate(&LocateQuery::default()).unwrap().is_empty());
}

#[test]
fn aes_gcm_encrypt_decrypt_in_the_key_manager() {
    let server = KmipServer::start("gcm");
    let mut c = KmipClient::connect(&server.config()).unwrap();
    let id = c
        .create(&KeySpec::aes256_kek("kek-gcm", &["wrapcrypt:gcm"]))
        .unwrap();

    // A Pre-Active key cannot be used.
    let e = c.encrypt_gcm(&id, &[1; 64], b"vp").unwrap_err();
    assert_eq!(e.reason(), Some(ResultReason::PermissionDenied), "{e}");
    c.activate(&id).unwrap();

    let volume_key = [0x5Au8; 64];
    let aad = b"waes-xts-plain64 uuid=0f0e vp=00ff";
    let t = Instant::now();
    let sealed = c.encrypt_gcm(&id, &volume_key, aad).expect("Encrypt");
    eprintln!("gcm: Encrypt took {:.2?}", t.elapsed());
    assert_eq!(sealed.iv.len(), 12);
    assert_eq!(sealed.tag.len(), 16);
    assert_eq!(sealed.ciphertext.len(), 64);
    assert_ne!(sealed.ciphertext, volume_key.to_vec());

    // The server's AES-GCM is the real one: check it with the key fetched
    // from the server and Python's `cryptography` (OpenSSL).
    let key = c.get_symmetric_key(&id, 32).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys;from cryptography.hazmat.primitives.ciphers.aead import AESGCM;\
             k,iv,ct,aad=[bytes.fromhex(x) for x in sys.stdin.read().split()];\
             print(AESGCM(k).decrypt(iv,ct,aad).hex())",
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            // The key goes through a pipe, never argv or the environment.
            let input = format!(
                "{} {} {}{} {}",
                hex::encode(key.expose_secret()),
                hex::encode(&sealed.iv),
                hex::encode(&sealed.ciphertext),
                hex::encode(&sealed.tag),
                hex::encode(aad)
            );
            ch.stdin.take().unwrap().write_all(input.as_bytes())?;
            ch.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        hex::encode(volume_key)
    );

    let t = Instant::now();
    let clear = c.decrypt_gcm(&id, &sealed, aad).expect("Decrypt");
    eprintln!("gcm: Decrypt took {:.2?}", t.elapsed());
    assert_eq!(clear.expose_secret(), &volume_key);

    // Wrong AAD, wrong tag: refused by the key manager.
    let e = c.decrypt_gcm(&id, &sealed, b"other volume").unwrap_err();
    eprintln!("gcm: decrypt with the wrong AAD: {e}");
    assert!(
        matches!(
            e,
            KmipError::Operation {
                op: Operation::Decrypt,
                ..
            }
        ),
        "{e}"
    );
    let mut bad = sealed.clone();
    bad.tag[0] ^= 1;
    assert!(c.decrypt_gcm(&id, &bad, aad).is_err());

    // Once Deactivated, the key no longer decrypts.
    c.revoke(&id, RevocationReasonCode::Superseded, None)
        .unwrap();
    let e = c.decrypt_gcm(&id, &sealed, aad).unwrap_err();
    assert_eq!(e.reason(), Some(ResultReason::PermissionDenied), "{e}");
    // The session goes on with KMIP 1.2 requests after 1.4 ones.
    assert_eq!(state(&mut c, &id), State::Deactivated);

    // Round trips: 50 Gets on one connection.
    let id2 = c.create(&KeySpec::aes256_kek("kek-rt", &[])).unwrap();
    c.activate(&id2).unwrap();
    let t = Instant::now();
    for _ in 0..50 {
        c.get_symmetric_key(&id2, 32).unwrap();
    }
    eprintln!(
        "gcm: one Get round trip: {:.2?} (mean of 50)",
        t.elapsed() / 50
    );
}

#[test]
fn batches_run_in_one_round_trip() {
    let server = KmipServer::start("batch");
    let mut c = KmipClient::connect(&server.config()).unwrap();

    // Create + Get through the ID Placeholder: one message.
    let before = c.round_trips();
    let (id, key) = c
        .create_and_get(&KeySpec::aes256_kek("mk-batch", &["wrapcrypt:batch"]))
        .unwrap_or_else(|e| panic!("Create + Get: {e}\n{}", server.log()));
    assert_eq!(c.round_trips() - before, 1);
    assert_eq!(state(&mut c, &id), State::PreActive);
    assert!(key.ct_eq(c.get_symmetric_key(&id, 32).unwrap().expose_secret()));

    // PyKMIP quirk: its Activate parser requires the Unique Identifier, so
    // Create + Activate cannot share a message through the placeholder.
    let e = c
        .call_batch(vec![
            (
                Operation::Create,
                wrapcrypt_kmip::ops::create(&KeySpec::aes256_kek("x", &[])),
            ),
            (Operation::Activate, Vec::new()),
        ])
        .unwrap_err();
    assert_eq!(e.reason(), Some(ResultReason::InvalidMessage), "{e}");

    let ids: Vec<String> = (0..20)
        .map(|i| {
            let id = c
                .create(&KeySpec::aes256_kek(&format!("mk-{i}"), &[]))
                .unwrap();
            c.activate(&id).unwrap();
            id
        })
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let before = c.round_trips();
    let t = Instant::now();
    let keys = c.get_symmetric_keys(&refs, 32).expect("batched Get");
    eprintln!(
        "batch: 20 Gets in one message took {:.2?} ({} round trip)",
        t.elapsed(),
        c.round_trips() - before
    );
    assert_eq!(c.round_trips() - before, 1);
    assert_eq!(keys.len(), 20);
    for (k, id) in keys.iter().zip(&ids) {
        let k = k.as_ref().unwrap_or_else(|e| panic!("Get {id}: {e}"));
        assert_eq!(k.len(), 32);
        assert!(k.ct_eq(c.get_symmetric_key(id, 32).unwrap().expose_secret()));
    }

    // A failure stops the batch: the items after it are reported as skipped.
    let r = c
        .get_symmetric_keys(&[&ids[0], "999999", &ids[1]], 32)
        .unwrap();
    assert!(r[0].is_ok());
    assert_eq!(
        r[1].as_ref().unwrap_err().reason(),
        Some(ResultReason::ItemNotFound)
    );
    let e = r[2].as_ref().unwrap_err();
    assert!(
        matches!(e, KmipError::Skipped { op: Operation::Get }),
        "{e}"
    );
    eprintln!("batch: after a failed item: {e}");
}

#[test]
fn opaque_objects_and_wrong_object_types() {
    let server = KmipServer::start("opaque");
    let mut c = KmipClient::connect(&server.config()).unwrap();

    // An escrowed blob (a header backup, say) as an Opaque Object.
    let blob: Vec<u8> = (0..65_536u32).map(|i| (i * 7 + 3) as u8).collect();
    let t = Instant::now();
    let id = c
        .register_opaque("hdr-0f0e", &["wrapcrypt:web"], &blob)
        .expect("Register");
    eprintln!("opaque: Register of 64 KiB took {:.2?}", t.elapsed());
    let t = Instant::now();
    assert_eq!(c.get_opaque(&id).expect("Get opaque"), blob);
    eprintln!("opaque: Get of 64 KiB took {:.2?}", t.elapsed());
    let a = c.get_attributes(&id, &[]).unwrap();
    assert_eq!(a.object_type(), Some(ObjectType::OpaqueObject));
    assert_eq!(a.names(), vec!["hdr-0f0e".to_owned()]);
    assert_eq!(a.groups(), vec!["wrapcrypt:web".to_owned()]);
    let found = c
        .locate(&LocateQuery {
            group: Some("wrapcrypt:web".into()),
            object_type: Some(ObjectType::OpaqueObject),
            ..LocateQuery::default()
        })
        .unwrap();
    assert_eq!(found, vec![id.clone()]);

    // An object of the wrong type: one line naming the object and both types.
    let e = c.get_symmetric_key(&id, 32).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("KMIP object {id} is of type Opaque Object, not Symmetric Key")
    );
    let key = c.create(&KeySpec::aes256_kek("k", &[])).unwrap();
    let e = c.get_opaque(&key).unwrap_err();
    assert!(matches!(e, KmipError::WrongObject { .. }), "{e}");

    c.destroy(&id).unwrap();
}

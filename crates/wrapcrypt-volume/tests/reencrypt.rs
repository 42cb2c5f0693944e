//! The reencryption engine through the library API, without cryptsetup:
//! init + resume of a key change moves every sector to the new key (checked
//! with the sector engine under both keys), a header edited after init
//! (backup segment changed, the verification digest left as it was) is
//! refused before any data moves, and a second init is refused.

use wrapcrypt_format::luks2::SegmentSize;
use wrapcrypt_secret::SecretBytes;
use wrapcrypt_sector::{new_soft_cipher, CipherSpec};
use wrapcrypt_volume::format::{format_luks2, FormatParams};
use wrapcrypt_volume::reencrypt::{self, InitOptions, InitResilience, ReencryptError};
use wrapcrypt_volume::{PbkdfOptions, Volume};

const PASS: &[u8] = b"library reencrypt test";
const DATA_OFFSET: u64 = 16 << 20;
const DATA: usize = 2 << 20;

fn fast() -> PbkdfOptions {
    PbkdfOptions {
        kind: Some("pbkdf2".into()),
        force_iterations: Some(1000),
        ..Default::default()
    }
}

/// A formatted image with `DATA` bytes of known plaintext; returns the
/// volume key and the plaintext.
fn volume(dir: &tempfile::TempDir) -> (std::path::PathBuf, SecretBytes, Vec<u8>) {
    let path = dir.path().join("v.img");
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(DATA_OFFSET + DATA as u64))
        .unwrap();
    let key = SecretBytes::random(64).unwrap();
    let params = FormatParams {
        pbkdf: fast(),
        sector_size: Some(4096),
        ..Default::default()
    };
    drop(format_luks2(&path, None, &params, &key, PASS).unwrap());
    let plain: Vec<u8> = (0..DATA).map(|i| (i * 7 + i / 4096) as u8).collect();
    let c = new_soft_cipher(&CipherSpec::parse("aes-xts-plain64").unwrap(), &key, 4096).unwrap();
    let mut buf = plain.clone();
    c.encrypt(0, &mut buf).unwrap();
    let mut img = std::fs::read(&path).unwrap();
    img[DATA_OFFSET as usize..].copy_from_slice(&buf);
    std::fs::write(&path, img).unwrap();
    (path, key, plain)
}

fn init_opts() -> InitOptions<'static> {
    InitOptions {
        passphrase: PASS,
        keyslot: None,
        cipher: None,
        key_size: None,
        sector_size: None,
        resilience: InitResilience::Checksum {
            hash: "sha256".into(),
        },
        pbkdf: fast(),
        new_key: None,
        more_keyslots: vec![],
        new_tokens: vec![],
    }
}

#[test]
fn init_and_resume_move_every_sector_to_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let (path, old_key, plain) = volume(&dir);
    let mut vol = Volume::open(&path, None, true).unwrap();
    let keys = reencrypt::init(&mut vol, &init_opts()).unwrap();
    assert!(matches!(
        reencrypt::init(&mut vol, &init_opts()),
        Err(ReencryptError::InReencryption)
    ));
    let new_key = SecretBytes::copy_from(keys.new.as_ref().unwrap().expose_secret());
    assert!(!new_key.ct_eq(old_key.expose_secret()));
    let done = reencrypt::resume(
        &mut vol,
        &keys,
        reencrypt::ResumeOptions {
            hotzone_size: Some(512 << 10),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!((done.bytes, done.steps), (DATA as u64, 4));
    drop(vol);
    let vol = Volume::open(&path, None, false).unwrap();
    assert!(reencrypt::state(&vol).unwrap().is_none());
    let u = vol.unlock(PASS, None, true).unwrap();
    assert!(u.key.ct_eq(new_key.expose_secret()));
    let img = std::fs::read(&path).unwrap();
    let mut data = img[DATA_OFFSET as usize..].to_vec();
    let c = new_soft_cipher(
        &CipherSpec::parse("aes-xts-plain64").unwrap(),
        &new_key,
        4096,
    )
    .unwrap();
    c.decrypt(0, &mut data).unwrap();
    assert!(data == plain, "every sector under the new key");
}

#[test]
fn edited_metadata_is_refused_before_data_moves() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = volume(&dir);
    let mut vol = Volume::open(&path, None, true).unwrap();
    let keys = reencrypt::init(&mut vol, &init_opts()).unwrap();
    // Point the final layout at another sector size, keeping the digest.
    let mut h = vol.luks2_header().unwrap().clone();
    let fin = h
        .meta
        .segments
        .values_mut()
        .find(|s| s.has_flag("backup-final"))
        .unwrap();
    fin.sector_size = 512;
    assert_eq!(fin.size, SegmentSize::Dynamic);
    vol.write_luks2(h).unwrap();
    let before = std::fs::read(&path).unwrap();
    let e = reencrypt::resume(&mut vol, &keys, Default::default()).unwrap_err();
    assert!(
        e.to_string().contains("Reencryption metadata is invalid."),
        "{e}"
    );
    assert!(std::fs::read(&path).unwrap() == before, "nothing written");

    // Unlocking with a wrong passphrase finds no key.
    assert!(reencrypt::unlock_keys(&vol, b"wrong", None).is_err());
}

//! Any bytes as a device prefix: `Luks2Header::parse` must not panic, and a
//! header it accepts must encode to copies that parse back to the same header.
//!
//! The first input byte chooses whether the checksums of both copies are
//! re-sealed before parsing: without that, almost every mutation stops at
//! the checksum and the JSON behind it is never reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wrapcrypt_format::luks2::{binary, has_magic, Copy, Luks2Header, METADATA_SIZES};

fn hdr_size_at(buf: &[u8], off: usize) -> Option<usize> {
    let b = buf.get(off + 8..off + 16)?;
    let hs = u64::from_be_bytes(b.try_into().ok()?);
    METADATA_SIZES
        .contains(&hs)
        .then_some(hs as usize)
        .filter(|&hs| off + hs <= buf.len())
}

fn reseal(buf: &mut [u8]) {
    let primary = hdr_size_at(buf, 0);
    // Secondaries first: a primary whose size is damaged may span them.
    for off in METADATA_SIZES.map(|s| s as usize) {
        if buf.get(off..).is_some_and(has_magic) {
            if let Some(hs) = hdr_size_at(buf, off) {
                let _ = binary::seal("sha256", &mut buf[off..off + hs]);
            }
        }
    }
    if let Some(hs) = primary.filter(|_| has_magic(buf)) {
        let _ = binary::seal("sha256", &mut buf[..hs]);
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    let mut buf = data.to_vec();
    if mode & 1 == 1 {
        reseal(&mut buf);
    }
    let Ok(loaded) = Luks2Header::parse(&buf) else {
        return;
    };
    let h = loaded.header;
    let mut enc = h.encode_copy(Copy::Primary).expect("encode primary");
    enc.extend(h.encode_copy(Copy::Secondary).expect("encode secondary"));
    let again = Luks2Header::parse(&enc).expect("re-encoded header parses");
    assert_eq!(again.needs_repair, None, "re-encoded copies disagree");
    assert_eq!(again.header, h, "re-encoded header decodes differently");
});

//! Shared by the memory-proof tests: AES-256 key schedules computed
//! independently of the engine (FIPS-197 key expansion, plus the
//! equivalent-inverse-cipher schedule that AES-NI decryption uses), and
//! scanners for process memory and core files.

#![allow(dead_code)]

use std::io::{Read, Seek, SeekFrom};

fn sbox() -> [u8; 256] {
    // Computed from the field inverse and the affine map (FIPS-197 §5.1.1).
    let mut s = [0u8; 256];
    let mut p: u8 = 1;
    let mut q: u8 = 1;
    loop {
        p = p ^ (p << 1) ^ if p & 0x80 != 0 { 0x1b } else { 0 };
        q ^= q << 1;
        q ^= q << 2;
        q ^= q << 4;
        if q & 0x80 != 0 {
            q ^= 0x09;
        }
        let x = q ^ q.rotate_left(1) ^ q.rotate_left(2) ^ q.rotate_left(3) ^ q.rotate_left(4);
        s[p as usize] = x ^ 0x63;
        if p == 1 {
            break;
        }
    }
    s[0] = 0x63;
    s
}

fn xtime(b: u8) -> u8 {
    (b << 1) ^ if b & 0x80 != 0 { 0x1b } else { 0 }
}

fn gmul(mut a: u8, mut b: u8) -> u8 {
    let mut r = 0;
    while b != 0 {
        if b & 1 != 0 {
            r ^= a;
        }
        a = xtime(a);
        b >>= 1;
    }
    r
}

/// The 15 round keys of AES-256 (240 bytes).
pub fn aes256_round_keys(key: &[u8]) -> Vec<[u8; 16]> {
    assert_eq!(key.len(), 32);
    let s = sbox();
    let mut w: Vec<[u8; 4]> = key.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
    let mut rcon: u8 = 1;
    for i in 8..60 {
        let mut t = w[i - 1];
        if i % 8 == 0 {
            t = [
                s[t[1] as usize] ^ rcon,
                s[t[2] as usize],
                s[t[3] as usize],
                s[t[0] as usize],
            ];
            rcon = xtime(rcon);
        } else if i % 8 == 4 {
            t = [
                s[t[0] as usize],
                s[t[1] as usize],
                s[t[2] as usize],
                s[t[3] as usize],
            ];
        }
        let p = w[i - 8];
        w.push([p[0] ^ t[0], p[1] ^ t[1], p[2] ^ t[2], p[3] ^ t[3]]);
    }
    w.chunks(4)
        .map(|c| {
            let mut r = [0u8; 16];
            for (j, word) in c.iter().enumerate() {
                r[4 * j..4 * j + 4].copy_from_slice(word);
            }
            r
        })
        .collect()
}

/// InvMixColumns of a round key: the middle round keys of the equivalent
/// inverse cipher (what AESIMC produces for AES-NI decryption).
pub fn inv_mix_columns(rk: &[u8; 16]) -> [u8; 16] {
    let mut o = [0u8; 16];
    for c in 0..4 {
        let a = &rk[4 * c..4 * c + 4];
        o[4 * c] = gmul(a[0], 14) ^ gmul(a[1], 11) ^ gmul(a[2], 13) ^ gmul(a[3], 9);
        o[4 * c + 1] = gmul(a[0], 9) ^ gmul(a[1], 14) ^ gmul(a[2], 11) ^ gmul(a[3], 13);
        o[4 * c + 2] = gmul(a[0], 13) ^ gmul(a[1], 9) ^ gmul(a[2], 14) ^ gmul(a[3], 11);
        o[4 * c + 3] = gmul(a[0], 11) ^ gmul(a[1], 13) ^ gmul(a[2], 9) ^ gmul(a[3], 14);
    }
    o
}

/// Needles for an AES-256-XTS key (64 bytes): both halves, each half's
/// round keys 1..=14 and their inverse-cipher forms. Each needle is a
/// 16-byte string; finding any one of them counts as a leak.
pub fn xts512_needles(key: &[u8]) -> Vec<(String, Vec<u8>)> {
    assert_eq!(key.len(), 64);
    let mut v = Vec::new();
    for (h, half) in key.chunks(32).enumerate() {
        v.push((format!("K{}[0..16]", h + 1), half[..16].to_vec()));
        v.push((format!("K{}[16..32]", h + 1), half[16..].to_vec()));
        let rks = aes256_round_keys(half);
        for (i, rk) in rks.iter().enumerate().skip(2) {
            v.push((format!("K{} round key {i}", h + 1), rk.to_vec()));
            if i < 14 {
                v.push((
                    format!("K{} inverse round key {i}", h + 1),
                    inv_mix_columns(rk).to_vec(),
                ));
            }
        }
    }
    v
}

/// Every AES-256 key whose whole FIPS-197 schedule (240 bytes, round keys
/// in order) lies in `hay` at a 4-byte-aligned offset: how a test learns a
/// key that only its holder has (a provider-generated key), from the
/// holder's memory. A quick test of the first expanded word rejects almost
/// every offset before the full schedule is computed.
pub fn aes256_schedules(hay: &[u8]) -> Vec<[u8; 32]> {
    let s = sbox();
    let mut out: Vec<[u8; 32]> = Vec::new();
    let mut o = 0;
    while o + 240 <= hay.len() {
        let k = &hay[o..o + 32];
        let w7 = &k[28..32];
        let w8 = [
            k[0] ^ s[w7[1] as usize] ^ 0x01,
            k[1] ^ s[w7[2] as usize],
            k[2] ^ s[w7[3] as usize],
            k[3] ^ s[w7[0] as usize],
        ];
        if hay[o + 32..o + 36] == w8 {
            let rks = aes256_round_keys(k);
            let whole = rks
                .iter()
                .enumerate()
                .all(|(i, rk)| hay[o + 16 * i..o + 16 * i + 16] == rk[..]);
            let key: [u8; 32] = k.try_into().unwrap();
            if whole && !out.contains(&key) {
                out.push(key);
            }
        }
        o += 4;
    }
    out
}

/// Counts occurrences of each needle in `hay`.
pub fn find(hay: &[u8], needles: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut hits = Vec::new();
    for (name, n) in needles {
        if memchr::memmem::find(hay, n).is_some() {
            hits.push(name.clone());
        }
    }
    hits
}

/// All readable memory of a live process, from /proc/PID/maps + mem.
pub fn process_memory(pid: u32) -> Vec<u8> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("mem");
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let range = f.next().unwrap();
        let perms = f.next().unwrap();
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        let mut buf = vec![0u8; (b - a) as usize];
        if mem.seek(SeekFrom::Start(a)).is_ok() && mem.read_exact(&mut buf).is_ok() {
            out.extend_from_slice(&buf);
        }
    }
    out
}

/// For a diagnostic: the process mapping (a /proc/PID/maps line) that a
/// byte offset of an ELF64 core file belongs to.
pub fn core_vaddr_mapping(core: &[u8], off: usize, maps: &str) -> String {
    let u16at = |o: usize| u16::from_le_bytes(core[o..o + 2].try_into().unwrap()) as usize;
    let u64at = |o: usize| u64::from_le_bytes(core[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64at(0x20) as usize, u16at(0x36), u16at(0x38));
    for i in 0..phnum {
        let p = phoff + i * phentsize;
        let (ptype, poff, vaddr, filesz) = (
            u32::from_le_bytes(core[p..p + 4].try_into().unwrap()),
            u64at(p + 8),
            u64at(p + 16),
            u64at(p + 32),
        );
        if ptype == 1 && (poff as usize..(poff + filesz) as usize).contains(&off) {
            let va = vaddr + (off as u64 - poff);
            let line = maps.lines().find(|l| {
                let r = l.split_whitespace().next().unwrap_or("0-0");
                let (a, b) = r.split_once('-').unwrap_or(("0", "0"));
                (u64::from_str_radix(a, 16).unwrap_or(0)..u64::from_str_radix(b, 16).unwrap_or(0))
                    .contains(&va)
            });
            return format!("vaddr {va:#x} in {}", line.unwrap_or("(no mapping)"));
        }
    }
    "not in a load segment".into()
}

#[test]
fn schedule_matches_fips197_appendix_a3() {
    // FIPS-197 Appendix A.3: AES-256 key expansion, last round key.
    let key: Vec<u8> = (0..32)
        .map(|i| {
            [
                0x60, 0x3d, 0xeb, 0x10, 0x15, 0xca, 0x71, 0xbe, 0x2b, 0x73, 0xae, 0xf0, 0x85, 0x7d,
                0x77, 0x81, 0x1f, 0x35, 0x2c, 0x07, 0x3b, 0x61, 0x08, 0xd7, 0x2d, 0x98, 0x10, 0xa3,
                0x09, 0x14, 0xdf, 0xf4,
            ][i]
        })
        .collect();
    let rk = aes256_round_keys(&key);
    assert_eq!(rk.len(), 15);
    assert_eq!(hex::encode(rk[14]), "fe4890d1e6188d0b046df344706c631e");
}

//! Metadata locking against cryptsetup: many luksAddKey processes of both
//! tools on one image at once, with readers testing a passphrase meanwhile.
//! wrapcrypt and cryptsetup both flock the image file (exclusive for
//! writers, shared for readers), so every change must land and no reader
//! may see a half-written header.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;

const ROUNDS: usize = 3;
const WRAPCRYPT_WRITERS: u32 = 12;
const CRYPTSETUP_WRITERS: u32 = 4;

/// cryptsetup loads the header under a shared lock and, once it holds the
/// exclusive one, aborts when the seqid moved meanwhile (optimistic
/// concurrency, exit 1). A user would simply retry; so do we.
const CS_CONCURRENT: &str = "Detected attempt for concurrent LUKS2 metadata update";

/// One writer: runs luksAddKey until it lands; returns the attempts made.
fn add_until_done(
    tool: Tool,
    img: &str,
    old: &str,
    new: &str,
    slot: Option<u32>,
) -> Result<u32, String> {
    for attempt in 1..=100 {
        let o = add_key(tool, img, old, new, slot);
        if o.code == 0 {
            return Ok(attempt);
        }
        if !(tool == CS && o.code == 1 && o.stderr.contains(CS_CONCURRENT)) {
            return Err(format!(
                "{tool:?} luksAddKey {slot:?}, attempt {attempt}: {o}"
            ));
        }
    }
    Err(format!(
        "{tool:?} luksAddKey {slot:?}: still conflicting after 100 attempts"
    ))
}

fn round(n: usize) {
    let s = Scratch::new();
    let img = s.image("v.img", 20);
    let base = s.key("base", b"base passphrase");
    format(WC, &img, &base, FAST);
    let vk = volume_key(CS, &img, &base, &[]);

    // Readers: both tools test the base passphrase until the writers finish.
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU32::new(0));
    let readers: Vec<_> = [WC, CS, WC]
        .into_iter()
        .map(|t| {
            let (img, base, done, reads) = (img.clone(), base.clone(), done.clone(), reads.clone());
            thread::spawn(move || {
                let mut failures = vec![];
                while !done.load(Ordering::SeqCst) {
                    let o = t.run(&["open", "--test-passphrase", &img, "-d", &base]);
                    reads.fetch_add(1, Ordering::SeqCst);
                    if o.code != 0 {
                        failures.push(format!("{t:?} reader: {o}"));
                    }
                }
                failures
            })
        })
        .collect();

    // Writers: half name a keyslot, half take the lowest free one.
    let total = WRAPCRYPT_WRITERS + CRYPTSETUP_WRITERS;
    let writers: Vec<(Tool, Option<u32>, String)> = (0..total)
        .map(|i| {
            let tool = if i % 4 == 3 { CS } else { WC };
            let slot = (i % 2 == 0).then_some(10 + i);
            let key = s.key(
                &format!("k{i}"),
                format!("round {n} writer {i} {tool:?}").as_bytes(),
            );
            (tool, slot, key)
        })
        .collect();
    assert_eq!(
        writers.iter().filter(|w| w.0 == CS).count() as u32,
        CRYPTSETUP_WRITERS
    );
    let handles: Vec<_> = writers
        .iter()
        .cloned()
        .map(|(tool, slot, key)| {
            let (img, base) = (img.clone(), base.clone());
            thread::spawn(move || (tool, add_until_done(tool, &img, &base, &key, slot)))
        })
        .collect();
    let mut failures = vec![];
    let mut retries = 0;
    for h in handles {
        match h.join().expect("writer thread") {
            (t, Ok(attempts)) => {
                // wrapcrypt holds the exclusive lock across read-modify-write:
                // it never needs a second attempt.
                if t == WC && attempts != 1 {
                    failures.push(format!("wrapcrypt writer needed {attempts} attempts"));
                }
                retries += attempts - 1;
            }
            (_, Err(e)) => failures.push(e),
        }
    }
    done.store(true, Ordering::SeqCst);
    for r in readers {
        failures.extend(r.join().expect("reader thread"));
    }
    assert!(failures.is_empty(), "round {n}:\n{}", failures.join("\n"));

    // Every passphrase opens with both tools, in the slot it asked for.
    for (tool, slot, key) in &writers {
        let what = format!("round {n}: {tool:?} writer, slot {slot:?}");
        assert_opens_both(&img, key, &[], &what);
        if let Some(slot) = slot {
            let sl = slot.to_string();
            assert_eq!(test_pass(CS, &img, key, &["-S", &sl]), 0, "{what}");
        }
    }
    assert_opens_both(&img, &base, &[], "base passphrase");
    let j = CS.ok(&["luksDump", "--dump-json-metadata", &img]);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).unwrap();
    assert_eq!(
        v["keyslots"].as_object().unwrap().len() as u32,
        total + 1,
        "round {n}: keyslot count"
    );
    assert_copies_agree(&img, &format!("round {n}"));
    let last = &writers.last().unwrap().2;
    assert_eq!(volume_key(WC, &img, last, &[]), vk, "round {n}: volume key");
    eprintln!(
        "locking round {n}: {total} concurrent writers ({retries} cryptsetup retries after \
         its own concurrent-update abort), {} concurrent reads, all consistent",
        reads.load(Ordering::SeqCst)
    );
}

#[test]
fn concurrent_add_key_from_both_tools() {
    for n in 0..ROUNDS {
        round(n);
    }
}

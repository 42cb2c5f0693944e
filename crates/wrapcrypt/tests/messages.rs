//! `--verbose` and `--debug` against cryptsetup 2.6.1: the same actions on
//! images of the same layout print byte-identical stdout and stderr with
//! `-v` (and exit alike); `--debug` prints a `# ` trace (version, action,
//! device, header read and write, keyslots tried) that holds no passphrase
//! and no volume key.

mod common;

use common::*;

const UUID: &str = "11111111-2222-3333-4444-555555555555";

/// One tool's transcript of the same sequence of `-v` commands, run in its
/// own scratch dir (paths are relative there, so the texts can match).
fn transcript(tool: Tool) -> Vec<(String, Out)> {
    let s = Scratch::new();
    let dir = s.dir.path();
    std::fs::write(dir.join("k1"), b"pass one").unwrap();
    std::fs::write(dir.join("k2"), b"pass two").unwrap();
    s.image("a.img", 32);
    s.image("z.img", 1);
    let f = FAST.join(" ");
    let steps = [
        format!("-v luksFormat -q {f} a.img k1"),
        format!("-v luksAddKey {f} -d k1 a.img k2"),
        "-v open --test-passphrase -d k2 a.img".to_string(),
        "-v open --test-passphrase -d k2 -S 0 a.img".to_string(),
        "-v luksRemoveKey a.img k2".to_string(),
        "-v isLuks a.img".to_string(),
        format!("-v luksUUID --uuid {UUID} a.img"),
        "-v luksUUID a.img".to_string(),
        "-v luksKillSlot -q a.img 3".to_string(),
        format!("-v luksChangeKey -d k1 {f} a.img k2"),
        format!("-v luksConvertKey -d k2 {f} a.img"),
        format!("-v luksAddKey {f} -d k2 --new-key-slot 5 a.img k1"),
        "-v luksKillSlot -q -d k2 a.img 5".to_string(),
        "-v luksHeaderBackup a.img --header-backup-file hb".to_string(),
        "-v luksHeaderRestore -q a.img --header-backup-file hb".to_string(),
        "-v config a.img --label foo".to_string(),
        "-v erase -q a.img".to_string(),
        // No keyslot left: "No usable keyslot is available.", exit 1.
        "-v open --test-passphrase -d k2 a.img".to_string(),
        "-v open --test-passphrase -d k2 nonexist.img".to_string(),
        "-v isLuks z.img".to_string(),
        "-v luksDump z.img".to_string(),
        // LUKS1 over the LUKS2 header: both signatures reported wiped.
        format!("-v luksFormat -q --type luks1 --uuid {UUID} {f} a.img k1"),
        "-v open --test-passphrase -d k1 a.img".to_string(),
        format!("-v luksAddKey {f} -d k1 a.img k2"),
        "-v luksRemoveKey a.img k2".to_string(),
        "--verbose luksUUID a.img".to_string(),
    ];
    steps
        .iter()
        .map(|line| {
            let args: Vec<&str> = line.split(' ').collect();
            let mut c = tool.cmd(&args);
            c.current_dir(dir);
            (line.clone(), run_cmd(&mut c, None, tool))
        })
        .collect()
}

#[test]
fn verbose_output_is_cryptsetups_byte_for_byte() {
    let cs = transcript(CS);
    let wc = transcript(WC);
    for ((line, c), (_, w)) in cs.iter().zip(&wc) {
        assert_eq!(
            (w.code, &w.stdout, &w.stderr),
            (c.code, &c.stdout, &c.stderr),
            "`{line}`\n--- cryptsetup\n{c}\n--- wrapcrypt\n{w}"
        );
    }
    // The comparison is not vacuous: the lines cryptsetup prints are there.
    let all: String = wc.iter().map(|(_, o)| o.stdout.as_str()).collect();
    for want in [
        "Key slot 0 created.\nCommand successful.\n",
        "No usable token is available.\nKey slot 1 unlocked.\nCommand successful.\n",
        "Key slot 1 unlocked.\nKeyslot 1 is selected for deletion.\nKey slot 1 removed.\n",
        "Command failed with code -2 (no permission or bad passphrase).\n",
        "Command failed with code -4 (wrong device or file specified).\n",
        "Existing 'crypto_LUKS' superblock signature on device a.img will be wiped.\n",
    ] {
        assert!(all.contains(want), "{want:?} missing from\n{all}");
    }
    assert_eq!(wc.len(), 26);
}

#[test]
fn without_verbose_there_is_no_success_line() {
    let s = Scratch::new();
    let img = s.image("q.img", 32);
    let kf = s.key("kf", b"quiet pass");
    for tool in BOTH {
        format(tool, &img, &kf, FAST);
        let o = tool.run(&["open", "--test-passphrase", "-d", &kf, &img]);
        assert_eq!((o.code, o.stdout.as_str(), o.stderr.as_str()), (0, "", ""));
    }
}

#[test]
fn debug_traces_without_secrets() {
    let s = Scratch::new();
    let img = s.image("d.img", 32);
    let p1 = b"first-Secret-Passphrase";
    let p2 = b"second-Secret-Passphrase";
    let k1 = s.key("k1", p1);
    let k2 = s.key("k2", p2);
    // A known volume key, to look for in the output.
    let vk: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    let vkf = s.key("vk", &vk);
    let mut out = Vec::<u8>::new();
    let mut run = |args: &[&str]| {
        let mut a = vec!["--debug"];
        a.extend_from_slice(args);
        let o = WC.cmd(&a).output().unwrap();
        out.extend_from_slice(&o.stdout);
        out.extend_from_slice(&o.stderr);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let mut fmt = vec!["luksFormat", "-q", "--volume-key-file", &vkf, &img, &k1];
    fmt.extend_from_slice(FAST);
    let (code, text) = run(&fmt);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.starts_with("# wrapcrypt "), "{text}");
    assert!(text.contains("# Running command luksFormat.\n"), "{text}");
    assert!(
        text.contains("# Trying to write LUKS2 header (16384 bytes"),
        "{text}"
    );
    // --debug implies --verbose, as in cryptsetup.
    assert!(
        text.ends_with("Key slot 0 created.\nCommand successful.\n"),
        "{text}"
    );

    let mut add = vec!["luksAddKey", "-d", &k1, &img, &k2];
    add.extend_from_slice(FAST);
    let (code, text) = run(&add);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("# Reading key file "), "{text}");
    assert!(text.contains("# Device "), "{text}");
    assert!(text.contains("WRITE lock taken.\n"), "{text}");

    let (code, text) = run(&["open", "--test-passphrase", "-d", &k2, &img]);
    assert_eq!(code, Some(0), "{text}");
    for want in [
        "# Running command open.\n",
        "# LUKS2 header version 2 of size 16384 bytes, checksum sha256",
        "# Trying to open LUKS2 keyslot 0.\n",
        "# Digest 0 (pbkdf2) verify failed for keyslot 0.\n",
        "# Trying to open LUKS2 keyslot 1.\n",
        "Key slot 1 unlocked.\n",
    ] {
        assert!(text.contains(want), "{want:?} not in\n{text}");
    }
    let (code, _) = run(&["open", "--test-passphrase", "-d", &k2, "-S", "0", &img]);
    assert_eq!(code, Some(2));
    let mut change = vec!["luksChangeKey", "-d", &k2, &img, &k1];
    change.extend_from_slice(FAST);
    assert_eq!(run(&change).0, Some(0));
    assert_eq!(run(&["luksDump", &img]).0, Some(0));

    // The key really is the one given, so its absence below means something.
    assert_eq!(volume_key(CS, &img, &k1, &[]), hex::encode(&vk));
    let text = String::from_utf8_lossy(&out).to_lowercase();
    assert!(text.lines().filter(|l| l.starts_with("# ")).count() > 30);
    for secret in [&p1[..], &p2[..]] {
        assert!(
            !out.windows(secret.len()).any(|w| w == secret),
            "a passphrase in the trace"
        );
    }
    assert!(!out.windows(16).any(|w| w == &vk[..16]), "raw key bytes");
    assert!(!text.contains(&hex::encode(&vk[..8])), "key hex");
    let spaced: Vec<String> = vk[..8].iter().map(|b| format!("{b:02x}")).collect();
    assert!(
        !text.contains(&spaced.join(" ")),
        "key hex as luksDump spaces it"
    );
}

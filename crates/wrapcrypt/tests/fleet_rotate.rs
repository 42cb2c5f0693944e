//! `wrapcrypt fleet rotate`: a master-key rollout across simulated hosts
//! through a real PyKMIP server (scripts/kmip-server.sh). Each host is a
//! separate `wrapcrypt-custodiand` (own socket, state dir and key-manager
//! file, started on demand) with waes volumes on image files holding data
//! written through FUSE + loop. The coordinator is killed at several
//! points (WRAPCRYPT_FLEET_FAULT_AT: SIGKILL after its N-th step, before
//! the plan records it; SIGKILL from outside; SIGINT), host custodians are
//! killed mid-way, and `--resume` must finish with every volume opening
//! with its data unchanged, every host on the new key and the old KMIP
//! objects Deactivated in the server. Bad input: wrong client
//! certificate, a host down, a volume changed by hand mid-rotation.

mod common;
#[path = "../../wrapcrypt-kmip/tests/common/mod.rs"]
mod kmip_common;
mod wrapped_common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kmip_common::KmipServer;
use serde_json::Value;
use wrapcrypt_kmip::{KmipClient, LocateQuery, State};
use wrapped_common::*;

const GROUP: &str = "web";

fn write_conf(path: &Path, kms: &KmipServer, id: &str) {
    std::fs::write(
        path,
        format!(
            "server = 127.0.0.1:{}\nca = {}\ncert = {}\nkey = {}\ngroup = {GROUP}\ntimeout = 20\n",
            kms.port,
            kms.path("ca.pem").display(),
            kms.path(&format!("{id}.pem")).display(),
            kms.path(&format!("{id}.key")).display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

struct Vol {
    img: String,
    key: String,
    sha: String,
}

/// A simulated host: its own custodian, state dir and images.
struct SimHost {
    name: String,
    dir: PathBuf,
    vols: Vec<Vol>,
}

impl SimHost {
    fn sock(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = WC.cmd(args);
        c.env("WRAPCRYPT_CUSTODIAN_SOCKET", self.sock()).env(
            "WRAPCRYPT_CUSTODIAN_KMIP_CONFIG",
            self.dir.join("kmip.conf"),
        );
        c
    }

    fn wc(&self, args: &[&str]) -> Out {
        run_cmd(&mut self.cmd(args), None, WC)
    }

    fn ok(&self, args: &[&str]) -> Out {
        let o = self.wc(args);
        assert_eq!(
            o.code,
            0,
            "{}: wrapcrypt {}: {o}",
            self.name,
            args.join(" ")
        );
        o
    }

    fn status(&self) -> Value {
        serde_json::from_str(self.ok(&["custodian", "status", "--json"]).stdout.trim()).unwrap()
    }

    fn reg(&self, reg: &str) -> (String, String) {
        let st = self.status();
        let r = &st["kmip"]["registers"][reg];
        (
            r["object-id"]
                .as_str()
                .unwrap_or_else(|| panic!("{st}"))
                .to_string(),
            r["kmip-state"].as_str().unwrap_or("").to_string(),
        )
    }

    fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("c.state/custodiand.lock"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// A host crash: SIGKILL to its custodian (the next command restarts it).
    fn kill(&self, sig: i32) {
        if let Some(pid) = self.daemon_pid() {
            // SAFETY: signalling the daemon this test started.
            unsafe { libc::kill(pid, sig) };
            let t = Instant::now();
            // SAFETY: probing whether the pid still exists.
            while unsafe { libc::kill(pid, 0) } == 0 && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Opens a volume through FUSE + loop and returns the sha256 of its data.
    fn data_sha(&self, v: &Vol, name: &str, write: Option<&[u8]>) -> String {
        use std::io::{Read, Write};
        self.ok(&["open", &v.img, name, "--key-file", &v.key]);
        let dev = format!("/dev/mapper/{name}");
        let res = std::panic::catch_unwind(|| {
            if let Some(d) = write {
                let mut f = std::fs::OpenOptions::new().write(true).open(&dev).unwrap();
                f.write_all(d).unwrap();
                f.sync_all().unwrap();
            }
            let mut buf = vec![0u8; DATA];
            std::fs::File::open(&dev)
                .unwrap()
                .read_exact(&mut buf)
                .unwrap();
            sha(&buf)
        });
        self.ok(&["close", name]);
        res.unwrap()
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        self.kill(libc::SIGTERM);
    }
}

const DATA: usize = 256 << 10;

fn sha(d: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(d))
}

fn data(seed: usize) -> Vec<u8> {
    (0..DATA)
        .map(|i| ((i * 31 + seed * 101) % 251) as u8 ^ (seed as u8))
        .collect()
}

struct Fleet {
    // Hosts first: their custodians stop before the server and the files go.
    hosts: Vec<SimHost>,
    kms: KmipServer,
    s: Scratch,
    hosts_file: String,
    coord: String,
    tag: String,
}

impl Fleet {
    fn new(tag: &str, n_hosts: usize, per_host: usize) -> Fleet {
        ensure_daemon();
        let kms = KmipServer::start(tag);
        let s = Scratch::new();
        let coord = s.p("coordinator.conf");
        write_conf(Path::new(&coord), &kms, "client");
        let mut hosts = vec![];
        let mut text = format!("# simulated hosts of group {GROUP}\ngroup = {GROUP}\n");
        for h in 1..=n_hosts {
            let dir = s.path(&format!("h{h}"));
            std::fs::create_dir(&dir).unwrap();
            write_conf(&dir.join("kmip.conf"), &kms, "client");
            let mut host = SimHost {
                name: format!("h{h}"),
                dir: dir.clone(),
                vols: vec![],
            };
            text += &format!(
                "\n[host h{h}]\nsocket = {}\nkmip_config = {}\n",
                host.sock().display(),
                dir.join("kmip.conf").display()
            );
            for v in 1..=per_host {
                let img = dir.join(format!("v{v}.img")).display().to_string();
                std::fs::File::create(&img)
                    .unwrap()
                    .set_len(20 << 20)
                    .unwrap();
                let key = dir.join(format!("v{v}.key")).display().to_string();
                std::fs::write(&key, format!("passphrase of h{h} v{v}")).unwrap();
                let mut args = vec![
                    "luksFormat",
                    "-q",
                    "--cipher",
                    "waes-xts-plain64",
                    &img,
                    &key,
                ];
                args.extend(FAST);
                host.ok(&args);
                let d = data(h * 10 + v);
                let mut vol = Vol {
                    img: img.clone(),
                    key: key.clone(),
                    sha: sha(&d),
                };
                let got = host.data_sha(&vol, &format!("{tag}-h{h}v{v}"), Some(&d));
                assert_eq!(got, vol.sha, "data read back before the rotation");
                vol.sha = got;
                text += &format!("volume = {img} key-file={key}\n");
                host.vols.push(vol);
            }
            hosts.push(host);
        }
        let hosts_file = s.p("hosts.conf");
        std::fs::write(&hosts_file, text).unwrap();
        Fleet {
            hosts,
            kms,
            s,
            hosts_file,
            coord,
            tag: tag.into(),
        }
    }

    fn plan_path(&self, name: &str) -> String {
        self.s.p(name)
    }

    fn rotate_cmd(&self, plan: &str, resume: bool, extra: &[&str]) -> Command {
        let mut args = vec!["fleet", "rotate", "--plan", plan];
        if !extra.contains(&"--retry-delay") {
            args.extend(["--retry-delay", "1"]);
        }
        if resume {
            args.push("--resume");
        } else {
            args.extend([
                "--group",
                GROUP,
                "--hosts",
                &self.hosts_file,
                "--kmip-config",
                &self.coord,
            ]);
        }
        args.extend_from_slice(extra);
        let mut c = WC.cmd(&args);
        // The coordinator's environment names no host.
        c.env_remove("WRAPCRYPT_CUSTODIAN_SOCKET")
            .env_remove("WRAPCRYPT_CUSTODIAN_KMIP_CONFIG");
        c
    }

    fn rotate(&self, plan: &str, resume: bool, fault: Option<u32>, extra: &[&str]) -> Out {
        let mut c = self.rotate_cmd(plan, resume, extra);
        if let Some(n) = fault {
            c.env("WRAPCRYPT_FLEET_FAULT_AT", n.to_string());
        }
        run_cmd(&mut c, None, WC)
    }

    fn plan(&self, plan: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(plan).unwrap()).unwrap()
    }

    fn kmip(&self) -> KmipClient {
        KmipClient::connect(&self.kms.config()).unwrap()
    }

    fn state(&self, id: &str) -> State {
        self.kmip()
            .get_attributes(id, &["State"])
            .unwrap()
            .state()
            .unwrap()
    }

    /// Every host on `new`, OLD = its `old` (Deactivated in the server),
    /// every volume validated under CURRENT and opening with its data.
    fn assert_rotated(&self, new: &str, old: &[String], open: bool) {
        assert_eq!(self.state(new), State::Active, "new key kmip:{new}");
        for (h, o) in self.hosts.iter().zip(old) {
            assert_eq!(
                h.reg("CURRENT"),
                (new.to_string(), "Active".into()),
                "{}",
                h.name
            );
            assert_eq!(
                h.reg("OLD"),
                (o.clone(), "Deactivated".into()),
                "{}",
                h.name
            );
            assert_eq!(self.state(o), State::Deactivated, "old key kmip:{o}");
            for (i, v) in h.vols.iter().enumerate() {
                let o = h.wc(&["validate", "--json", &v.img, "--key-file", &v.key]);
                let j: Value = serde_json::from_str(o.stdout.trim()).unwrap_or(Value::Null);
                assert_eq!(o.code, 0, "{o}");
                assert_eq!(j["register"], "CURRENT", "{j}");
                assert_eq!(j["verification-pattern-matches"], true, "{j}");
                assert!(j["reencipher-staged"].is_null(), "{j}");
                let o = h.wc(&["open", "--test-passphrase", &v.img, "--key-file", &v.key]);
                assert_eq!(o.code, 0, "{o}");
                if open {
                    let name = format!("{}-{}v{}", self.tag, h.name, i + 1);
                    assert_eq!(h.data_sha(v, &name, None), v.sha, "{} data", v.img);
                }
            }
        }
    }

    fn old_ids(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.reg("CURRENT").0).collect()
    }
}

fn done_steps(plan: &Value) -> usize {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "done")
        .count()
}

fn one_line(o: &Out) -> String {
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {o}");
    lines[0].to_string()
}

/// Spawns a resume with its output in files; waits until the plan has
/// `more` further steps done (or the coordinator ended).
fn spawn_resume(
    f: &Fleet,
    plan: &str,
    more: usize,
    tag: &str,
    fault: Option<u32>,
) -> std::process::Child {
    let before = done_steps(&f.plan(plan));
    let out = std::fs::File::create(f.s.path(&format!("{tag}.out"))).unwrap();
    let err = std::fs::File::create(f.s.path(&format!("{tag}.err"))).unwrap();
    let mut cmd = f.rotate_cmd(plan, true, &["--jobs", "2", "--retries", "3"]);
    if let Some(n) = fault {
        cmd.env("WRAPCRYPT_FLEET_FAULT_AT", n.to_string());
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if std::fs::read_to_string(plan)
            .ok()
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .is_some_and(|p| done_steps(&p) >= before + more)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn fleet_rotate_survives_kills_and_resumes() {
    let t0 = Instant::now();
    let f = Fleet::new("frot", 3, 2);
    let plan = f.plan_path("rotate.plan");
    let old = f.old_ids();
    let mut distinct = old.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "each host made its own CURRENT key: {old:?}"
    );
    eprintln!(
        "setup (server, 3 hosts, 6 volumes with data): {:.1?}",
        t0.elapsed()
    );
    let (mut coord_kills, mut host_kills) = (0, 0);

    // 1. The coordinator dies after its 3rd step (before recording it).
    let o = f.rotate(&plan, false, Some(3), &["--jobs", "2"]);
    assert_eq!(o.signal, Some(libc::SIGKILL), "{o}");
    coord_kills += 1;
    let p = f.plan(&plan);
    assert_eq!(p["format"], "wrapcrypt-fleet-plan/1");
    assert_eq!(p["steps"].as_array().unwrap().len(), 1 + 3 * 8 + 2, "{p}");
    assert_eq!(done_steps(&p), 2, "{p}");
    let new = p["new_key"]["id"].as_str().unwrap().to_string();
    assert!(!old.contains(&new));
    assert_eq!(
        f.state(&new),
        State::PreActive,
        "created, not activated yet"
    );
    // Its name and group are the plan's.
    let by_name = f
        .kmip()
        .locate(&LocateQuery {
            name: Some(p["new_key"]["name"].as_str().unwrap().into()),
            group: Some(GROUP.into()),
            ..LocateQuery::default()
        })
        .unwrap();
    assert_eq!(by_name, vec![new.clone()]);
    // A second coordinator may not start a new plan over an unfinished one.
    let o = f.rotate(&plan, false, None, &[]);
    assert_eq!(o.code, 5, "{o}");
    assert!(one_line(&o).contains("--resume"), "{o}");

    // 2. A host crash, then the coordinator dies again, later.
    f.hosts[1].kill(libc::SIGKILL);
    host_kills += 1;
    let o = f.rotate(&plan, true, Some(6), &["--jobs", "2"]);
    assert_eq!(o.signal, Some(libc::SIGKILL), "{o}");
    coord_kills += 1;
    let p = f.plan(&plan);
    assert!(done_steps(&p) >= 7, "{p}");
    assert_eq!(
        p["new_key"]["id"],
        new.as_str(),
        "the same key, found again"
    );

    // 3. SIGINT: the coordinator stops starting steps, saves, exits 1.
    let mut child = spawn_resume(&f, &plan, 1, "sigint", None);
    // SAFETY: signalling the coordinator this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let st = child.wait().unwrap();
    let err = std::fs::read_to_string(f.s.path("sigint.err")).unwrap();
    assert_eq!(st.code(), Some(1), "{err}");
    assert!(
        err.contains("interrupted") && err.contains("--resume"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let p = f.plan(&plan);
    let at_sigint = done_steps(&p);
    assert!(at_sigint < p["steps"].as_array().unwrap().len(), "{p}");

    // 4. A host custodian killed while the coordinator runs; the
    //    coordinator dies after its 4th step of this run.
    let mut child = spawn_resume(&f, &plan, 1, "hostkill", Some(4));
    f.hosts[0].kill(libc::SIGKILL);
    host_kills += 1;
    let st = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGKILL),
        "{}",
        std::fs::read_to_string(f.s.path("hostkill.out")).unwrap()
    );
    coord_kills += 1;
    let at_kill = done_steps(&f.plan(&plan));
    eprintln!("steps done: {at_sigint} at SIGINT, {at_kill} after the third coordinator kill");

    // 5. Resume to the end.
    let o = f.rotate(&plan, true, None, &["--jobs", "2", "--retries", "3"]);
    assert_eq!(o.code, 0, "{o}");
    let want = format!("6/6 volumes on the new master key kmip:{new}");
    assert!(o.stdout.lines().last().unwrap().contains(&want), "{o}");
    let p = f.plan(&plan);
    assert_eq!(done_steps(&p), p["steps"].as_array().unwrap().len(), "{p}");
    let mut revoked: Vec<String> = p["revoked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    revoked.sort();
    assert_eq!(revoked, distinct);
    f.assert_rotated(&new, &old, true);

    // The inventory was re-registered: every volume on the new key.
    let mkvp = p["new_key"]["mkvp"].as_str().unwrap();
    let inv = WC.ok(&[
        "fleet",
        "inventory",
        "--kmip-config",
        &f.coord,
        "--current-mkvp",
        mkvp,
        "--json",
    ]);
    let inv: Value = serde_json::from_str(inv.stdout.trim()).unwrap();
    let vols = inv["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 6, "{inv}");
    for v in vols {
        assert_eq!(v["wrapping-key"], format!("mkvp:{mkvp}"), "{v}");
        assert_eq!(v["flags"], serde_json::json!([]), "{v}");
    }

    // A resume of a finished plan changes nothing.
    let o = f.rotate(&plan, true, None, &[]);
    assert_eq!(o.code, 0, "{o}");
    assert!(o.stdout.contains(&want), "{o}");
    eprintln!(
        "fleet_rotate_survives_kills_and_resumes: {} kills survived ({coord_kills} of the coordinator, {host_kills} of host custodians) and one SIGINT; {:.1?}",
        coord_kills + host_kills,
        t0.elapsed()
    );
}

#[test]
fn fleet_rotate_bad_input() {
    let t0 = Instant::now();
    let f = Fleet::new("frotbad", 3, 1);
    let old = f.old_ids();

    // Wrong client certificate (another CA): exit 2, one line, nothing made.
    let rogue = f.s.p("rogue.conf");
    write_conf(Path::new(&rogue), &f.kms, "rogue");
    let plan = f.plan_path("rotate.plan");
    let before = f
        .kmip()
        .locate(&LocateQuery {
            group: Some(GROUP.into()),
            ..LocateQuery::default()
        })
        .unwrap();
    let o = run_cmd(
        &mut WC.cmd(&[
            "fleet",
            "rotate",
            "--group",
            GROUP,
            "--hosts",
            &f.hosts_file,
            "--kmip-config",
            &rogue,
            "--plan",
            &plan,
        ]),
        None,
        WC,
    );
    assert_eq!(o.code, 2, "{o}");
    assert!(one_line(&o).contains("TLS"), "{o}");
    assert!(!Path::new(&plan).exists(), "no plan written");
    let after = f
        .kmip()
        .locate(&LocateQuery {
            group: Some(GROUP.into()),
            ..LocateQuery::default()
        })
        .unwrap();
    assert_eq!(before, after, "no key created");

    // A host down (its custodian stopped and its files unreachable): the
    // others finish, the old keys stay Active, exit 1 with one line.
    // A file where its directory was: nothing of the host can be reached
    // or started (the CLI would otherwise start a blank custodian there).
    f.hosts[2].kill(libc::SIGTERM);
    let down = f.hosts[2].dir.with_extension("down");
    std::fs::rename(&f.hosts[2].dir, &down).unwrap();
    std::fs::write(&f.hosts[2].dir, b"host down\n").unwrap();
    let o = f.rotate(
        &plan,
        false,
        None,
        &["--retries", "1", "--retry-delay", "0"],
    );
    std::fs::remove_file(&f.hosts[2].dir).unwrap();
    std::fs::rename(&down, &f.hosts[2].dir).unwrap();
    assert_eq!(o.code, 1, "{o}");
    let line = one_line(&o);
    assert!(
        line.contains("2/3 volumes")
            && line.contains("host h3: unreachable")
            && line.contains("--resume"),
        "{line}"
    );
    assert!(o.stdout.contains("h3: attempt 1 failed, retrying"), "{o}");
    let p = f.plan(&plan);
    let new = p["new_key"]["id"].as_str().unwrap().to_string();
    for h in &f.hosts[..2] {
        assert_eq!(h.reg("CURRENT").0, new, "{}", h.name);
    }
    for o in &old {
        assert_eq!(f.state(o), State::Active, "old key kmip:{o} kept");
    }
    // The host that was down never lost access: still on its old key.
    let h3 = &f.hosts[2];
    assert_eq!(h3.reg("CURRENT"), (old[2].clone(), "Active".into()));
    let v = &h3.vols[0];
    assert_eq!(h3.data_sha(v, "frotbad-down", None), v.sha);
    // Back up: the resume completes.
    let o = f.rotate(&plan, true, None, &[]);
    assert_eq!(o.code, 0, "{o}");
    f.assert_rotated(&new, &old, false);

    // A volume changed by hand mid-rotation: h1's volume is staged (the
    // coordinator dies right after), then its UUID is changed by hand.
    let plan2 = f.plan_path("rotate2.plan");
    let o = f.rotate(&plan2, false, Some(3), &["--jobs", "1"]);
    assert_eq!(o.signal, Some(libc::SIGKILL), "{o}");
    let h1 = &f.hosts[0];
    let img = h1.vols[0].img.clone();
    let uuid = h1.ok(&["luksUUID", &img]).stdout.trim().to_string();
    h1.ok(&[
        "luksUUID",
        "-q",
        "--uuid",
        "0f1e2d3c-0000-4000-8000-00000000c0de",
        &img,
    ]);
    let o = f.rotate(&plan2, true, None, &["--retries", "0"]);
    assert_eq!(o.code, 1, "{o}");
    let line = one_line(&o);
    assert!(
        line.contains("host h1")
            && line.contains("changed by hand")
            && line.contains(&uuid)
            && line.contains("2/3 volumes"),
        "{line}"
    );
    let p2 = f.plan(&plan2);
    let new2 = p2["new_key"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        f.state(&new),
        State::Active,
        "the first rotation's key is kept"
    );
    for h in &f.hosts[1..] {
        assert_eq!(h.reg("CURRENT").0, new2, "{}", h.name);
    }
    // h1's volume still opens (staged, under its CURRENT key).
    assert_eq!(h1.reg("CURRENT").0, new);
    let v = &h1.vols[0];
    assert_eq!(h1.data_sha(v, "frotbad-hand", None), v.sha);
    // Put back by hand: the resume completes.
    h1.ok(&["luksUUID", "-q", "--uuid", &uuid, &img]);
    let o = f.rotate(&plan2, true, None, &[]);
    assert_eq!(o.code, 0, "{o}");
    let olds = vec![new.clone(); 3];
    f.assert_rotated(&new2, &olds, true);

    // An expired client certificate: exit 2, one line, no plan.
    let expired = f.s.p("expired.conf");
    write_conf(Path::new(&expired), &f.kms, "expired");
    let p3 = f.plan_path("expired.plan");
    let o = run_cmd(
        &mut WC.cmd(&[
            "fleet",
            "rotate",
            "--group",
            GROUP,
            "--hosts",
            &f.hosts_file,
            "--kmip-config",
            &expired,
            "--plan",
            &p3,
        ]),
        None,
        WC,
    );
    assert_eq!(o.code, 2, "{o}");
    assert!(one_line(&o).contains("expired"), "{o}");
    assert!(!Path::new(&p3).exists(), "no plan written");

    // The key manager down: exit 1, one line, no plan.
    f.kms.stop();
    let p4 = f.plan_path("down.plan");
    let o = f.rotate(&p4, false, None, &[]);
    assert_eq!(o.code, 1, "{o}");
    assert!(one_line(&o).contains("unreachable"), "{o}");
    assert!(!Path::new(&p4).exists(), "no plan written");

    // A resume without a plan: one line, exit 1.
    let o = f.rotate(&f.plan_path("missing.plan"), true, None, &[]);
    assert_eq!(o.code, 1, "{o}");
    assert!(one_line(&o).contains("missing.plan"), "{o}");
    eprintln!("fleet_rotate_bad_input: {:.1?}", t0.elapsed());
}

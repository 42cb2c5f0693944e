//! `fleet rotate`: a master-key rollout across the hosts of a group
//! through the KMIP key manager, as a resumable plan (docs/fleet.md,
//! "Rotation"). The coordinator creates the group's new key (Pre-Active),
//! each host stages it into NEW and re-wraps its volumes staged; the key
//! is Activated before the first host switches (set-master-key), then each
//! host completes its volumes and re-registers them in the inventory. The
//! old keys are revoked (Cessation of Operation → Deactivated) only when
//! every host reports every volume on the new key.
//!
//! Every step is detectably done: before acting, the host is probed
//! (`custodian status --json`: which KMIP ids are in NEW / CURRENT / OLD;
//! `keys list --json`: each volume's UUID, wrapping key and staged flag),
//! so a resume after a crash of the coordinator or of a host redoes only
//! what is not done. The plan records progress and what a resume needs.

pub mod host;
pub mod hosts;
pub mod plan;

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wrapcrypt_kmip::{
    KeySpec, KmipClient, KmipConfig, KmipError, LocateQuery, ObjectType, RevocationReasonCode,
    State,
};
use wrapcrypt_volume::ExitClass;

use crate::fleet::kmip_error;
use crate::OpsError;
use host::{mkvp, HostRunner};
use hosts::HostSpec;
use plan::{Plan, PlannedHost, StepKind, StepState};

/// What `fleet rotate` is asked to do.
pub struct RotateOptions<'a> {
    /// The plan file.
    pub plan: &'a Path,
    /// `--resume`: continue the plan instead of making one.
    pub resume: bool,
    /// `--hosts FILE` (a new rotation).
    pub hosts_file: Option<&'a Path>,
    /// `--group G` (a new rotation).
    pub group: Option<&'a str>,
    /// The coordinator's key-manager file (a new rotation; a resume uses
    /// the plan's).
    pub kmip_config: &'a Path,
    /// Hosts worked on at once.
    pub jobs: usize,
    /// Further attempts for a host that fails.
    pub retries: u32,
    /// Pause before such an attempt.
    pub retry_delay: Duration,
    /// The wrapcrypt binary run on the hosts.
    pub program: &'a Path,
    /// Set (by SIGINT) to stop starting steps.
    pub stop: &'a AtomicBool,
}

/// What a run achieved.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The rotation id.
    pub rotation: String,
    /// The new key's KMIP id.
    pub new_key: Option<String>,
    /// Volumes in the plan.
    pub volumes: usize,
    /// Volumes completed on the new key.
    pub volumes_done: usize,
    /// Hosts that failed, with their line.
    pub failed: Vec<(String, String)>,
    /// Old keys Deactivated (all of them, by this run or an earlier one).
    pub revoked: Vec<String>,
    /// Stopped by SIGINT.
    pub interrupted: bool,
    /// Every step done.
    pub complete: bool,
}

const INTERRUPTED: &str = "interrupted";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Shared<'a> {
    plan: Mutex<Plan>,
    path: PathBuf,
    cfg: KmipConfig,
    kmip: Mutex<Option<KmipClient>>,
    activate: Mutex<()>,
    program: PathBuf,
    stop: &'a AtomicBool,
    fault_at: Option<u64>,
    steps_done: AtomicU64,
    progress: &'a (dyn Fn(&str) + Sync),
}

impl Shared<'_> {
    fn save(&self, p: &Plan) -> Result<(), String> {
        p.write(&self.path)
            .map_err(|e| format!("{}: cannot write the plan: {e}", self.path.display()))
    }

    /// Records a step's outcome and rewrites the plan. With
    /// `WRAPCRYPT_FLEET_FAULT_AT=N` the coordinator is killed (SIGKILL)
    /// after its N-th finished step, before the plan records it.
    fn record(
        &self,
        host: Option<&str>,
        volume: Option<&str>,
        kind: StepKind,
        result: Result<(), &str>,
    ) -> Result<(), String> {
        let mut p = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = p.step_mut(host, volume, kind) else {
            return Ok(());
        };
        if result.is_ok() && s.state == StepState::Done {
            return Ok(());
        }
        if result.is_ok() {
            let n = self.steps_done.fetch_add(1, Ordering::SeqCst) + 1;
            if self.fault_at == Some(n) {
                // SAFETY: a test hook killing this process.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
        }
        s.attempts += 1;
        match result {
            Ok(()) => {
                s.state = StepState::Done;
                s.error = None;
            }
            Err(e) => {
                s.state = StepState::Failed;
                s.error = Some(e.to_string());
            }
        }
        let line = format!(
            "{}{}{}: {}",
            host.map(|h| format!("{h} ")).unwrap_or_default(),
            volume.map(|v| format!("{v} ")).unwrap_or_default(),
            step_name(kind),
            match result {
                Ok(()) => "done".to_string(),
                Err(e) => format!("FAILED: {e}"),
            }
        );
        self.save(&p)?;
        drop(p);
        (self.progress)(&line);
        Ok(())
    }

    /// A key-manager request on the coordinator's connection, reconnecting
    /// once when the connection broke.
    fn kmip<T>(
        &self,
        mut f: impl FnMut(&mut KmipClient) -> Result<T, KmipError>,
    ) -> Result<T, OpsError> {
        let mut guard = self.kmip.lock().unwrap_or_else(|e| e.into_inner());
        for attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(KmipClient::connect(&self.cfg.client).map_err(kmip_error)?);
            }
            let c = guard.as_mut().expect("connected");
            match f(c) {
                Ok(v) => return Ok(v),
                Err(KmipError::Io { .. } | KmipError::Connect { .. }) if attempt == 0 => {
                    *guard = None;
                }
                Err(e) => return Err(kmip_error(e)),
            }
        }
        unreachable!("two attempts")
    }

    fn stopped(&self) -> Result<(), String> {
        if self.stop.load(Ordering::SeqCst) {
            Err(INTERRUPTED.into())
        } else {
            Ok(())
        }
    }

    fn new_key(&self) -> String {
        let p = self.plan.lock().unwrap_or_else(|e| e.into_inner());
        p.new_key.id.clone().unwrap_or_default()
    }

    /// Activates the new key once (Pre-Active → Active), before the first
    /// host makes it CURRENT.
    fn ensure_activated(&self) -> Result<(), String> {
        let _one = self.activate.lock().unwrap_or_else(|e| e.into_inner());
        if self.plan.lock().unwrap_or_else(|e| e.into_inner()).is_done(
            None,
            None,
            StepKind::ActivateKey,
        ) {
            return Ok(());
        }
        self.stopped()?;
        let id = self.new_key();
        let state = self
            .kmip(|c| c.get_attributes(&id, &["State"]))
            .map_err(|e| e.to_string())?
            .state();
        match state {
            Some(State::PreActive) => self
                .kmip(|c| c.activate(&id))
                .map_err(|e| format!("Activate kmip:{id}: {e}"))?,
            Some(State::Active) => {}
            other => {
                return Err(format!(
                    "the new key kmip:{id} is {} in the key manager, not Pre-Active or Active",
                    other.map_or("of unknown state".into(), |s| s.to_string())
                ))
            }
        }
        self.record(None, None, StepKind::ActivateKey, Ok(()))
    }
}

/// The plan's name of a step.
pub fn step_name(k: StepKind) -> &'static str {
    match k {
        StepKind::CreateKey => "create-key",
        StepKind::StageKey => "stage-key",
        StepKind::ReencipherStaged => "reencipher-staged",
        StepKind::ActivateKey => "activate-key",
        StepKind::SetMasterKey => "set-master-key",
        StepKind::ReencipherComplete => "reencipher-complete",
        StepKind::Register => "register",
        StepKind::Verify => "verify",
        StepKind::RevokeOldKeys => "revoke-old-keys",
    }
}

/// What to do with one volume, from its header and the host's registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeAction {
    /// Nothing: this phase is done for it.
    Done,
    /// `reencipher --staged --to-new`.
    Stage,
    /// `reencipher --complete`.
    Complete,
    /// `reencipher --in-place --from-old` (not staged before the switch).
    FromOld,
    /// Refuse, with the reason.
    Refuse(String),
}

/// Decides a volume's next action. `switched`: the host's CURRENT is the
/// new key; `cur`/`old`/`new` are MKVPs.
pub fn volume_action(
    st: &host::VolumeState,
    switched: bool,
    cur: Option<&str>,
    old: Option<&str>,
    new: Option<&str>,
) -> VolumeAction {
    let wk = st.wrapping_mkvp.as_deref();
    let is = |m: Option<&str>| wk.is_some() && wk == m;
    if !switched {
        if st.staged || is(new) {
            VolumeAction::Done
        } else if is(cur) {
            VolumeAction::Stage
        } else {
            VolumeAction::Refuse(format!(
                "wrapped under {}, which is not the host's CURRENT master key (changed by hand?)",
                wk.map_or("no recorded key".into(), |m| format!("mkvp:{m}"))
            ))
        }
    } else if st.staged {
        VolumeAction::Complete
    } else if is(cur) {
        VolumeAction::Done
    } else if is(old) {
        VolumeAction::FromOld
    } else {
        VolumeAction::Refuse(format!(
            "wrapped under {}, neither the new CURRENT nor the OLD master key (changed by hand?)",
            wk.map_or("no recorded key".into(), |m| format!("mkvp:{m}"))
        ))
    }
}

/// Runs one host's part of the rotation; Err is the line to report.
fn run_host(sh: &Shared, hi: usize) -> Result<(), String> {
    let (spec, planned_uuids) = {
        let p = sh.plan.lock().unwrap_or_else(|e| e.into_inner());
        (p.hosts[hi].spec.clone(), p.hosts[hi].uuids.clone())
    };
    let name = spec.name.as_str();
    let n = Some(name);
    let key = sh.new_key();
    let r = HostRunner::new(&sh.program, &spec);
    sh.stopped()?;
    let mut regs = r
        .registers()
        .map_err(|e| format!("unreachable: {}", e.line))?;
    if !regs.kmip {
        return Err("its custodian has no key manager configured (kmip_config)".into());
    }
    {
        let mut p = sh.plan.lock().unwrap_or_else(|e| e.into_inner());
        let ph = &mut p.hosts[hi];
        if !ph.probed {
            let base = if regs.current.object_id.as_deref() == Some(&key) {
                &regs.old
            } else {
                &regs.current
            };
            ph.old_key = base.object_id.clone();
            ph.old_mkvp = base.mkvp.clone();
            ph.probed = true;
            sh.save(&p)?;
        }
    }
    let check_uuids = |vols: &std::collections::BTreeMap<
        String,
        Result<host::VolumeState, String>,
    >,
                       failures: &mut Vec<String>|
     -> Result<(), String> {
        let mut p = sh.plan.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = false;
        for (i, v) in spec.volumes.iter().enumerate() {
            match vols.get(&v.device) {
                None => failures.push(format!("{}: not reported by keys list", v.device)),
                Some(Err(e)) => failures.push(format!("{}: {e}", v.device)),
                Some(Ok(st)) => match &planned_uuids[i] {
                    Some(u) if *u != st.uuid => failures.push(format!(
                        "{}: UUID is {} but was {u} when the rotation was planned (the volume was changed by hand; put it back, or plan a new rotation without it)",
                        v.device, st.uuid
                    )),
                    Some(_) => {}
                    None => {
                        p.hosts[hi].uuids[i] = Some(st.uuid.clone());
                        changed = true;
                    }
                },
            }
        }
        if changed {
            sh.save(&p)?;
        }
        Ok(())
    };

    let mut failures = vec![];
    if regs.current.object_id.as_deref() != Some(&key) {
        // Phase 1: stage the new key and every volume.
        if regs.new.object_id.as_deref() != Some(&key) {
            sh.stopped()?;
            r.run(&["custodian", "stage-kmip-key", &key])
                .map_err(|e| e.line)?;
            regs = r
                .registers()
                .map_err(|e| format!("unreachable: {}", e.line))?;
            if regs.new.object_id.as_deref() != Some(&key) {
                return Err(format!(
                    "its NEW register does not hold kmip:{key} after stage-kmip-key"
                ));
            }
        }
        note_mkvp(sh, regs.new.mkvp.as_deref())?;
        sh.record(n, None, StepKind::StageKey, Ok(()))?;
        let vols = r
            .volumes()
            .map_err(|e| format!("unreachable: {}", e.line))?;
        check_uuids(&vols, &mut failures)?;
        for v in &spec.volumes {
            let Some(Ok(st)) = vols.get(&v.device) else {
                continue;
            };
            if failures
                .iter()
                .any(|f| f.starts_with(&format!("{}:", v.device)))
            {
                continue;
            }
            let d = Some(v.device.as_str());
            match volume_action(
                st,
                false,
                regs.current.mkvp.as_deref(),
                regs.old.mkvp.as_deref(),
                regs.new.mkvp.as_deref(),
            ) {
                VolumeAction::Done => sh.record(n, d, StepKind::ReencipherStaged, Ok(()))?,
                VolumeAction::Stage => {
                    sh.stopped()?;
                    match r.run(&[
                        "-q",
                        "reencipher",
                        "--staged",
                        "--to-new",
                        "--key-file",
                        &v.key_file,
                        &v.device,
                    ]) {
                        Ok(_) => sh.record(n, d, StepKind::ReencipherStaged, Ok(()))?,
                        Err(e) => {
                            sh.record(n, d, StepKind::ReencipherStaged, Err(&e.line))?;
                            failures.push(format!("{}: {}", v.device, e.line));
                        }
                    }
                }
                VolumeAction::Refuse(why) => {
                    let line = format!("{}: {why}", v.device);
                    sh.record(n, d, StepKind::ReencipherStaged, Err(&why))?;
                    failures.push(line);
                }
                other => {
                    return Err(format!(
                        "{}: unexpected {other:?} before the switch",
                        v.device
                    ))
                }
            }
        }
        if !failures.is_empty() {
            return Err(failures.join("; "));
        }
        sh.ensure_activated()?;
        sh.stopped()?;
        r.run(&["custodian", "set-master-key"])
            .map_err(|e| e.line)?;
        regs = r
            .registers()
            .map_err(|e| format!("unreachable: {}", e.line))?;
        if regs.current.object_id.as_deref() != Some(&key) {
            return Err(format!(
                "its CURRENT register does not hold kmip:{key} after set-master-key"
            ));
        }
    } else {
        // Switched already (a resume): the earlier steps are done.
        sh.record(n, None, StepKind::StageKey, Ok(()))?;
        for v in &spec.volumes {
            sh.record(n, Some(&v.device), StepKind::ReencipherStaged, Ok(()))?;
        }
        note_mkvp(sh, regs.current.mkvp.as_deref())?;
        sh.ensure_activated()?;
    }
    sh.record(n, None, StepKind::SetMasterKey, Ok(()))?;

    // Phase 2: complete every volume under the new CURRENT key.
    let vols = r
        .volumes()
        .map_err(|e| format!("unreachable: {}", e.line))?;
    check_uuids(&vols, &mut failures)?;
    for v in &spec.volumes {
        let Some(Ok(st)) = vols.get(&v.device) else {
            continue;
        };
        if failures
            .iter()
            .any(|f| f.starts_with(&format!("{}:", v.device)))
        {
            continue;
        }
        let d = Some(v.device.as_str());
        let args: &[&str] = match volume_action(
            st,
            true,
            regs.current.mkvp.as_deref(),
            regs.old.mkvp.as_deref(),
            None,
        ) {
            VolumeAction::Done => {
                sh.record(n, d, StepKind::ReencipherComplete, Ok(()))?;
                continue;
            }
            VolumeAction::Complete => &["-q", "reencipher", "--complete"],
            VolumeAction::FromOld => &["-q", "reencipher", "--in-place", "--from-old"],
            VolumeAction::Refuse(why) => {
                sh.record(n, d, StepKind::ReencipherComplete, Err(&why))?;
                failures.push(format!("{}: {why}", v.device));
                continue;
            }
            VolumeAction::Stage => unreachable!("not decided after the switch"),
        };
        sh.stopped()?;
        let mut a = args.to_vec();
        a.extend(["--key-file", &v.key_file, &v.device]);
        match r.run(&a) {
            Ok(_) => sh.record(n, d, StepKind::ReencipherComplete, Ok(()))?,
            Err(e) => {
                sh.record(n, d, StepKind::ReencipherComplete, Err(&e.line))?;
                failures.push(format!("{}: {}", v.device, e.line));
            }
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }

    // The inventory records (Register new, then Destroy old: idempotent).
    if !spec.volumes.is_empty() {
        sh.stopped()?;
        let mut a = vec!["fleet", "register", "--host", name];
        a.extend(spec.volumes.iter().map(|v| v.device.as_str()));
        r.run(&a).map_err(|e| e.line)?;
    }
    sh.record(n, None, StepKind::Register, Ok(()))?;

    // The host reports: CURRENT is the new key, every volume on it.
    let regs = r
        .registers()
        .map_err(|e| format!("unreachable: {}", e.line))?;
    let vols = r
        .volumes()
        .map_err(|e| format!("unreachable: {}", e.line))?;
    if regs.current.object_id.as_deref() != Some(&key) {
        return Err(format!("verify: CURRENT is not kmip:{key}"));
    }
    check_uuids(&vols, &mut failures)?;
    for v in &spec.volumes {
        if let Some(Ok(st)) = vols.get(&v.device) {
            if st.staged || st.wrapping_mkvp != regs.current.mkvp {
                failures.push(format!("{}: verify: not on the new key", v.device));
            }
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    sh.record(n, None, StepKind::Verify, Ok(()))
}

/// Records the new key's MKVP; every host must see the same.
fn note_mkvp(sh: &Shared, m: Option<&str>) -> Result<(), String> {
    let Some(m) = m else { return Ok(()) };
    let mut p = sh.plan.lock().unwrap_or_else(|e| e.into_inner());
    match &p.new_key.mkvp {
        Some(have) if *have != mkvp(m) => Err(format!(
            "the new key's MKVP is {m} on this host but {have} on another"
        )),
        Some(_) => Ok(()),
        None => {
            p.new_key.mkvp = Some(mkvp(m));
            sh.save(&p)
        }
    }
}

/// Marks the first unfinished step of a host failed (a host-level failure).
fn fail_host(sh: &Shared, name: &str, line: &str) -> Result<(), String> {
    let mut p = sh.plan.lock().unwrap_or_else(|e| e.into_inner());
    let already = p.steps.iter().any(|s| {
        s.host.as_deref() == Some(name)
            && s.state == StepState::Failed
            && s.error.as_deref() == Some(line)
    });
    if !already {
        if let Some(s) = p
            .steps
            .iter_mut()
            .find(|s| s.host.as_deref() == Some(name) && s.state != StepState::Done)
        {
            s.state = StepState::Failed;
            s.attempts += 1;
            s.error = Some(line.to_string());
        }
    }
    sh.save(&p)
}

/// Probes a host read-only for the plan: its CURRENT key and volume UUIDs.
fn probe(program: &Path, spec: &HostSpec) -> PlannedHost {
    let r = HostRunner::new(program, spec);
    let mut ph = PlannedHost {
        spec: spec.clone(),
        old_key: None,
        old_mkvp: None,
        probed: false,
        uuids: vec![None; spec.volumes.len()],
    };
    if let (Ok(regs), Ok(vols)) = (r.registers(), r.volumes()) {
        ph.old_key = regs.current.object_id;
        ph.old_mkvp = regs.current.mkvp;
        ph.probed = true;
        for (i, v) in spec.volumes.iter().enumerate() {
            if let Some(Ok(st)) = vols.get(&v.device) {
                ph.uuids[i] = Some(st.uuid.clone());
            }
        }
    }
    ph
}

fn parallel<T: Send, R: Send>(items: Vec<T>, jobs: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    let queue = Mutex::new(items.into_iter().enumerate().collect::<VecDeque<_>>());
    let out = Mutex::new((0..n).map(|_| None).collect::<Vec<Option<R>>>());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(n.max(1)) {
            s.spawn(|| loop {
                let Some((i, it)) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front()
                else {
                    break;
                };
                let r = f(it);
                out.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

/// One coordinator per plan: an exclusive lock on `PLAN.lock`, held for
/// the run (a coordinator killed with SIGKILL releases it with its file).
fn lock_plan(plan: &Path) -> Result<std::fs::File, OpsError> {
    use std::os::unix::io::AsRawFd;
    let mut p = plan.as_os_str().to_owned();
    p.push(".lock");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(|e| {
            OpsError::refused(
                ExitClass::WrongParams,
                format!("{}: {e}", Path::new(&p).display()),
            )
        })?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(OpsError::refused(
            ExitClass::Busy,
            format!(
                "{}: another fleet rotate is running on this plan",
                plan.display()
            ),
        ));
    }
    Ok(f)
}

/// Makes or reads the plan, runs what is not done, revokes the old keys
/// when every host is done.
pub fn rotate(o: &RotateOptions, progress: &(dyn Fn(&str) + Sync)) -> Result<Outcome, OpsError> {
    let _lock = lock_plan(o.plan)?;
    let (plan, cfg) = if o.resume {
        let plan = Plan::read(o.plan).map_err(OpsError::usage)?;
        let cfg = KmipConfig::read(Path::new(&plan.kmip_config)).map_err(OpsError::usage)?;
        (plan, cfg)
    } else {
        if o.plan.exists() {
            let why = match Plan::read(o.plan) {
                Ok(p) if p.complete() => None,
                Ok(p) => Some(format!(
                    "{}: rotation {} of group {} is not finished; continue it with fleet rotate --resume --plan {}",
                    o.plan.display(), p.rotation, p.group, o.plan.display()
                )),
                Err(e) => Some(format!("{e}; not overwritten")),
            };
            if let Some(why) = why {
                return Err(OpsError::refused(ExitClass::Busy, why));
            }
        }
        let group = o
            .group
            .ok_or_else(|| OpsError::usage("fleet rotate needs --group G (or --resume)."))?;
        let hf = o
            .hosts_file
            .ok_or_else(|| OpsError::usage("fleet rotate needs --hosts FILE (or --resume)."))?;
        let hosts = hosts::read(hf, group).map_err(OpsError::usage)?;
        let cfg = KmipConfig::read(o.kmip_config).map_err(OpsError::usage)?;
        if cfg.group != group {
            return Err(OpsError::usage(format!(
                "{}: the key-manager file is for group {}, not {group}",
                o.kmip_config.display(),
                cfg.group
            )));
        }
        // Fail before writing anything when the key manager refuses us.
        KmipClient::connect(&cfg.client)
            .and_then(|mut c| {
                c.locate(&LocateQuery {
                    group: Some(group.into()),
                    max_items: Some(1),
                    ..LocateQuery::default()
                })
            })
            .map_err(kmip_error)?;
        let planned = parallel(hosts, o.jobs, |h| probe(o.program, &h));
        let t = now();
        let rotation = format!("{t:x}{:04x}", std::process::id() & 0xffff);
        let key_name = format!("{}-{group}-rotation-{rotation}", cfg.prefix);
        let kc = std::fs::canonicalize(o.kmip_config).unwrap_or_else(|_| o.kmip_config.into());
        let plan = Plan::new(
            &rotation,
            group,
            &kc.display().to_string(),
            &key_name,
            planned,
            t,
        );
        plan.write(o.plan).map_err(|e| {
            OpsError::refused(
                ExitClass::WrongParams,
                format!("{}: cannot write the plan: {e}", o.plan.display()),
            )
        })?;
        progress(&format!(
            "plan {} written: rotation {rotation}, group {group}, {} host(s), {} volume(s), {} steps",
            o.plan.display(),
            plan.hosts.len(),
            plan.hosts.iter().map(|h| h.spec.volumes.len()).sum::<usize>(),
            plan.steps.len()
        ));
        (plan, cfg)
    };

    let sh = Shared {
        plan: Mutex::new(plan),
        path: o.plan.to_path_buf(),
        cfg,
        kmip: Mutex::new(None),
        activate: Mutex::new(()),
        program: o.program.to_path_buf(),
        stop: o.stop,
        fault_at: std::env::var("WRAPCRYPT_FLEET_FAULT_AT")
            .ok()
            .and_then(|s| s.parse().ok()),
        steps_done: AtomicU64::new(0),
        progress,
    };
    let refuse = |m: String| OpsError::refused(ExitClass::WrongParams, m);

    // The group's new key: found again by its name after a crash between
    // Create and the plan write.
    let (name, group, have) = {
        let p = sh.plan.lock().unwrap_or_else(|e| e.into_inner());
        (
            p.new_key.name.clone(),
            p.group.clone(),
            p.new_key.id.clone(),
        )
    };
    if have.is_none() {
        let found = sh.kmip(|c| {
            c.locate(&LocateQuery {
                name: Some(name.clone()),
                group: Some(group.clone()),
                object_type: Some(ObjectType::SymmetricKey),
                ..LocateQuery::default()
            })
        })?;
        let id = match found.into_iter().next() {
            Some(id) => id,
            None => sh.kmip(|c| c.create(&KeySpec::aes256_kek(&name, &[&group])))?,
        };
        sh.plan.lock().unwrap_or_else(|e| e.into_inner()).new_key.id = Some(id);
    }
    sh.record(None, None, StepKind::CreateKey, Ok(()))
        .map_err(refuse)?;

    // The hosts, `jobs` at a time; a failing host goes back to the queue
    // (after `retry_delay`) up to `retries` times and never holds the others.
    let todo: VecDeque<(usize, u32, Instant)> = {
        let p = sh.plan.lock().unwrap_or_else(|e| e.into_inner());
        (0..p.hosts.len())
            .filter(|&i| !p.host_done(&p.hosts[i].spec.name))
            .map(|i| (i, 0, Instant::now()))
            .collect()
    };
    let queue = Mutex::new(todo);
    let failed = Mutex::new(Vec::<(String, String)>::new());
    let workers = o.jobs.max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let item = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some((hi, attempt, at)) = item else { break };
                while Instant::now() < at && !sh.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let hname = sh.plan.lock().unwrap_or_else(|e| e.into_inner()).hosts[hi]
                    .spec
                    .name
                    .clone();
                match run_host(&sh, hi) {
                    Ok(()) => {}
                    Err(e) if e == INTERRUPTED => break,
                    Err(e) => {
                        let _ = fail_host(&sh, &hname, &e);
                        if attempt < o.retries && !sh.stop.load(Ordering::SeqCst) {
                            progress(&format!(
                                "{hname}: attempt {} failed, retrying in {:?}: {e}",
                                attempt + 1,
                                o.retry_delay
                            ));
                            queue.lock().unwrap_or_else(|e| e.into_inner()).push_back((
                                hi,
                                attempt + 1,
                                Instant::now() + o.retry_delay,
                            ));
                        } else {
                            progress(&format!("{hname}: FAILED: {e}"));
                            failed
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((hname, e));
                        }
                    }
                }
            });
        }
    });
    let interrupted = o.stop.load(Ordering::SeqCst);
    let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());

    // Old keys: only when every host reports every volume on the new key.
    let all_hosts = {
        let p = sh.plan.lock().unwrap_or_else(|e| e.into_inner());
        p.hosts.iter().all(|h| p.host_done(&h.spec.name))
    };
    if all_hosts && !interrupted {
        sh.ensure_activated().map_err(refuse)?;
        let (old, key, rotation) = {
            let p = sh.plan.lock().unwrap_or_else(|e| e.into_inner());
            let key = p.new_key.id.clone().unwrap_or_default();
            let old: BTreeSet<String> = p
                .hosts
                .iter()
                .filter_map(|h| h.old_key.clone())
                .filter(|k| *k != key)
                .collect();
            (old, key, p.rotation.clone())
        };
        let mut revoked = vec![];
        for id in old {
            let state = sh.kmip(|c| c.get_attributes(&id, &["State"]))?.state();
            match state {
                Some(State::Active) => {
                    let msg = format!("superseded by kmip:{key} (fleet rotate {rotation})");
                    sh.kmip(|c| {
                        c.revoke(&id, RevocationReasonCode::CessationOfOperation, Some(&msg))
                    })?;
                    progress(&format!("old key kmip:{id}: revoked (Deactivated)"));
                }
                Some(State::Deactivated) => {}
                other => progress(&format!(
                    "old key kmip:{id}: left as it is ({})",
                    other.map_or("unknown state".into(), |s| s.to_string())
                )),
            }
            revoked.push(id);
        }
        {
            let mut p = sh.plan.lock().unwrap_or_else(|e| e.into_inner());
            p.revoked = revoked;
        }
        sh.record(None, None, StepKind::RevokeOldKeys, Ok(()))
            .map_err(refuse)?;
    }

    let p = sh.plan.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(Outcome {
        rotation: p.rotation.clone(),
        new_key: p.new_key.id.clone(),
        volumes: p.hosts.iter().map(|h| h.spec.volumes.len()).sum(),
        volumes_done: p
            .steps
            .iter()
            .filter(|s| s.step == StepKind::ReencipherComplete && s.state == StepState::Done)
            .count(),
        failed,
        revoked: p.revoked.clone(),
        interrupted,
        complete: p.complete(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use host::VolumeState;

    fn st(wk: &str, staged: bool) -> VolumeState {
        VolumeState {
            uuid: "u".into(),
            wrapping_mkvp: Some(wk.into()),
            staged,
        }
    }

    #[test]
    fn volume_actions() {
        let (c, o, n) = (Some("c"), Some("o"), Some("n"));
        assert_eq!(
            volume_action(&st("c", false), false, c, o, n),
            VolumeAction::Stage
        );
        assert_eq!(
            volume_action(&st("c", true), false, c, o, n),
            VolumeAction::Done
        );
        assert!(matches!(
            volume_action(&st("x", false), false, c, o, n),
            VolumeAction::Refuse(_)
        ));
        // After the switch CURRENT is the new key, OLD the previous one.
        assert_eq!(
            volume_action(&st("c", true), true, n, c, None),
            VolumeAction::Complete
        );
        assert_eq!(
            volume_action(&st("n", false), true, n, c, None),
            VolumeAction::Done
        );
        assert_eq!(
            volume_action(&st("c", false), true, n, c, None),
            VolumeAction::FromOld
        );
        assert!(matches!(
            volume_action(&st("x", false), true, n, c, None),
            VolumeAction::Refuse(_)
        ));
    }
}

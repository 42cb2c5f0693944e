//! The rotation plan (docs/fleet.md, "Plan file"): written before any
//! change, rewritten atomically (temporary file, fsync, rename, fsync of
//! the directory) after every step, read back by `--resume`. It holds
//! everything a resume needs: the hosts and how to reach them, each
//! volume's UUID when planned, the new key's name and id, each host's old
//! key, and one line per step.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::hosts::HostSpec;

/// The `format` member of a plan.
pub const PLAN_FORMAT: &str = "wrapcrypt-fleet-plan/1";

/// What a step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Create the group's new key in the key manager (Pre-Active).
    CreateKey,
    /// The host Gets the new key into its NEW register.
    StageKey,
    /// `reencipher --staged` of one volume.
    ReencipherStaged,
    /// Activate the new key in the key manager (before the first switch).
    ActivateKey,
    /// The host moves NEW → CURRENT → OLD.
    SetMasterKey,
    /// `reencipher --complete` of one volume.
    ReencipherComplete,
    /// `fleet register` of the host's volumes (inventory records).
    Register,
    /// The host reports CURRENT = the new key and every volume on it.
    Verify,
    /// Revoke (Cessation of Operation → Deactivated) the old keys.
    RevokeOldKeys,
}

/// Where a step is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepState {
    /// Not done yet (or not known to be done).
    Pending,
    /// Done.
    Done,
    /// Failed at the last attempt (see `error`); retried by `--resume`.
    Failed,
}

/// One line of the plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    /// The host (`None`: a key-manager step).
    pub host: Option<String>,
    /// The volume's device (`None`: a host or key-manager step).
    pub volume: Option<String>,
    /// What it does.
    pub step: StepKind,
    /// Where it is.
    pub state: StepState,
    /// How often it was tried.
    pub attempts: u32,
    /// The last failure's line.
    pub error: Option<String>,
}

/// A host as planned.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannedHost {
    /// Name, group, how to reach it, volumes.
    pub spec: HostSpec,
    /// The KMIP id of its CURRENT key before the rotation (`None`: not yet
    /// seen, or a local key).
    pub old_key: Option<String>,
    /// That key's MKVP.
    pub old_mkvp: Option<String>,
    /// Whether the host was probed (its old key is known).
    pub probed: bool,
    /// Each volume's UUID when first seen (same order as `spec.volumes`).
    pub uuids: Vec<Option<String>>,
}

/// The group's new key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewKey {
    /// Its KMIP Name (found again by Locate after a crash before the id
    /// was written).
    pub name: String,
    /// Its Unique Identifier, once created.
    pub id: Option<String>,
    /// Its MKVP, once a host staged it.
    pub mkvp: Option<String>,
}

/// The whole plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_FORMAT`].
    pub format: String,
    /// This rotation's id (in the new key's name).
    pub rotation: String,
    /// The host group.
    pub group: String,
    /// The coordinator's key-manager file.
    pub kmip_config: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The new key.
    pub new_key: NewKey,
    /// The old keys revoked at the end (filled in then).
    pub revoked: Vec<String>,
    /// The hosts.
    pub hosts: Vec<PlannedHost>,
    /// Every step, in the order each host runs them.
    pub steps: Vec<Step>,
}

fn step(host: Option<&str>, volume: Option<&str>, kind: StepKind) -> Step {
    Step {
        host: host.map(str::to_string),
        volume: volume.map(str::to_string),
        step: kind,
        state: StepState::Pending,
        attempts: 0,
        error: None,
    }
}

impl Plan {
    /// A new plan: every step pending.
    pub fn new(
        rotation: &str,
        group: &str,
        kmip_config: &str,
        key_name: &str,
        hosts: Vec<PlannedHost>,
        now: u64,
    ) -> Plan {
        let mut steps = vec![step(None, None, StepKind::CreateKey)];
        for h in &hosts {
            let n = Some(h.spec.name.as_str());
            steps.push(step(n, None, StepKind::StageKey));
            for v in &h.spec.volumes {
                steps.push(step(n, Some(&v.device), StepKind::ReencipherStaged));
            }
            steps.push(step(n, None, StepKind::SetMasterKey));
            for v in &h.spec.volumes {
                steps.push(step(n, Some(&v.device), StepKind::ReencipherComplete));
            }
            steps.push(step(n, None, StepKind::Register));
            steps.push(step(n, None, StepKind::Verify));
        }
        // Listed after the hosts; runs before the first set-master-key.
        steps.push(step(None, None, StepKind::ActivateKey));
        steps.push(step(None, None, StepKind::RevokeOldKeys));
        Plan {
            format: PLAN_FORMAT.into(),
            rotation: rotation.into(),
            group: group.into(),
            kmip_config: kmip_config.into(),
            created_at: now,
            new_key: NewKey {
                name: key_name.into(),
                id: None,
                mkvp: None,
            },
            revoked: vec![],
            hosts,
            steps,
        }
    }

    /// The step of `host`/`volume`/`kind`.
    pub fn step_mut(
        &mut self,
        host: Option<&str>,
        volume: Option<&str>,
        kind: StepKind,
    ) -> Option<&mut Step> {
        self.steps
            .iter_mut()
            .find(|s| s.step == kind && s.host.as_deref() == host && s.volume.as_deref() == volume)
    }

    /// Whether that step is done.
    pub fn is_done(&self, host: Option<&str>, volume: Option<&str>, kind: StepKind) -> bool {
        self.steps.iter().any(|s| {
            s.step == kind
                && s.host.as_deref() == host
                && s.volume.as_deref() == volume
                && s.state == StepState::Done
        })
    }

    /// Whether every step of `host` is done.
    pub fn host_done(&self, host: &str) -> bool {
        self.steps
            .iter()
            .filter(|s| s.host.as_deref() == Some(host))
            .all(|s| s.state == StepState::Done)
    }

    /// Whether every step is done.
    pub fn complete(&self) -> bool {
        self.steps.iter().all(|s| s.state == StepState::Done)
    }

    /// Reads a plan.
    pub fn read(path: &Path) -> Result<Plan, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let p: Plan = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a rotation plan: {e}", path.display()))?;
        if p.format != PLAN_FORMAT {
            return Err(format!(
                "{}: plan format {} is not {PLAN_FORMAT}",
                path.display(),
                p.format
            ));
        }
        Ok(p)
    }

    /// Writes the plan atomically: `PATH.tmp`, fsync, rename over `PATH`,
    /// fsync of the directory. A crash leaves the old or the new plan.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotate::hosts::VolumeSpec;

    #[test]
    fn plan_round_trips_and_lists_steps() {
        let h = PlannedHost {
            spec: HostSpec {
                name: "a".into(),
                group: "g".into(),
                socket: None,
                kmip_config: None,
                tcti: None,
                volumes: vec![VolumeSpec {
                    device: "/d/1".into(),
                    key_file: "/k".into(),
                }],
            },
            old_key: Some("1".into()),
            old_mkvp: None,
            probed: true,
            uuids: vec![Some("u".into())],
        };
        let mut p = Plan::new("r", "g", "/c", "n", vec![h], 5);
        assert_eq!(p.steps.len(), 9);
        p.step_mut(Some("a"), Some("/d/1"), StepKind::ReencipherStaged)
            .unwrap()
            .state = StepState::Done;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("plan.json");
        p.write(&f).unwrap();
        let q = Plan::read(&f).unwrap();
        assert!(q.is_done(Some("a"), Some("/d/1"), StepKind::ReencipherStaged));
        assert!(!q.host_done("a"));
        assert!(!dir.path().join("plan.json.tmp").exists());
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.contains("\"reencipher-staged\""), "{text}");
    }
}

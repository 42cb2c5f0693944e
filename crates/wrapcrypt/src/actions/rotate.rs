//! `wrapcrypt fleet rotate --group G --hosts FILE [--plan FILE] [--jobs N]`
//! and `fleet rotate --resume [--plan FILE]`: the master-key rollout of a
//! host group (docs/fleet.md, "Rotation"). The workflow is
//! `wrapcrypt_ops::rotate`; this maps options, turns SIGINT into "stop
//! starting steps", prints progress and the summary.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wrapcrypt_ops::rotate::{self, RotateOptions};

use crate::cli::FleetArgs;
use crate::exit::CliError;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// fleet rotate
pub fn run(a: &FleetArgs, kmip_config: &Path) -> Result<(), CliError> {
    if !a.devices.is_empty() {
        return Err(CliError::usage(
            "fleet rotate takes no DEVICE (volumes are listed in the hosts file).",
        ));
    }
    if a.resume && (a.hosts.is_some() || a.group.is_some()) {
        return Err(CliError::usage(
            "fleet rotate --resume takes the hosts and group from the plan; drop --hosts/--group.",
        ));
    }
    let plan = match (&a.plan, &a.group) {
        (Some(p), _) => PathBuf::from(p),
        (None, Some(g)) => PathBuf::from(format!("fleet-rotate-{g}.plan")),
        (None, None) => {
            return Err(CliError::usage(
                "fleet rotate needs --group G and --hosts FILE, or --resume --plan FILE.",
            ))
        }
    };
    let program = std::env::current_exe()
        .map_err(|e| CliError::usage(format!("cannot find the wrapcrypt binary: {e}")))?;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let hosts = a.hosts.as_ref().map(PathBuf::from);
    let opts = RotateOptions {
        plan: &plan,
        resume: a.resume,
        hosts_file: hosts.as_deref(),
        group: a.group.as_deref(),
        kmip_config,
        jobs: a.jobs.unwrap_or(4).max(1),
        retries: a.retries.unwrap_or(2),
        retry_delay: Duration::from_secs(a.retry_delay.unwrap_or(5)),
        program: &program,
        stop: &STOP,
    };
    let progress = |l: &str| println!("{l}");
    let out = rotate::rotate(&opts, &progress)?;
    let key = out.new_key.as_deref().unwrap_or("?");
    if out.complete {
        println!(
            "fleet rotate {}: {}/{} volumes on the new master key kmip:{key}; old key(s) {} Deactivated",
            out.rotation,
            out.volumes_done,
            out.volumes,
            if out.revoked.is_empty() {
                "(none)".to_string()
            } else {
                out.revoked
                    .iter()
                    .map(|k| format!("kmip:{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        return Ok(());
    }
    let why = if out.interrupted {
        "interrupted".to_string()
    } else {
        out.failed
            .iter()
            .map(|(h, e)| format!("host {h}: {e}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Err(CliError::new(
        1,
        format!(
            "fleet rotate {}: {}/{} volumes on the new master key kmip:{key}, the old key(s) stay Active; {why}; continue with: wrapcrypt fleet rotate --resume --plan {}",
            out.rotation,
            out.volumes_done,
            out.volumes,
            plan.display()
        ),
    ))
}

//! `wrapcrypt custodian init|status|load-new-master-key|set-master-key|stage-kmip-key ID`:
//! master-key administration of the key custodian, like a CCA
//! coprocessor's NEW / CURRENT / OLD registers; with a key manager
//! configured the keys are KMIP objects (docs/kmip.md).

use wrapcrypt_ops::providers;
use wrapcrypt_provider::{ErrorCode, KmipStatus};

use crate::cli::CustodianArgs;
use crate::exit::CliError;

/// custodian SUBCOMMAND
pub fn run(a: &CustodianArgs) -> Result<(), CliError> {
    let c = providers::custodian();
    match a.sub.as_str() {
        "init" => {
            c.init()?;
            println!("Custodian initialised: CURRENT master key generated.");
        }
        "load-new-master-key" => {
            c.load_new_master_key()?;
            match kmip(&c)?.as_ref().and_then(|k| k.object_id(wrapcrypt_provider::Register::New)) {
                Some(id) => println!("New master key kmip:{id} created in the key manager and loaded in register NEW."),
                None => println!("New master key generated in register NEW."),
            }
            println!("Next: wrapcrypt reencipher --staged DEVICE (each volume), then wrapcrypt custodian set-master-key.");
        }
        "set-master-key" => {
            c.set_master_key()?;
            println!("Master key registers moved: NEW -> CURRENT -> OLD.");
            println!("Next: wrapcrypt reencipher --complete DEVICE (each staged volume).");
        }
        "stage-kmip-key" => {
            let id = a.id.as_deref().ok_or_else(|| {
                CliError::usage("custodian stage-kmip-key needs the KMIP object id.")
            })?;
            c.stage_kmip_key(id)?;
            println!("Master key kmip:{id} fetched from the key manager into register NEW.");
            println!("Next: wrapcrypt reencipher --staged DEVICE (each volume), then wrapcrypt custodian set-master-key.");
        }
        "status" => {}
        other => {
            return Err(CliError::usage(format!(
                "Unknown custodian action {other}."
            )))
        }
    }
    if a.sub != "stage-kmip-key" && a.id.is_some() {
        return Err(CliError::usage(format!(
            "custodian {} takes no argument.",
            a.sub
        )));
    }
    let st = c.status()?;
    let km = kmip(&c)?;
    if a.json {
        let regs: serde_json::Map<String, serde_json::Value> = st
            .registers
            .iter()
            .map(|r| {
                (
                    r.register.to_string(),
                    r.mkvp.clone().map_or(serde_json::Value::Null, Into::into),
                )
            })
            .collect();
        let mut out = serde_json::json!({"registers": regs, "seal": st.seal, "protection": st.protection.to_string()});
        if let Some(k) = &km {
            let regs: serde_json::Map<String, serde_json::Value> = k
                .registers
                .iter()
                .map(|r| {
                    let v = if r.object_id.is_empty() {
                        serde_json::json!({"source": if r.mkvp.is_empty() { serde_json::Value::Null } else { "local".into() }})
                    } else {
                        serde_json::json!({
                            "source": "kmip",
                            "object-id": r.object_id,
                            "loaded": r.loaded,
                            "kmip-state": if r.state.is_empty() { serde_json::Value::Null } else { r.state.clone().into() },
                            "problem": if r.problem.is_empty() { serde_json::Value::Null } else { r.problem.clone().into() },
                        })
                    };
                    (r.register.to_string(), v)
                })
                .collect();
            out["kmip"] = serde_json::json!({
                "server": k.backend,
                "reachable": k.unreachable.is_empty(),
                "unreachable": if k.unreachable.is_empty() { serde_json::Value::Null } else { k.unreachable.clone().into() },
                "registers": regs,
            });
        }
        println!("{out}");
    } else {
        println!("Key custodian status");
        for r in &st.registers {
            println!(
                "  {:<8} {}",
                format!("{}:", r.register),
                r.mkvp.as_deref().unwrap_or("(empty)")
            );
        }
        println!("  sealed:     {}", st.seal);
        println!("  protection: {}", st.protection);
        if let Some(k) = &km {
            match k.unreachable.as_str() {
                "" => println!("  key manager: {} (reachable)", k.backend),
                why => println!("  key manager: {}: unreachable ({why})", k.backend),
            }
            for r in &k.registers {
                if r.object_id.is_empty() {
                    continue;
                }
                let state = match (r.state.as_str(), k.unreachable.is_empty()) {
                    ("", true) => "state unknown".to_string(),
                    ("", false) => "kmip: unreachable".to_string(),
                    (s, true) => s.to_string(),
                    (s, false) => format!("{s} when last seen, kmip: unreachable"),
                };
                println!(
                    "  {:<8} source kmip:{} ({state}{})",
                    format!("{}:", r.register),
                    r.object_id,
                    if r.loaded { ", loaded" } else { ", NOT loaded" }
                );
            }
            for r in &k.registers {
                if !r.problem.is_empty() {
                    println!("  warning: {}", r.problem);
                }
            }
        }
    }
    Ok(())
}

/// The key-manager view of the registers; `None` when the custodian has
/// no key manager configured or predates KMIP_STATUS.
fn kmip(c: &wrapcrypt_provider::CustodianProvider) -> Result<Option<KmipStatus>, CliError> {
    match c.kmip_status() {
        Ok(k) if k.backend.is_empty() => Ok(None),
        Ok(k) => Ok(Some(k)),
        Err(e) if e.code() == ErrorCode::BadRequest => Ok(None),
        Err(e) => Err(e.into()),
    }
}

//! `wrapcrypt custodian init|status|load-new-master-key|set-master-key`:
//! master-key administration of the key custodian, like a CCA
//! coprocessor's NEW / CURRENT / OLD registers.

use crate::args::Args;
use crate::exit::CliError;
use crate::provider;

/// custodian SUBCOMMAND
pub fn run(a: &Args) -> Result<(), CliError> {
    let c = provider::custodian();
    match a.pos(0, "<init|status|load-new-master-key|set-master-key>")? {
        "init" => {
            c.init()?;
            println!("Custodian initialised: CURRENT master key generated.");
        }
        "load-new-master-key" => {
            c.load_new_master_key()?;
            println!("New master key generated in register NEW.");
            println!("Next: wrapcrypt reencipher --staged DEVICE (each volume), then wrapcrypt custodian set-master-key.");
        }
        "set-master-key" => {
            c.set_master_key()?;
            println!("Master key registers moved: NEW -> CURRENT -> OLD.");
            println!("Next: wrapcrypt reencipher --complete DEVICE (each staged volume).");
        }
        "status" => {}
        other => {
            return Err(CliError::usage(format!(
                "Unknown custodian action {other}."
            )))
        }
    }
    let st = c.status()?;
    if a.flag("json") {
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
        println!(
            "{}",
            serde_json::json!({"registers": regs, "seal": st.seal, "protection": st.protection.to_string()})
        );
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
    }
    Ok(())
}

//! `wrapcrypt custodian init|status|load-new-master-key|set-master-key`:
//! master-key administration of the key custodian, like a CCA
//! coprocessor's NEW / CURRENT / OLD registers.

use wrapcrypt_ops::providers;

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

//! `wrapcrypt`: cryptsetup's commands for LUKS volumes, plus wrapped keys.

mod activate;
mod args;
mod b64;
mod bench;
mod custodian;
mod enroll;
mod exit;
mod header;
mod inventory;
mod keys;
mod lifecycle;
mod luks1cmd;
mod pass;
mod pkcs11_token;
mod provider;
mod tpm2_token;
mod unlock_tokens;
mod wrapped;

use args::Args;
use exit::CliError;

fn usage() -> &'static str {
    "Usage: wrapcrypt ACTION [options] DEVICE [ARGS]\n\
     Actions: luksFormat open luksOpen close status luksDump isLuks luksUUID luksAddKey\n\
     luksRemoveKey luksChangeKey luksKillSlot luksConvertKey luksHeaderBackup\n\
     luksHeaderRestore token enroll config convert repair erase benchmark\n\
     Wrapped keys: validate reencipher setvp setkey convert --cipher waes-xts-plain64\n\
     custodian keys crypttab"
}

fn run(a: &Args) -> Result<(), CliError> {
    if a.flag("version") {
        println!("wrapcrypt {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if a.flag("help") {
        println!("{}", usage());
        return Ok(());
    }
    match a.action.as_str() {
        "luksFormat" => keys::luks_format(a),
        "open" | "luksOpen" => activate::open(a),
        "close" | "luksClose" => activate::close(a),
        "status" => activate::status(a),
        "__serve" => activate::serve(),
        "luksAddKey" => keys::add_key(a),
        "luksRemoveKey" => keys::remove_key(a),
        "luksChangeKey" => keys::change_key(a),
        "luksKillSlot" => keys::kill_slot(a),
        "luksConvertKey" => keys::convert_key(a),
        "luksDump" => header::dump(a),
        "isLuks" => header::is_luks(a),
        "luksUUID" => header::uuid(a),
        "luksHeaderBackup" => header::backup(a),
        "luksHeaderRestore" => header::restore(a),
        "token" => header::token(a),
        "enroll" => enroll::run(a),
        "config" => header::config(a),
        "repair" => header::repair(a),
        // --cipher selects the wrapped-key conversion; otherwise LUKS1 <-> LUKS2.
        "convert" if a.get("cipher").is_some() => lifecycle::convert(a),
        "convert" => luks1cmd::convert(a),
        "erase" | "luksErase" => keys::erase(a),
        "benchmark" => bench::run(a),
        "custodian" => custodian::run(a),
        "validate" => lifecycle::validate(a),
        "reencipher" => lifecycle::reencipher(a),
        "setvp" => lifecycle::setvp(a),
        "setkey" => lifecycle::setkey(a),
        "keys" => inventory::keys(a),
        "crypttab" => inventory::crypttab(a),
        "" => Err(CliError::usage(usage())),
        other => Err(CliError::usage(format!("Unknown action {other}."))),
    }
}

fn main() {
    wrapcrypt_secret::harden_process();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let code = match Args::parse(&argv).and_then(|a| run(&a)) {
        Ok(()) => 0,
        Err(e) => {
            if !e.msg.is_empty() {
                eprintln!("{}", e.msg);
            }
            e.code
        }
    };
    std::process::exit(code);
}

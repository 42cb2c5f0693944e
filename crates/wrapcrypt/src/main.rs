//! `wrapcrypt`: cryptsetup's commands for LUKS volumes, plus wrapped keys.
//! This binary is only the command line: it parses (clap, cryptsetup's
//! syntax), asks and prints; the work is done by `wrapcrypt-ops` and
//! `wrapcrypt-unlock`, and `exit` maps their errors to cryptsetup's codes.

mod actions;
mod cli;
mod exit;
mod msg;
mod progress;
mod prompt;

use actions::{
    activation, bench, custodian, fleet, generate, header, inventory, keyslots, reencrypt, tokens,
    wrapped,
};
use cli::argv::{self, Parsed};
use cli::{Action, Cli};
use exit::CliError;

fn run(c: &Cli) -> Result<(), CliError> {
    let g = &c.global;
    match &c.action {
        Action::LuksFormat(a) => keyslots::format(g, a),
        Action::Open(a) => activation::open(g, a),
        Action::Close(a) => activation::close(a),
        Action::Suspend(a) => activation::suspend(a),
        Action::Resize(a) => activation::resize(a),
        Action::PlainOpen(a) => activation::plain_open(g, a),
        Action::Refresh(a) => activation::refresh(g, a),
        Action::Resume(a) => activation::resume(g, a),
        Action::Status(a) => activation::status(a),
        Action::Serve => activation::serve(),
        Action::Generate(a) => generate::run(a),
        Action::AddKey(a) => keyslots::add_key(g, a),
        Action::RemoveKey(a) => keyslots::remove_key(g, a),
        Action::ChangeKey(a) => keyslots::change_key(g, a),
        Action::KillSlot(a) => keyslots::kill_slot(g, a),
        Action::ConvertKey(a) => keyslots::convert_key(g, a),
        Action::Dump(a) => header::dump(g, a),
        Action::IsLuks(a) => header::is_luks(a),
        Action::Uuid(a) => header::uuid(a),
        Action::HeaderBackup(a) => header::backup(a),
        Action::HeaderRestore(a) => header::restore(g, a),
        Action::Token(a) => tokens::token(a),
        Action::Enroll(a) => tokens::enroll(g, a),
        Action::Config(a) => header::config(a),
        // --cipher selects the wrapped-key conversion; otherwise LUKS1 <-> LUKS2.
        Action::Convert(a) if a.cipher.is_some() => wrapped::convert(g, a),
        Action::Convert(a) => header::convert(g, a),
        Action::Repair(a) => header::repair(a),
        Action::Erase(a) => keyslots::erase(g, a),
        Action::Reencrypt(a) => reencrypt::run(g, a),
        Action::Benchmark(a) => bench::run(g, a),
        Action::Custodian(a) => custodian::run(a),
        Action::Validate(a) => wrapped::validate(g, a),
        Action::Reencipher(a) => wrapped::reencipher(g, a),
        Action::SetVp(a) => wrapped::setvp(g, a),
        Action::SetKey(a) => wrapped::setkey(g, a),
        Action::Keys(a) => inventory::keys(a),
        Action::Crypttab(a) => inventory::crypttab(a),
        Action::Fleet(a) => fleet::run(g, a),
    }
}

fn main() {
    wrapcrypt_secret::harden_process();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let code = match argv::parse(&argv) {
        Parsed::Print(text) => {
            print!("{text}");
            0
        }
        Parsed::Usage(line) => {
            eprintln!("{line}");
            1
        }
        Parsed::Run(c) => {
            // The action as typed (options may stand before it), for the
            // --debug trace only: finding it again costs a command tree.
            let action = c
                .global
                .debug
                .then(|| argv::reorder(&cli::command(), &argv).into_iter().next())
                .flatten();
            msg::init(&c.global, &argv, action.as_deref());
            let code = match run(&c) {
                Ok(()) => 0,
                Err(e) => {
                    if !e.msg.is_empty() {
                        eprintln!("{}", e.msg);
                    }
                    e.code
                }
            };
            msg::finished(code);
            code
        }
    };
    std::process::exit(code);
}

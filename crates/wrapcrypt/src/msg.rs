//! cryptsetup's `--verbose` and `--debug` output. The libraries speak
//! through the `log` facade (`info!` for the lines `--verbose` shows,
//! `debug!` for the `# ` trace of `--debug`, never a secret); this module
//! is the one logger that prints them, on standard output as cryptsetup
//! does, and the closing "Command successful." / "Command failed with code
//! -N (…)." lines (docs/messages.md).

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::cli::opts::Global;

/// 0 quiet, 1 `--verbose`, 2 `--debug` (which implies `--verbose`).
static LEVEL: AtomicU8 = AtomicU8::new(0);

struct Printer;

static PRINTER: Printer = Printer;

impl Log for Printer {
    fn enabled(&self, m: &Metadata) -> bool {
        // Only wrapcrypt's own records: dependencies' logs may say anything.
        let ours = m.target().starts_with("wrapcrypt");
        ours && match m.level() {
            Level::Info => level() >= 1,
            Level::Debug => level() >= 2,
            _ => false,
        }
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let mut o = std::io::stdout().lock();
        let _ = match r.level() {
            Level::Debug => writeln!(o, "# {}", r.args()),
            _ => writeln!(o, "{}", r.args()),
        };
    }

    fn flush(&self) {
        let _ = std::io::stdout().flush();
    }
}

fn level() -> u8 {
    LEVEL.load(Ordering::Relaxed)
}

/// Whether `--verbose` (or `--debug`) is on.
pub fn verbose() -> bool {
    level() >= 1
}

/// Sets the level from the options and installs the logger; with
/// `--debug`, the first trace lines (version, arguments, action).
pub fn init(g: &Global, argv: &[String], action: Option<&str>) {
    let l = if g.debug { 2 } else { u8::from(g.verbose) };
    LEVEL.store(l, Ordering::Relaxed);
    if l == 0 {
        return;
    }
    if log::set_logger(&PRINTER).is_ok() {
        log::set_max_level(if l >= 2 {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        });
    }
    // The arguments carry no secret (passphrases and keys never come
    // through argv), so the trace repeats them as cryptsetup's does.
    log::debug!(
        "wrapcrypt {} processing \"wrapcrypt {}\"",
        env!("CARGO_PKG_VERSION"),
        argv.join(" ")
    );
    if let Some(a) = action {
        log::debug!("Running command {a}.");
    }
}

/// cryptsetup's words for an exit code.
fn code_text(code: i32) -> &'static str {
    match code {
        1 => "wrong or missing parameters",
        2 => "no permission or bad passphrase",
        3 => "out of memory",
        4 => "wrong device or file specified",
        5 => "device already exists or device is busy",
        _ => "unknown error",
    }
}

/// The closing line of `--verbose`, after the error line (if any) went to
/// stderr.
pub fn finished(code: i32) {
    if !verbose() {
        return;
    }
    if code == 0 {
        println!("Command successful.");
    } else {
        println!("Command failed with code -{code} ({}).", code_text(code));
    }
}

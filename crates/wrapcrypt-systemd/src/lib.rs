//! wrapcrypt's systemd integration, sans-I/O: a crypttab(5) parser, the
//! decision which entries wrapcrypt opens, the mapping of crypttab options
//! to `wrapcrypt open`, and the unit files `wrapcrypt-generator` writes
//! (docs/systemd.md). The binary does the I/O: it reads crypttab, probes
//! headers and writes the files.

pub mod crypttab;
pub mod escape;
pub mod options;
pub mod probe;
pub mod unit;

use crypttab::{Entry, Warning};
use options::Decision;
use probe::Probe;
use unit::{Output, Settings};

/// What the generator does with a whole crypttab.
#[derive(Debug, Default)]
pub struct Generated {
    /// The files to write, in order.
    pub outputs: Vec<Output>,
    /// One per skipped line, refused entry or ignored option, by line.
    pub warnings: Vec<Warning>,
}

/// Whether wrapcrypt (rather than systemd-cryptsetup) opens an entry: the
/// `wrapcrypt` option, or a header that needs it.
pub fn wants_wrapcrypt(e: &Entry, header: Probe) -> bool {
    e.has("wrapcrypt") || header == Probe::Wrapcrypt
}

/// Runs the whole generator logic on crypttab text; `probe` reads the
/// header of an entry (its `header=` or its device) when it can.
pub fn generate(text: &str, s: &Settings, mut probe: impl FnMut(&Entry) -> Probe) -> Generated {
    let tab = crypttab::parse(text);
    let mut g = Generated {
        warnings: tab.warnings,
        ..Generated::default()
    };
    let warn = |line, message| Warning { line, message };
    for e in &tab.entries {
        let by_option = e.has("wrapcrypt");
        if !by_option && probe(e) != Probe::Wrapcrypt {
            continue;
        }
        match options::plan(e) {
            Decision::Open(p) => {
                g.warnings
                    .extend(p.warnings.iter().map(|m| warn(e.line, m.clone())));
                g.outputs.extend(unit::outputs(e, &p, s));
            }
            Decision::Refuse(why) => g.warnings.push(warn(
                e.line,
                format!("{why}; entry left to systemd-cryptsetup"),
            )),
        }
    }
    // Stable: the warnings of one line keep their order.
    g.warnings.sort_by_key(|w| w.line);
    g
}

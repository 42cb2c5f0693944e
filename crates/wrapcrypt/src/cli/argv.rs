//! cryptsetup's argument order on top of clap: options may stand before
//! the action (`wrapcrypt -q --key-file k luksOpen dev name`). The action is
//! moved to the front before clap parses, using clap's own table of which
//! options take a value, so nothing is declared twice.

use std::collections::HashSet;
use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::FromArgMatches;

use super::{command, Cli};

/// Long and short names of every option that takes a value, in any action.
fn valued(cmd: &clap::Command) -> (HashSet<String>, HashSet<char>) {
    let mut long = HashSet::new();
    let mut short = HashSet::new();
    let mut add = |a: &clap::Arg| {
        if a.is_positional() || !a.get_action().takes_values() {
            return;
        }
        if let Some(l) = a.get_long() {
            long.insert(l.to_string());
        }
        for l in a.get_all_aliases().unwrap_or_default() {
            long.insert(l.to_string());
        }
        if let Some(s) = a.get_short() {
            short.insert(s);
        }
    };
    cmd.get_arguments().for_each(&mut add);
    for sub in cmd.get_subcommands() {
        sub.get_arguments().for_each(&mut add);
    }
    (long, short)
}

/// Moves the action (the first argument that is neither an option nor an
/// option's value of `cmd`) to the front.
pub fn reorder(cmd: &clap::Command, args: &[String]) -> Vec<String> {
    let (long, short) = valued(cmd);
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" || a == "-" || !a.starts_with('-') {
            break;
        }
        if let Some(l) = a.strip_prefix("--") {
            if !l.contains('=') && long.contains(l) {
                i += 1;
            }
        } else {
            // A short cluster: the first valued letter takes the rest of
            // the cluster, or the next argument when it is last.
            let letters: Vec<char> = a[1..].chars().collect();
            if let Some(p) = letters.iter().position(|c| short.contains(c)) {
                if p + 1 == letters.len() {
                    i += 1;
                }
            }
        }
        i += 1;
    }
    if i == 0 || i >= args.len() || args[i] == "--" {
        return args.to_vec();
    }
    let mut out = Vec::with_capacity(args.len());
    out.push(args[i].clone());
    out.extend_from_slice(&args[..i]);
    out.extend_from_slice(&args[i + 1..]);
    out
}

/// What parsing gave: the command line, or text to print and an exit code.
pub enum Parsed {
    /// Run this.
    Run(Box<Cli>),
    /// Print `text` (help, version) on stdout and exit 0.
    Print(String),
    /// A usage error: one line for stderr, exit 1.
    Usage(String),
}

/// Parses argv (without the program name).
pub fn parse(args: &[String]) -> Parsed {
    // One command tree for both steps: building it is most of startup.
    let mut cmd = command();
    let ordered = reorder(&cmd, args);
    let action = ordered.first().cloned().unwrap_or_default();
    let mut argv: Vec<OsString> = vec!["wrapcrypt".into()];
    argv.extend(ordered.into_iter().map(OsString::from));
    match cmd
        .try_get_matches_from_mut(argv)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => Parsed::Run(Box::new(c)),
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Parsed::Print(e.to_string()),
            _ => Parsed::Usage(one_line(&e, &mut cmd, &action)),
        },
    }
}

fn ctx(e: &clap::Error, k: ContextKind) -> Option<String> {
    match e.get(k)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) => Some(v.join(", ")),
        ContextValue::StyledStr(s) => Some(s.to_string()),
        ContextValue::StyledStrs(v) => Some(
            v.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        other => Some(other.to_string()),
    }
}

/// A clap error as cryptsetup prints usage errors: one line, and where clap
/// has a suggestion ("did you mean"), in the same line.
fn one_line(e: &clap::Error, cmd: &mut clap::Command, action: &str) -> String {
    match e.kind() {
        ErrorKind::InvalidSubcommand => {
            let bad = ctx(e, ContextKind::InvalidSubcommand).unwrap_or_default();
            match ctx(e, ContextKind::SuggestedSubcommand) {
                Some(s) => format!("Unknown action {bad}; did you mean {s}?"),
                None => format!("Unknown action {bad}; see wrapcrypt --help."),
            }
        }
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            format!(
                "{} (actions: see wrapcrypt --help).",
                cmd.render_usage().to_string().trim_end()
            )
        }
        ErrorKind::UnknownArgument => {
            let bad = ctx(e, ContextKind::InvalidArg).unwrap_or_default();
            match ctx(e, ContextKind::SuggestedArg) {
                Some(s) => format!("Unknown option {bad} for this action; did you mean {s}?"),
                None => format!(
                    "Unknown option {bad} for this action (wrapcrypt {action} --help lists them)."
                ),
            }
        }
        ErrorKind::MissingRequiredArgument => {
            let what = ctx(e, ContextKind::InvalidArg).unwrap_or_default();
            format!("Missing argument {what} (wrapcrypt {action} --help).")
        }
        _ => {
            // clap's first line, without its "error: " prefix.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            first.trim_start_matches("error: ").trim().to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Action;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn run(v: &[&str]) -> Cli {
        match parse(&s(v)) {
            Parsed::Run(c) => *c,
            Parsed::Print(t) => panic!("printed {t}"),
            Parsed::Usage(u) => panic!("usage error {u}"),
        }
    }

    #[test]
    fn options_before_the_action_move_after_it() {
        assert_eq!(
            reorder(
                &command(),
                &s(&["-q", "--key-file", "k", "-S3", "luksOpen", "dev", "n"])
            ),
            s(&["luksOpen", "-q", "--key-file", "k", "-S3", "dev", "n"])
        );
        assert_eq!(
            reorder(&command(), &s(&["-d", "-", "open", "dev"])),
            s(&["open", "-d", "-", "dev"])
        );
        assert_eq!(
            reorder(&command(), &s(&["--key-file=k", "-qd", "kf", "open", "x"])),
            s(&["open", "--key-file=k", "-qd", "kf", "x"])
        );
        let c = run(&["-q", "--key-file", "k", "-S3", "luksOpen", "dev", "n"]);
        assert!(c.global.batch_mode);
        let Action::Open(o) = c.action else {
            panic!("not open")
        };
        assert_eq!(o.on.dev.device, "dev");
        assert_eq!(o.name.as_deref(), Some("n"));
        assert_eq!(o.on.key.key_file.as_deref(), Some("k"));
        assert_eq!(o.on.slot.key_slot, Some(3));
    }

    #[test]
    fn cryptsetup_forms_parse() {
        let c = run(&[
            "luksAddKey",
            "-q",
            "dev",
            "--key-file=k",
            "-S3",
            "new",
            "--pbkdf",
            "pbkdf2",
            "--master-key-file",
            "mk",
        ]);
        let Action::AddKey(a) = c.action else {
            panic!("not luksAddKey")
        };
        assert_eq!(a.new_keyfile_pos.as_deref(), Some("new"));
        assert_eq!(a.volume_key.volume_key_file.as_deref(), Some("mk"));
        assert_eq!(a.pbkdf.pbkdf.as_deref(), Some("pbkdf2"));
        let c = run(&[
            "luksFormat",
            "--luks2-metadata-size",
            "64k",
            "-h",
            "sha512",
            "d",
        ]);
        let Action::LuksFormat(f) = c.action else {
            panic!("not luksFormat")
        };
        assert_eq!(f.layout.luks2_metadata_size, Some(65536));
        assert_eq!(f.pbkdf.hash.as_deref(), Some("sha512"));
    }

    #[test]
    fn usage_errors_are_one_line() {
        for bad in [
            &["luksOpn", "dev"][..],
            &["open", "--nope", "dev"],
            &["luksDump"],
            &["open", "--key-slot", "x", "dev"],
            &["luksFormat", "--luks2-metadata-size", "16b", "d"],
            &[],
        ] {
            match parse(&s(bad)) {
                Parsed::Usage(u) => assert!(!u.is_empty() && !u.contains('\n'), "{bad:?}: {u}"),
                _ => panic!("{bad:?} parsed"),
            }
        }
        match parse(&s(&["luksOpn", "dev"])) {
            Parsed::Usage(u) => {
                assert!(u.contains("did you mean") && u.contains("luksOpen"), "{u}")
            }
            _ => panic!("parsed"),
        }
    }

    #[test]
    fn the_declaration_has_no_conflicts() {
        // clap's own consistency checks over every action (duplicate short
        // or long names, positional order), which release builds skip.
        crate::cli::command().debug_assert();
        for sub in crate::cli::command().get_subcommands_mut() {
            sub.clone().debug_assert();
        }
    }

    #[test]
    fn action_help_lists_only_its_options() {
        let Parsed::Print(h) = parse(&s(&["benchmark", "--help"])) else {
            panic!("no help")
        };
        assert!(h.contains("--cipher"), "{h}");
        assert!(!h.contains("--token-only"), "{h}");
        let Parsed::Print(h) = parse(&s(&["--help"])) else {
            panic!("no help")
        };
        assert!(h.contains("luksFormat") && h.contains("reencipher"), "{h}");
    }
}

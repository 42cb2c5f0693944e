//! Man pages and shell completions from the clap definition (hidden action
//! `__generate DIR`), so packaging needs no second description of the CLI.

use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateArgs};
use crate::exit::CliError;

/// Writes DIR/man8/wrapcrypt.8, one page per action, and completions for
/// bash, zsh and fish under DIR/completions.
pub fn run(a: &GenerateArgs) -> Result<(), CliError> {
    let dir = Path::new(&a.dir);
    let man = dir.join("man8");
    std::fs::create_dir_all(&man)?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    let comp = dir.join("completions");
    std::fs::create_dir_all(&comp)?;
    for sh in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(sh, &mut cmd.clone(), "wrapcrypt", &comp)?;
    }
    Ok(())
}

//! Man pages and shell completions from the clap definition (hidden action
//! `__generate DIR`), so packaging needs no second description of the CLI.

use std::path::Path;

use clap_complete::Shell;

use crate::cli::{command, GenerateArgs};
use crate::exit::CliError;

fn page(cmd: clap::Command, name: &str, dir: &Path) -> Result<(), CliError> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .title(name)
        .section("8")
        .manual("System Administration")
        .render(&mut out)?;
    std::fs::write(dir.join(format!("{name}.8")), out)?;
    Ok(())
}

/// Writes DIR/man8/wrapcrypt.8 and wrapcrypt-ACTION.8 for each action
/// (section 8, as cryptsetup's), and completions for bash, zsh and fish
/// under DIR/completions.
pub fn run(a: &GenerateArgs) -> Result<(), CliError> {
    let dir = Path::new(&a.dir);
    let man = dir.join("man8");
    std::fs::create_dir_all(&man)?;
    let cmd = command();
    page(cmd.clone(), "wrapcrypt", &man)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("wrapcrypt-{}", sub.get_name());
        page(sub.clone().name(name.clone()), &name, &man)?;
    }
    // The custodian daemon's page comes from its own clap declaration:
    // the binary installed beside this one writes it.
    let custodiand = std::env::current_exe()?.with_file_name("wrapcrypt-custodiand");
    if custodiand.exists() {
        let st = std::process::Command::new(&custodiand)
            .arg("--generate-man")
            .arg(&man)
            .status()?;
        if !st.success() {
            return Err(CliError::new(
                1,
                format!("{} --generate-man failed", custodiand.display()),
            ));
        }
    } else {
        eprintln!(
            "{} not found: wrapcrypt-custodiand.8 not written",
            custodiand.display()
        );
    }
    let comp = dir.join("completions");
    std::fs::create_dir_all(&comp)?;
    for sh in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(sh, &mut cmd.clone(), "wrapcrypt", &comp)?;
    }
    Ok(())
}

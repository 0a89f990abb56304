//! `dqpipe completions SHELL` and `dqpipe man`: shell completions and a man page, made by
//! clap_complete and clap_mangen from the command definitions themselves.

use clap::CommandFactory;

use crate::exit::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

/// Completions on stdout: `dqpipe completions bash > /etc/bash_completion.d/dqpipe`.
pub fn completions(a: Args) -> Exit {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "dqpipe", &mut std::io::stdout());
    Exit::Ok
}

/// The man page (roff) on stdout: `dqpipe man > dqpipe.1`.
pub fn man() -> Exit {
    match clap_mangen::Man::new(crate::Cli::command()).render(&mut std::io::stdout()) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            crate::say::error(format!("writing the man page: {e}"));
            Exit::Error
        }
    }
}

//! `dqpipe validate`: checks a spec without I/O; every error as `file:line:column`.

use std::path::PathBuf;

use crate::exit::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// The pipeline spec (.yaml, .yml or .toml).
    spec: PathBuf,
}

pub fn run(args: Args) -> Exit {
    match crate::options::load(&args.spec) {
        Ok(p) => {
            println!("{}: valid ({} nodes, {} stores)", args.spec.display(), p.nodes.len(), p.stores.len());
            Exit::Ok
        }
        Err(e) => e,
    }
}

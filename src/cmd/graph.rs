//! `dqpipe graph`: the pipeline's graph, as Graphviz DOT or Mermaid.

use std::path::PathBuf;

use crate::exit::Exit;

#[derive(clap::Args)]
pub struct Args {
    spec: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Dot)]
    format: Format,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Dot,
    Mermaid,
}

pub fn run(args: Args) -> Exit {
    match crate::options::load(&args.spec) {
        Ok(p) => {
            match args.format {
                Format::Dot => println!("{}", p.dag.to_dot()),
                Format::Mermaid => print!("{}", p.dag.to_mermaid()),
            }
            Exit::Ok
        }
        Err(e) => e,
    }
}

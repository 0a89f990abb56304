//! `dqpipe kinds`: every node kind with its role and one line, from the registry that reads specs.

use crate::exit::Exit;
use crate::reference::{kinds_table, Format};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn run(a: Args) -> Exit {
    let kinds = dqpipe_engine::spec::reference::kinds(&dqpipe_plugins::registry());
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&kinds).unwrap_or_default()),
        f => print!("{}", kinds_table(&kinds, f)),
    }
    Exit::Ok
}

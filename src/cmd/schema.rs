//! `dqpipe schema`: the JSON Schema of specs, for editors' YAML language servers.

use crate::exit::Exit;

pub fn run() -> Exit {
    let registry = dqpipe_plugins::registry();
    match serde_json::to_string_pretty(&dqpipe_engine::spec::schema::spec_schema(&registry)) {
        Ok(s) => {
            println!("{s}");
            Exit::Ok
        }
        Err(e) => {
            crate::say::error(e);
            Exit::Error
        }
    }
}

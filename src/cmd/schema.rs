//! `dqpipe schema`: the JSON Schema of specs (or, `--tests`, of `*.tests.yaml` files), for
//! editors' YAML language servers and check-jsonschema.

use crate::exit::Exit;

#[derive(clap::Args)]
pub struct Args {
    /// The schema of tests files (`SPEC.tests.yaml`) instead of specs.
    #[arg(long)]
    tests: bool,
}

pub fn run(a: Args) -> Exit {
    let registry = dqpipe_plugins::registry();
    let schema =
        if a.tests { crate::spec_tests::tests_schema() } else { dqpipe_engine::spec::schema::spec_schema(&registry) };
    match serde_json::to_string_pretty(&schema) {
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

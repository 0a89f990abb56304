//! `dqpipe test SPEC|DIR...`: runs the test cases written beside each spec (its `tests:`
//! section or `SPEC.tests.yaml`) in memory: no clamd, S3, SFTP or network. Prints a line
//! per case as `cargo test` does, then each failure with what differs, then
//! `N passed, N failed`; exits 1 when any case failed.

use std::path::PathBuf;

use crate::exit::Exit;
use crate::spec_tests::{check, run_case, suite, tests_file, Suite};

#[derive(clap::Args)]
pub struct Args {
    /// Specs, or folders of specs.
    #[arg(required = true)]
    specs: Vec<PathBuf>,
}

pub async fn run(args: Args) -> Exit {
    let specs = crate::options::specs_in(&args.specs);
    let (mut passed, mut failed) = (0, 0);
    let mut failures: Vec<(String, Vec<String>)> = Vec::new();
    for spec in &specs {
        let suite = match find(spec) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                failed += 1;
                println!("test {} ... FAILED", spec.display());
                failures.push((spec.display().to_string(), vec![e]));
                continue;
            }
        };
        println!("\nrunning {} from {}", crate::say::counted(suite.cases.len(), "test"), spec.display());
        for case in &suite.cases {
            let name = format!("{}: {}", spec.display(), case.name);
            let problems = run_case(&suite, case).await;
            if problems.is_empty() {
                passed += 1;
                println!("test {name} ... ok");
            } else {
                failed += 1;
                println!("test {name} ... FAILED");
                failures.push((name, problems));
            }
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:");
        for (name, problems) in &failures {
            println!("\n---- {name} ----");
            for p in problems {
                println!("{p}");
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 || passed == 0 {
        if passed == 0 && failed == 0 {
            crate::say::error("no test cases found (a `tests:` section, or SPEC.tests.yaml beside a spec)");
        }
        Exit::Error
    } else {
        Exit::Ok
    }
}

/// The spec's cases: none when it has no tests file and no `tests:` section. The section
/// is read by loading the spec with no variables set (defaults apply). What the cases
/// name that the spec has not (a stub, a route) is an error of the whole file, each at
/// its place.
fn find(spec: &std::path::Path) -> Result<Option<Suite>, String> {
    let registry = dqpipe_plugins::registry();
    let (inline, nodes) = match dqpipe_engine::spec::load::load_pipeline(spec, &registry, &|_| None) {
        Ok(p) => {
            let nodes: Vec<(String, String)> =
                p.nodes.iter().map(|n| (n.spec.name.clone(), n.spec.kind.clone())).collect();
            (p.tests, Some(nodes))
        }
        Err(_) if tests_file(spec).exists() => (Vec::new(), None),
        Err(_) => return Ok(None),
    };
    let s = suite(spec, &inline)?;
    if let Some(nodes) = nodes {
        let errors = check(&s, &nodes);
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
    }
    Ok((!s.cases.is_empty()).then_some(s))
}

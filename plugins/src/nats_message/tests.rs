//! The transform against the golden files, both styles, and its edges.

use std::path::PathBuf;

use super::Transformed;

/// Every case in `tests/golden/<set>`: exact output bytes and partition, or the reason.
fn golden(set: &str, transform: fn(&[u8], &str) -> Result<Transformed, crate::invalid::Invalid>) -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden").join(set);
    let mut cases = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let Some(case) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".input.json")) else {
            continue;
        };
        cases += 1;
        let input = std::fs::read(&path).unwrap();
        let result = transform(&input, &format!("{case}.json"));
        let expected = dir.join(format!("{case}.expected.json"));
        if expected.exists() {
            let t = result.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(String::from_utf8(t.json).unwrap(), std::fs::read_to_string(&expected).unwrap(), "{case}");
            assert_eq!(
                t.msg_date,
                std::fs::read_to_string(dir.join(format!("{case}.msg_date"))).unwrap().trim(),
                "{case}"
            );
        } else {
            let want = std::fs::read_to_string(dir.join(format!("{case}.error.txt"))).unwrap();
            let err = result.err().unwrap_or_else(|| panic!("{case} should fail"));
            assert!(err.0.contains(want.trim()), "{case}: {err}");
        }
    }
    cases
}

#[test]
fn golden_files() {
    assert_eq!(golden("nats", super::transform), 12);
}

/// Outputs Python's `json.dumps` wrote (scripts/golden-nats-python), byte for byte.
#[test]
fn golden_files_in_the_python_style() {
    assert_eq!(golden("nats-python", super::transform_python), 14);
}

/// 1,000 levels on a thread with a 128 KiB stack (tokio's blocking threads have 2 MiB):
/// parsing, writing and dropping use explicit stacks.
#[test]
fn deep_nesting_needs_no_deep_stack() {
    let depth = crate::nats_message::pyjson::MAX_DEPTH - 2; // the top level and the message hold two
    let doc = format!(
        "{{\"X400Message\": {{\"envelope\": {{\"messageDeliveryTime\": \"190103061432Z\"}}}}, \"FPL\": {{\"D\": {}{}}}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let t = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || super::transform_python(doc.as_bytes(), "deep.json").map(|t| t.json.len()))
        .unwrap()
        .join()
        .unwrap();
    assert!(t.is_ok(), "{t:?}");
    let deeper = format!("{{\"FPL\": {}{}}}", "[".repeat(depth + 10), "]".repeat(depth + 10));
    let err = super::transform_python(deeper.as_bytes(), "deeper.json").unwrap_err();
    assert!(err.0.contains("nested deeper than 1000 levels"), "{err}");
}

/// Issue 27.6i: the job dqpipe replaces ran Python 3.7, which reads and writes integers
/// of any length; Python 3.11's 4,300-digit limit is not dqpipe's.
#[test]
fn integers_of_any_length_are_written_digit_for_digit() {
    let big = format!("-{}", "9".repeat(5_000));
    let doc = format!(
        "{{\"X400Message\": {{\"envelope\": {{\"messageDeliveryTime\": \"190103061432Z\"}}}}, \"FPL\": {{\"n\": {big}}}}}"
    );
    let t = super::transform_python(doc.as_bytes(), "big.json").unwrap();
    let json = String::from_utf8(t.json.to_vec()).unwrap();
    assert!(json.contains(&format!("\"n\": {big}")), "the digits are kept");
}

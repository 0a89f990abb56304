//! clamd's replies read strictly, bounded and escaped.

use super::*;

#[test]
fn replies_are_read_strictly() {
    assert_eq!(parse_reply("stream: OK"), Verdict::Clean);
    assert_eq!(
        parse_reply("stream: Local.EICAR.UNOFFICIAL FOUND"),
        Verdict::Infected { signature: "Local.EICAR.UNOFFICIAL".into() }
    );
    for bad in [
        "INSTREAM size limit exceeded. ERROR",
        "stream: OK extra",
        "stream: ok",
        "",
        "stream: FOUND",
        "OK",
        "stream: Can't allocate memory ERROR",
    ] {
        assert!(matches!(parse_reply(bad), Verdict::Error { .. }), "{bad:?}");
    }
    // Escape codes and CR in a signature name are written out, never passed on.
    assert_eq!(
        parse_reply("stream: Evil\u{1b}[2J\rName FOUND"),
        Verdict::Infected { signature: "Evil\\u{1b}[2J\\u{d}Name".into() }
    );
    let long = format!("stream: {} FOUND", "x".repeat(1000));
    assert!(matches!(parse_reply(&long), Verdict::Infected { signature } if signature.chars().count() == 257));
}

/// A reply that never ends is not read without bound, nor taken for a closed
/// connection: the scan fails, saying why.
#[tokio::test]
async fn a_reply_over_64_kib_is_refused() {
    let mut long = vec![b'x'; 200 * 1024];
    long.push(0);
    let err = Replies::default().next(&mut long.as_slice()).await.unwrap_err();
    assert!(err.to_string().contains("not a clamd reply"), "{err}");
}

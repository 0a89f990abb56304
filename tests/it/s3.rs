//! S3 stores against a real S3-compatible server (s3s-fs on 127.0.0.1): keys exactly as
//! stored, several list pages, zero-byte and 50 MB objects, the NATS pipeline S3 -> S3 with
//! the original job's variables and a real clamd, and the error cases an operator meets.

use crate::common::*;

use std::path::Path;
use std::process::Command;

/// A copy pipeline between any two stores, keeping keys; S3 credentials from the default
/// chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
fn copy_spec(dir: &Path, extra_list: &str) -> String {
    let spec = format!(
        r#"version: 1
name: copy-keys
stores:
  src: {{ url: "${{SRC_URL}}", s3: {{ endpoint: "${{S3_ENDPOINT:-}}", multipart_part_bytes: 5242880 }} }}
  dst: {{ url: "${{DST_URL}}", s3: {{ endpoint: "${{S3_ENDPOINT:-}}", multipart_part_bytes: 5242880 }} }}
nodes:
  list: {{ kind: list, store: src, prefix: "${{PREFIX:-}}" {extra_list} }}
  fetch: {{ kind: fetch, input: list }}
  write: {{ kind: put, input: fetch, store: dst, key: "{{{{ key }}}}" }}
"#
    );
    let path = dir.join("copy.yaml");
    std::fs::write(&path, spec).unwrap();
    path.to_string_lossy().into_owned()
}

fn with_default_chain<'a>(c: &'a mut Command, s3: &S3Server) -> &'a mut Command {
    c.env("S3_ENDPOINT", s3.endpoint()).env("AWS_ACCESS_KEY_ID", S3_KEY_ID).env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
}

/// Names an archive really has, and the characters that break naive key handling.
fn awkward_name(i: usize) -> String {
    match i % 6 {
        0 => format!("[-PRMD=EG-ADMD=ICAO-C=XX-;MTA-EGGG-1-MTCU_{i:016X}].json"),
        1 => format!("fifty 50% off {i}.json"),
        2 => format!("ünïcødé ✈ {i}.json"),
        3 => format!("semi;colon=equals {i}.json"),
        4 => format!("%41%2F already-encoded {i}.json"),
        _ => format!("plain-{i}.json"),
    }
}

#[test]
fn copy_to_s3_and_back_keeps_every_key_and_byte() {
    let s3 = S3Server::start(&["archive"]);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    // 2,500 objects over nested prefixes (three list pages), every tenth zero bytes.
    for i in 0..2_500 {
        let sub = src.join(format!("nested/{}/{}", i % 5, i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        let body = if i % 10 == 0 { Vec::new() } else { format!("{{\"n\":{i}}}").into_bytes() };
        std::fs::write(sub.join(awkward_name(i)), body).unwrap();
    }
    // The control: the same run without the large object, for the baseline peak memory.
    let spec = copy_spec(dir.path(), "");
    let control = with_default_chain(&mut dqpipe(dir.path()), &s3)
        .args(["run", &spec, "--report", "control.json", "--progress", "off"])
        .env("SRC_URL", format!("file://{}", src.display()))
        .env("DST_URL", "s3://archive/control")
        .output()
        .unwrap();
    assert_eq!(control.status.code(), Some(0), "{}", stderr(&control));
    let baseline = read_json(&dir.path().join("control.json"))["peak_rss_bytes"].as_u64().unwrap();

    // One 50 MB object: multipart on the way up, streamed through a spool file on the way down.
    std::fs::create_dir_all(src.join("big")).unwrap();
    let big: Vec<u8> = (0..50_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(src.join("big/blob.bin"), &big).unwrap();
    drop(big);

    let up = with_default_chain(&mut dqpipe(dir.path()), &s3)
        .args(["run", &spec, "--report", "up.json", "--progress", "off"])
        .env("SRC_URL", format!("file://{}", src.display()))
        .env("DST_URL", "s3://archive/in")
        .output()
        .unwrap();
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    // s3s-fs keeps one file per key: the bucket's folder is the objects as S3 holds them.
    assert_same_files(&src, &s3.bucket_dir("archive").join("in"));

    let back = dir.path().join("back");
    let down = with_default_chain(&mut dqpipe(dir.path()), &s3)
        .args(["run", &spec, "--report", "down.json", "--progress", "off"])
        .env("SRC_URL", "s3://archive/in")
        .env("DST_URL", format!("file://{}", back.display()))
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(0), "{}", stderr(&down));
    assert_same_files(&src, &back);
    let r = read_json(&dir.path().join("down.json"));
    assert_eq!(r["items"]["from_sources"], 2_501);
    assert_eq!(r["items"]["complete"], 2_501);
    // Neither direction held the 50 MB object in memory. Up, a multipart upload holds at
    // most 4 parts of 8 MiB (the defaults) in flight and one being filled: 5 x 8 MiB =
    // 40 MiB over the control run's peak. Down, the body spools to disk past the 8 MiB
    // threshold, well within the same bound. Held whole, the object alone would be 50 MB.
    let bound = baseline + 5 * 8 * 1024 * 1024;
    for name in ["up.json", "down.json"] {
        let peak = read_json(&dir.path().join(name))["peak_rss_bytes"].as_u64().unwrap();
        assert!(peak < bound, "{name}: peak memory {peak} bytes, over {bound} (control run: {baseline})");
    }
}

#[test]
fn listing_honours_prefix_suffix_regex_and_start_after() {
    let s3 = S3Server::start(&["archive"]);
    let bucket = s3.bucket_dir("archive");
    for (folder, n) in [("2024/01", 30), ("2024/02", 30), ("2024/10", 30), ("2025/01", 30)] {
        std::fs::create_dir_all(bucket.join("nats").join(folder)).unwrap();
        for i in 0..n {
            let ext = if i % 3 == 0 { "txt" } else { "json" };
            std::fs::write(bucket.join(format!("nats/{folder}/m{i:03}.{ext}")), b"{}").unwrap();
        }
    }
    let cases = [
        // A prefix is a string prefix, as in S3: `2024/0` takes 01 and 02, not 10.
        ("2024/0", "", 60),
        ("2024/", r#", suffix: ".json""#, 60),
        ("", r#", regex: "^m00[0-9]\\.json$""#, 24),
        ("", r#", start_after: "2024/10/m029.json""#, 30),
        ("2024/1", r#", limit: 7"#, 7),
    ];
    for (prefix, extra, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let spec = copy_spec(dir.path(), extra);
        let out = with_default_chain(&mut dqpipe(dir.path()), &s3)
            .args(["run", &spec, "--progress", "off"])
            .env("SRC_URL", "s3://archive/nats")
            .env("PREFIX", prefix)
            .env("DST_URL", format!("file://{}", dir.path().join("out").display()))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{prefix} {extra}: {}", stderr(&out));
        let got = files_under(&dir.path().join("out"));
        assert_eq!(got.len(), expected, "prefix {prefix:?} {extra}: {got:?}");
        assert!(got.iter().all(|k| k.starts_with(prefix)), "{got:?}");
    }
}

#[test]
fn nats_pipeline_s3_to_s3_matches_the_local_run() {
    let clamd = Clamd::start("25M");
    let s3 = S3Server::start(&["archive", "internal", "ops"]);
    let dir = tempfile::tempdir().unwrap();
    // The local run is the reference; the archive goes to S3 under the original's prefix.
    let samples = samples_and_reference(dir.path(), 200, 2, 2, &clamd.tcp());
    let local_internal = dir.path().join("var/internal");
    assert_eq!(files_under(&local_internal).len(), 196);
    upload_samples(&s3, &samples);
    let pipeline = nats_pipeline();

    // Destination with a prefix, then with none: never a key starting with `/`.
    for (location, folder) in [("internal/parsed/nats", "parsed/nats"), ("internal", "")] {
        let _ = std::fs::remove_dir_all(s3.bucket_dir("internal"));
        std::fs::create_dir_all(s3.bucket_dir("internal")).unwrap();
        // The original job's Secret keys, unchanged.
        let mut c = dqpipe(dir.path());
        nats_s3_env(&mut c, &s3.endpoint(), &clamd.tcp());
        let out = c
            .args(["run", &pipeline, "--progress", "off", "--report", "s3.json"])
            .env("S3_DST_BUCKET_LOCATION", location)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{location}: {}", stderr(&out));
        let written = s3.bucket_dir("internal").join(folder);
        assert_same_files(&local_internal, &written);
        assert!(files_under(&s3.bucket_dir("internal")).iter().all(|k| k.starts_with(if folder.is_empty() {
            "msg_date="
        } else {
            "parsed/nats/msg_date="
        })));
        // Every object is recorded done beside the output, whatever its route.
        assert_eq!(done_under(&written).len(), 200);
        // Quarantine and dead letter keep the archive key, with the reason beside each.
        assert_eq!(files_under(&s3.bucket_dir("ops").join("quarantine/nats")).len(), 4);
        assert_eq!(files_under(&s3.bucket_dir("ops").join("dead-letter/nats")).len(), 4);
        // No secret in anything the run printed.
        let printed = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!printed.contains(S3_SECRET) && !printed.contains(S3_KEY_ID), "{printed}");
        let _ = std::fs::remove_dir_all(s3.bucket_dir("ops"));
    }
}

fn run_copy_expect_failure(s3: &S3Server, src: &str, dst: &str, tweak: impl Fn(&mut Command)) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("in")).unwrap();
    std::fs::write(dir.path().join("in/a.json"), b"{}").unwrap();
    let spec = copy_spec(dir.path(), "");
    let mut c = dqpipe(dir.path());
    with_default_chain(&mut c, s3).args(["run", &spec, "--progress", "off"]).env("SRC_URL", src).env("DST_URL", dst);
    tweak(&mut c);
    let out = c.output().unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "expected a failure, got: {text}");
    assert!(!text.contains(S3_SECRET) && !text.contains("wrong-secret-value"), "a secret was printed: {text}");
    text
}

#[test]
fn errors_are_clear_and_hold_no_secret() {
    let s3 = S3Server::start(&["archive"]);
    std::fs::create_dir_all(s3.bucket_dir("archive").join("in")).unwrap();
    std::fs::write(s3.bucket_dir("archive").join("in/a.json"), b"{}").unwrap();

    let t = run_copy_expect_failure(&s3, "s3://archive/in", "file://./out", |c| {
        c.env("AWS_SECRET_ACCESS_KEY", "wrong-secret-value");
    });
    assert!(t.contains("SignatureDoesNotMatch") && t.contains("s3://archive/in"), "{t}");

    let t = run_copy_expect_failure(&s3, "s3://archive/in", "file://./out", |c| {
        c.env("AWS_ACCESS_KEY_ID", "AKIDONTKNOWYOU");
    });
    assert!(t.contains("credentials"), "{t}");

    let t = run_copy_expect_failure(&s3, "s3://no-such-bucket/in", "file://./out", |_| {});
    assert!(t.contains("bucket `no-such-bucket` does not exist"), "{t}");

    // (Writing to a missing bucket is not shown here: s3s-fs creates the bucket's folder on
    // PUT. Against S3 the put fails with NoSuchBucket, the message above, item unprocessed.)

    let closed = free_port();
    let t = run_copy_expect_failure(&s3, "s3://archive/in", "file://./out", |c| {
        c.env("S3_ENDPOINT", format!("http://127.0.0.1:{closed}"));
    });
    assert!(t.contains(&format!("cannot reach http://127.0.0.1:{closed}")), "{t}");

    let t = run_copy_expect_failure(&s3, "s3://archive/in", "file://./out", |c| {
        c.env("AWS_CA_BUNDLE", "/nonexistent/ca.pem");
    });
    assert!(t.contains("cannot read CA bundle `/nonexistent/ca.pem`"), "{t}");
}

/// The machines this runs on set AWS_CA_BUNDLE; S3 stores work with it and without it.
#[test]
fn works_with_and_without_a_ca_bundle_in_the_environment() {
    let s3 = S3Server::start(&["archive"]);
    std::fs::create_dir_all(s3.bucket_dir("archive").join("in")).unwrap();
    std::fs::write(s3.bucket_dir("archive").join("in/a.json"), b"{\"a\":1}").unwrap();
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    for with_bundle in [false, true] {
        if with_bundle && !bundle.exists() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let spec = copy_spec(dir.path(), "");
        let mut c = dqpipe(dir.path());
        with_default_chain(&mut c, &s3)
            .args(["run", &spec, "--progress", "off"])
            .env("SRC_URL", "s3://archive/in")
            .env("DST_URL", "file://./out");
        if with_bundle {
            c.env("AWS_CA_BUNDLE", bundle);
        } else {
            c.env_remove("AWS_CA_BUNDLE");
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "bundle {with_bundle}: {}", stderr(&out));
        assert_eq!(std::fs::read(dir.path().join("out/a.json")).unwrap(), b"{\"a\":1}");
    }
}

/// `parallel_listings`: the prefix split by its next character, 16 listings at once over
/// several pages each, lists every key exactly once: keys whose next character is a
/// letter, a digit, punctuation, `~`, a space, or past ASCII (`é`, `✈`).
#[test]
fn parallel_listings_list_every_key_once() {
    let s3 = S3Server::start(&["archive"]);
    let bucket = s3.bucket_dir("archive");
    std::fs::create_dir_all(bucket.join("p")).unwrap();
    let mut keys: Vec<String> = (0..2400).map(awkward_name).collect();
    keys.extend(
        ["~tilde.json", "~~.json", " space.json", "é.json", "✈.json", "0.json", "Z.json", "{x}.json"].map(String::from),
    );
    for k in &keys {
        std::fs::write(bucket.join("p").join(k), b"{}").unwrap();
    }
    let mut listed = Vec::new();
    for parallel in [1, 16] {
        let dir = tempfile::tempdir().unwrap();
        let spec = copy_spec(dir.path(), &format!(", parallel_listings: {parallel}"));
        let out = with_default_chain(&mut dqpipe(dir.path()), &s3)
            .args(["run", &spec, "--progress", "off", "--report", "r.json"])
            .env("SRC_URL", "s3://archive/p")
            .env("DST_URL", format!("file://{}", dir.path().join("out").display()))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{parallel}: {}", stderr(&out));
        let report = read_json(&dir.path().join("r.json"));
        // Once each: as many items as keys, and every key among the outputs.
        assert_eq!(report["items"]["from_sources"], keys.len() as u64, "{parallel}");
        let mut got = files_under(&dir.path().join("out"));
        got.sort();
        listed.push(got);
    }
    let mut want = keys.clone();
    want.sort();
    assert_eq!(listed[0], want);
    assert_eq!(listed[1], want);
}

/// NATS archive keys share everything up to `MTCU_`: with the spec's prefix empty, the
/// list node finds that shared prefix (a few probing listings) and splits after it, by the
/// hex digit that follows; every key is listed once.
#[test]
fn parallel_listings_split_after_the_prefix_all_keys_share() {
    let s3 = S3Server::start(&["archive"]);
    let bucket = s3.bucket_dir("archive");
    let keys: Vec<String> = (0..1500u64)
        .map(|i| {
            format!("[-PRMD=EG-ADMD=ICAO-C=XX-;MTA-EGGG-1-MTCU_{:016X}].json", i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        })
        .collect();
    for k in &keys {
        std::fs::write(bucket.join(k), b"{}").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = copy_spec(dir.path(), ", parallel_listings: 16");
    let out = with_default_chain(&mut dqpipe(dir.path()), &s3)
        .args(["run", &spec, "--progress", "off"])
        .env("SRC_URL", "s3://archive")
        .env("DST_URL", format!("file://{}", dir.path().join("out").display()))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("the keys split after their shared prefix prefix=[-PRMD=EG-ADMD=ICAO-C=XX-;MTA-EGGG-1-MTCU_"),
        "{err}"
    );
    let mut got = files_under(&dir.path().join("out"));
    got.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(got, want);
}

//! No pipeline writes into what it lists: a `put` whose store lies inside a listing's key
//! space (`INTERNAL_URL` set to the archive's URL, an output folder inside the landing
//! folder) would list its own outputs on the next run, or this one, and process them
//! again. `validate` refuses it, naming both stores.
//!
//! Compared as text, without I/O (plans and `validate` touch nothing): a store's URL
//! without its query, its scheme and place (bucket, host and port, or the folder made
//! absolute against the working directory, `.` and `..` folded), then the folders of its
//! root. A listing's key space is its store's root followed by the list's `prefix` (a
//! prefix of keys, not of folders: `PARSED_` lists `PARSED_1.zip`, not `dest/`). A written
//! store overlaps when its root lies inside that space. Two S3 stores on different
//! endpoints never overlap.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use crate::spec::errors::ErrorSink;
use crate::spec::{NodeSpec, StoreSpec};

/// A store's URL as comparable text: `s3://bucket@endpoint/root/` (root with a trailing
/// `/`, or empty), or `None` for a URL this cannot read.
fn key_space(store: &StoreSpec, cwd: &Path) -> Option<String> {
    let url = store.url.split('?').next().unwrap_or_default();
    let (scheme, rest) = url.split_once("://")?;
    let place = match scheme {
        "file" => {
            let path = Path::new(rest);
            let absolute = if path.is_absolute() { path.to_path_buf() } else { cwd.join(path) };
            return Some(format!("file://{}/", folded(&absolute).display().to_string().trim_end_matches('/')));
        }
        "s3" => {
            let endpoint = store.options.get("s3").and_then(|s| s.get("endpoint")).and_then(|e| e.as_str());
            let (bucket, root) = rest.split_once('/').unwrap_or((rest, ""));
            format!("{bucket}@{}/{}", endpoint.unwrap_or_default().trim_end_matches('/'), root.trim_matches('/'))
        }
        _ => rest.to_string(),
    };
    let place = place.trim_end_matches('/');
    Some(format!("{scheme}://{place}/"))
}

/// `path` with `.` and `..` folded, as text (no symlink is followed: nothing is read).
fn folded(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// What the sources list: node -> (store, prefix), from `BuildContext::lists`.
pub(crate) type Listings = HashMap<String, Vec<(String, String)>>;

/// Refuses every write into a store inside what a source lists.
pub(crate) fn check_writes_outside_listings(
    specs: &[NodeSpec],
    stores: &HashMap<String, &StoreSpec>,
    writes: &HashMap<String, Vec<String>>,
    listings: &Listings,
    errors: &mut ErrorSink<'_>,
) {
    let cwd = std::env::current_dir().unwrap_or_default();
    for spec in specs {
        for written in writes.get(&spec.name).into_iter().flatten() {
            let Some(w) = stores.get(written).and_then(|s| key_space(s, &cwd)) else { continue };
            for (lister, listed) in listings.iter().flat_map(|(n, l)| l.iter().map(move |l| (n, l))) {
                let (store, prefix) = listed;
                let Some(l) = stores.get(store).and_then(|s| key_space(s, &cwd)) else { continue };
                if !w.starts_with(&format!("{l}{prefix}")) {
                    continue;
                }
                let (wu, lu) = (&stores[written].url, &stores[store].url);
                let under = if prefix.is_empty() { String::new() } else { format!(" under `{prefix}`") };
                errors.push(
                    &spec.path.key("store"),
                    format!(
                        "store `{written}` ({wu}) lies inside what `{lister}` lists (store `{store}`, {lu}{under}): \
                         the pipeline would list and process its own output; write to a store outside the listing"
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str, endpoint: Option<&str>) -> StoreSpec {
        let mut options = serde_json::Map::new();
        if let Some(e) = endpoint {
            options.insert("s3".into(), serde_json::json!({ "endpoint": e }));
        }
        StoreSpec {
            name: "s".into(),
            url: url.into(),
            trusted: false,
            max_requests_per_second: None,
            options,
            path: Default::default(),
        }
    }

    #[test]
    fn key_spaces_compare_place_and_folders() {
        let cwd = Path::new("/work/run");
        let ks = |url: &str| key_space(&store(url, None), cwd).unwrap();
        assert_eq!(ks("file://./var/archive/"), "file:///work/run/var/archive/");
        assert_eq!(ks("file://./var/x/../archive"), "file:///work/run/var/archive/");
        assert_eq!(ks("file:///data"), "file:///data/");
        assert_eq!(ks("s3://bucket"), "s3://bucket@/");
        assert_eq!(ks("s3://bucket/nats/"), "s3://bucket@/nats/");
        let on = |url: &str, e: &str| key_space(&store(url, Some(e)), cwd).unwrap();
        assert_ne!(on("s3://bucket", "http://a:9000"), on("s3://bucket", "http://b:9000"));
        // `s3://b/a` and `s3://b/ab` are different folders.
        assert!(!ks("s3://b/ab").starts_with(&ks("s3://b/a")));
        assert!(ks("s3://b/a/out").starts_with(&ks("s3://b/a")));
    }
}

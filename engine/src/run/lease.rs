//! Two runs of one pipeline and shard at once (a CronJob's run that overran into the
//! next, a person running it by hand during the night's): both would be safe (outputs
//! are idempotent, done markers shared), but both would do all the work and alert for
//! the same files. A run takes a lease first, in the store where its sources keep done
//! markers ([`crate::api::Source::lease_store`]), `_dqpipe/leases/<pipeline>/<shard>.json`:
//! a write that happens only if the key is free (S3's `If-None-Match: *`, a hard link on
//! a local folder), renewed every third of `defaults.lease_secs`, deleted at the end. A
//! second run finds it held and exits with its own code (5), naming the holder; a lease
//! not renewed in time (its run was killed), or held by a process of this host that is
//! gone, is taken over.
//!
//! The takeover of an expired lease is a write, then a read to see who won: two runs
//! taking over the same expired lease in the same instant may both go on, which is the
//! safe behaviour without a lease. The CronJobs' `concurrencyPolicy: Forbid` comes first.
//!
//! Each request of taking it is retried on a transient failure, as an item's are (the
//! stores retry nothing themselves). A write whose answer was cut off may have landed:
//! the retry then finds this run's own lease, which is taken as any lease dqpipe need not
//! wait for.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::api::body::{Body, Spool};
use crate::api::store::{PutOptions, Store, StoreError, StoreErrorKind};
use crate::api::Stop;
use crate::run::preflight::RunError;

/// Who holds a lease, and until when.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    run_id: String,
    pipeline: String,
    shard: String,
    host: String,
    pid: u32,
    taken_at: String,
    /// Unix seconds.
    expires: i64,
}

/// A lease this run holds: renewed until [`Lease::release`].
pub(crate) struct Lease {
    store: Arc<dyn Store>,
    key: String,
    run_id: String,
    renewer: tokio::task::JoinHandle<()>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The lease of `pipeline`'s `shard` (`all` when unsharded) in `store`, or why not.
pub(crate) async fn take(
    store: Arc<dyn Store>,
    pipeline: &str,
    shard: &str,
    run_id: &str,
    secs: u64,
    stop: Stop,
) -> Result<Lease, RunError> {
    let key = format!("_dqpipe/leases/{pipeline}/{shard}.json");
    let holder = Holder {
        run_id: run_id.to_string(),
        pipeline: pipeline.to_string(),
        shard: shard.to_string(),
        host: host(),
        pid: std::process::id(),
        taken_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        expires: now() + secs as i64,
    };
    let failed =
        |e: StoreError| RunError::Lease(format!("taking the run's lease {key:?} in {}: {e}", store.display_url()));
    let body = encode(&holder);
    let options = PutOptions::default();
    if !retried(|| store.put_new(&key, &body, &options)).await.map_err(failed)? {
        match retried(|| read(&*store, &key)).await.map_err(failed)? {
            Some(other) if other.expires > now() && other.run_id != run_id && !gone(&other) => {
                return Err(busy(&other, &key))
            }
            // Expired, held by a process of this host that is gone (killed), or not one
            // dqpipe wrote: taken over, then read back, as two runs may take it over at once.
            _ => {
                retried(|| store.put(&key, &body, &options)).await.map_err(failed)?;
                match retried(|| read(&*store, &key)).await.map_err(failed)? {
                    Some(h) if h.run_id == run_id => {}
                    Some(other) => return Err(busy(&other, &key)),
                    None => return Err(RunError::Lease(format!("the lease {key:?} vanished as it was taken"))),
                }
            }
        }
    }
    let renewer = tokio::spawn(renew(store.clone(), key.clone(), holder, secs, stop));
    Ok(Lease { store, key, run_id: run_id.to_string(), renewer })
}

/// `op`, retried on transient failures: 5 retries, 200 ms doubling to at most 5 s, with
/// jitter (about 6 s in all), the nodes' default policy less its last, longest wait.
async fn retried<T, F, Fut>(op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    use backon::Retryable;
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(5)
        .with_jitter();
    op.retry(backoff)
        .when(|e: &StoreError| e.kind == StoreErrorKind::Transient)
        .notify(|e, after| tracing::warn!(error = %e, ?after, "taking the run's lease: trying again"))
        .await
}

/// Whether the holder was a process of this host that no longer exists (a run killed
/// with SIGKILL on a laptop or VM): its lease need not lapse first. A holder on another
/// host (another pod) cannot be checked, and its lease is waited out.
fn gone(holder: &Holder) -> bool {
    let here = host();
    !here.is_empty()
        && holder.host == here
        && holder.pid != std::process::id()
        && cfg!(target_os = "linux")
        && !std::path::Path::new(&format!("/proc/{}", holder.pid)).exists()
}

fn busy(other: &Holder, key: &str) -> RunError {
    let left = (other.expires - now()).max(0);
    RunError::Busy(format!(
        "another run of pipeline `{}` (shard {}) holds its lease: run {} on {} (pid {}), since {}, renewed for \
         {left} s more ({key}). Nothing was done; this run exits. If that run is gone, its lease lapses by \
         itself, or delete {key}",
        other.pipeline,
        other.shard,
        other.run_id,
        if other.host.is_empty() { "an unknown host" } else { &other.host },
        other.pid,
        other.taken_at
    ))
}

fn encode(h: &Holder) -> Body {
    Body::Memory(Bytes::from(serde_json::to_vec_pretty(h).unwrap_or_default()))
}

async fn read(store: &dyn Store, key: &str) -> Result<Option<Holder>, StoreError> {
    let spool = Spool { threshold: 1 << 20, dir: None };
    match store.get(key, &spool).await {
        Ok(body) => Ok(body.to_bytes(1 << 20).await.ok().and_then(|b| serde_json::from_slice(&b).ok())),
        Err(e) if e.kind == StoreErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every third of the lease, extends it; a lease another run holds now (this one was
/// not renewed in time: the process paused longer than the lease) stops the run, as
/// SIGTERM does, so that two runs overlap as little as possible.
async fn renew(store: Arc<dyn Store>, key: String, mut holder: Holder, secs: u64, stop: Stop) {
    let every = Duration::from_secs((secs / 3).max(1));
    loop {
        tokio::time::sleep(every).await;
        match read(&*store, &key).await {
            Ok(Some(h)) if h.run_id != holder.run_id => {
                tracing::error!(holder = %h.run_id, key = %key,
                    "the run's lease was taken by another run (it lapsed): stopping, the rest is left for that run");
                stop.stop();
                return;
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "could not read the run's lease to renew it: trying again");
                continue;
            }
            _ => {}
        }
        holder.expires = now() + secs as i64;
        if let Err(e) = store.put(&key, &encode(&holder), &PutOptions::default()).await {
            tracing::warn!(key = %key, error = %e, "could not renew the run's lease: trying again");
        }
    }
}

impl Lease {
    /// Stops renewing it and deletes it, if this run still holds it.
    pub(crate) async fn release(self) {
        self.renewer.abort();
        match read(&*self.store, &self.key).await {
            Ok(Some(h)) if h.run_id == self.run_id => {
                if let Err(e) = self.store.delete(&self.key).await {
                    tracing::warn!(key = %self.key, error = %e, "could not release the run's lease: it lapses by itself");
                }
            }
            _ => {}
        }
    }
}

/// The leases of a run: one in each store its sources keep done markers in (usually
/// one), for its shard; none in a plan, or with `defaults.lease_secs: 0`.
pub(crate) async fn take_all(
    p: &crate::spec::load::Pipeline,
    opts: &crate::run::options::RunOptions,
) -> Result<Vec<Lease>, RunError> {
    let secs = p.defaults.lease_secs;
    if secs == 0 || matches!(opts.mode, crate::run::options::Mode::Plan { .. }) {
        return Ok(Vec::new());
    }
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for n in &p.nodes {
        if let crate::api::Built::Source(s) = &n.built {
            if let Some(store) = s.lease_store() {
                if !stores.iter().any(|o| o.display_url() == store.display_url()) {
                    stores.push(store);
                }
            }
        }
    }
    let shard = opts.shard.map(|s| format!("{}-of-{}", s.index, s.count)).unwrap_or_else(|| "all".into());
    let mut leases = Vec::new();
    for store in stores {
        match take(store, &p.name, &shard, &opts.run_id, secs, opts.stop.clone()).await {
            Ok(lease) => leases.push(lease),
            Err(e) => {
                for l in leases {
                    l.release().await;
                }
                return Err(e);
            }
        }
    }
    Ok(leases)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::body::Body;
    use crate::api::store::ObjectInfo;
    use crate::testing::MemoryStore;
    use futures::stream::BoxStream;
    use std::sync::atomic::{AtomicI32, Ordering};

    /// A store behind a connection that breaks: the first create-only write lands but its
    /// answer is cut off, and the first read is reset.
    #[derive(Debug)]
    struct Cut {
        inner: MemoryStore,
        writes_cut: AtomicI32,
        reads_reset: AtomicI32,
    }

    fn cut() -> StoreError {
        StoreError::new(StoreErrorKind::Transient, "connection closed before message completed")
    }

    #[async_trait::async_trait]
    impl Store for Cut {
        fn display_url(&self) -> String {
            self.inner.display_url()
        }
        fn list<'a>(&'a self, prefix: &'a str, after: Option<String>) -> BoxStream<'a, Result<ObjectInfo, StoreError>> {
            self.inner.list(prefix, after)
        }
        async fn get(&self, key: &str, spool: &Spool) -> Result<Body, StoreError> {
            if self.reads_reset.fetch_sub(1, Ordering::SeqCst) > 0 {
                return Err(cut());
            }
            self.inner.get(key, spool).await
        }
        async fn put(&self, key: &str, body: &Body, options: &PutOptions) -> Result<(), StoreError> {
            self.inner.put(key, body, options).await
        }
        async fn put_new(&self, key: &str, body: &Body, options: &PutOptions) -> Result<bool, StoreError> {
            let made = self.inner.put_new(key, body, options).await?;
            if self.writes_cut.fetch_sub(1, Ordering::SeqCst) > 0 {
                return Err(cut());
            }
            Ok(made)
        }
        async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
            self.inner.head(key).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_whose_write_was_cut_off_is_taken_and_then_held() {
        let store = Arc::new(Cut { inner: MemoryStore::new("m"), writes_cut: 1.into(), reads_reset: 1.into() });
        let lease = take(store.clone(), "feed", "all", "run-1", 60, Stop::default()).await.expect("taken");
        let held = read(&store.inner, "_dqpipe/leases/feed/all.json").await.unwrap().expect("a lease");
        assert_eq!(held.run_id, "run-1");
        // Another run now finds it held, by this one.
        match take(store.clone(), "feed", "all", "run-2", 60, Stop::default()).await {
            Err(RunError::Busy(why)) => assert!(why.contains("run run-1"), "{why}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a second run took a held lease"),
        }
        lease.release().await;
        assert!(store.inner.objects().is_empty(), "{:?}", store.inner.objects().keys());
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_stays_down_fails_the_lease_with_its_error() {
        let store = Arc::new(Cut { inner: MemoryStore::new("m"), writes_cut: 100.into(), reads_reset: 100.into() });
        match take(store, "feed", "all", "run-1", 60, Stop::default()).await {
            Err(RunError::Lease(why)) => assert!(why.contains("connection closed"), "{why}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("taken from a store that never answered"),
        }
    }
}

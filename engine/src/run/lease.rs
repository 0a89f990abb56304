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

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::api::body::{Body, Spool};
use crate::api::store::{PutOptions, Store};
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
    let failed = |e: crate::api::store::StoreError| {
        RunError::Lease(format!("taking the run's lease {key:?} in {}: {e}", store.display_url()))
    };
    let body = encode(&holder);
    if !store.put_new(&key, &body, &PutOptions::default()).await.map_err(failed)? {
        match read(&*store, &key).await.map_err(failed)? {
            Some(other) if other.expires > now() && other.run_id != run_id && !gone(&other) => {
                return Err(busy(&other, &key))
            }
            // Expired, held by a process of this host that is gone (killed), or not one
            // dqpipe wrote: taken over, then read back, as two runs may take it over at once.
            _ => {
                store.put(&key, &body, &PutOptions::default()).await.map_err(failed)?;
                match read(&*store, &key).await.map_err(failed)? {
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

async fn read(store: &dyn Store, key: &str) -> Result<Option<Holder>, crate::api::store::StoreError> {
    use crate::api::store::StoreErrorKind;
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

//! The `list` node at work: which objects a run takes (`select`), where they are listed
//! from (a store, its ranges at once, or an inventory), and the listing itself.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use dqpipe_engine::api::body::Spool;
use dqpipe_engine::api::store::{ObjectInfo, Store, StoreError, StoreErrorKind};
use dqpipe_engine::api::{Context, Emitter, Finished, NodeError, Source};
use futures::stream::BoxStream;
use futures::StreamExt;

use super::expect::Seen;
use super::inventory::Manifest;
use super::resume::{done_id, DoneLog};
use super::{name_of, object_meta, ListConfig, Order};
use crate::retry::resumable_listing;

pub struct List {
    pub(super) cfg: ListConfig,
    pub(super) store: Arc<dyn Store>,
    pub(super) regex: Option<regex::Regex>,
    /// `name_pattern` and the LastModified window.
    pub(super) selectors: super::select::Selectors,
    /// `expect`, checked.
    pub(super) expect: Option<super::expect::Expect>,
    pub(super) resume: Option<DoneLog>,
    /// The store holding the inventory reports, with `inventory`.
    pub(super) inventory: Option<Arc<dyn Store>>,
    /// With `parallel_listings`: the prefix every key shares, after which the keys are
    /// split into ranges (`parallel.rs`), and the ranges' prefixes; found once.
    pub(super) split: tokio::sync::OnceCell<(String, Vec<String>)>,
}

/// What a listing does with one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Filtered out (suffix, regex): not this run's business.
    Ignored,
    /// An earlier run finished it.
    Done,
    Take,
}

impl List {
    /// Whether this run takes the object, by the node's own filters and the markers an
    /// earlier run left (`done`). The engine decides the rest ([`Emitter::offer`]: the
    /// shard, a saved plan).
    /// Whether the object is one of the feed's: its key has the `suffix`, its name
    /// matches the `regex`.
    fn of_the_feed(&self, o: &ObjectInfo) -> bool {
        self.cfg.suffix.as_deref().is_none_or(|s| o.key.ends_with(s))
            && self.regex.as_ref().is_none_or(|r| r.is_match(&name_of(&o.key)))
    }

    /// Checks `expect` against what the listing showed: an unmet expectation is a problem
    /// of the run. A listing cut short (a stop, `limit`) is not judged.
    fn judge(&self, out: &Emitter, seen: &Seen, whole: bool) {
        let Some(expect) = &self.expect else { return };
        if !whole {
            tracing::info!(store = %self.cfg.store, "the listing did not run to its end: `expect` not checked");
            return;
        }
        if let Some(reason) = seen.unmet(expect, &self.cfg.prefix) {
            tracing::warn!(store = %self.cfg.store, "{reason}");
            out.expectation_failed(&reason);
        }
    }

    pub fn select(&self, o: &ObjectInfo, cx: &Context, done: &HashSet<String>) -> Selection {
        if !self.of_the_feed(o) {
            return Selection::Ignored;
        }
        if !self.selectors.in_window(o) {
            return Selection::Ignored;
        }
        if !cx.reprocess() && done.contains(&done_id(o)) {
            // A moving list deletes what it delivered, so a done object still here is one
            // whose delete failed, or a new file sent under the same name. Only an ETag that
            // follows the content tells them apart; where the version is a file's size and
            // time (folders, SFTP, FTP) it is delivered again, to the same keys, and then
            // deleted: a second read costs less than deleting a file nobody received.
            if self.cfg.delete_after_success && !self.store.etag_follows_content() {
                return Selection::Take;
            }
            return Selection::Done;
        }
        Selection::Take
    }

    /// The objects earlier runs finished (empty without `resume`).
    pub async fn done_markers(&self) -> Result<HashSet<String>, StoreError> {
        match &self.resume {
            Some(log) => log.read().await,
            None => Ok(HashSet::new()),
        }
    }

    /// The inventory's manifest, read (with retries) from its store.
    async fn manifest(&self, store: &Arc<dyn Store>) -> Result<Manifest, NodeError> {
        let key = self.cfg.inventory.as_ref().map(|i| i.manifest.as_str()).unwrap_or_default();
        let spool = Spool { threshold: 64 << 20, dir: None };
        let read = || async { store.get(key, &spool).await };
        let body = self
            .cfg
            .retry
            .preflight(read, |e| e.kind == StoreErrorKind::Transient, |e| format!("inventory manifest {key:?}: {e}"))
            .await?;
        let bytes =
            body.to_bytes(64 << 20).await.map_err(|e| NodeError::new(format!("inventory manifest {key:?}: {e}")))?;
        Manifest::parse(&bytes).map_err(|e| NodeError::refused(format!("inventory manifest {key:?}: {e}")))
    }

    /// The objects to consider: the store's listing, or this shard's share of the
    /// inventory's data files.
    async fn objects<'a>(&'a self, cx: &'a Context) -> Result<Listing<'a>, NodeError> {
        let Some(store) = &self.inventory else { return Ok(self.walk(cx)) };
        let manifest = self.manifest(store).await?;
        let files = manifest.share(cx.shard());
        tracing::info!(files = files.len(), of = manifest.files.len(), "inventory data files to read");
        Ok(crate::list::inventory::objects(
            store.clone(),
            Arc::new(manifest),
            files,
            &self.cfg.prefix,
            cx.spool().clone(),
            self.cfg.retry.clone(),
        ))
    }

    /// The listing, with transient failures retried from the last key seen.
    pub fn walk<'a>(&'a self, cx: &'a Context) -> Listing<'a> {
        let url = self.store.display_url();
        let all = if self.cfg.parallel_listings > 1 && self.store.lists_in_key_order() {
            self.fanned_out(cx)
        } else {
            self.listing(cx, &self.cfg.prefix, self.cfg.start_after.clone())
        };
        all.map(move |r| r.map_err(|e| StoreError::new(e.kind, format!("listing {url}: {e}")))).boxed()
    }

    fn listing<'a>(&'a self, cx: &'a Context, prefix: &'a str, after: Option<String>) -> Listing<'a> {
        resumable_listing(&*self.store, prefix, after, &self.cfg.retry, || cx.retried(1))
    }

    /// The prefix's keys in ranges listed at once, `parallel_listings` at a time: the
    /// prefix is extended to what every key shares, then split by the next character: one
    /// listing per printable ASCII character, one for the shared prefix itself and keys
    /// whose next character sorts before the space (it stops at the space: the store lists
    /// in key order), one for keys whose next character sorts after `~`. Each range is
    /// retried from its own last key; together they list every key once.
    fn fanned_out<'a>(&'a self, cx: &'a Context) -> Listing<'a> {
        let split = async move {
            self.split
                .get_or_init(|| async {
                    let p = &self.cfg.prefix;
                    let base = match crate::list::parallel::shared_prefix(&*self.store, p).await {
                        Ok(base) => {
                            tracing::info!(prefix = %base, "parallel listings: the keys split after their shared prefix");
                            base
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "parallel listings: the shared prefix was not found; splitting after `prefix`");
                            p.clone()
                        }
                    };
                    let fan = crate::list::parallel::fan(&base);
                    (base, fan)
                })
                .await
        };
        futures::stream::once(split)
            .flat_map(move |(base, fan): &'a (String, Vec<String>)| {
                let space = format!("{base} ");
                let low = self.listing(cx, base, None).take_while(move |r| {
                    futures::future::ready(r.as_ref().map_or(true, |o| o.key.as_str() < space.as_str()))
                });
                let tilde = format!("{base}~");
                let high = self.listing(cx, base, Some(tilde.clone())).filter(move |r| {
                    futures::future::ready(r.as_ref().map_or(true, |o| !o.key.starts_with(tilde.as_str())))
                });
                let ranges =
                    [low.boxed(), high.boxed()].into_iter().chain(fan.iter().map(move |q| self.listing(cx, q, None)));
                futures::stream::iter(ranges).flatten_unordered(self.cfg.parallel_listings)
            })
            .boxed()
    }
}

/// Objects as a listing gives them; an error ends it, and keeps its kind.
type Listing<'a> = BoxStream<'a, Result<ObjectInfo, StoreError>>;

#[async_trait]
impl Source for List {
    /// The store of the done markers (`resume`): the run's lease is taken there.
    fn lease_store(&self) -> Option<Arc<dyn Store>> {
        self.resume.as_ref().map(|r| r.store())
    }

    /// Reads the first entry of the listing, so that wrong credentials, a missing bucket or
    /// an unreachable endpoint stop the run before anything moves.
    async fn preflight(&self) -> Result<(), NodeError> {
        if let Some(store) = &self.inventory {
            return self.manifest(store).await.map(|_| ());
        }
        let first =
            || async { self.store.list(&self.cfg.prefix, self.cfg.start_after.clone()).next().await.transpose() };
        self.cfg
            .retry
            .preflight(
                first,
                |e| e.kind == StoreErrorKind::Transient,
                |e| format!("listing {}: {e}", self.store.display_url()),
            )
            .await
            .map(|_| ())
    }

    async fn run(&self, out: &Emitter, cx: &Context) -> Result<(), NodeError> {
        if self.cfg.limit == Some(0) {
            // Zero means zero: nothing is taken, nothing deleted.
            tracing::warn!(store = %self.store.display_url(), "limit is 0: no object is taken in this run");
            return Ok(());
        }
        let done = self.done_markers().await?;
        if self.resume.is_some() {
            tracing::info!(markers = done.len(), reprocess = cx.reprocess(), "done markers read");
        }
        // The listing runs ahead of the items (up to two pages): the next page is being
        // fetched while the items of this one wait for room downstream.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<ObjectInfo, StoreError>>(2_000);
        let listing = self.objects(cx).await?;
        let produce = send_in_order(listing, self.cfg.order == Order::Modified, tx);
        let mut count = 0u64;
        // For `expect`: the feed's objects, and whether the listing was seen to its end.
        let (mut seen, mut whole) = (Seen::default(), true);
        let consume = async {
            while let Some(o) = rx.recv().await {
                if cx.is_stopped() {
                    tracing::info!(store = %self.cfg.store, listed = count, "listing stopped");
                    whole = false;
                    break;
                }
                let o = o?;
                if self.expect.is_some() && self.of_the_feed(&o) {
                    seen.see(&o);
                }
                let selection = self.select(&o, cx, &done);
                // With an inventory, this shard read only its own data files.
                let offered = if self.inventory.is_some() { out.offer_in_share(&o) } else { out.offer(&o) };
                if selection == Selection::Ignored || !offered {
                    continue;
                }
                match selection {
                    Selection::Ignored => {}
                    Selection::Done => {
                        out.skipped_done(&o);
                        // Delivered by an earlier run but not deleted then: only the delete.
                        if self.cfg.delete_after_success && !cx.planning() {
                            let delete = || self.store.delete_listed(&o);
                            if let Err(e) = self.cfg.retry.store_op(|e| e.to_string(), delete).await {
                                tracing::warn!(key = %o.key.escape_debug(), error = %e, "already delivered, but deleting it failed");
                            }
                        }
                    }
                    Selection::Take => {
                        let mut meta = object_meta(&self.cfg.store, &o);
                        let port = self.selectors.capture(&name_of(&o.key), &mut meta);
                        let item = out.new_item_in(Some(self.store.clone()), &o, meta);
                        if out.emit(port, item).await.is_err() {
                            whole = false;
                            break;
                        }
                        count += 1;
                        if self.cfg.limit.is_some_and(|l| count >= l) {
                            whole = false;
                            break;
                        }
                    }
                }
            }
            // Stop the producer: dropping the receiver ends its sends.
            drop(rx);
            Ok::<(), NodeError>(())
        };
        let ((), consumed) = tokio::join!(produce, consume);
        consumed?;
        self.judge(out, &seen, whole);
        out.not_listed(self.store.take_not_listed());
        if count == 0 {
            tracing::warn!(store = %self.store.display_url(), prefix = %self.cfg.prefix, "listed zero objects to process");
        } else {
            tracing::info!(store = %self.store.display_url(), listed = count, "listing done");
        }
        Ok(())
    }

    /// Records the object as done (with `resume`), then deletes it at the source (with
    /// `delete_after_success`). Called only once every output of it is durable. An object
    /// that was only dropped went nowhere: with `delete_after_success` it is neither
    /// deleted nor recorded (a done marker would have a later run delete it as delivered),
    /// so it stays where it is and each run drops it again.
    async fn ack(&self, done: &Finished) -> Result<(), NodeError> {
        let info = &done.listed;
        if self.cfg.delete_after_success && !done.delivered {
            return Ok(());
        }
        if let Some(log) = &self.resume {
            log.record(info, &done.record).await?;
        }
        if self.cfg.delete_after_success {
            // Retried as the items' requests are (an FTP server's 421, a reset): only this is
            // left; a refusal keeps its kind (a refused acknowledgement is exit 3).
            let delete = || self.store.delete_listed(info);
            self.cfg.retry.store_op(|e| format!("outputs are durable, but {e}"), delete).await?;
        }
        Ok(())
    }

    fn deletes_on_ack(&self) -> bool {
        self.cfg.delete_after_success
    }
}

/// Sends the listing's objects on `tx` as they are listed, or with `oldest_first` all of
/// them sorted by modification time (then key): a listing error ends it, sent on.
async fn send_in_order(
    mut listing: Listing<'_>,
    oldest_first: bool,
    tx: tokio::sync::mpsc::Sender<Result<ObjectInfo, StoreError>>,
) {
    if !oldest_first {
        while let Some(o) = listing.next().await {
            if tx.send(o).await.is_err() {
                break;
            }
        }
        return;
    }
    let mut all = Vec::new();
    while let Some(o) = listing.next().await {
        match o {
            Ok(o) => all.push(o),
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
    all.sort_by(|a, b| a.last_modified.cmp(&b.last_modified).then_with(|| a.key.cmp(&b.key)));
    for o in all {
        if tx.send(Ok(o)).await.is_err() {
            break;
        }
    }
}

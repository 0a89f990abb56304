//! `max_requests_per_second` on a store: its object requests (GET, PUT, HEAD, DELETE)
//! are spaced so that no more than that many start in any second, whatever the nodes'
//! concurrency: rclone's `--tpslimit`, for a server that throttles (S3's per-prefix
//! limits answer `503 SlowDown`) or one shared with other jobs. Listing pages are not
//! counted (a few per thousand objects), nor the HEAD inside a `delete_listed`.
//!
//! Hand-written rather than the `governor` crate: spacing one clock's slots is a dozen
//! lines, on tokio's clock, so that tests with paused time see it; governor brings its
//! own clock and more crates.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dqpipe_engine::api::body::{Body, Spool};
use dqpipe_engine::api::store::{Access, ObjectInfo, Origin, PutOptions, Store, StoreError};
use futures::stream::BoxStream;
use tokio::time::Instant;

/// A store whose requests start at most `per_second` a second.
#[derive(Debug)]
pub struct RateLimited {
    inner: Arc<dyn Store>,
    every: Duration,
    /// When the next request may start.
    next: tokio::sync::Mutex<Option<Instant>>,
}

impl RateLimited {
    pub fn new(inner: Arc<dyn Store>, per_second: f64) -> RateLimited {
        let every = Duration::from_secs_f64(1.0 / per_second.max(1e-6));
        RateLimited { inner, every, next: tokio::sync::Mutex::new(None) }
    }

    /// Waits for this request's slot: the first at once, each next one `every` later.
    async fn slot(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + self.every);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

#[async_trait]
impl Store for RateLimited {
    fn display_url(&self) -> String {
        self.inner.display_url()
    }
    fn can(&self, access: Access) -> bool {
        self.inner.can(access)
    }
    fn lists_in_key_order(&self) -> bool {
        self.inner.lists_in_key_order()
    }
    fn etag_follows_content(&self) -> bool {
        self.inner.etag_follows_content()
    }
    async fn metadata(&self, key: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.slot().await;
        self.inner.metadata(key).await
    }
    fn take_not_listed(&self) -> Vec<(String, String)> {
        self.inner.take_not_listed()
    }
    fn list<'a>(
        &'a self,
        prefix: &'a str,
        start_after: Option<String>,
    ) -> BoxStream<'a, Result<ObjectInfo, StoreError>> {
        self.inner.list(prefix, start_after)
    }
    async fn get(&self, key: &str, spool: &Spool) -> Result<Body, StoreError> {
        self.slot().await;
        self.inner.get(key, spool).await
    }
    async fn get_listed(&self, listed: &ObjectInfo, spool: &Spool) -> Result<Body, StoreError> {
        self.slot().await;
        self.inner.get_listed(listed, spool).await
    }
    async fn put(&self, key: &str, body: &Body, options: &PutOptions) -> Result<(), StoreError> {
        self.slot().await;
        self.inner.put(key, body, options).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.slot().await;
        self.inner.head(key).await
    }
    async fn put_new(&self, key: &str, body: &Body, options: &PutOptions) -> Result<bool, StoreError> {
        self.slot().await;
        self.inner.put_new(key, body, options).await
    }
    async fn origin(&self, key: &str) -> Result<Option<Origin>, StoreError> {
        self.slot().await;
        self.inner.origin(key).await
    }
    async fn delete_listed(&self, listed: &ObjectInfo) -> Result<(), StoreError> {
        self.slot().await;
        self.inner.delete_listed(listed).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.slot().await;
        self.inner.delete(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dqpipe_engine::testing::MemoryStore;

    /// 50 HEADs at once through a store limited to 10 a second: with paused time, each
    /// starts 100 ms after the one before, so the last starts 49 x 100 ms = 4.9 s after
    /// the first; none sooner.
    #[tokio::test(start_paused = true)]
    async fn requests_are_spaced_by_the_rate_whatever_the_concurrency() {
        let store = Arc::new(RateLimited::new(Arc::new(MemoryStore::new("m")), 10.0));
        let started = Instant::now();
        let heads = (0..50).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store.head(&format!("k{i}")).await.unwrap();
                Instant::now() - started
            })
        });
        let mut at: Vec<Duration> = futures::future::join_all(heads).await.into_iter().map(|r| r.unwrap()).collect();
        at.sort();
        assert_eq!(at[0], Duration::ZERO);
        for pair in at.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{at:?}");
        }
        assert_eq!(*at.last().unwrap(), Duration::from_millis(4900));
    }
}

//! Writing one batch: its manifest, then its object, then its items sent on (and so,
//! once their other copies are done, their objects acknowledged). A batch that cannot be
//! written fails every item it held, with the reason: their objects stay for a rerun.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use dqpipe_engine::api::body::Body;
use dqpipe_engine::api::store::{Origin, PutOptions};
use dqpipe_engine::api::{Context, Emitter, ItemError};

use super::manifest::{batch_id, group_folder, Manifest};
use super::open::Open;
use super::{Batcher, Format, Members, ID_SLOT};

impl Batcher {
    pub(super) async fn write(&self, batch: Open, out: &Emitter, cx: &Context) {
        let pattern = batch.pattern.clone();
        let (body, members) = batch.finish(&self.cfg);
        let mut ids: Vec<String> = members.iter().map(|(id, _)| id.clone()).collect();
        let id = batch_id(&mut ids);
        let key = crate::put::normalize_key(&pattern.replace(ID_SLOT, &id));
        let written = match body {
            Ok(body) => self.commit(&pattern, &key, &id, ids, &body, cx).await,
            Err(e) => Err(ItemError::new(format!("spooling the batch {key:?}: {e}"))),
        };
        match written {
            Ok(()) => {
                self.written.fetch_add(1, Ordering::Relaxed);
                self.send_on(members, &key, out).await;
            }
            Err(e) => {
                tracing::warn!(node = %self.name, key = %key.escape_debug(), items = members.len(), error = %e,
                    "batch not written: its items' objects are left for a rerun");
                for (_, held) in members {
                    held.fail(&e);
                }
            }
        }
    }

    /// The manifest, then the object: an object never exists without the manifest that
    /// names its members.
    async fn commit(
        &self,
        pattern: &str,
        key: &str,
        id: &str,
        members: Vec<String>,
        body: &Body,
        cx: &Context,
    ) -> Result<(), ItemError> {
        let store = &*self.store;
        let manifest_key = format!("{}/{id}.json", group_folder(&self.prefix, pattern));
        let manifest = Manifest { key: key.to_string(), run: cx.run_id().to_string(), members };
        let json = serde_json::to_vec(&manifest).map_err(|e| ItemError::new(format!("encoding the manifest: {e}")))?;
        let json = Body::Memory(Bytes::from(json));
        let plain = PutOptions { content_type: Some("application/json".into()), ..Default::default() };
        self.cfg
            .retry
            .on_store(store, "writing", &manifest_key, cx, || store.put(&manifest_key, &json, &plain))
            .await?;
        let opts = PutOptions {
            content_type: Some(self.cfg.content_type.clone().unwrap_or_else(|| self.content_type().into())),
            metadata: Vec::new(),
            origin: Some(Origin { source_key: manifest_key.clone(), run: cx.run_id().to_string() }),
        };
        self.cfg.retry.on_store(store, "writing", key, cx, || store.put(key, body, &opts)).await
    }

    fn content_type(&self) -> &'static str {
        match self.cfg.format {
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv",
            Format::Summary => "application/json",
        }
    }

    /// Each item out of `out` with the key of the batch that holds it. Once the batch is
    /// durable, an item that cannot be sent on (the run is being torn down) is complete
    /// where it is.
    async fn send_on(&self, members: Members, key: &str, out: &Emitter) {
        let mut closed = false;
        for (_, held) in members {
            let mut item = held.release();
            item.set("batch_key", key.to_string());
            item.set("batch_store", self.cfg.store.clone());
            if !closed {
                closed = out.emit("out", item).await.is_err();
            }
        }
    }
}

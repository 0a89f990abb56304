//! dqpipe's node kinds and stores.
//!
//! Each node kind is one file: its user-facing config struct (the spec's contract, with
//! docs), its `NodeKind` (ports, schema, build) and the running part. To add a kind, add a
//! file beside these and list it in [`registry`].
//!
//! Follow one archive file through the NATS pipeline:
//! [`list`] -> [`fetch`] -> [`clamav`] -> [`nats_message`] -> [`put`], with
//! problems going to other [`put`] nodes and to [`slack`].

pub mod clamav;
pub mod fetch;
pub mod json_check;
pub mod list;
pub mod nats_message;
pub mod put;
pub mod resume;
pub mod retry;
pub mod samples;
pub mod slack;
pub mod stores;

use std::sync::Arc;

use dqpipe_engine::api::Registry;

/// Every node kind and store scheme this build knows.
pub fn registry() -> Registry {
    Registry {
        kinds: vec![
            Arc::new(list::ListKind),
            Arc::new(fetch::FetchKind),
            Arc::new(put::PutKind),
            Arc::new(clamav::ClamavKind),
            Arc::new(nats_message::NatsMessageKind),
            Arc::new(slack::SlackKind),
            Arc::new(json_check::JsonCheckKind),
        ],
        stores: Arc::new(stores::Opener),
    }
}

//! dqpipe's node kinds and stores.
//!
//! Each node kind is one file: its user-facing config struct (the spec's contract, with
//! docs), which implements `KindConfig` (name, ports, build), and the running part. To
//! add a kind, add a file beside these and one `kind::<TheConfig>()` line in [`registry`]
//! (`tests/example_kind.rs` does it in one file).
//!
//! Follow one archive file through the NATS pipeline:
//! [`list`] -> [`fetch`] -> [`clamav`] -> [`nats_message`] -> [`put`], with
//! problems going to other [`put`] nodes and to [`slack`].

pub mod batch;
pub mod clamav;
pub mod delete;
pub mod fetch;
pub mod filter;
pub mod invalid;
pub mod json_check;
pub mod list;
pub mod map;
pub mod nats_message;
mod parse;
pub mod put;
pub mod records;
pub mod retry;
pub mod route;
pub mod slack;
pub mod stamp;
pub mod stores;
pub mod testing;
pub mod tls;
pub mod unpack;
pub mod xml_check;

use std::sync::Arc;

use dqpipe_engine::api::{kind, Registry};

/// Every node kind and store scheme this build knows.
pub fn registry() -> Registry {
    Registry {
        kinds: vec![
            kind::<list::ListConfig>(),
            kind::<fetch::FetchConfig>(),
            kind::<put::PutConfig>(),
            kind::<clamav::ClamavConfig>(),
            kind::<nats_message::NatsMessageConfig>(),
            kind::<slack::SlackConfig>(),
            kind::<json_check::JsonCheckConfig>(),
            kind::<map::MapConfig>(),
            kind::<filter::FilterConfig>(),
            kind::<route::RouteConfig>(),
            kind::<unpack::UnpackConfig>(),
            kind::<records::RecordsConfig>(),
            kind::<xml_check::XmlCheckConfig>(),
            kind::<delete::DeleteConfig>(),
            kind::<stamp::StampConfig>(),
            kind::<batch::BatchConfig>(),
        ],
        stores: Arc::new(stores::Opener::new()),
    }
}

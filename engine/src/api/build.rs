//! What a kind may use while it builds a node: the pipeline's name and defaults, the
//! stores by name (checked for the access the node needs), key templates, and what the
//! node declares for the whole-spec checks (the stores it writes, the fields it sets, what
//! it lists).

use std::sync::Arc;

use indexmap::IndexMap;

use super::kind::ConfigError;
use super::{Defaults, StoreSpec};
use crate::api::store::{Access, Store};
use crate::api::template::KeyTemplate;

/// What a kind may use while building a node.
pub struct BuildContext<'a> {
    /// The pipeline's `name`.
    pub pipeline: &'a str,
    pub node: &'a str,
    pub defaults: &'a Defaults,
    pub stores: &'a IndexMap<String, (StoreSpec, Arc<dyn Store>)>,
    /// Every store the spec names, opened or not.
    pub declared_stores: &'a [String],
    /// The stores this node asked to write to ([`BuildContext::store_that_can`]), for
    /// the trusted-store check.
    pub(crate) writes: std::cell::RefCell<Vec<String>>,
    /// The stores this node writes back into, at the keys it was listed from
    /// ([`BuildContext::store_to_rewrite`]): for the trusted-store check only.
    pub(crate) rewrites: std::cell::RefCell<Vec<String>>,
    /// The templates this node compiled ([`BuildContext::template`]): field, variables.
    pub(crate) templates: std::cell::RefCell<Vec<(String, Vec<String>)>>,
    /// Fields this node sets on a port beyond the port's declared `sets`
    /// ([`BuildContext::sets`]): port, field.
    pub(crate) sets: std::cell::RefCell<Vec<(&'static str, String)>>,
    /// What this node lists ([`BuildContext::lists`]): store, key prefix.
    pub(crate) listed: std::cell::RefCell<Vec<(String, String)>>,
    /// The stores this node acts on at the keys its objects were listed from
    /// ([`BuildContext::acts_where_listed`]): field, store.
    pub(crate) in_place: std::cell::RefCell<Vec<(String, String)>>,
}

impl<'a> BuildContext<'a> {
    /// The context node `node` of pipeline `pipeline` is built in, nothing declared yet.
    pub(crate) fn new(
        pipeline: &'a str,
        node: &'a str,
        defaults: &'a Defaults,
        stores: &'a IndexMap<String, (StoreSpec, Arc<dyn Store>)>,
        declared_stores: &'a [String],
    ) -> Self {
        BuildContext {
            pipeline,
            node,
            defaults,
            stores,
            declared_stores,
            writes: Default::default(),
            rewrites: Default::default(),
            templates: Default::default(),
            sets: Default::default(),
            listed: Default::default(),
            in_place: Default::default(),
        }
    }

    /// The store named `name`, or an error listing the ones that exist. A store the spec
    /// declares but that failed to open is already reported: that error is consequential.
    pub fn store(&self, field: &str, name: &str) -> Result<Arc<dyn Store>, ConfigError> {
        if let Some((_, s)) = self.stores.get(name) {
            return Ok(s.clone());
        }
        if self.declared_stores.iter().any(|d| d == name) {
            return Err(ConfigError { consequential: true, ..ConfigError::at(field, "store failed to open") });
        }
        let known: Vec<&str> = self.stores.keys().map(|s| s.as_str()).collect();
        Err(ConfigError::at(
            field,
            format!(
                "unknown store `{name}`{}; the spec's stores are: {}",
                crate::api::suggest::did_you_mean(name, &known),
                if known.is_empty() { "(none)".into() } else { known.join(", ") }
            ),
        ))
    }

    /// The store named `name`, which must allow `access` (a `put` needs a store it can
    /// write to): checked when the spec is validated, not object by object at run time.
    pub fn store_that_can(&self, field: &str, name: &str, access: Access) -> Result<Arc<dyn Store>, ConfigError> {
        let store = self.store(field, name)?;
        if store.can(access) {
            if access == Access::Write {
                self.writes.borrow_mut().push(name.to_string());
            }
            return Ok(store);
        }
        let verb = match access {
            Access::Write => "written to",
            Access::Delete => "deleted from",
        };
        Err(ConfigError::at(field, format!("store `{name}` ({}) cannot be {verb}", store.display_url())))
    }

    /// The store named `name`, to write objects back at the keys they were listed from (a
    /// rescan's verdict in place): writable, under the trusted-store rule, and listed.
    pub fn store_to_rewrite(&self, field: &str, name: &str) -> Result<Arc<dyn Store>, ConfigError> {
        let store = self.store(field, name)?;
        if !store.can(Access::Write) {
            return Err(ConfigError::at(
                field,
                format!("store `{name}` ({}) cannot be written to", store.display_url()),
            ));
        }
        self.rewrites.borrow_mut().push(name.to_string());
        self.acts_where_listed(field, name);
        Ok(store)
    }

    /// Declares that this node acts on each item's object where it was listed, in store
    /// `name` (a `delete` deletes it there, a `stamp` writes it back): `validate` refuses
    /// a spec whose items reach the node from a source that lists another store.
    pub fn acts_where_listed(&self, field: &str, name: &str) {
        self.in_place.borrow_mut().push((field.to_string(), name.to_string()));
    }

    /// Declares that a source lists the keys of `store` under `prefix`: `validate` refuses
    /// a spec that writes inside them (it would list its own output).
    pub fn lists(&self, store: &str, prefix: &str) {
        self.listed.borrow_mut().push((store.to_string(), prefix.to_string()));
    }

    /// Declares that items leaving by `port` carry `field`, when which fields a kind sets
    /// depends on its settings (a `map`'s `fields`): templates downstream may read it.
    pub fn sets(&self, port: &'static str, field: &str) {
        self.sets.borrow_mut().push((port, field.to_string()));
    }

    /// Compiles a key template, or says what is wrong with it.
    /// The variables it reads are checked against the fields that reach the node.
    pub fn template(&self, field: &str, source: &str) -> Result<KeyTemplate, ConfigError> {
        self.template_providing(field, source, &[])
    }

    /// A key template some of whose variables the node gives itself (a `batch`'s
    /// `{{ batch }}`): those are not looked for upstream.
    pub fn template_providing(&self, field: &str, source: &str, own: &[&str]) -> Result<KeyTemplate, ConfigError> {
        let t =
            KeyTemplate::new(source).map_err(|e| ConfigError::at(field, format!("bad template {source:?}: {e}")))?;
        let read = t.variables().into_iter().filter(|v| !own.contains(&v.as_str())).collect();
        self.templates.borrow_mut().push((field.to_string(), read));
        Ok(t)
    }
}

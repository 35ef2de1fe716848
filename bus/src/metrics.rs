//! The node's Prometheus registry. Components register their metrics when they are built;
//! the ops server encodes the lot on `/metrics`.

use std::sync::Arc;

use parking_lot::Mutex;
use prometheus_client::{encoding::text::encode, registry::Registry};

/// A shared Prometheus registry. Cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers metrics under the `govex` prefix. `f` gets the registry to add to.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        let mut registry = self.registry.lock();
        f(registry.sub_registry_with_prefix("govex"));
    }

    /// The OpenMetrics text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry.lock());
        out
    }
}

//! What a component joins a node through: the node's shared parts (bus, registry, metrics,
//! tokens, live catalogue), the department API it adds routes to, and the tasks it starts.
//!
//! Every component has a builder, `build(&mut Context, its own config)`, in its own folder
//! (`adapters/src/intake/component.rs`, `sinks/src/elicense/component.rs` ...). The node calls
//! the builders of the components it runs in order; if one fails, [`Context::abandon`] stops
//! and waits for every task the others started, so that a failed start leaves nothing running
//! and every store closed.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    fmt,
    future::Future,
    path::PathBuf,
    time::Duration,
};

use axum::Router;
use govex_bus::{Bus, Metrics, RegistryClient};
use govex_schemas::{zone::TimeZone, Division, LiveCatalog};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::auth::Tokens;

/// Why a component could not start: what it was doing, and the cause.
#[derive(Debug)]
pub struct StartError {
    /// What could not be done, naming the thing (`e-licence store /data/elicense cannot be
    /// opened`).
    pub what: String,
    /// The cause.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.what)
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// `.map_err(failed("what could not be done"))`: a [`StartError`] naming `what`.
pub fn failed<E>(what: impl Into<String>) -> impl FnOnce(E) -> StartError
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let what = what.into();
    move |source| StartError { what, source: source.into() }
}

/// The node's shared parts, which every component reads (a [`Context`] dereferences to
/// them).
pub struct Parts {
    /// The division this node serves.
    pub division: Division,
    /// Where components keep what must survive a restart, each in a folder of its own.
    pub data_dir: PathBuf,
    /// The zone times are shown to people in.
    pub time_zone: TimeZone,
    /// The prefix of every consumer group the node's sinks join.
    pub group_prefix: String,
    /// The node's bus.
    pub bus: Bus,
    /// The node's registry.
    pub registry: RegistryClient,
    /// The node's metrics.
    pub metrics: Metrics,
    /// The tokens every API checks.
    pub tokens: Tokens,
    /// The resource catalogue, as stewards change it.
    pub catalog: LiveCatalog,
    /// How often record types and the catalogue are looked at again.
    pub refresh: Duration,
}

/// The node as its components see it while they start: its [`Parts`], and what the
/// components add to it.
pub struct Context {
    parts: Parts,
    /// Cancelled at shutdown (after the API stopped) or when a start fails: background tasks
    /// (sinks, followers) stop on it.
    pub stop: CancellationToken,
    /// The background tasks; shutdown waits for them to drain.
    pub tasks: TaskTracker,
    /// Cuts every listener's connections when shutdown's grace period runs out.
    pub cut: CancellationToken,
    /// Work an API request starts that must finish even if its connection is cut (a publish
    /// the broker has not yet acknowledged); shutdown waits for it before flushing.
    pub requests: TaskTracker,
    /// The sled stores this process's components opened: what `GET /v1/backup` reads.
    pub stores: govex_schemas::backup::OpenStores,
    api: Router,
    routes: Vec<String>,
    shared: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl Context {
    /// A context over the node's shared `parts`, with nothing started yet.
    pub fn new(parts: Parts) -> Self {
        Self {
            parts,
            stop: CancellationToken::new(),
            cut: CancellationToken::new(),
            tasks: TaskTracker::new(),
            requests: TaskTracker::new(),
            stores: Default::default(),
            api: Router::new(),
            routes: Vec::new(),
            shared: HashMap::new(),
        }
    }

    /// The consumer group of the sink `name`: `<prefix>-<division>-<name>`.
    pub fn group(&self, name: &str) -> String {
        format!("{}-{}-{name}", self.group_prefix, self.division)
    }

    /// Adds `router`'s routes to the department API; `routes` lists them (`"GET /v1/..."`)
    /// for the answer to a route the port does not serve.
    pub fn serve(&mut self, router: Router, routes: &[&str]) {
        self.api = std::mem::take(&mut self.api).merge(router);
        self.routes.extend(routes.iter().map(|r| r.to_string()));
    }

    /// Runs `task` in the background until [`Context::stop`]; an error it ends with is
    /// logged, naming `what`.
    pub fn spawn<E: fmt::Display>(
        &self,
        what: &'static str,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        self.tasks.spawn(async move {
            if let Err(e) = task.await {
                tracing::error!(component = what, error = %e, "a background task of the node stopped");
            }
        });
    }

    /// The part of type `T` that components share (the e-licence store, whose use log the
    /// dossier's reads write into too), if a component made one.
    pub fn shared<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.shared.get(&TypeId::of::<T>()).and_then(|p| p.downcast_ref::<T>()).cloned()
    }

    /// Makes `part` the shared part of type `T`, for the components built after this one.
    pub fn share<T: Clone + Send + Sync + 'static>(&mut self, part: T) {
        self.shared.insert(TypeId::of::<T>(), Box::new(part));
    }

    /// The department API the components built, and the routes it serves.
    pub fn take_api(&mut self) -> (Router, Vec<String>) {
        (std::mem::take(&mut self.api), std::mem::take(&mut self.routes))
    }

    /// Stops every task started so far and waits for them, then drops the shared parts: what a
    /// failed start does, so that nothing keeps running or keeps a store open.
    pub async fn abandon(mut self) {
        self.stop.cancel();
        self.cut.cancel();
        self.tasks.close();
        self.requests.close();
        self.tasks.wait().await;
        self.requests.wait().await;
        self.shared.clear();
    }
}

impl std::ops::Deref for Context {
    type Target = Parts;

    fn deref(&self) -> &Parts {
        &self.parts
    }
}

//! Consumers whose topics come from the live catalogue: the shared view reads every
//! catalogued resource, a bridge link pulls what flows its way. When a steward's catalogue
//! names other topics, the running consumer is closed (its offsets stored and committed) and
//! a new one subscribes to the new set.

use std::{future::Future, time::Duration};

use govex_bus::{consumer::RunStats, BusError};
use govex_schemas::{Catalog, LiveCatalog};
use tokio_util::sync::CancellationToken;

/// How often the catalogue is compared with the topics a consumer reads.
const EVERY: Duration = Duration::from_secs(2);

/// Runs `run_set(topics, stop)` on the topics `topics_of` finds in the live catalogue, and
/// again on the new set whenever the catalogue changes it, until `shutdown`; `stop` is
/// cancelled at a change or at shutdown. Returns the sum of every run's counts, or the first
/// error a run returns.
pub async fn on_catalogue_topics<F, Fut>(
    catalog: LiveCatalog,
    topics_of: impl Fn(&Catalog) -> Vec<String> + Clone + Send + 'static,
    what: &str,
    shutdown: CancellationToken,
    mut run_set: F,
) -> Result<RunStats, BusError>
where
    F: FnMut(Vec<String>, CancellationToken) -> Fut,
    Fut: Future<Output = Result<RunStats, BusError>>,
{
    let mut total = RunStats::default();
    loop {
        let topics = topics_of(&catalog.current());
        let this_set = shutdown.child_token();
        let watch = {
            let (catalog, this_set, topics, topics_of) =
                (catalog.clone(), this_set.clone(), topics.clone(), topics_of.clone());
            let what = what.to_owned();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = this_set.cancelled() => return,
                        () = tokio::time::sleep(EVERY) => {}
                    }
                    if topics_of(&catalog.current()) != topics {
                        tracing::info!(consumer = %what, "the catalogue lists other topics: subscribing again");
                        this_set.cancel();
                        return;
                    }
                }
            })
        };
        let outcome = run_set(topics, this_set.clone()).await;
        this_set.cancel();
        let _ = watch.await;
        let stats = outcome?;
        total.received += stats.received;
        total.finished += stats.finished;
        total.dead_lettered += stats.dead_lettered;
        total.passed_by += stats.passed_by;
        if shutdown.is_cancelled() {
            return Ok(total);
        }
    }
}

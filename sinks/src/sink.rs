//! What every sink is, and the one runner that serves them all.
//!
//! A sink says which topics it reads, how many keys it applies at once, where its refusals
//! go, how it writes one record ([`Sink::apply`]) and how it makes its writes durable
//! ([`Sink::flush`]). [`run`] does the rest, the same way for every sink: an at-least-once
//! consumer whose lanes write what they hold and flush once per batch, whose offsets are
//! stored only after that flush (the contiguous finished prefix per partition), a record
//! `apply` refuses to the sink's dead-letter topic with its reason, a record it cannot apply
//! yet retried, the consumer's own metrics, and a new subscription whenever the live
//! catalogue changes the topics the sink reads.

use std::{future::Future, sync::Arc};

use govex_bus::{
    consumer::{ConsumerSettings, HandlerError, RunStats},
    dlq::DeadLetterQueue,
    Bus, BusError, Incoming, Metrics,
};
use govex_schemas::{Catalog, LiveCatalog};
use tokio_util::sync::CancellationToken;

/// How a sink applies records side by side: `lanes` keys at once (records of one key always
/// in order, in one lane), each lane holding at most `lane_capacity` records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lanes {
    /// Keys applied at once.
    pub lanes: usize,
    /// Records queued per lane before the consumer waits.
    pub lane_capacity: usize,
}

/// A sink: applies the records of some topics to a store, idempotently by event id, so that
/// at-least-once delivery gives exactly-once effect.
pub trait Sink: Send + Sync + 'static {
    /// The sink's name: the suffix of its consumer group (`<prefix>-<division>-<name>`).
    const NAME: &'static str;
    /// Its lanes.
    const LANES: Lanes;
    /// The component name its dead letters are labelled with; `None`: a record it refuses is
    /// skipped and counted by the sink, with no dead-letter topic (derived statistics).
    const DEAD_LETTERS: Option<&'static str>;

    /// The component its dead letters are labelled with, and replays addressed to: the
    /// constant, unless instances of one sink need a name each (a down-table per table).
    fn dead_letter_component(&self) -> Option<String> {
        Self::DEAD_LETTERS.map(str::to_owned)
    }

    /// Whether its store is to be refilled (made by this process on a new or lost volume, or
    /// made before and its refill never finished): its consumer group is then rewound to the
    /// start of its topics before it subscribes, since the group's committed offsets belong
    /// to the store that was lost. The topics are the backup of every store; a store refills
    /// from them as it was first filled.
    fn fresh(&self) -> bool {
        false
    }

    /// Records that the group was rewound: the store is not fresh at its next start.
    fn refilled(&self) -> Result<(), sled::Error> {
        Ok(())
    }

    /// The topics it reads under `catalog`; read again when the catalogue changes.
    fn topics(&self, catalog: &Catalog) -> Vec<String>;

    /// Writes one record's effect: `Ok` once it is written (durable after the next
    /// [`flush`](Self::flush)), [`HandlerError::DeadLetter`] for a record it will never
    /// apply, [`HandlerError::Retry`] for one it cannot apply yet.
    fn apply(&self, record: &Incoming) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Makes every write `apply` has made durable; the runner stores no offset of a batch
    /// before this returned `Ok`.
    fn flush(&self) -> impl Future<Output = Result<(), sled::Error>> + Send;
}

/// Runs `sink` until `shutdown`: consumes its topics in the group `group_id` and applies every
/// record through [`Sink::apply`]. Returns what it received, finished and dead-lettered, or
/// the error that kept its consumer from starting.
pub async fn run<S: Sink>(
    sink: Arc<S>,
    bus: &Bus,
    group_id: String,
    metrics: &Metrics,
    catalog: LiveCatalog,
    shutdown: CancellationToken,
) -> Result<RunStats, BusError> {
    if sink.fresh() {
        // Not ready while it refills: its group counts as behind until its consumer caught up.
        bus.catch_up().register(&group_id);
        let topics = sink.topics(&catalog.current());
        loop {
            match bus.rewind_group(&group_id, &topics, &shutdown).await {
                Ok(rewound) => {
                    sink.refilled().map_err(|e| BusError::Unreachable {
                        bootstrap: bus.bootstrap_servers().to_owned(),
                        error: format!("the store could not be marked refilled: {e}"),
                    })?;
                    tracing::warn!(group = %group_id, partitions = rewound, "a new store: its consumer group reads its topics again from their start");
                    break;
                }
                // Asked again until it works: a store that started filling from the lost
                // store's offsets would lack what came before them, for good.
                Err(error) => {
                    tracing::error!(group = %group_id, %error, "a new store's consumer group could not be rewound; asking again in 5 s");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(RunStats::default()),
                        () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                    }
                }
            }
        }
    }
    let topics_of = {
        let sink = sink.clone();
        move |catalog: &Catalog| sink.topics(catalog)
    };
    crate::resubscribe::on_catalogue_topics(catalog, topics_of, S::NAME, shutdown, |topics, stop| {
        let (sink, group_id) = (sink.clone(), group_id.clone());
        async move {
            let Lanes { lanes, lane_capacity } = S::LANES;
            let consumer = bus.consumer(ConsumerSettings { group_id, topics, lanes, lane_capacity })?;
            let dlq = sink
                .dead_letter_component()
                .map(|component| DeadLetterQueue::new(bus.producer().clone(), component, metrics));
            let apply = {
                let sink = sink.clone();
                move |record: Incoming| {
                    let sink = sink.clone();
                    async move { sink.apply(&record).await.map(|()| None) }
                }
            };
            let flush = move || {
                let sink = sink.clone();
                async move { sink.flush().await.map_err(|e| e.to_string()) }
            };
            Ok(consumer.run_batched(apply, flush, dlq, stop).await)
        }
    })
    .await
}

/// Runs `sink` in the background of the node `cx` builds, in the group
/// `<prefix>-<division>-<name>`, until the node stops.
pub fn start<S: Sink>(cx: &govex_http::Context, sink: Arc<S>) {
    let (bus, metrics, catalog, stop) = (cx.bus.clone(), cx.metrics.clone(), cx.catalog.clone(), cx.stop.clone());
    let group_id = cx.group(S::NAME);
    cx.spawn(S::NAME, async move { run(sink, &bus, group_id, &metrics, catalog, stop).await.map(drop) });
}

//! The at-least-once consumer: an offset is stored only after the handler says the record's
//! effect is durable, and librdkafka commits only stored offsets.
//!
//! Records are handled in parallel lanes; a record's lane is chosen by its key, so records of
//! one key are handled one after the other, in partition order. Lanes finish out of order, so
//! each partition has an [`OffsetTracker`] that stores only the contiguous finished prefix: a
//! crash can redeliver records finished after a gap, never skip one.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    future::Future,
    hash::{DefaultHasher, Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use rdkafka::{
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::{KafkaError, RDKafkaErrorCode},
    ClientContext,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{BusConfig, ClientRole},
    dlq::{DeadLetter, DeadLetterQueue},
    record::Incoming,
};

/// What a handler says about a record it could not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// A passing failure (storage busy, a peer down): try the same record again.
    #[error("retriable: {0}")]
    Retry(String),
    /// The record can never be applied: dead-letter it and move on.
    #[error("{0:?}")]
    DeadLetter(DeadLetter),
}

impl HandlerError {
    /// The record was refused at `stage` for `error`: dead-letter it.
    pub fn refused(stage: crate::dlq::Stage, error: &impl crate::dlq::Refusal) -> Self {
        Self::DeadLetter(DeadLetter::new(stage, error))
    }
}

/// The acknowledgement of a record a handler sent on, still to come (see
/// [`AtLeastOnceConsumer::run_batched`]).
pub type Ack = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// Per partition, the offsets handed out and which of them are finished.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    pending: BTreeMap<i64, bool>,
}

impl OffsetTracker {
    /// Notes that `offset` was handed to a lane.
    pub fn begin(&mut self, offset: i64) {
        self.pending.insert(offset, false);
    }

    /// Notes that `offset` is durable; returns the last offset of the contiguous finished
    /// prefix when it advanced.
    pub fn finish(&mut self, offset: i64) -> Option<i64> {
        if let Some(done) = self.pending.get_mut(&offset) {
            *done = true;
        }
        let mut last = None;
        while let Some(entry) = self.pending.first_entry() {
            if !*entry.get() {
                break;
            }
            last = Some(*entry.key());
            entry.remove();
        }
        last
    }

    /// Offsets handed out and not yet finished.
    pub fn unfinished(&self) -> usize {
        self.pending.values().filter(|done| !**done).count()
    }
}

/// Topic-partitions currently assigned to a consumer.
pub type Assignment = BTreeSet<(String, i32)>;

/// Publishes every assignment change, so tests and readiness can see the group settle.
pub struct TrackingContext {
    assignment: watch::Sender<Assignment>,
}

impl ClientContext for TrackingContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::client_log::log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        crate::client_log::error(&error, reason);
    }
}

impl ConsumerContext for TrackingContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            // Added to and taken from what is held: with the eager (classic) protocol a revoke
            // lists everything and the next assign the whole new set; with the incremental
            // ones (cooperative-sticky, KIP-848) each lists only what changes.
            Rebalance::Assign(list) => {
                let added: Assignment = list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                tracing::info!(partitions = added.len(), "partitions assigned");
                self.assignment.send_modify(|held| held.extend(added));
            }
            Rebalance::Revoke(list) => {
                let taken: Assignment = list.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
                self.assignment.send_modify(|held| held.retain(|tp| !taken.contains(tp)));
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance failed"),
        }
    }
}

/// How a consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Consumer group id.
    pub group_id: String,
    /// Topics to subscribe to.
    pub topics: Vec<String>,
    /// Number of parallel lanes.
    pub lanes: usize,
    /// Records queued per lane before the consumer stops fetching.
    pub lane_capacity: usize,
}

/// Totals of one run, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Records handed to lanes.
    pub received: u64,
    /// Records finished (applied or dead-lettered) whose offsets could be stored.
    pub finished: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Replays of dead letters meant for another component, passed by.
    pub passed_by: u64,
}

/// Whether each consumer group of a bus has caught up: joined its group and handled every
/// record up to the end offsets its partitions had when it was first assigned them. What
/// `/readyz` waits for, so that "ready" means a licence posted now is the next to apply,
/// not one behind a backlog.
#[derive(Clone, Default)]
pub struct CatchUp {
    groups: Arc<parking_lot::Mutex<BTreeMap<String, bool>>>,
}

impl CatchUp {
    /// Counts `group` as not caught up until its consumer says it is (a store refilling
    /// before its consumer starts is behind too).
    pub fn register(&self, group: &str) {
        self.groups.lock().insert(group.to_owned(), false);
    }

    fn mark(&self, group: &str) {
        if self.groups.lock().insert(group.to_owned(), true) != Some(true) {
            tracing::info!(group, "consumer caught up with the end offsets seen at start");
        }
    }

    /// The groups that have not caught up yet.
    pub fn behind(&self) -> Vec<String> {
        self.groups.lock().iter().filter(|(_, done)| !**done).map(|(g, _)| g.clone()).collect()
    }
}

/// (committed offset, end offset seen at start) per partition.
type Targets = HashMap<(String, i32), (i64, i64)>;

/// Per partition, where handling started and the end offset to reach.
#[derive(Default)]
struct Progress {
    /// (committed offset, end offset seen at start), per partition; `None` until the first
    /// assignment's offsets are known.
    partitions: Option<Targets>,
    /// The next offset after each partition's stored prefix, as this run stored it (records
    /// may be handled before the end offsets are known).
    stored: HashMap<(String, i32), i64>,
    /// The offsets are being asked for.
    asking: Option<tokio::sync::oneshot::Receiver<Option<Targets>>>,
    done: bool,
}

/// How long a consumer's run waits for the consumer to commit and close at its end.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// An at-least-once consumer, subscribed and ready to [`run`](Self::run).
pub struct AtLeastOnceConsumer {
    consumer: Arc<StreamConsumer<TrackingContext>>,
    assignment: watch::Receiver<Assignment>,
    settings: ConsumerSettings,
    lag: Option<LagGauges>,
    catch_up: Option<CatchUp>,
}

/// Labels of the consumer lag gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct LagLabels {
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: String,
}

/// Records behind the high watermark, per group and partition.
pub type LagGauges = prometheus_client::metrics::family::Family<LagLabels, prometheus_client::metrics::gauge::Gauge>;

/// How often consumer lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(10);

impl AtLeastOnceConsumer {
    /// Creates the consumer and subscribes it.
    pub fn new(config: &BusConfig, bootstrap: &str, settings: ConsumerSettings) -> Result<Self, KafkaError> {
        let (sender, assignment) = watch::channel(Assignment::new());
        let client_config = config.client_config(bootstrap, ClientRole::Consumer { group_id: &settings.group_id });
        let consumer: StreamConsumer<TrackingContext> =
            client_config.create_with_context(TrackingContext { assignment: sender })?;
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Self { consumer: Arc::new(consumer), assignment, settings, lag: None, catch_up: None })
    }

    /// Reports into `catch_up` when this consumer has caught up (see [`CatchUp`]).
    pub fn with_catch_up(mut self, catch_up: CatchUp) -> Self {
        catch_up.register(&self.settings.group_id);
        self.catch_up = Some(catch_up);
        self
    }

    /// Asks (off the async workers, on this consumer's own client) for the committed offsets
    /// and end offsets of the partitions assigned now.
    fn ask_progress(&self, progress: &mut Progress) {
        let assigned = self.assignment.borrow().clone();
        if assigned.is_empty() || progress.asking.is_some() {
            return;
        }
        let consumer = self.consumer.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        progress.asking = Some(rx);
        tokio::task::spawn_blocking(move || {
            let mut list = rdkafka::TopicPartitionList::new();
            for (topic, partition) in &assigned {
                list.add_partition(topic, *partition);
            }
            let answer = (|| {
                let committed = consumer.committed_offsets(list, Duration::from_secs(5)).ok()?;
                let elements: Vec<(String, i32, rdkafka::Offset)> =
                    committed.elements().iter().map(|e| (e.topic().to_owned(), e.partition(), e.offset())).collect();
                // One watermark query per partition, all at once: each waits behind the
                // consumer's own fetch (up to fetch.wait.max.ms) on the broker connection, so
                // asked one after another they took half a second per partition.
                let watermarks: Vec<Option<(i64, i64)>> = std::thread::scope(|scope| {
                    let asked: Vec<_> = elements
                        .iter()
                        .map(|(topic, partition, _)| {
                            let consumer = &consumer;
                            scope.spawn(move || {
                                consumer.fetch_watermarks(topic, *partition, Duration::from_secs(5)).ok()
                            })
                        })
                        .collect();
                    asked.into_iter().map(|handle| handle.join().ok().flatten()).collect()
                });
                let mut partitions = HashMap::new();
                for ((topic, partition, offset), watermarks) in elements.into_iter().zip(watermarks) {
                    let (low, high) = watermarks?;
                    let start = match offset {
                        rdkafka::Offset::Offset(offset) => offset.max(low),
                        _ => low,
                    };
                    partitions.insert((topic, partition), (start, high));
                }
                Some(partitions)
            })();
            let _ = tx.send(answer);
        });
    }

    fn check_progress(&self, progress: &mut Progress) {
        let (Some(catch_up), Some(partitions)) = (&self.catch_up, &progress.partitions) else { return };
        let reached = |(tp, (committed, end)): (&(String, i32), &(i64, i64))| {
            progress.stored.get(tp).copied().unwrap_or(0).max(*committed) >= *end
        };
        if !progress.done && partitions.iter().all(reached) {
            progress.done = true;
            catch_up.mark(&self.settings.group_id);
        }
    }

    /// Reports this consumer's lag per partition into `gauges` while it runs.
    pub fn with_lag_gauges(mut self, gauges: LagGauges) -> Self {
        self.lag = Some(gauges);
        self
    }

    fn measure_lag(&self) {
        let Some(gauges) = self.lag.clone() else { return };
        let consumer = self.consumer.clone();
        let group = self.settings.group_id.clone();
        // Watermark queries block on the network: keep them off the async workers.
        tokio::task::spawn_blocking(move || {
            let Ok(positions) = consumer.position() else { return };
            for element in positions.elements() {
                let rdkafka::Offset::Offset(position) = element.offset() else { continue };
                if let Ok((_, high)) =
                    consumer.fetch_watermarks(element.topic(), element.partition(), Duration::from_secs(2))
                {
                    let labels = LagLabels {
                        group: group.clone(),
                        topic: element.topic().to_owned(),
                        partition: element.partition().to_string(),
                    };
                    gauges.get_or_create(&labels).set((high - position).max(0));
                }
            }
        });
    }

    /// Watches the partitions assigned to this consumer.
    pub fn assignment(&self) -> watch::Receiver<Assignment> {
        self.assignment.clone()
    }

    /// Consumes until `shutdown`, handing each record to `handler`; then stops fetching,
    /// lets the lanes finish what they hold, stores and commits the finished offsets.
    ///
    /// `handler` returns `Ok` only once the record's effect is durable. Records it
    /// dead-letters go to `dlq`; a failed dead-letter write is retried like a failed handler.
    pub async fn run<H, F>(self, handler: H, dlq: Option<DeadLetterQueue>, shutdown: CancellationToken) -> RunStats
    where
        H: Fn(Incoming) -> F + Send + Sync + 'static,
        F: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let written = move |message| {
            let applied = handler(message);
            async move { applied.await.map(|()| None) }
        };
        let durable = || std::future::ready(Ok(()));
        self.run_batched(written, durable, dlq, shutdown).await
    }

    /// As [`run`](Self::run), for a handler whose writes become durable together: `handler`
    /// writes a record, `durable` makes every write made so far durable. Each lane takes what
    /// its inbox holds (at most `lane_capacity` records), hands them to `handler` in order,
    /// then calls `durable` once; only then are their offsets finished. One fsync covers a
    /// whole batch, the way Kafka Connect's `put` and `flush` share one; a lone record is a
    /// batch of one, so waiting for company never delays it.
    ///
    /// A handler that sends a record on (a bridge) returns its [`Ack`] instead of waiting for
    /// it: the lane sends the whole batch, in order, then waits for every ack before the
    /// batch counts as finished, the way MirrorMaker 2 commits only what was delivered. The
    /// idempotent producer keeps the order of what it was given within a partition, so
    /// per-key order holds while deliveries succeed. When an ack fails (a delivery timed out),
    /// records after it may have been delivered already: the records from the failed one on
    /// are sent again, one at a time, each waited for. The topic then holds some records twice
    /// (with one event id) and, for a moment, a later record of a key before an earlier one;
    /// the last copy of each key's records is in their order.
    pub async fn run_batched<H, F, D, DF>(
        self,
        handler: H,
        durable: D,
        dlq: Option<DeadLetterQueue>,
        shutdown: CancellationToken,
    ) -> RunStats
    where
        H: Fn(Incoming) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Option<Ack>, HandlerError>> + Send + 'static,
        D: Fn() -> DF + Send + Sync + 'static,
        DF: Future<Output = Result<(), String>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let durable = Arc::new(durable);
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Vec<Finished>>();
        let lanes_count = self.settings.lanes.max(1);
        let mut lanes = Vec::with_capacity(lanes_count);
        let mut workers = Vec::with_capacity(lanes_count);
        for _ in 0..lanes_count {
            let (lane_tx, lane_rx) = mpsc::channel::<Incoming>(self.settings.lane_capacity.max(1));
            lanes.push(lane_tx);
            let lane = Lane {
                handler: handler.clone(),
                durable: durable.clone(),
                dlq: dlq.clone(),
                done: done_tx.clone(),
                shutdown: shutdown.clone(),
                batch: self.settings.lane_capacity.max(1),
            };
            workers.push(tokio::spawn(lane.run(lane_rx)));
        }
        drop(done_tx);

        let mut trackers: HashMap<(String, i32), OffsetTracker> = HashMap::new();
        let mut run_of: Option<(String, i32)> = None;
        let mut stats = RunStats::default();
        let mut assignment = self.assignment.clone();
        let mut lag_timer = tokio::time::interval(LAG_INTERVAL);
        let mut progress = Progress { done: self.catch_up.is_none(), ..Progress::default() };
        let mut progress_timer = tokio::time::interval(Duration::from_millis(250));
        loop {
            let asking = async {
                match progress.asking.as_mut() {
                    Some(rx) => rx.await.ok().flatten(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some(done) = done_rx.recv() => {
                    for (tp, last) in self.finish(&mut trackers, done, &mut stats) {
                        let next = progress.stored.entry(tp).or_default();
                        *next = (*next).max(last + 1);
                    }
                    self.check_progress(&mut progress);
                }
                _ = shutdown.cancelled() => break,
                _ = lag_timer.tick() => self.measure_lag(),
                answer = asking => {
                    progress.asking = None;
                    // A failed question is asked again on the next tick.
                    if answer.is_some() {
                        progress.partitions = answer;
                        self.check_progress(&mut progress);
                    }
                }
                _ = progress_timer.tick(), if !progress.done && progress.partitions.is_none() => {
                    self.ask_progress(&mut progress);
                }
                Ok(()) = assignment.changed() => {
                    // Forget partitions no longer ours: their in-flight records may still
                    // finish, but storing their offsets is the new owner's business.
                    let current = assignment.borrow_and_update().clone();
                    trackers.retain(|tp, _| current.contains(tp));
                }
                received = self.consumer.recv() => match received {
                    Ok(message) => {
                        let message = Incoming::from(message.detach());
                        // Records come in runs of one partition: its key is made once a run.
                        let (topic, partition) = (message.topic(), message.partition());
                        let same_run = run_of.take().filter(|(t, p)| t == topic && *p == partition);
                        let tp = run_of.insert(same_run.unwrap_or_else(|| (topic.to_owned(), partition)));
                        match trackers.get_mut(&*tp) {
                            Some(tracker) => tracker.begin(message.offset()),
                            None => trackers.entry(tp.clone()).or_default().begin(message.offset()),
                        }
                        stats.received += 1;
                        let lane_index = lane_for(&message, lanes_count);
                        tokio::select! {
                            sent = lanes[lane_index].send(message) => if sent.is_err() { break },
                            _ = shutdown.cancelled() => break,
                        }
                    }
                    Err(error) => {
                        let error = error.to_string();
                        if let Some(suffix) = crate::client_log::collapsed(&format!("consumer error {error}")) {
                            tracing::warn!(error = %error, "consumer error; librdkafka retries by itself{suffix}");
                        }
                    }
                },
            }
        }

        // Drain: no new records; lanes finish what they hold (a lane blocked on a retriable
        // failure gives up at shutdown without finishing, so that record is redelivered).
        drop(lanes);
        while let Some(done) = done_rx.recv().await {
            self.finish(&mut trackers, done, &mut stats);
        }
        for worker in workers {
            let _ = worker.await;
        }
        // The final commit and closing the consumer block in librdkafka (closing waits for
        // the group to take the partitions back, and has been seen to wait for ever on the
        // mock cluster): on a thread of their own, waited for a bounded time, so that neither
        // holds an async worker nor a shutdown. Offsets stored so far are committed on the
        // next start if this one does not get to it.
        let group = self.settings.group_id.clone();
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        let close = move || {
            match self.consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "final offset commit failed; stored offsets are committed on the next start")
                }
            }
            self.consumer.unsubscribe();
            drop(self);
            let _ = closed_tx.send(());
        };
        if let Err(e) = std::thread::Builder::new().name("consumer-close".into()).spawn(close) {
            tracing::warn!(error = %e, group, "no thread to close the consumer on; it is left to the process's exit");
            return stats;
        }
        if tokio::time::timeout(CLOSE_WAIT, closed).await.is_err() {
            tracing::warn!(
                group,
                wait_secs = CLOSE_WAIT.as_secs(),
                "the consumer did not close in time; its stored offsets are committed on the next start"
            );
        }
        stats
    }

    /// Notes the records of a finished batch; stores, once per partition, the last offset of
    /// its finished prefix where that advanced, and returns those (partition, last offset).
    fn finish(
        &self,
        trackers: &mut HashMap<(String, i32), OffsetTracker>,
        batch: Vec<Finished>,
        stats: &mut RunStats,
    ) -> Vec<((String, i32), i64)> {
        let mut advanced: HashMap<(String, i32), i64> = HashMap::new();
        for Finished { topic, partition, offset, outcome } in batch {
            stats.finished += 1;
            stats.dead_lettered += u64::from(outcome == Outcome::DeadLettered);
            stats.passed_by += u64::from(outcome == Outcome::PassedBy);
            let tp = (topic, partition);
            let Some(tracker) = trackers.get_mut(&tp) else { continue };
            if let Some(last) = tracker.finish(offset) {
                // A prefix only grows: the later answer is the larger.
                advanced.insert(tp, last);
            }
        }
        let mut stored = Vec::with_capacity(advanced.len());
        for ((topic, partition), last) in advanced {
            // `store_offset` stores `last + 1`, the next offset to read.
            if let Err(error) = self.consumer.store_offset(&topic, partition, last) {
                tracing::debug!(error = %error, topic, partition, "offset not stored (partition revoked)");
                continue;
            }
            stored.push(((topic, partition), last));
        }
        stored
    }
}

/// A record a lane is done with, for the offset tracker.
struct Finished {
    topic: String,
    partition: i32,
    offset: i64,
    outcome: Outcome,
}

/// How a lane finished a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The handler applied it (its effect is durable).
    Applied,
    /// The handler refused it and the dead-letter topic has it.
    DeadLettered,
    /// A replay of a dead letter meant for another component: not handed to the handler.
    PassedBy,
}

fn lane_for(message: &Incoming, lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    message.topic().hash(&mut hasher);
    match message.key() {
        Some(key) => key.hash(&mut hasher),
        None => message.partition().hash(&mut hasher),
    }
    (hasher.finish() % lanes as u64) as usize
}

/// One lane: applies the records of its keys in order, a batch at a time.
struct Lane<H, D> {
    handler: Arc<H>,
    durable: Arc<D>,
    dlq: Option<DeadLetterQueue>,
    /// Where a lane reports each batch it finished, as one message.
    done: mpsc::UnboundedSender<Vec<Finished>>,
    shutdown: CancellationToken,
    /// The most records made durable together.
    batch: usize,
}

/// What a lane has handled of its batch and not yet reported finished.
#[derive(Default)]
struct Unfinished {
    finished: Vec<Finished>,
    /// Acks still to come, by the index of their record in the batch.
    acks: Vec<(usize, Ack)>,
}

impl<H, F, D, DF> Lane<H, D>
where
    H: Fn(Incoming) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Option<Ack>, HandlerError>> + Send + 'static,
    D: Fn() -> DF + Send + Sync + 'static,
    DF: Future<Output = Result<(), String>> + Send + 'static,
{
    /// Until the inbox closes or the run is shut down: takes what the inbox holds, handles it
    /// record by record, makes it durable, and only then reports it finished. A record that
    /// cannot be applied yet does not hold back those before it: they are made durable and
    /// finished first. A lane stopped by shutdown reports nothing of what it has not made
    /// durable, so all of that is redelivered.
    async fn run(self, mut inbox: mpsc::Receiver<Incoming>) {
        let mut batch = Vec::with_capacity(self.batch);
        while inbox.recv_many(&mut batch, self.batch).await > 0 {
            let mut unfinished = Unfinished::default();
            for (index, message) in batch.iter().enumerate() {
                let (outcome, ack) = match self.attempt(message).await {
                    Ok(handled) => handled,
                    Err(_) => {
                        if !self.complete(&batch, &mut unfinished).await {
                            return;
                        }
                        let Some(handled) = self.handle(message).await else { return };
                        handled
                    }
                };
                let (topic, partition, offset) = (message.topic().to_owned(), message.partition(), message.offset());
                unfinished.finished.push(Finished { topic, partition, offset, outcome });
                unfinished.acks.extend(ack.map(|ack| (index, ack)));
            }
            if !self.complete(&batch, &mut unfinished).await {
                return;
            }
            batch.clear();
        }
    }

    /// Waits for the acks of what was sent on (sending again from the first that failed),
    /// makes the writes durable, and reports it all finished; false when the run shuts down
    /// first.
    async fn complete(&self, batch: &[Incoming], unfinished: &mut Unfinished) -> bool {
        // Every ack is waited for, failed or not: a record after a failed one may still be
        // delivered, and what the producer holds is counted until it answers. Shutdown does
        // not wait for a cluster that does not answer: nothing here is finished yet, so all of
        // it is redelivered.
        let mut failed = None;
        for (index, ack) in unfinished.acks.iter_mut() {
            let answer = tokio::select! {
                answer = ack => answer,
                _ = self.shutdown.cancelled() => return false,
            };
            if let (Err(reason), None) = (answer, failed) {
                tracing::warn!(reason, "a record sent on was not acknowledged; sending it and those after it again");
                failed = Some(*index);
            }
        }
        // Only records that were sent on are sent again: one dead-lettered or skipped the
        // first time is finished.
        let again: Vec<usize> = match failed {
            Some(first) => unfinished.acks.iter().map(|(index, _)| *index).filter(|index| *index >= first).collect(),
            None => Vec::new(),
        };
        unfinished.acks.clear();
        for index in again {
            if !self.send_again(&batch[index]).await {
                return false;
            }
        }
        if unfinished.finished.is_empty() {
            return true;
        }
        if self.retrying("a batch not made durable", move || (self.durable)()).await.is_none() {
            return false;
        }
        let _ = self.done.send(std::mem::take(&mut unfinished.finished));
        true
    }

    /// Hands `message` to the handler and waits for its ack, until it is acknowledged; false
    /// when the run shuts down first.
    async fn send_again(&self, message: &Incoming) -> bool {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let attempt = move || async move {
            match self.handle(message).await {
                None => Ok(false),
                Some((_, None)) => Ok(true),
                Some((_, Some(ack))) => tokio::select! {
                    answer = ack => answer.map(|()| true),
                    _ = self.shutdown.cancelled() => Ok(false),
                },
            }
        };
        let what = format!("record not acknowledged (topic {topic}, partition {partition}, offset {offset})");
        self.retrying(&what, attempt).await.unwrap_or(false)
    }

    /// One try: the record written (or sent on, with the ack to wait for) or dead-lettered,
    /// or why neither happened.
    async fn attempt(&self, message: &Incoming) -> Result<(Outcome, Option<Ack>), String> {
        // Every reader of the topic saw the original; only the component that refused it is
        // to see its replay (a statistic would count it twice, a bridge forward it twice).
        if crate::dlq::passes_by(message, self.dlq.as_ref().map(DeadLetterQueue::component)) {
            return Ok((Outcome::PassedBy, None));
        }
        match (self.handler)(message.clone()).await {
            Ok(ack) => Ok((Outcome::Applied, ack)),
            Err(HandlerError::DeadLetter(letter)) => match &self.dlq {
                Some(dlq) => {
                    dlq.send(message, &letter).await.map(|_| (Outcome::DeadLettered, None)).map_err(|e| e.to_string())
                }
                None => Err(format!("no dead-letter queue for a record that needs one: {}", letter.message)),
            },
            Err(HandlerError::Retry(reason)) => Err(reason),
        }
    }

    /// Tries `message` until it is written or dead-lettered; `None` when the run shuts down
    /// first.
    async fn handle(&self, message: &Incoming) -> Option<(Outcome, Option<Ack>)> {
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        let what = format!("record not applied (topic {topic}, partition {partition}, offset {offset})");
        self.retrying(&what, move || self.attempt(message)).await
    }

    /// Runs `step` until it succeeds, backing off from 50 ms to 5 s between attempts; `None`
    /// when the run shuts down first.
    async fn retrying<T, S, SF>(&self, what: &str, mut step: S) -> Option<T>
    where
        S: FnMut() -> SF,
        SF: Future<Output = Result<T, String>>,
    {
        let mut backoff = Duration::from_millis(50);
        loop {
            match step().await {
                Ok(done) => return Some(done),
                Err(reason) => {
                    tracing::warn!(reason, "{what}; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutdown.cancelled() => return None,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_contiguous_finished_prefix_is_stored() {
        let mut tracker = OffsetTracker::default();
        for offset in 10..15 {
            tracker.begin(offset);
        }
        assert_eq!(tracker.finish(12), None, "10 and 11 are not finished");
        assert_eq!(tracker.finish(11), None);
        assert_eq!(tracker.finish(10), Some(12), "10, 11, 12 are now contiguous");
        assert_eq!(tracker.finish(14), None);
        assert_eq!(tracker.unfinished(), 1);
        assert_eq!(tracker.finish(13), Some(14));
        assert_eq!(tracker.unfinished(), 0);
        assert_eq!(tracker.finish(99), None, "an offset never begun changes nothing");
    }
}

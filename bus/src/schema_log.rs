//! The registry's topic on Kafka: what makes a [`Registry`] a view of
//! [`govex_schemas::journal::TOPIC`].
//!
//! One thread per process follows the topic's only partition and applies each record to the
//! view (flushed before it counts as applied). The registry component is the writer: its
//! changes are produced by an idempotent producer with `acks=all`, and a write returns only
//! once the broker acknowledged it *and* the view applied it, so a steward who reads after a
//! push sees the push. Every other process (an intake, a sink) follows the same topic into a
//! view of its own and takes no writes.
//!
//! A writer whose view holds more than an empty topic (the embedded bus keeps nothing across
//! a restart; a topic deleted by mistake) first writes its whole state back to the topic,
//! then reads the topic from the start; a view that lost its volume reads it from the start.
//! Either way the topic and the view end up holding the same registry, with the same ids. A
//! writer whose topic holds records it did not read (another topic of that name) does not
//! start: which registry is right is an operator's call, and the error says how to make it.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex, PoisonError,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use govex_schemas::{journal::TOPIC, Change, Journal, Registry};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::Message,
    producer::{FutureProducer, FutureRecord},
    Offset, TopicPartitionList,
};

use crate::{
    bus::{Bus, BusError},
    client_log::LogContext,
    config::ClientRole,
};

/// How a view reads the registry's topic: partition 0 from its own offset, committing nothing.
const VIEW_READER: ClientRole<'static> = ClientRole::Reader { group_id: "govex-registry-view", until_eof: false };

/// How long a write waits for the broker and the view, and how long catching up may take.
const BOUND: Duration = Duration::from_secs(10);

/// A process's connection of its registry view to the registry's topic. Dropping it stops
/// following.
pub struct SchemaLog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    /// `None`: this process follows the topic and takes no writes.
    producer: Option<FutureProducer<LogContext>>,
    /// A client for the topic's high watermark.
    watermarks: BaseConsumer<LogContext>,
    /// The runtime that drives the producer's delivery reports, for a write blocking on one.
    runtime: tokio::runtime::Handle,
    /// The next offset the view has to apply, and why following last failed.
    applied: Mutex<Applied>,
    progress: Condvar,
    stop: AtomicBool,
}

#[derive(Default)]
struct Applied {
    next: i64,
    error: Option<String>,
}

/// Whether a process writes the registry's topic or only follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The registry component: takes writes, and puts its state back on a topic that lost it.
    Writer,
    /// Any other process: a view, refusing writes.
    Follower,
}

impl SchemaLog {
    /// Makes `registry` a view of the topic on `bus`: creates the topic unless it exists,
    /// puts the writer's state back on a topic that lost it, starts following, and waits (up
    /// to a bound) until the view has caught up. Returns the registry to use, whose writes go
    /// through the topic.
    pub async fn start(bus: &Bus, registry: Registry, role: Role) -> Result<(Registry, Self), BusError> {
        bus.ensure_log_topic(TOPIC).await?;
        let high = bus.high_watermarks(TOPIC).await?.get(&0).copied().unwrap_or(0);
        let config = bus.config();
        let client = |role: ClientRole<'_>| config.client_config(bus.bootstrap_servers(), role);
        let producer: Option<FutureProducer<LogContext>> = match role {
            Role::Writer => {
                // A steward's push is answered within the bound, not the event topics' delivery
                // timeout: a change the broker did not take by then is reported as not made.
                let producer = client(ClientRole::PromptProducer { delivery_timeout_ms: BOUND.as_millis() as u64 });
                Some(producer.create_with_context(LogContext).map_err(BusError::Client)?)
            }
            Role::Follower => None,
        };
        let storage =
            |e: govex_schemas::RegistryError| BusError::RegistryTopic { topic: TOPIC.into(), error: e.to_string() };
        if let Some(producer) = &producer {
            let state = registry.state().map_err(storage)?;
            let applied = registry.log_offset().map_err(storage)?;
            // Another topic under the same name (deleted and filled again) may hold as many
            // records: the last record this view applied must be where it was.
            let replaced = match (applied, registry.last_record().map_err(storage)?) {
                (Some(applied), Some(last)) if applied > 0 && applied <= high => {
                    let config = client(VIEW_READER);
                    tokio::task::spawn_blocking(move || !still_there(config, applied - 1, &last)).await.unwrap_or(false)
                }
                _ => false,
            };
            let behind = replaced || applied.is_none_or(|applied| applied > high);
            if !state.is_empty() && behind && high > 0 {
                // Views that read this topic apply its records first (the first record of a
                // key wins): writing this registry's state after them would give its ids
                // other meanings than theirs. An operator decides which registry is right.
                return Err(BusError::RegistryTopic {
                    topic: TOPIC.into(),
                    error: format!(
                        "it holds {high} records this registry did not read (its store applied {} of them{}); \
                         to go by the topic, move the registry's store (<data_dir>/registry) away and start again; \
                         to go by this registry, delete the topic and start again, and the registry writes its state back",
                        applied.map_or("none".to_owned(), |a| a.to_string()),
                        if replaced { ", and its last record is not where it was" } else { "" }
                    ),
                });
            }
            if !state.is_empty() && behind {
                tracing::warn!(
                    topic = TOPIC,
                    records = state.len(),
                    "the registry's topic holds less than this registry: writing the registry's state back to it"
                );
                let (producer, runtime) = (producer.clone(), tokio::runtime::Handle::current());
                tokio::task::spawn_blocking(move || produce(&producer, &runtime, &state))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
                    .map_err(|error| BusError::RegistryTopic { topic: TOPIC.into(), error })?;
                registry.reset_log_offset().map_err(storage)?;
            }
        }
        let from = registry.log_offset().map_err(storage)?.unwrap_or(0);
        let consumer: BaseConsumer<LogContext> =
            { client(VIEW_READER).create_with_context(LogContext).map_err(BusError::Client)? };
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(TOPIC, 0, Offset::Offset(from))
            .map_err(|e| BusError::RegistryTopic { topic: TOPIC.into(), error: e.to_string() })?;
        consumer.assign(&assignment).map_err(BusError::Client)?;
        let watermarks: BaseConsumer<LogContext> =
            client(ClientRole::Admin).create_with_context(LogContext).map_err(BusError::Client)?;
        let shared = Arc::new(Shared {
            producer,
            watermarks,
            runtime: tokio::runtime::Handle::current(),
            applied: Mutex::new(Applied { next: from, error: None }),
            progress: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let thread = std::thread::Builder::new()
            .name("govex-registry-view".into())
            .spawn({
                let (shared, registry) = (shared.clone(), registry.clone());
                move || follow(&shared, &registry, &consumer)
            })
            .map_err(|e| BusError::RegistryTopic { topic: TOPIC.into(), error: e.to_string() })?;
        let log = Self { shared: shared.clone(), thread: Some(thread) };
        let view = registry.with_journal(Arc::new(Handle(shared.clone())));
        // A view that cannot catch up now still serves what it holds; its writes wait for it.
        let caught_up = tokio::task::spawn_blocking(move || Handle(shared).catch_up()).await;
        match caught_up {
            Ok(Ok(())) => tracing::info!(topic = TOPIC, "registry view caught up"),
            Ok(Err(error)) => tracing::warn!(topic = TOPIC, %error, "registry view not caught up yet"),
            Err(error) => tracing::warn!(topic = TOPIC, %error, "registry view not caught up yet"),
        }
        Ok((view, log))
    }

    /// The next offset of the topic the view has to apply.
    pub fn applied(&self) -> i64 {
        self.shared.applied.lock().unwrap_or_else(PoisonError::into_inner).next
    }
}

impl Drop for SchemaLog {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the view's registry writes through.
struct Handle(Arc<Shared>);

impl Journal for Handle {
    fn catch_up(&self) -> Result<(), String> {
        let (_, high) = self
            .0
            .watermarks
            .fetch_watermarks(TOPIC, 0, BOUND)
            .map_err(|e| format!("the end of {TOPIC} cannot be read: {e}"))?;
        self.wait_applied(high)
    }

    fn append(&self, changes: &[Change]) -> Result<(), String> {
        let Some(producer) = &self.0.producer else {
            return Err(format!(
                "this process follows {TOPIC} and takes no writes; send them to the registry component"
            ));
        };
        let last = produce(producer, &self.0.runtime, changes)?;
        match last {
            Some(offset) => self.wait_applied(offset + 1),
            None => Ok(()),
        }
    }
}

impl Handle {
    /// Waits until the view applied everything before `offset`, up to [`BOUND`].
    fn wait_applied(&self, offset: i64) -> Result<(), String> {
        let deadline = Instant::now() + BOUND;
        let mut applied = self.0.applied.lock().unwrap_or_else(PoisonError::into_inner);
        while applied.next < offset {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the registry's view applied {TOPIC} up to offset {} of {offset} in {} s{}",
                    applied.next,
                    BOUND.as_secs(),
                    applied.error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
                ));
            }
            applied = self.0.progress.wait_timeout(applied, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        Ok(())
    }
}

/// Produces `changes` in order and waits for every acknowledgement; returns the offset of
/// the last. The idempotent producer keeps them in order and undoubled across retries.
fn produce(
    producer: &FutureProducer<LogContext>,
    runtime: &tokio::runtime::Handle,
    changes: &[Change],
) -> Result<Option<i64>, String> {
    let mut pending = Vec::with_capacity(changes.len());
    for change in changes {
        let (key, value) = change.encode();
        let mut record = FutureRecord::<Vec<u8>, Vec<u8>>::to(TOPIC).key(&key).partition(0);
        if let Some(value) = &value {
            record = record.payload(value);
        }
        let deadline = Instant::now() + BOUND;
        let delivery = loop {
            match producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    back,
                )) if Instant::now() < deadline => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(format!("{TOPIC} did not take a change: {e}")),
            }
        };
        pending.push(delivery);
    }
    let mut last = None;
    for delivery in pending {
        // Bounded by the producer's delivery.timeout.ms: librdkafka reports every record.
        // Called off the async threads (the registry's writes run in spawn_blocking).
        match runtime.block_on(delivery) {
            Ok(Ok(delivered)) => last = Some(delivered.offset),
            Ok(Err((e, _))) => return Err(format!("{TOPIC} did not acknowledge a change: {e}")),
            Err(_) => return Err(format!("{TOPIC}: the producer went away")),
        }
    }
    Ok(last)
}

/// Whether the topic still holds `last` at `offset`. A record compacted away (a later one
/// has its key) or one that cannot be read in time counts as there: only a different record
/// at that very offset says the topic is another one.
fn still_there(config: rdkafka::ClientConfig, offset: i64, last: &govex_schemas::journal::Record) -> bool {
    let Ok(consumer) = config.create_with_context::<_, BaseConsumer<LogContext>>(LogContext) else { return true };
    let mut assignment = TopicPartitionList::new();
    if assignment.add_partition_offset(TOPIC, 0, Offset::Offset(offset)).is_err()
        || consumer.assign(&assignment).is_err()
    {
        return true;
    }
    let deadline = Instant::now() + BOUND;
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) if message.offset() == offset => {
                return message.key().unwrap_or_default() == last.0.as_slice() && message.payload() == last.1.as_deref()
            }
            Some(Ok(_)) => return true,
            _ => {}
        }
    }
    true
}

/// Applies every record of the topic to the view, in order, until stopped.
fn follow(shared: &Shared, registry: &Registry, consumer: &BaseConsumer<LogContext>) {
    let mut last_error_logged: Option<Instant> = None;
    // Each key is put back once per run: two writers on one topic (a mistake the views log)
    // would otherwise put their records back after each other's for ever.
    let mut put_back: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut next = None;
        let mut polled = consumer.poll(Duration::from_millis(100));
        // Everything already fetched is applied before one flush.
        while let Some(result) = polled {
            let outcome = result.map_err(|e| e.to_string()).and_then(|message| {
                let kept = registry
                    .apply_record(message.offset(), message.key().unwrap_or_default(), message.payload())
                    .map_err(|e| e.to_string())?;
                // A record that would have changed an id's or a version's meaning was
                // skipped; the writer puts what the view kept back on the topic, so that the
                // last record of the key (what compaction keeps) agrees with every view.
                if let (Some(kept), Some(producer)) = (kept, &shared.producer) {
                    if !put_back.insert(kept.encode().0) {
                        tracing::error!(
                            topic = TOPIC,
                            "registry view: a key is contested again; is a second registry writing this topic?"
                        );
                    } else if let Err(e) = produce(producer, &shared.runtime, std::slice::from_ref(&kept)) {
                        tracing::error!(topic = TOPIC, error = %e, "registry view: what it kept could not be put back");
                    }
                }
                Ok(message.offset() + 1)
            });
            match outcome {
                Ok(offset) => next = Some(offset),
                Err(error) => {
                    if last_error_logged.is_none_or(|at| at.elapsed() > Duration::from_secs(30)) {
                        tracing::warn!(topic = TOPIC, %error, "registry view: following the topic failed; retrying");
                        last_error_logged = Some(Instant::now());
                    }
                    shared.applied.lock().unwrap_or_else(PoisonError::into_inner).error = Some(error);
                    // A store error would repeat at once; the record is fetched again after a seek.
                    let offset = next.unwrap_or_else(|| registry.log_offset().ok().flatten().unwrap_or(0));
                    let _ = consumer.seek(TOPIC, 0, Offset::Offset(offset), Duration::from_secs(1));
                    std::thread::sleep(Duration::from_millis(200));
                    break;
                }
            }
            polled = consumer.poll(Duration::ZERO);
        }
        if let Some(next) = next {
            // Counted as applied only once on disk: a writer's acknowledgement must survive
            // the crash of this process (on the embedded bus the view is the only copy).
            if let Err(e) = registry.flush() {
                tracing::warn!(topic = TOPIC, error = %e, "registry view: flush failed; retrying");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            let mut applied = shared.applied.lock().unwrap_or_else(PoisonError::into_inner);
            applied.next = applied.next.max(next);
            applied.error = None;
            shared.progress.notify_all();
        }
    }
}

//! The node's connection to Kafka: an external cluster or the embedded one, its topics,
//! its producer, and the consumers made from it.

use std::{sync::Arc, time::Duration};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    consumer::{BaseConsumer, Consumer},
    error::{KafkaError, RDKafkaErrorCode},
};

use crate::{
    client_log::LogContext,
    config::{BusConfig, ClientRole},
    consumer::{AtLeastOnceConsumer, ConsumerSettings},
    dlq::dlq_topic,
    embedded::EmbeddedBroker,
    metrics::Metrics,
    producer::Producer,
};

/// A Kafka operation of the bus failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The embedded cluster could not start.
    #[error("the embedded bus could not start: {0}")]
    Embedded(KafkaError),
    /// A client could not be created (usually a bad librdkafka property).
    #[error("kafka client could not be created: {0}")]
    Client(KafkaError),
    /// A topic could not be created.
    #[error("topic {topic} could not be created: {error}")]
    CreateTopic {
        /// The topic that could not be made.
        topic: String,
        /// The broker's reason.
        error: String,
    },
    /// The registry's topic cannot be followed or written as the registry's view needs.
    #[error("the registry's topic {topic}: {error}")]
    RegistryTopic {
        /// The registry's topic (`gov.registry.schemas.v1`).
        topic: String,
        /// What went wrong, and where (the broker, the view's store).
        error: String,
    },
    /// The brokers did not answer a metadata request.
    #[error("brokers {bootstrap} unreachable: {error}")]
    Unreachable {
        /// The bootstrap servers.
        bootstrap: String,
        /// Why.
        error: String,
    },
}

/// Checks that a cluster answers, without keeping a client: readiness probes and bridge
/// heartbeats.
pub struct Reachability {
    config: BusConfig,
    bootstrap: String,
}

impl Reachability {
    /// A probe of the cluster at `bootstrap`.
    pub fn new(config: BusConfig, bootstrap: String) -> Self {
        Self { config, bootstrap }
    }

    /// Asks the brokers for metadata; fails when none answers within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<(), BusError> {
        let config = self.config.client_config(&self.bootstrap, ClientRole::Admin);
        let bootstrap = self.bootstrap.clone();
        let unreachable = move |error: String| BusError::Unreachable { bootstrap: bootstrap.clone(), error };
        // Metadata requests block; keep them off the async workers.
        let result = tokio::task::spawn_blocking(move || {
            let client: BaseConsumer<LogContext> = config.create_with_context(LogContext)?;
            client.fetch_metadata(None, timeout).map(drop)
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Err(e) => Err(unreachable(e.to_string())),
        }
    }
}

/// The bus one node uses.
#[derive(Clone)]
pub struct Bus {
    config: BusConfig,
    bootstrap: String,
    embedded: Option<Arc<EmbeddedBroker>>,
    producer: Producer,
    lag: crate::consumer::LagGauges,
    catch_up: crate::consumer::CatchUp,
    /// One client for watermark questions, made at the first (see `high_watermarks`).
    watermarks: Arc<std::sync::Mutex<Option<Arc<BaseConsumer<LogContext>>>>>,
}

impl Bus {
    /// Connects to `config.brokers`, or starts the embedded cluster when there are none.
    pub fn start(config: &BusConfig, metrics: &Metrics) -> Result<Self, BusError> {
        let (bootstrap, embedded) = match &config.brokers {
            Some(brokers) => (brokers.clone(), None),
            None => {
                let embedded = EmbeddedBroker::start(config.embedded_brokers).map_err(BusError::Embedded)?;
                tracing::warn!(
                    bootstrap = embedded.bootstrap_servers(),
                    "no brokers configured: running the embedded bus, which keeps messages in memory only and is for trial use; set bus.brokers for production"
                );
                (embedded.bootstrap_servers().to_owned(), Some(Arc::new(embedded)))
            }
        };
        Self::with_bootstrap(config, bootstrap, embedded, metrics)
    }

    /// Uses an already running embedded cluster (tests, `govex demo`).
    pub fn on_embedded(config: &BusConfig, embedded: Arc<EmbeddedBroker>, metrics: &Metrics) -> Result<Self, BusError> {
        let bootstrap = embedded.bootstrap_servers().to_owned();
        Self::with_bootstrap(config, bootstrap, Some(embedded), metrics)
    }

    fn with_bootstrap(
        config: &BusConfig,
        bootstrap: String,
        embedded: Option<Arc<EmbeddedBroker>>,
        metrics: &Metrics,
    ) -> Result<Self, BusError> {
        let producer = Producer::new(config, &bootstrap, metrics).map_err(BusError::Client)?;
        let mut config = config.clone();
        // The mock cluster's classic groups wait 3 s before their first assignment.
        config.mock_cluster |= embedded.is_some();
        let lag = crate::consumer::LagGauges::default();
        metrics.register(|r| {
            r.register(
                "bus_consumer_lag_records",
                "Records behind the high watermark, per consumer group and partition",
                lag.clone(),
            )
        });
        Ok(Self {
            config,
            bootstrap,
            embedded,
            producer,
            lag,
            catch_up: Default::default(),
            watermarks: Default::default(),
        })
    }

    /// The bootstrap servers clients connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The embedded cluster, when this bus is one.
    pub fn embedded(&self) -> Option<&Arc<EmbeddedBroker>> {
        self.embedded.as_ref()
    }

    /// The bus configuration.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// The node's no-loss producer.
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Creates each topic and its dead-letter topic unless they exist.
    pub async fn ensure_topics(&self, topics: &[String]) -> Result<(), BusError> {
        let all: Vec<String> = topics.iter().flat_map(|t| [t.clone(), dlq_topic(t)]).collect();
        self.create_topics(&all, self.config.partitions).await
    }

    /// Creates a log topic unless it exists: one partition (its records are read in the
    /// order they were written), compacted and kept for ever, with no dead-letter topic.
    pub async fn ensure_log_topic(&self, topic: &str) -> Result<(), BusError> {
        self.create_topics(&[topic.to_owned()], 1).await
    }

    async fn create_topics(&self, all: &[String], partitions: i32) -> Result<(), BusError> {
        let replication = self.config.replication_factor;
        if let Some(embedded) = &self.embedded {
            for topic in all {
                match embedded.create_topic(topic, partitions, replication) {
                    Ok(()) => {}
                    // Made already (by this node earlier, or by a record type going live).
                    Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAlreadyExists) => {}
                    Err(e) => return Err(BusError::CreateTopic { topic: topic.clone(), error: e.to_string() }),
                }
            }
            return Ok(());
        }
        // Ask for what exists first: a production cluster often has its topics made by its
        // operators, and this node's credentials may not allow CreateTopics at all.
        let existing = self.existing_topics().await?;
        let admin: AdminClient<LogContext> = self
            .config
            .client_config(&self.bootstrap, ClientRole::Admin)
            .create_with_context(LogContext)
            .map_err(BusError::Client)?;
        let present: Vec<String> = all.iter().filter(|t| existing.contains(*t)).cloned().collect();
        // In the background: the warnings are advice, and a cluster that does not answer
        // DescribeConfigs (librdkafka's mock cluster among them) would hold the start for the
        // request's whole timeout.
        if !present.is_empty() {
            if let Ok(describer) =
                self.config.client_config(&self.bootstrap, ClientRole::Admin).create_with_context(LogContext)
            {
                tokio::spawn(warn_about_existing(self.config.clone(), describer, present));
            }
        }
        let missing: Vec<&String> = all.iter().filter(|t| !existing.contains(*t)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let settings: Vec<Vec<(&'static str, String)>> =
            missing.iter().map(|t| self.config.topic_settings(t)).collect();
        let new_topics: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&settings)
            .map(|(t, settings)| {
                settings
                    .iter()
                    .fold(NewTopic::new(t, partitions, TopicReplication::Fixed(replication)), |new, (k, v)| {
                        new.set(k, v)
                    })
            })
            .collect();
        let results = admin
            .create_topics(&new_topics, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))))
            .await
            .map_err(|e| BusError::CreateTopic { topic: all.join(","), error: e.to_string() })?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(BusError::CreateTopic { topic, error: code.to_string() }),
            }
        }
        Ok(())
    }

    async fn existing_topics(&self) -> Result<std::collections::HashSet<String>, BusError> {
        let config = self.config.client_config(&self.bootstrap, ClientRole::Admin);
        let unreachable = |error: String| BusError::Unreachable { bootstrap: self.bootstrap.clone(), error };
        let metadata = tokio::task::spawn_blocking(move || {
            let client: BaseConsumer<LogContext> = config.create_with_context(LogContext)?;
            let metadata = client.fetch_metadata(None, Duration::from_secs(10))?;
            Ok::<_, KafkaError>(metadata.topics().iter().map(|t| t.name().to_owned()).collect())
        })
        .await
        .map_err(|e| unreachable(e.to_string()))?;
        metadata.map_err(|e| unreachable(e.to_string()))
    }

    /// Asks the brokers for metadata; fails when none answers within `timeout`.
    pub async fn check_reachable(&self, timeout: Duration) -> Result<(), BusError> {
        Reachability::new(self.config.clone(), self.bootstrap.clone()).check(timeout).await
    }

    /// The high watermark (next offset to be written) of every partition of `topic`.
    ///
    /// Asked on one client kept for it: governance views ask every 2 s in every process, and
    /// a client made per question would start and stop librdkafka's threads and connections
    /// each time. It is an admin-role consumer, not the producer, so that asking about a topic
    /// that does not exist never creates it.
    pub async fn high_watermarks(&self, topic: &str) -> Result<std::collections::BTreeMap<i32, i64>, BusError> {
        let config = self.config.client_config(&self.bootstrap, ClientRole::Admin);
        let kept = self.watermarks.clone();
        let topic = topic.to_owned();
        let bootstrap = self.bootstrap.clone();
        let unreachable = move |error: String| BusError::Unreachable { bootstrap: bootstrap.clone(), error };
        tokio::task::spawn_blocking(move || {
            let client = {
                let mut kept = kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match &*kept {
                    Some(client) => client.clone(),
                    None => kept.insert(Arc::new(config.create_with_context(LogContext)?)).clone(),
                }
            };
            let metadata = client.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let partitions: Vec<i32> =
                metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
            partitions
                .into_iter()
                .map(|p| client.fetch_watermarks(&topic, p, Duration::from_secs(10)).map(|(_, high)| (p, high)))
                .collect::<Result<_, KafkaError>>()
        })
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .map_err(|e| unreachable(e.to_string()))
    }

    /// Commits, for consumer group `group_id`, the start of every partition of `topics`: the
    /// group then reads them again from their beginning. For a store made anew under an old
    /// group (a volume lost and replaced), whose committed offsets belong to the store that
    /// was lost. A broker takes a commit only from a member of the group, so this joins it
    /// (the store's own consumer has not yet), commits once every partition is assigned to
    /// it, and leaves. A member of the group still registered (a process killed a moment ago)
    /// shares the partitions until its session times out; this waits up to 30 s for all of
    /// them. Returns how many partitions were rewound.
    pub async fn rewind_group(
        &self,
        group_id: &str,
        topics: &[String],
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<usize, BusError> {
        let stop = stop.clone();
        use rdkafka::consumer::CommitMode;
        let config = self.config.client_config(&self.bootstrap, ClientRole::Consumer { group_id });
        let topics = topics.to_vec();
        let bootstrap = self.bootstrap.clone();
        let failed = move |error: String| BusError::Unreachable { bootstrap: bootstrap.clone(), error };
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer<LogContext> =
                config.create_with_context(LogContext).map_err(|e| e.to_string())?;
            let mut starts = rdkafka::TopicPartitionList::new();
            for topic in &topics {
                if stop.is_cancelled() {
                    return Err("stopped".to_owned());
                }
                let metadata =
                    consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(|e| e.to_string())?;
                // A topic the brokers do not report (yet) is not rewound: an error, asked
                // again, never a store marked refilled with that topic left at the lost
                // store's offsets.
                let partitions: Vec<i32> = match metadata.topics().iter().find(|t| t.name() == topic.as_str()) {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        t.partitions().iter().map(|p| p.id()).collect()
                    }
                    Some(t) => return Err(format!("topic {topic} has no partitions to rewind ({:?})", t.error())),
                    None => return Err(format!("topic {topic} is not in the brokers' metadata")),
                };
                for partition in partitions {
                    let (low, _) = consumer
                        .fetch_watermarks(topic, partition, Duration::from_secs(10))
                        .map_err(|e| e.to_string())?;
                    starts
                        .add_partition_offset(topic, partition, rdkafka::Offset::Offset(low))
                        .map_err(|e| e.to_string())?;
                }
            }
            if starts.count() == 0 {
                return Ok(0);
            }
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer.subscribe(&names).map_err(|e| e.to_string())?;
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let result = loop {
                // Polling serves the group protocol; what it fetches is not this reader's.
                let _ = consumer.poll(Duration::from_millis(100));
                let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
                if assigned >= starts.count() {
                    break consumer
                        .commit(&starts, CommitMode::Sync)
                        .map(|()| starts.count())
                        .map_err(|e| e.to_string());
                }
                if std::time::Instant::now() > deadline || stop.is_cancelled() {
                    break Err(format!(
                        "the group was given {assigned} of {} partitions in 30 s (another member still in it?)",
                        starts.count()
                    ));
                }
            };
            consumer.unsubscribe();
            result.map_err(|e| format!("the group's offsets could not be rewound: {e}"))
        })
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(failed)
    }

    /// The values of header `name` on every record of `topic` from `from` (per partition)
    /// up to the high watermarks at the time of the call. Reads without a consumer group.
    pub async fn scan_header(
        &self,
        topic: &str,
        from: &std::collections::BTreeMap<i32, i64>,
        name: &str,
    ) -> Result<Vec<String>, BusError> {
        let mut records = self.read_to_end(topic, from).await?;
        let mut values = Vec::new();
        while let Some(message) = records.recv().await {
            let message = message?;
            values.extend(message.headers_named(name).map(|v| String::from_utf8_lossy(v).into_owned()));
        }
        Ok(values)
    }

    /// Every record of `topic` from `from` (per partition; the beginning where absent) up
    /// to each partition's high watermark at the time of the call, in a channel that closes
    /// at the end. Reads without a consumer group.
    ///
    /// A partition is finished when a record at or past its last offset arrives or when the
    /// broker says the end is reached (partition EOF): counting records would never end on a
    /// compacted or trimmed topic, whose offsets have gaps. Reading that makes no progress
    /// for a minute ends with an error.
    pub async fn read_to_end(
        &self,
        topic: &str,
        from: &std::collections::BTreeMap<i32, i64>,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<crate::record::Incoming, BusError>>, BusError> {
        use rdkafka::message::Message;
        let until = self.high_watermarks(topic).await?;
        let config =
            self.config.client_config(&self.bootstrap, ClientRole::Reader { group_id: "govex-scan", until_eof: true });
        let (topic, from) = (topic.to_owned(), from.clone());
        let bootstrap = self.bootstrap.clone();
        let failed = move |error: String| BusError::Unreachable { bootstrap: bootstrap.clone(), error };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::task::spawn_blocking(move || {
            let read = || -> Result<(), String> {
                let consumer: BaseConsumer<LogContext> =
                    config.create_with_context(LogContext).map_err(|e| e.to_string())?;
                let mut assignment = rdkafka::TopicPartitionList::new();
                let mut open = std::collections::BTreeSet::new();
                for (partition, high) in &until {
                    let start = from.get(partition).copied().unwrap_or(0);
                    if start < *high {
                        assignment
                            .add_partition_offset(&topic, *partition, rdkafka::Offset::Offset(start))
                            .map_err(|e| e.to_string())?;
                        open.insert(*partition);
                    }
                }
                if open.is_empty() {
                    return Ok(());
                }
                consumer.assign(&assignment).map_err(|e| e.to_string())?;
                let mut progress = std::time::Instant::now();
                while !open.is_empty() {
                    if progress.elapsed() > Duration::from_secs(60) {
                        return Err(format!("no progress for a minute; partitions {open:?} unfinished"));
                    }
                    let Some(polled) = consumer.poll(Duration::from_millis(200)) else { continue };
                    progress = std::time::Instant::now();
                    let message = match polled {
                        Ok(message) => message,
                        Err(KafkaError::PartitionEOF(partition)) => {
                            open.remove(&partition);
                            continue;
                        }
                        Err(e) => return Err(e.to_string()),
                    };
                    let high = until.get(&message.partition()).copied().unwrap_or(0);
                    if message.offset() >= high {
                        open.remove(&message.partition());
                        continue;
                    }
                    if message.offset() + 1 >= high {
                        open.remove(&message.partition());
                    }
                    if tx.blocking_send(Ok(message.detach().into())).is_err() {
                        return Ok(()); // the reader went away
                    }
                }
                Ok(())
            };
            if let Err(error) = read() {
                let _ = tx.blocking_send(Err(failed(error)));
            }
        });
        Ok(rx)
    }

    /// Which of this bus's consumers have caught up since they started (`/readyz`).
    pub fn catch_up(&self) -> &crate::consumer::CatchUp {
        &self.catch_up
    }

    /// Asks the brokers for metadata on the producer's own client (no new client per
    /// question); fails when none answers within `timeout`.
    pub async fn check_producer_reachable(&self, timeout: Duration) -> Result<(), BusError> {
        use rdkafka::producer::Producer as _;
        let producer = self.producer.client().clone();
        let bootstrap = self.bootstrap.clone();
        let result =
            tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, timeout).map(drop)).await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(BusError::Unreachable { bootstrap, error: e.to_string() }),
            Err(e) => Err(BusError::Unreachable { bootstrap, error: e.to_string() }),
        }
    }

    /// A fatal error of the producer (its idempotence fenced, say): it will deliver nothing
    /// more, and the process must be restarted.
    pub fn producer_fatal_error(&self) -> Option<String> {
        use rdkafka::producer::Producer as _;
        self.producer.client().client().fatal_error().map(|(code, reason)| format!("{code}: {reason}"))
    }

    /// The consumer-lag gauges every consumer of this node reports into (bridges report the
    /// lag of their remote source partitions here too).
    pub fn lag_gauges(&self) -> crate::consumer::LagGauges {
        self.lag.clone()
    }

    /// An at-least-once consumer on this bus.
    pub fn consumer(&self, settings: ConsumerSettings) -> Result<AtLeastOnceConsumer, BusError> {
        Ok(AtLeastOnceConsumer::new(&self.config, &self.bootstrap, settings)
            .map_err(BusError::Client)?
            .with_lag_gauges(self.lag.clone())
            .with_catch_up(self.catch_up.clone()))
    }
}

/// Warns about each existing topic whose configs contradict what govex would create
/// (operators often make topics themselves). A cluster that does not answer DescribeConfigs
/// (or denies it) is noted at debug: the node runs on.
async fn warn_about_existing(config: BusConfig, admin: AdminClient<LogContext>, topics: Vec<String>) {
    use rdkafka::admin::ResourceSpecifier;
    let specifiers: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = match admin.describe_configs(&specifiers, &options).await {
        Ok(described) => described,
        Err(e) => {
            tracing::debug!(error = %e, "topic configs could not be described");
            return;
        }
    };
    for (topic, resource) in topics.iter().zip(described) {
        let Ok(resource) = resource else { continue };
        let existing: std::collections::HashMap<String, String> =
            resource.entries.into_iter().filter_map(|e| Some((e.name, e.value?))).collect();
        for contradiction in config.topic_contradictions(topic, &existing) {
            tracing::warn!("{contradiction}; change it with kafka-configs --alter");
        }
    }
}

//! Kafka's part of a node's configuration: the `[bus]` section, the one place it becomes
//! librdkafka properties ([`BusConfig::client_config`]), the registry client's TLS, the log
//! format, and [`ConfigError`], the error every part's configuration reports.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

/// Kafka settings shared by every producer and consumer of the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Bootstrap servers of an external Kafka cluster (`host:port,host:port`). When absent the
    /// node runs an embedded in-memory bus, for trial use only.
    #[serde(default)]
    pub brokers: Option<String>,
    /// Number of brokers of the embedded bus.
    #[serde(default = "default_embedded_brokers")]
    pub embedded_brokers: i32,
    /// Partitions of each topic the node creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of each topic the node creates.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i32,
    /// Retention of the event topics and dead-letter topics the node creates, in ms (-1:
    /// for ever). The topics a store is rebuilt from (`bus.compacted_topics`) are compacted
    /// and kept for ever whatever this says.
    #[serde(default = "default_retention_ms")]
    pub retention_ms: i64,
    /// Topics that are a system of record for a store (rebuilt from them): created compacted,
    /// with unlimited retention.
    #[serde(default = "default_compacted_topics")]
    pub compacted_topics: Vec<String>,
    /// How long the producer keeps retrying one record before it reports a failure.
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u64,
    /// How long the producer waits to fill a batch.
    #[serde(default = "default_linger_ms")]
    pub linger_ms: u64,
    /// Batch compression: `none`, `gzip`, `lz4` or `snappy`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Consumer group prefix; each sink appends its own name.
    #[serde(default = "default_group_prefix")]
    pub group_prefix: String,
    /// Consumer session timeout.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// How long a consumer's fetch (a sink's, a bridge link's from its neighbour) may wait at
    /// a broker when it has no records (`fetch.wait.max.ms`, 1 to 300000). A Kafka broker
    /// answers as soon as a record arrives, so on a real cluster this only paces an idle
    /// consumer's requests. librdkafka's mock cluster
    /// (`govex broker`) holds every fetch for the whole wait, records or not, so there it is
    /// how late a record is seen: set 10 against `govex broker`. The embedded bus uses 10
    /// whatever this says.
    #[serde(default = "default_fetch_wait_max_ms")]
    pub fetch_wait_max_ms: u64,
    /// librdkafka properties passed through unchanged to every client, for SASL and TLS
    /// (`security.protocol`, `sasl.mechanism`, `sasl.username`, `ssl.ca.location`, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Whether the cluster is librdkafka's mock cluster (the embedded bus, the demo), which
    /// differs from a real broker in two ways that cost seconds:
    /// - its classic consumer groups wait `group.initial.rebalance.delay.ms` (3 s, not
    ///   settable from a client) before the first assignment, so consumers use KIP-848's
    ///   consumer group protocol (`group.protocol=consumer`), which has no such wait;
    /// - it holds every fetch for the whole `fetch.wait.max.ms` (500 ms by default) even when
    ///   records arrive, where a real broker answers at once, so consumers wait 10 ms.
    ///
    /// Not a setting: on a Kafka 4 cluster an operator may set `properties."group.protocol"`.
    #[serde(skip)]
    pub mock_cluster: bool,
}

/// TLS of this process towards an external registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryTlsConfig {
    /// PEM file with the CA certificates the registry's certificate must chain to (an
    /// `https://` registry needs one: no public roots are built in).
    pub ca_path: PathBuf,
    /// PEM file with this process's certificate chain, for a registry that wants mutual TLS.
    #[serde(default)]
    pub client_cert_path: Option<PathBuf>,
    /// PEM file with that certificate's private key.
    #[serde(default)]
    pub client_key_path: Option<PathBuf>,
}

/// Log output format.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors. The level filter comes from `RUST_LOG`.
    #[serde(default)]
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

fn default_embedded_brokers() -> i32 {
    3
}

fn default_partitions() -> i32 {
    3
}

fn default_retention_ms() -> i64 {
    // 30 days: a month for a sink that was down, or a replay, to read the events again.
    30 * 24 * 3_600_000
}

fn default_compacted_topics() -> Vec<String> {
    // The e-licence store is rebuilt from its topic; the use log is restored from its topic
    // (each entry has a key of its own, so compaction keeps them all); an anchor is the latest
    // head per use log.
    vec![
        govex_schemas::records::topics::LICENCE.into(),
        govex_schemas::records::topics::USE_LOG.into(),
        govex_schemas::records::topics::ANCHOR.into(),
    ]
}

fn default_replication_factor() -> i32 {
    3
}

fn default_delivery_timeout_ms() -> u64 {
    120_000
}

fn default_linger_ms() -> u64 {
    5
}

fn default_compression() -> String {
    "lz4".into()
}

fn default_group_prefix() -> String {
    "govex".into()
}

fn default_session_timeout_ms() -> u64 {
    10_000
}

fn default_fetch_wait_max_ms() -> u64 {
    100
}

/// The fetch wait on librdkafka's mock cluster, which holds each fetch for all of it: long
/// enough that idle fetches cost little, short enough to keep a licence's way from the intake
/// to `verify` within tens of milliseconds.
const MOCK_FETCH_WAIT_MS: u64 = 10;

impl BusConfig {
    /// The settings every topic the node creates gets, as Kafka topic configs: compacted
    /// and kept for ever for a topic a store is rebuilt from (a broker's default 7-day
    /// retention would delete licences from their system of record), deleted after
    /// `retention_ms` otherwise; and `min.insync.replicas` = min(2, replication factor), so
    /// that `acks=all` means at least two copies wherever there can be two.
    pub fn topic_settings(&self, topic: &str) -> Vec<(&'static str, String)> {
        let min_insync = self.replication_factor.clamp(1, 2);
        // The registry's topic is its primary data: compacted and kept whatever the list says.
        let compacted = topic == govex_schemas::journal::TOPIC || self.compacted_topics.iter().any(|t| t == topic);
        let mut settings = match compacted {
            true => vec![("cleanup.policy", "compact".to_owned()), ("retention.ms", "-1".to_owned())],
            false => vec![("cleanup.policy", "delete".to_owned()), ("retention.ms", self.retention_ms.to_string())],
        };
        settings.push(("min.insync.replicas", min_insync.to_string()));
        settings
    }

    /// What in an existing topic's configs contradicts [`BusConfig::topic_settings`]: a
    /// message per setting, naming it, what the topic has and what it needs.
    pub fn topic_contradictions(
        &self,
        topic: &str,
        existing: &std::collections::HashMap<String, String>,
    ) -> Vec<String> {
        let mut found = Vec::new();
        for (name, wanted) in self.topic_settings(topic) {
            let Some(actual) = existing.get(name) else { continue };
            let contradicts = match name {
                // More copies than asked for is not a contradiction.
                "min.insync.replicas" => actual.parse::<i32>().is_ok_and(|a| a < wanted.parse().unwrap_or(1)),
                "retention.ms" if wanted == "-1" => actual != "-1",
                "retention.ms" => {
                    actual != "-1" && actual.parse::<i64>().is_ok_and(|a| a < wanted.parse().unwrap_or(i64::MAX))
                }
                "cleanup.policy" if wanted == "compact" => !actual.split(',').any(|p| p.trim() == "compact"),
                _ => false,
            };
            if contradicts {
                found.push(format!("topic {topic}: {name} is {actual}, govex needs {wanted}"));
            }
        }
        found
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            brokers: None,
            embedded_brokers: default_embedded_brokers(),
            partitions: default_partitions(),
            replication_factor: default_replication_factor(),
            retention_ms: default_retention_ms(),
            compacted_topics: default_compacted_topics(),
            delivery_timeout_ms: default_delivery_timeout_ms(),
            linger_ms: default_linger_ms(),
            compression: default_compression(),
            group_prefix: default_group_prefix(),
            session_timeout_ms: default_session_timeout_ms(),
            fetch_wait_max_ms: default_fetch_wait_max_ms(),
            properties: BTreeMap::new(),
            mock_cluster: false,
        }
    }
}

/// A configuration error: where it came from, which key, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `config file <path>`, `environment variable GOVEX_...` or `built-in default config`.
    pub origin: String,
    /// The dotted key, empty when the error is not about one key (a TOML syntax error).
    pub key: String,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = redacted(&self.message);
        if self.key.is_empty() {
            write!(f, "{}: {message}", self.origin)
        } else {
            write!(f, "{}: key `{}`: {message}", self.origin, self.key)
        }
    }
}

/// `message` with every quoted stretch (in `` ` `` or `"`) of 16 characters or more and no
/// space shown by its length only: a parser quotes the value it refused (``unknown variant
/// `…` ``), and a value in the wrong key may be a secret (a token pasted as a role, a password
/// as a number). Errors are printed and logged; secrets must not be.
pub fn redacted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(['`', '"']) {
        let quote = rest[at..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=at]);
        let after = &rest[at + 1..];
        match after.find(quote) {
            Some(end) => {
                let inner = &after[..end];
                if inner.chars().count() >= 16 && !inner.contains(char::is_whitespace) {
                    out.push_str(&format!("<{} characters, not shown>", inner.chars().count()));
                } else {
                    out.push_str(inner);
                }
                out.push(quote);
                rest = &after[end + 1..];
            }
            None => {
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

impl std::error::Error for ConfigError {}

/// What a Kafka client is for; each gets its own profile on top of the shared settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole<'a> {
    /// The no-loss producer.
    Producer,
    /// An at-least-once consumer in this group.
    Consumer {
        /// The full consumer group id.
        group_id: &'a str,
    },
    /// A producer that sends at once (`linger.ms` 0) and gives up after
    /// `delivery_timeout_ms`: each record holds up an answer (a steward's push).
    PromptProducer {
        /// How long the broker may take to acknowledge a record.
        delivery_timeout_ms: u64,
    },
    /// A consumer that reads partitions it assigns itself, from the offsets it gives, and
    /// commits nothing: a store's view of its topic, a rebuild.
    Reader {
        /// The group id librdkafka requires of a consumer (never joined, nothing committed).
        group_id: &'a str,
        /// Whether it is told when it reaches the end of a partition (a read to the end).
        until_eof: bool,
    },
    /// Metadata and administration.
    Admin,
}

/// A client context that logs nothing: the clients `check_properties` makes without brokers
/// would otherwise say so.
struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, _: rdkafka::error::KafkaError, _: &str) {}
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

impl rdkafka::producer::ProducerContext for Quiet {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl BusConfig {
    /// Whether librdkafka takes every property this config gives its producers and
    /// consumers (`bus.compression`, `bus.properties`), checked the way a client's creation
    /// checks them but without starting one: `govex config check` catches what start would
    /// refuse. The error names the setting and librdkafka's reason.
    pub fn check_properties(&self, what: &str) -> Result<(), String> {
        // librdkafka takes 0 (every idle consumer would then ask the broker without pause) and
        // would name its own property for a value above its bound, not the setting written.
        if !(1..=300_000).contains(&self.fetch_wait_max_ms) {
            return Err(format!("{what}.fetch_wait_max_ms: {} is not between 1 and 300000", self.fetch_wait_max_ms));
        }
        for role in [ClientRole::Producer, ClientRole::Consumer { group_id: "config-check" }] {
            let config = self.client_config("localhost:9092", role);
            let mut created = config.create_native_config().map(drop);
            if created.is_ok() {
                // Some rules span properties and are checked only when a client is made
                // (session.timeout.ms with group.protocol=consumer, say): make one, without
                // brokers, so that it reaches nothing, and quiet (it would say it has none).
                let mut offline = config.clone();
                offline.remove("bootstrap.servers");
                created = match role {
                    ClientRole::Producer => {
                        offline.create_with_context::<_, rdkafka::producer::BaseProducer<Quiet>>(Quiet).map(drop)
                    }
                    _ => offline.create_with_context::<_, rdkafka::consumer::BaseConsumer<Quiet>>(Quiet).map(drop),
                };
            }
            if let Err(error) = created {
                let reason = match &error {
                    rdkafka::error::KafkaError::ClientConfig(_, reason, key, _) => {
                        let setting = match key.as_str() {
                            "compression.type" | "compression.codec" => format!("{what}.compression"),
                            other => format!("{what}.properties.\"{other}\""),
                        };
                        // librdkafka's reason quotes the value: fine for a compression name,
                        // and a secret (sasl.password) takes any value, so never fails here.
                        format!("{setting}: {reason}")
                    }
                    rdkafka::error::KafkaError::ClientCreation(reason) => format!("{what}.properties: {reason}"),
                    other => format!("{what}: {other}"),
                };
                return Err(reason);
            }
        }
        Ok(())
    }

    /// The one place configuration becomes librdkafka properties.
    ///
    /// The profiles are set first and `properties` last, so an operator can override
    /// anything (knowingly) for a real cluster's security settings.
    pub fn client_config(&self, bootstrap: &str, role: ClientRole<'_>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        match role {
            ClientRole::Producer | ClientRole::PromptProducer { .. } => {
                // The no-loss profile: the broker acknowledges only once every in-sync replica
                // has the record, and the idempotent producer keeps retries from duplicating or
                // reordering it.
                config
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("max.in.flight.requests.per.connection", "5")
                    .set("delivery.timeout.ms", self.delivery_timeout_ms.to_string())
                    .set("linger.ms", self.linger_ms.to_string())
                    .set("compression.type", &self.compression)
                    .set("queue.buffering.max.messages", "1000000");
            }
            ClientRole::Consumer { group_id } => {
                // The at-least-once profile: offsets are stored by the consumer only after the
                // handler says its write is durable; librdkafka then commits what was stored.
                config
                    .set("group.id", group_id)
                    .set("enable.auto.commit", "true")
                    .set("enable.auto.offset.store", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("enable.partition.eof", "false");
                let fetch_wait_ms = if self.mock_cluster { MOCK_FETCH_WAIT_MS } else { self.fetch_wait_max_ms };
                config.set("fetch.wait.max.ms", fetch_wait_ms.to_string());
                // The consumer protocol has the broker keep the session: librdkafka refuses
                // session.timeout.ms with it.
                let consumer_protocol =
                    self.mock_cluster || self.properties.get("group.protocol").map(String::as_str) == Some("consumer");
                if self.mock_cluster {
                    config.set("group.protocol", "consumer");
                }
                if !consumer_protocol {
                    config.set("session.timeout.ms", self.session_timeout_ms.to_string());
                }
            }
            ClientRole::Reader { .. } | ClientRole::Admin => {}
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        // What these roles are comes after the operator's properties: they are not defaults to
        // tune (a `linger.ms` for the event topics must not hold up a steward's push).
        match role {
            ClientRole::PromptProducer { delivery_timeout_ms } => {
                config.set("delivery.timeout.ms", delivery_timeout_ms.to_string()).set("linger.ms", "0");
            }
            ClientRole::Reader { group_id, until_eof } => {
                config
                    .set("group.id", group_id)
                    .set("enable.auto.commit", "false")
                    .set("auto.offset.reset", "earliest")
                    .set("enable.partition.eof", until_eof.to_string())
                    // A registry view must see a steward's push within the refresh the README
                    // states; the mock cluster holds a fetch for the whole wait when no record
                    // comes, a real broker answers as records arrive.
                    .set("fetch.wait.max.ms", "100");
            }
            ClientRole::Producer | ClientRole::Consumer { .. } | ClientRole::Admin => {}
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_value_that_may_be_a_secret_is_not_shown() {
        let token = "942e05adfaf12a2c412004e9129da000";
        let error = ConfigError {
            origin: "tokens file /etc/govex/tokens/tokens.toml".into(),
            key: "tokens".into(),
            message: format!("unknown variant `{token}`, expected one of `department`, `steward`"),
        };
        let shown = error.to_string();
        assert!(!shown.contains(token), "{shown}");
        assert!(shown.contains("<32 characters, not shown>") && shown.contains("`steward`"), "{shown}");
        assert_eq!(
            redacted(r#"invalid type: string "ab", expected u64"#),
            r#"invalid type: string "ab", expected u64"#
        );
    }

    #[test]
    fn a_roles_own_settings_outrank_the_operators_properties_and_the_profiles_do_not() {
        let properties = [("linger.ms", "3000"), ("delivery.timeout.ms", "600000"), ("group.id", "mine")];
        let bus = BusConfig {
            properties: properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..BusConfig::default()
        };
        let prompt = bus.client_config("b:9092", ClientRole::PromptProducer { delivery_timeout_ms: 10_000 });
        assert_eq!(prompt.get("linger.ms"), Some("0"), "a push is sent at once");
        assert_eq!(prompt.get("delivery.timeout.ms"), Some("10000"), "and bounded");
        assert_eq!(prompt.get("compression.type"), Some("lz4"), "with the producer profile");
        let reader = bus.client_config("b:9092", ClientRole::Reader { group_id: "view", until_eof: true });
        assert_eq!((reader.get("group.id"), reader.get("enable.auto.commit")), (Some("view"), Some("false")));
        let producer = bus.client_config("b:9092", ClientRole::Producer);
        assert_eq!(producer.get("linger.ms"), Some("3000"), "the operator tunes the event topics' producer");
    }

    #[test]
    fn a_fetch_wait_outside_its_bounds_is_named_as_written() {
        for wait in [0, 300_001] {
            let bus = BusConfig { fetch_wait_max_ms: wait, ..BusConfig::default() };
            let error = bus.check_properties("bus").unwrap_err();
            assert!(error.starts_with("bus.fetch_wait_max_ms: "), "{error}");
        }
        let quick = BusConfig { fetch_wait_max_ms: 1, ..BusConfig::default() };
        assert_eq!(quick.check_properties("bus"), Ok(()));
        let consumer = quick.client_config("b:9092", ClientRole::Consumer { group_id: "g" });
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("1"));
        let mock = BusConfig { mock_cluster: true, ..quick };
        let consumer = mock.client_config("b:9092", ClientRole::Consumer { group_id: "g" });
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("10"), "the mock cluster's own wait");
    }

    #[test]
    fn topics_are_created_with_explicit_settings_and_contradictions_are_named() {
        let bus = BusConfig { replication_factor: 3, ..BusConfig::default() };
        let settings = |t: &str| bus.topic_settings(t).into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!(
            settings("gov.elicense.licence.v1"),
            ["cleanup.policy=compact", "retention.ms=-1", "min.insync.replicas=2"]
        );
        assert_eq!(
            settings("gov.case.event.v1"),
            ["cleanup.policy=delete", "retention.ms=2592000000", "min.insync.replicas=2"]
        );
        let single = BusConfig { replication_factor: 1, ..BusConfig::default() };
        assert_eq!(single.topic_settings("gov.case.event.v1")[2], ("min.insync.replicas", "1".to_owned()));

        let existing = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let broker_default =
            existing(&[("cleanup.policy", "delete"), ("retention.ms", "604800000"), ("min.insync.replicas", "1")]);
        let found = bus.topic_contradictions("gov.elicense.licence.v1", &broker_default);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("cleanup.policy is delete, govex needs compact"), "{found:?}");
        let found = bus.topic_contradictions("gov.case.event.v1", &broker_default);
        assert_eq!(found.len(), 2, "a shorter retention and one in-sync replica: {found:?}");
        let generous =
            existing(&[("cleanup.policy", "compact,delete"), ("retention.ms", "-1"), ("min.insync.replicas", "3")]);
        assert!(bus.topic_contradictions("gov.case.event.v1", &generous).is_empty());
        assert!(bus.topic_contradictions("gov.elicense.licence.v1", &generous).is_empty());
    }
}

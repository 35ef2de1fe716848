//! The no-loss producer: idempotent, `acks=all`, and nothing is acknowledged upstream before
//! its delivery report says the broker has it.
//!
//! The throughput path ([`Producer::publish_all`]) enqueues a whole batch before awaiting any
//! report, so thousands of records are in flight at once; [`Producer::publish`] is the same
//! thing for one record. Dropping a librdkafka producer purges its queue, so shutdown must
//! call [`Producer::flush`].

use std::{future::Future, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::OwnedHeaders,
    producer::{FutureProducer, FutureRecord, Producer as _},
};

use crate::{
    client_log::LogContext,
    config::{BusConfig, ClientRole},
    envelope::Envelope,
    metrics::Metrics,
};

/// Where a record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The partition.
    pub partition: i32,
    /// The offset within the partition.
    pub offset: i64,
}

/// A record the broker did not take.
#[derive(Debug, Clone, thiserror::Error)]
#[error("delivery to topic {topic} failed: {error}")]
pub struct ProduceError {
    /// Where the record was going.
    pub topic: String,
    /// librdkafka's error.
    pub error: KafkaError,
}

/// One record to publish.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The topic it is published to.
    pub topic: String,
    /// The natural key.
    pub key: Vec<u8>,
    /// The wire-format value.
    pub payload: Vec<u8>,
    /// The headers.
    pub headers: OwnedHeaders,
}

impl Outgoing {
    /// A record with the envelope's headers.
    pub fn new(topic: impl Into<String>, key: impl Into<Vec<u8>>, payload: Vec<u8>, envelope: &Envelope) -> Self {
        Self { topic: topic.into(), key: key.into(), payload, headers: envelope.to_headers() }
    }

    /// Adds one more header.
    pub fn with_header(mut self, key: &str, value: &str) -> Self {
        self.headers = self.headers.insert(rdkafka::message::Header { key, value: Some(value.as_bytes()) });
        self
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabels {
    topic: String,
}

#[derive(Clone, Default)]
struct ProducerMetrics {
    delivered: Family<TopicLabels, Counter>,
    failed: Family<TopicLabels, Counter>,
    in_flight: Gauge,
}

/// One record on the in-flight gauge, for as long as this lives.
struct InFlight(Gauge);

impl InFlight {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The node's producer. Cheap to clone: clones share one librdkafka client.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer<LogContext>,
    metrics: ProducerMetrics,
}

impl Producer {
    /// Connects a producer with the no-loss profile to `bootstrap`.
    pub fn new(config: &BusConfig, bootstrap: &str, metrics: &Metrics) -> Result<Self, KafkaError> {
        let inner: FutureProducer<LogContext> =
            config.client_config(bootstrap, ClientRole::Producer).create_with_context(LogContext)?;
        let m = metrics;
        let producer_metrics = ProducerMetrics {
            delivered: m.add("bus_produced_records", "Records the broker acknowledged", Family::default()),
            failed: m.add("bus_produce_failures", "Records not delivered after every retry", Family::default()),
            in_flight: m.add("bus_producer_in_flight_records", "Records not yet acknowledged", Gauge::default()),
        };
        Ok(Self { inner, metrics: producer_metrics })
    }

    /// Enqueues one record and returns the future of its delivery report, without waiting for
    /// it. Waits only while librdkafka's local queue is full.
    pub async fn enqueue(
        &self,
        record: Outgoing,
    ) -> impl Future<Output = Result<Delivered, ProduceError>> + Send + 'static {
        let Outgoing { topic, key, payload, headers } = record;
        let mut queue_full_waits = 0u32;
        let mut future_record = FutureRecord::to(&topic).key(&key).payload(&payload).headers(headers);
        let enqueued = loop {
            match self.inner.send_result(future_record) {
                Ok(delivery) => break Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // Back-pressure: the local queue drains as the broker acknowledges.
                    future_record = back;
                    queue_full_waits += 1;
                    tokio::time::sleep(Duration::from_millis(u64::from(queue_full_waits.min(20)))).await;
                }
                Err((error, _)) => break Err(error),
            }
        };
        let metrics = self.metrics.clone();
        let labels = TopicLabels { topic: topic.clone() };
        // Counted down when the report arrives or when its future is dropped unawaited (a
        // caller that went away): the gauge must not keep records that are not in flight.
        let in_flight = enqueued.is_ok().then(|| InFlight::new(&metrics.in_flight));
        async move {
            let result = match enqueued {
                Err(error) => Err(ProduceError { topic, error }),
                Ok(delivery) => {
                    let report = delivery.await;
                    drop(in_flight);
                    match report {
                        Ok(Ok(d)) => Ok(Delivered { partition: d.partition, offset: d.offset }),
                        Ok(Err((error, _))) => Err(ProduceError { topic, error }),
                        Err(_canceled) => Err(ProduceError { topic, error: KafkaError::Canceled }),
                    }
                }
            };
            match &result {
                Ok(_) => metrics.delivered.get_or_create(&labels).inc(),
                Err(e) => {
                    tracing::warn!(topic = %labels.topic, error = %e.error, "record not delivered");
                    metrics.failed.get_or_create(&labels).inc()
                }
            };
            result
        }
    }

    /// Publishes one record and waits for its delivery report.
    pub async fn publish(&self, record: Outgoing) -> Result<Delivered, ProduceError> {
        self.enqueue(record).await.await
    }

    /// Publishes every record, all in flight together, and returns each one's report in order.
    pub async fn publish_all(
        &self,
        records: impl IntoIterator<Item = Outgoing>,
    ) -> Vec<Result<Delivered, ProduceError>> {
        let mut pending = Vec::new();
        for record in records {
            pending.push(self.enqueue(record).await);
        }
        futures::future::join_all(pending).await
    }

    /// Waits until every enqueued record has a delivery report, up to `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.flush(timeout)
    }

    /// Records enqueued and not yet acknowledged by the broker.
    pub fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }

    /// The underlying client, for metadata queries (readiness).
    pub fn client(&self) -> &FutureProducer<LogContext> {
        &self.inner
    }
}

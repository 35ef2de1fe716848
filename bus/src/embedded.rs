//! The embedded bus: librdkafka's in-process mock cluster, which speaks the real Kafka
//! protocol on loopback and keeps every message in memory. For trial use and tests only.
//!
//! librdkafka's mock cluster handle is not `Send`, so one thread owns it for its whole life
//! and the rest of the node talks to it through [`EmbeddedBroker`], which is.

use std::{
    sync::mpsc,
    thread::{self, JoinHandle},
    time::Duration,
};

use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    mocking::MockCluster,
    types::{RDKafkaApiKey, RDKafkaRespErr},
};

type Reply = mpsc::Sender<Result<(), KafkaError>>;

enum Command {
    CreateTopic { topic: String, partitions: i32, replication_factor: i32, reply: Reply },
    BrokerDown { broker_id: i32, reply: Reply },
    BrokerUp { broker_id: i32, reply: Reply },
    RequestErrors { api_key: RDKafkaApiKey, errors: Vec<RDKafkaRespErr>, reply: Reply },
    RoundTripTime { broker_id: i32, delay: Duration, reply: Reply },
    PartitionLeader { topic: String, partition: i32, broker_id: i32, reply: Reply },
    Stop,
}

/// A running embedded cluster. Dropping it stops the cluster.
pub struct EmbeddedBroker {
    bootstrap_servers: String,
    broker_count: i32,
    commands: mpsc::Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl EmbeddedBroker {
    /// Starts a mock cluster of `broker_count` brokers (ids 1..=broker_count) on loopback,
    /// holding the registry's topic.
    pub fn start(broker_count: i32) -> Result<Self, KafkaError> {
        let (commands, inbox) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("govex-embedded-bus".into())
            .spawn(move || {
                let cluster = match MockCluster::new(broker_count) {
                    Ok(cluster) => cluster,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                // Every govex cluster holds the registry's topic and the governance topics (one
                // partition each: their records are read in the order they were written), and
                // the mock cluster has no CreateTopics for the nodes sharing it to make them with.
                let catalog = govex_schemas::catalog::GOVERNANCE_TOPICS;
                for log in [govex_schemas::journal::TOPIC].into_iter().chain(catalog) {
                    if let Err(e) = cluster.create_topic(log, 1, broker_count.min(3)) {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                for command in inbox {
                    match command {
                        Command::CreateTopic { topic, partitions, replication_factor, reply } => {
                            let _ = reply.send(cluster.create_topic(&topic, partitions, replication_factor));
                        }
                        Command::BrokerDown { broker_id, reply } => {
                            let _ = reply.send(cluster.broker_down(broker_id));
                        }
                        Command::BrokerUp { broker_id, reply } => {
                            let _ = reply.send(cluster.broker_up(broker_id));
                        }
                        Command::RequestErrors { api_key, errors, reply } => {
                            cluster.request_errors(api_key, &errors);
                            let _ = reply.send(Ok(()));
                        }
                        Command::RoundTripTime { broker_id, delay, reply } => {
                            let _ = reply.send(cluster.broker_round_trip_time(broker_id, delay));
                        }
                        Command::PartitionLeader { topic, partition, broker_id, reply } => {
                            let _ = reply.send(cluster.partition_leader(&topic, partition, Some(broker_id)));
                        }
                        Command::Stop => break,
                    }
                }
            })
            .map_err(|_| KafkaError::MockCluster(RDKafkaErrorCode::Fail))?;
        let bootstrap_servers = ready_rx.recv().map_err(|_| KafkaError::MockCluster(RDKafkaErrorCode::Fail))??;
        Ok(Self { bootstrap_servers, broker_count, commands, thread: Some(thread) })
    }

    /// The `host:port,...` list clients connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// Number of brokers.
    pub fn broker_count(&self) -> i32 {
        self.broker_count
    }

    /// Creates a topic (the mock cluster does not implement the CreateTopics admin API).
    pub fn create_topic(&self, topic: &str, partitions: i32, replication_factor: i32) -> Result<(), KafkaError> {
        self.call(|reply| Command::CreateTopic {
            topic: topic.to_owned(),
            partitions,
            replication_factor: replication_factor.min(self.broker_count),
            reply,
        })
    }

    /// Takes a broker down: its connections are closed and new ones refused.
    pub fn broker_down(&self, broker_id: i32) -> Result<(), KafkaError> {
        self.call(|reply| Command::BrokerDown { broker_id, reply })
    }

    /// Brings a broker back.
    pub fn broker_up(&self, broker_id: i32) -> Result<(), KafkaError> {
        self.call(|reply| Command::BrokerUp { broker_id, reply })
    }

    /// Makes the next requests of `api_key` fail with `errors`, one each, in order.
    pub fn request_errors(&self, api_key: RDKafkaApiKey, errors: &[RDKafkaRespErr]) -> Result<(), KafkaError> {
        self.call(|reply| Command::RequestErrors { api_key, errors: errors.to_vec(), reply })
    }

    /// Delays every answer of one broker.
    pub fn broker_round_trip_time(&self, broker_id: i32, delay: Duration) -> Result<(), KafkaError> {
        self.call(|reply| Command::RoundTripTime { broker_id, delay, reply })
    }

    /// Moves the leadership of one partition to `broker_id` (a leader election).
    pub fn partition_leader(&self, topic: &str, partition: i32, broker_id: i32) -> Result<(), KafkaError> {
        self.call(|reply| Command::PartitionLeader { topic: topic.to_owned(), partition, broker_id, reply })
    }

    fn call(&self, command: impl FnOnce(Reply) -> Command) -> Result<(), KafkaError> {
        let (reply, answer) = mpsc::channel();
        self.commands.send(command(reply)).map_err(|_| KafkaError::MockCluster(RDKafkaErrorCode::Fail))?;
        answer.recv().map_err(|_| KafkaError::MockCluster(RDKafkaErrorCode::Fail))?
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

//! The level bridges' part of a node's configuration (`[bridge]`): the parent's and the
//! children's clusters, and which topics and records travel.

use std::collections::BTreeMap;

use govex_bus::config::RegistryTlsConfig;
use govex_schemas::Division;
use serde::{Deserialize, Serialize};

/// Level bridges: this node pulls down-routes from its parent's cluster and up-routes from
/// each child's cluster into its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// The parent node's cluster; its division is derived from this node's unless given.
    #[serde(default)]
    pub parent: Option<LinkConfig>,
    /// Child nodes' clusters.
    #[serde(default)]
    pub children: Vec<LinkConfig>,
    /// Topics that travel up, child to parent (case events, statistics). Default:
    /// `gov.case.event.v1`.
    #[serde(default = "default_up_topics")]
    pub up_topics: Vec<String>,
    /// Topics that travel down, parent to child (licences and their revocations, catalogue
    /// changes). Default: `gov.elicense.licence.v1`.
    #[serde(default = "default_down_topics")]
    pub down_topics: Vec<String>,
    /// Forward only records whose origin division starts with one of these; empty: all.
    #[serde(default)]
    pub origin_prefixes: Vec<String>,
    /// Forward only these record types; empty: all.
    #[serde(default)]
    pub record_types: Vec<String>,
}

/// One neighbour's cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    /// The neighbour's division (required for children; derived for the parent when absent).
    #[serde(default)]
    pub division: Option<Division>,
    /// The neighbour cluster's bootstrap servers.
    pub brokers: String,
    /// The neighbour's schema registry (`http://...`). Schema ids belong to a registry: a
    /// forwarded record's id is looked up there and translated to this node's registry.
    #[serde(default)]
    pub registry: Option<String>,
    /// A token for reading the neighbour's registry, when it wants one for reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_token: Option<String>,
    /// TLS for an `https://` neighbour registry (its CA; a client certificate for mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_tls: Option<RegistryTlsConfig>,
    /// librdkafka properties for this cluster (SASL/TLS).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl LinkConfig {
    /// A neighbour at `brokers` whose records carry ids of the registry at `registry`, with no
    /// token, TLS or properties of its own.
    pub fn new(brokers: impl Into<String>, registry: impl Into<String>) -> Self {
        Self {
            division: None,
            brokers: brokers.into(),
            registry: Some(registry.into()),
            registry_token: None,
            registry_tls: None,
            properties: BTreeMap::new(),
        }
    }
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            parent: None,
            children: Vec::new(),
            up_topics: default_up_topics(),
            down_topics: default_down_topics(),
            origin_prefixes: Vec::new(),
            record_types: Vec::new(),
        }
    }
}

fn default_up_topics() -> Vec<String> {
    // Use-log anchors go up too: the parent keeps each child's latest head, off the
    // child's own cluster.
    vec![govex_schemas::records::topics::CASE_EVENT.into(), govex_schemas::records::topics::ANCHOR.into()]
}

fn default_down_topics() -> Vec<String> {
    vec![govex_schemas::records::topics::LICENCE.into()]
}

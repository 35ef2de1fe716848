//! The resource catalogue (政务信息资源目录): per shared resource its topic, owner, sharing
//! class, update cycle and personal fields. Shipped as `catalog.toml` next to this crate and
//! embedded at build time; checked against the bundled schemas.

use apache_avro::Schema;
use serde::{Deserialize, Serialize};

use crate::bundled::bundled_schemas;

/// The catalogue text compiled into the binary.
pub const CATALOG_TOML: &str = include_str!("../catalog.toml");

/// How a resource is shared (政务信息资源共享).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sharing {
    /// 无条件共享: any authenticated department may read.
    Unconditional,
    /// 有条件共享: the owner and the subscribed departments may read.
    Conditional,
    /// 不予共享: only the owner.
    NotShared,
}

/// How often a resource changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateCycle {
    /// As records happen.
    Realtime,
    /// Once a day.
    Daily,
    /// Once a week.
    Weekly,
    /// Once a month.
    Monthly,
}

/// One catalogued resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// Stable id, `<department>.<record>`.
    pub id: String,
    /// Chinese name.
    pub name_zh: String,
    /// English name.
    pub name_en: String,
    /// The topic the resource's records travel on.
    pub topic: String,
    /// The owning department.
    pub owner: String,
    /// The sharing class.
    pub sharing: Sharing,
    /// Departments with an approved subscription (conditional sharing).
    #[serde(default)]
    pub subscribers: Vec<String>,
    /// How often the resource changes.
    pub update_cycle: UpdateCycle,
    /// Paths of personal fields (`[]` steps into array items).
    #[serde(default)]
    pub personal_fields: Vec<String>,
    /// Departments entitled to personal fields unmasked (besides the owner).
    #[serde(default)]
    pub personal_data_readers: Vec<String>,
    /// Keys of a personal map that are not personal (`surface.坐落`). A map listed as
    /// personal (`surface`) is personal under every other key, however an issuer spells it:
    /// what is shared is named, not what is hidden.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub public_map_keys: Vec<String>,
    /// Which way the level bridges of the node that reads this catalogue carry the
    /// resource's records: `up` pulls them from its children, `down` from its parent. Empty:
    /// they stay on their level (unless `bridge.up_topics`/`down_topics` name the topic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flows: Vec<Flow>,
}

/// A direction a level bridge carries records in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// From a child node to its parent (county ▸ city ▸ province).
    Up,
    /// From a parent node to its children.
    Down,
}

/// The compacted topic the subscriptions to catalogued resources live in (the owners' grants
/// beyond the catalogue's `subscribers`): one partition, kept for ever, like the registry's.
pub const SUBSCRIPTION_TOPIC: &str = "gov.governance.subscription.v1";

/// The compacted topic the objections to shared records live in (数据异议), like the
/// subscriptions'.
pub const OBJECTION_TOPIC: &str = "gov.governance.objection.v1";

/// The compacted topic that records which dead letters a steward replayed, when and by whom,
/// like the subscriptions'.
pub const REPLAY_TOPIC: &str = "gov.governance.dlq-replay.v1";

/// Every governance topic: one partition each, compacted, kept for ever.
pub const GOVERNANCE_TOPICS: [&str; 3] = [SUBSCRIPTION_TOPIC, OBJECTION_TOPIC, REPLAY_TOPIC];

impl Resource {
    /// Whether `department` may read this resource's records at all.
    pub fn may_read(&self, department: &str) -> bool {
        department == self.owner
            || match self.sharing {
                Sharing::Unconditional => true,
                Sharing::Conditional => self.subscribers.iter().any(|d| d == department),
                Sharing::NotShared => false,
            }
    }

    /// Whether `key` of the map field `map` (`surface`) is personal: the whole map is listed
    /// as personal and the key is not among the public ones, or the key is listed itself.
    pub fn is_personal_map_key(&self, map: &str, key: &str) -> bool {
        let path = format!("{map}.{key}");
        let whole_map = self.personal_fields.iter().any(|p| p == map) && !self.public_map_keys.contains(&path);
        whole_map || self.personal_fields.contains(&path)
    }

    /// Whether `department` may see this resource's personal fields unmasked: the owner, and
    /// the departments the catalogue names in `personal_data_readers`. Being allowed to read
    /// a resource never entitles to its personal data by itself.
    pub fn may_see_personal_data(&self, department: &str) -> bool {
        department == self.owner || self.personal_data_readers.iter().any(|d| d == department)
    }
}

/// The whole catalogue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Every resource.
    #[serde(rename = "resource")]
    pub resources: Vec<Resource>,
}

/// A catalogue that does not parse or does not match the schemas.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The TOML is malformed or has unknown keys.
    #[error("catalog.toml: {0}")]
    Parse(String),
    /// A resource names a topic no bundled schema describes.
    #[error("catalog.toml: resource {resource}: topic {topic} has no schema in schemas/avro")]
    UnknownTopic {
        /// The resource id.
        resource: String,
        /// The topic it names.
        topic: String,
    },
    /// Two resources share an id or a topic: who may read a record would depend on the
    /// route it is read by.
    #[error("catalog.toml: resource {resource}: another resource has the same {what}")]
    Duplicate {
        /// The resource id.
        resource: String,
        /// `id` or `topic`.
        what: &'static str,
    },
    /// The owner is not the department the topic's record type declares.
    #[error("catalog.toml: resource {resource}: owner {owner}, but its schema says {department} sends it")]
    Owner {
        /// The resource id.
        resource: String,
        /// The owner named.
        owner: String,
        /// The schema's `govex.department`.
        department: String,
    },
    /// A personal field path does not exist in the topic's schema.
    #[error("catalog.toml: resource {resource}: personal field {path} is not a field of the schema")]
    UnknownField {
        /// The resource id.
        resource: String,
        /// The path.
        path: String,
    },
}

impl Catalog {
    /// The bundled catalogue, checked against the bundled schemas.
    pub fn bundled() -> Result<Self, CatalogError> {
        Self::parse(CATALOG_TOML)
    }

    /// Parses a catalogue and checks it against the bundled schemas.
    pub fn parse(text: &str) -> Result<Self, CatalogError> {
        let schemas: Vec<(String, String)> =
            bundled_schemas().map(|s| (s.topic.to_owned(), s.text.to_owned())).collect();
        Self::parse_against(text, &schemas)
    }

    /// The topics a catalogue's resources name, for fetching their schemas before
    /// [`Catalog::parse_against`] checks it.
    pub fn topics_named(text: &str) -> Result<Vec<String>, CatalogError> {
        let catalog: Catalog = toml::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
        let mut topics: Vec<String> = catalog.resources.into_iter().map(|r| r.topic).collect();
        topics.sort();
        topics.dedup();
        Ok(topics)
    }

    /// Parses a catalogue and checks it against `schemas`, given as (topic, schema text):
    /// a steward's working tree rather than what this binary was built with.
    pub fn parse_against(text: &str, schemas: &[(String, String)]) -> Result<Self, CatalogError> {
        let catalog: Catalog = toml::from_str(text).map_err(|e| CatalogError::Parse(e.to_string()))?;
        for (n, resource) in catalog.resources.iter().enumerate() {
            let before = &catalog.resources[..n];
            if before.iter().any(|r| r.id == resource.id) {
                return Err(CatalogError::Duplicate { resource: resource.id.clone(), what: "id" });
            }
            if before.iter().any(|r| r.topic == resource.topic) {
                return Err(CatalogError::Duplicate { resource: resource.id.clone(), what: "topic" });
            }
        }
        for resource in &catalog.resources {
            let (_, schema_text) = schemas.iter().find(|(topic, _)| *topic == resource.topic).ok_or_else(|| {
                CatalogError::UnknownTopic { resource: resource.id.clone(), topic: resource.topic.clone() }
            })?;
            let schema = Schema::parse_str(schema_text).map_err(|e| CatalogError::Parse(e.to_string()))?;
            if let Schema::Record(record) = &schema {
                let declared = record.attributes.get("govex.department").and_then(serde_json::Value::as_str);
                if let Some(department) = declared.filter(|d| *d != resource.owner) {
                    return Err(CatalogError::Owner {
                        resource: resource.id.clone(),
                        owner: resource.owner.clone(),
                        department: department.to_owned(),
                    });
                }
            }
            for path in resource.personal_fields.iter().chain(&resource.public_map_keys) {
                if !has_field(&schema, path) {
                    return Err(CatalogError::UnknownField { resource: resource.id.clone(), path: path.clone() });
                }
            }
        }
        Ok(catalog)
    }

    /// The topics whose records the level bridges carry `flow`, sorted.
    pub fn topics_flowing(&self, flow: Flow) -> Vec<String> {
        let mut topics: Vec<String> =
            self.resources.iter().filter(|r| r.flows.contains(&flow)).map(|r| r.topic.clone()).collect();
        topics.sort();
        topics
    }

    /// The resource whose records travel on `topic`.
    pub fn by_topic(&self, topic: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.topic == topic)
    }
}

/// Whether `path` (`a.b`, `list[].c`, `map.key`) names a field of `schema`. A step after a
/// map names one of its keys (the licence's `surface.权利人`, say): any key is a field.
pub fn has_field(schema: &Schema, path: &str) -> bool {
    let mut current = schema;
    let mut steps = path.split('.');
    while let Some(step) = steps.next() {
        let (name, into_array) = match step.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (step, false),
        };
        let Some(field) = record_of(current).and_then(|r| r.fields.iter().find(|f| f.name == name)) else {
            return false;
        };
        current = &field.schema;
        if into_array {
            match non_null(current) {
                Schema::Array(array) => current = &array.items,
                _ => return false,
            }
        }
        if let Schema::Map(map) = non_null(current) {
            // The next step is a key; a path that ends at the map names the whole map.
            match steps.next() {
                Some(key) if !key.is_empty() => current = &map.types,
                Some(_) => return false,
                None => return true,
            }
        }
    }
    true
}

fn non_null(schema: &Schema) -> &Schema {
    match schema {
        Schema::Union(union) => union.variants().iter().find(|v| !matches!(v, Schema::Null)).unwrap_or(schema),
        other => other,
    }
}

fn record_of(schema: &Schema) -> Option<&apache_avro::schema::RecordSchema> {
    match non_null(schema) {
        Schema::Record(record) => Some(record),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_resources_on_one_topic_or_a_foreign_owner_are_refused() {
        let bundled = CATALOG_TOML;
        let twice = format!(
            "{bundled}\n[[resource]]\nid = \"tax.digest\"\nname_zh = \"摘要\"\nname_en = \"Digest\"\ntopic = \"gov.tax.deed-tax-payment.v1\"\nowner = \"tax\"\nsharing = \"unconditional\"\nupdate_cycle = \"daily\"\n"
        );
        let error = Catalog::parse(&twice).unwrap_err().to_string();
        assert!(error.contains("tax.digest: another resource has the same topic"), "{error}");
        let foreign = bundled.replacen(r#"owner = "tax""#, r#"owner = "housing""#, 1);
        let error = Catalog::parse(&foreign).unwrap_err().to_string();
        assert!(error.contains("owner housing, but its schema says tax sends it"), "{error}");
    }

    #[test]
    fn the_bundled_catalogue_matches_the_schemas_and_covers_every_topic() {
        let catalog = Catalog::bundled().unwrap();
        for schema in bundled_schemas() {
            assert!(catalog.by_topic(schema.topic).is_some(), "{} is not catalogued", schema.topic);
        }
    }

    #[test]
    fn sharing_classes_decide_who_reads_and_who_sees_personal_data() {
        let catalog = Catalog::bundled().unwrap();
        let tax = catalog.by_topic("gov.tax.deed-tax-payment.v1").unwrap();
        assert!(tax.may_read("tax") && tax.may_read("land-registry"));
        assert!(!tax.may_read("housing"), "conditional: no subscription, no read");
        let fund = catalog.by_topic("gov.provident-fund.event.v1").unwrap();
        assert!(fund.may_read("provident-fund") && !fund.may_read("land-registry"), "not shared");
        let cases = catalog.by_topic("gov.case.event.v1").unwrap();
        assert!(cases.may_read("tax") && !cases.may_see_personal_data("tax"), "unconditional, but no personal data");
        let licences = catalog.by_topic("gov.elicense.licence.v1").unwrap();
        assert!(licences.is_personal_map_key("surface", "权利人"), "printed personal fields");
        assert!(licences.is_personal_map_key("surface", "權利人 "), "whatever the spelling");
        assert!(!licences.is_personal_map_key("surface", "坐落"), "a public key");
    }

    #[test]
    fn map_keys_are_fields() {
        let schema = Schema::parse_str(
            r#"{"type":"record","name":"r","fields":[{"name":"surface","type":{"type":"map","values":"string"}}]}"#,
        )
        .unwrap();
        assert!(has_field(&schema, "surface.权利人"));
        assert!(has_field(&schema, "surface"));
        assert!(!has_field(&schema, "surface."));
        assert!(!has_field(&schema, "surface.a.b"), "a string has no fields");
    }

    #[test]
    fn mistakes_in_the_catalogue_are_named() {
        let wrong_field = CATALOG_TOML.replace("\"taxpayer_name\"", "\"taxpayer_nam\"");
        let error = Catalog::parse(&wrong_field).unwrap_err().to_string();
        assert_eq!(
            error,
            "catalog.toml: resource tax.deed-tax-payment: personal field taxpayer_nam is not a field of the schema"
        );
        let wrong_topic = CATALOG_TOML.replace("topic = \"gov.case.event.v1\"", "topic = \"gov.case.events.v1\"");
        assert!(Catalog::parse(&wrong_topic).unwrap_err().to_string().contains("gov.case.events.v1 has no schema"));
        assert!(Catalog::parse("[[resource]]\nid = 1").unwrap_err().to_string().starts_with("catalog.toml: "));
    }
}

/// The catalogue a running node goes by: replaced whole when a steward changes the catalogue
/// file, so a reader sees one version of it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveCatalog(std::sync::Arc<std::sync::RwLock<std::sync::Arc<Catalog>>>);

impl LiveCatalog {
    /// A live catalogue that starts as `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        Self(std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(catalog))))
    }

    /// The catalogue now.
    pub fn current(&self) -> std::sync::Arc<Catalog> {
        std::sync::Arc::clone(&self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Goes by `catalog` from now on.
    pub fn replace(&self, catalog: Catalog) {
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = std::sync::Arc::new(catalog);
    }
}

//! `govex schema diff`: what changed between two versions of a schema, field by field.

use std::collections::BTreeMap;

use apache_avro::Schema;
use serde::Serialize;

/// One change between two schemas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `added`, `removed`, `type-changed`, `default-changed`, `symbols-added`, `symbols-removed`.
    pub kind: &'static str,
    /// Field path (`right_holders[].share_percent`).
    pub path: String,
    /// The old side, in words.
    pub old: String,
    /// The new side, in words.
    pub new: String,
}

/// A short description of a type: `string`, `decimal(18,2)`, `record Buyer`, `array<record Buyer>`.
pub fn type_name(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name.name()),
        Schema::Enum(e) => format!("enum {}", e.name.name()),
        Schema::Fixed(f) => format!("fixed {}({})", f.name.name(), f.size),
        Schema::Decimal(d) => format!("decimal({},{})", d.precision, d.scale),
        Schema::Array(a) => format!("array<{}>", type_name(&a.items)),
        Schema::Map(m) => format!("map<{}>", type_name(&m.types)),
        Schema::Union(u) => u.variants().iter().map(type_name).collect::<Vec<_>>().join(" | "),
        Schema::Ref { name } => name.name().to_owned(),
        Schema::TimestampMillis => "timestamp-millis".into(),
        Schema::Date => "date".into(),
        Schema::Uuid(_) => "uuid".into(),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

/// Every field-level change from `old` to `new`.
pub fn diff(old: &Schema, new: &Schema) -> Vec<Change> {
    let mut changes = Vec::new();
    walk(old, new, "", &mut changes);
    changes
}

fn fields(schema: &Schema) -> Option<BTreeMap<&str, &apache_avro::schema::RecordField>> {
    match schema {
        Schema::Record(r) => Some(r.fields.iter().map(|f| (f.name.as_str(), f)).collect()),
        _ => None,
    }
}

fn inner(schema: &Schema) -> (&Schema, &'static str) {
    match schema {
        Schema::Array(a) => (&a.items, "[]"),
        Schema::Map(m) => (&m.types, "{}"),
        Schema::Union(u) if u.variants().len() == 2 && matches!(u.variants()[0], Schema::Null) => {
            (&u.variants()[1], "")
        }
        other => (other, ""),
    }
}

fn walk(old: &Schema, new: &Schema, prefix: &str, changes: &mut Vec<Change>) {
    let (Some(old_fields), Some(new_fields)) = (fields(old), fields(new)) else { return };
    let join = |name: &str| if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") };
    for (name, field) in &old_fields {
        if !new_fields.contains_key(name) {
            changes.push(Change {
                kind: "removed",
                path: join(name),
                old: type_name(&field.schema),
                new: String::new(),
            });
        }
    }
    for (name, field) in &new_fields {
        let path = join(name);
        let Some(before) = old_fields.get(name) else {
            let default = field.default.as_ref().map(|d| format!(" (default {d})")).unwrap_or_default();
            changes.push(Change {
                kind: "added",
                path,
                old: String::new(),
                new: format!("{}{default}", type_name(&field.schema)),
            });
            continue;
        };
        let (old_type, new_type) = (type_name(&before.schema), type_name(&field.schema));
        if old_type != new_type {
            changes.push(Change { kind: "type-changed", path: path.clone(), old: old_type, new: new_type });
        }
        if before.default != field.default {
            let show = |d: &Option<serde_json::Value>| d.as_ref().map_or("none".to_owned(), ToString::to_string);
            changes.push(Change {
                kind: "default-changed",
                path: path.clone(),
                old: show(&before.default),
                new: show(&field.default),
            });
        }
        let (old_inner, suffix) = inner(&before.schema);
        let (new_inner, _) = inner(&field.schema);
        if let (Schema::Enum(a), Schema::Enum(b)) = (old_inner, new_inner) {
            let added: Vec<&str> = b.symbols.iter().filter(|s| !a.symbols.contains(s)).map(String::as_str).collect();
            let removed: Vec<&str> = a.symbols.iter().filter(|s| !b.symbols.contains(s)).map(String::as_str).collect();
            if !added.is_empty() {
                changes.push(Change {
                    kind: "symbols-added",
                    path: path.clone(),
                    old: String::new(),
                    new: added.join(", "),
                });
            }
            if !removed.is_empty() {
                changes.push(Change {
                    kind: "symbols-removed",
                    path: path.clone(),
                    old: removed.join(", "),
                    new: String::new(),
                });
            }
        }
        walk(old_inner, new_inner, &format!("{path}{suffix}"), changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_level_changes_are_listed() {
        let old = Schema::parse_str(r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":"int"},{"name":"gone","type":"string"},
            {"name":"kind","type":{"type":"enum","name":"K","symbols":["X","Y"]}},
            {"name":"items","type":{"type":"array","items":{"type":"record","name":"I","fields":[{"name":"n","type":"int"}]}}}]}"#).unwrap();
        let new = Schema::parse_str(r#"{"type":"record","name":"R","fields":[
            {"name":"a","type":"long"},{"name":"note","type":["null","string"],"default":null},
            {"name":"kind","type":{"type":"enum","name":"K","symbols":["X","Z"]}},
            {"name":"items","type":{"type":"array","items":{"type":"record","name":"I","fields":[{"name":"n","type":"int"},{"name":"m","type":"int","default":0}]}}}]}"#).unwrap();
        let found: Vec<(&str, String)> = diff(&old, &new).into_iter().map(|c| (c.kind, c.path)).collect();
        assert_eq!(
            found,
            vec![
                ("removed", "gone".to_owned()),
                ("type-changed", "a".to_owned()),
                ("added", "items[].m".to_owned()),
                ("symbols-added", "kind".to_owned()),
                ("symbols-removed", "kind".to_owned()),
                ("added", "note".to_owned()),
            ]
        );
    }
}

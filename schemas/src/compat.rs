//! Schema compatibility: our own implementation of the Avro specification's schema-resolution
//! rules ("Schema Resolution" in the spec), and Confluent's seven compatibility levels on top.
//!
//! [`can_read`] answers one question: can a reader with schema R read every datum written with
//! schema W? It lists every reason it cannot, each with its location in the reader's schema
//! (a JSON-pointer-like path such as `/fields/3/type/items`). Where the specification leaves
//! room (logical types other than decimal), the checker is strict: a pair it calls compatible
//! must also read back with apache-avro, which a differential test checks.

use std::collections::{HashMap, HashSet};

use apache_avro::{
    schema::{InnerDecimalSchema, Name, RecordSchema, UuidSchema},
    Schema,
};
use serde::{Deserialize, Serialize};

/// Confluent's compatibility levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// No check.
    None,
    /// The new schema reads data written with the latest one.
    Backward,
    /// The new schema reads data written with every earlier one.
    BackwardTransitive,
    /// The latest schema reads data written with the new one.
    Forward,
    /// Every earlier schema reads data written with the new one.
    ForwardTransitive,
    /// Backward and forward against the latest.
    Full,
    /// Backward and forward against every earlier one.
    FullTransitive,
}

impl Compatibility {
    /// Every level, in Confluent's order.
    pub const ALL: [Compatibility; 7] = [
        Self::None,
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
    ];

    /// The name in Confluent's API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the level compares with every earlier version, not only the latest.
    pub fn transitive(self) -> bool {
        matches!(self, Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive)
    }

    fn backward(self) -> bool {
        matches!(self, Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive)
    }

    fn forward(self) -> bool {
        matches!(self, Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive)
    }
}

impl std::str::FromStr for Compatibility {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|level| level.as_str() == s).ok_or_else(|| {
            format!("'{s}' is not a compatibility level: expected one of {}", Self::ALL.map(Self::as_str).join(", "))
        })
    }
}

/// Why a reader cannot read a writer's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IncompatibilityKind {
    /// The types differ and no promotion applies.
    TypeMismatch,
    /// Named types (record, enum, fixed) whose names differ and no alias joins them.
    NameMismatch,
    /// A reader field absent from the writer has no default.
    ReaderFieldMissingDefaultValue,
    /// Writer enum symbols the reader lacks, and the reader's enum has no default.
    MissingEnumSymbols,
    /// A writer union branch (or a non-union writer) matches no reader branch.
    MissingUnionBranch,
    /// Fixed types of different sizes.
    FixedSizeMismatch,
    /// Decimals of different precision or scale.
    DecimalMismatch,
}

/// One reason a reader cannot read a writer's data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incompatibility {
    /// What kind of rule is broken.
    pub kind: IncompatibilityKind,
    /// Where, in the reader's schema.
    pub location: String,
    /// A sentence for people.
    pub message: String,
}

impl std::fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = serde_json::to_value(self.kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        write!(f, "{kind} at {}: {}", if self.location.is_empty() { "/" } else { &self.location }, self.message)
    }
}

/// Checks `new` against the subject's `existing` schemas (oldest first) under `level`; every
/// incompatibility found, each prefixed with the version it concerns.
pub fn check(level: Compatibility, new: &Schema, existing: &[(u32, Schema)]) -> Vec<(u32, Incompatibility)> {
    if level == Compatibility::None {
        return Vec::new();
    }
    let against: &[(u32, Schema)] =
        if level.transitive() { existing } else { existing.last().map(std::slice::from_ref).unwrap_or(&[]) };
    let mut out = Vec::new();
    for (version, old) in against {
        if level.backward() {
            out.extend(can_read(new, old).into_iter().map(|i| (*version, i)));
        }
        if level.forward() {
            out.extend(can_read(old, new).into_iter().map(|i| (*version, i)));
        }
    }
    out
}

/// Every reason a reader with `reader` cannot read data written with `writer`; empty when it
/// can.
pub fn can_read(reader: &Schema, writer: &Schema) -> Vec<Incompatibility> {
    let mut checker = Checker {
        reader_names: named_types(reader),
        writer_names: named_types(writer),
        in_progress: HashSet::new(),
        found: Vec::new(),
    };
    checker.check(reader, writer, String::new());
    checker.found
}

/// Every named type in `schema`, by full name, so that references can be followed.
fn named_types(schema: &Schema) -> HashMap<String, &Schema> {
    fn walk<'s>(schema: &'s Schema, out: &mut HashMap<String, &'s Schema>) {
        match schema {
            // A record seen before is a recursive reference: its fields are already walked.
            Schema::Record(record) if out.insert(record.name.fullname(None), schema).is_none() => {
                for field in &record.fields {
                    walk(&field.schema, out);
                }
            }
            Schema::Enum(e) => {
                out.insert(e.name.fullname(None), schema);
            }
            Schema::Fixed(f) | Schema::Duration(f) | Schema::Uuid(UuidSchema::Fixed(f)) => {
                out.insert(f.name.fullname(None), schema);
            }
            Schema::Decimal(d) => {
                if let InnerDecimalSchema::Fixed(f) = &d.inner {
                    out.insert(f.name.fullname(None), schema);
                }
            }
            Schema::Array(a) => walk(&a.items, out),
            Schema::Map(m) => walk(&m.types, out),
            Schema::Union(u) => u.variants().iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = HashMap::new();
    walk(schema, &mut out);
    out
}

struct Checker<'s> {
    reader_names: HashMap<String, &'s Schema>,
    writer_names: HashMap<String, &'s Schema>,
    /// (reader type, writer type) pairs being checked: recursive types end here.
    in_progress: HashSet<(String, String)>,
    found: Vec<Incompatibility>,
}

/// The type name of a schema, for messages.
fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Record(r) => format!("record {}", r.name.fullname(None)),
        Schema::Enum(e) => format!("enum {}", e.name.fullname(None)),
        Schema::Fixed(f) => format!("fixed {}", f.name.fullname(None)),
        Schema::Decimal(d) => format!("decimal({}, {})", d.precision, d.scale),
        Schema::Ref { name } => name.fullname(None),
        Schema::Union(_) => "union".into(),
        Schema::Array(_) => "array".into(),
        Schema::Map(_) => "map".into(),
        other => format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
    }
}

/// Whether writer name `written` is accepted by a reader type named `reader` with `aliases`:
/// the unqualified names are equal, or an alias names the writer's type.
fn names_match(reader: &Name, aliases: Option<&Vec<apache_avro::schema::Alias>>, written: &Name) -> bool {
    reader.name() == written.name()
        || aliases.is_some_and(|aliases| {
            aliases.iter().any(|alias| {
                alias.fullname(reader.namespace()) == written.fullname(None) || alias.name() == written.name()
            })
        })
}

impl<'s> Checker<'s> {
    fn deref<'a>(&self, schema: &'a Schema, names: &HashMap<String, &'a Schema>) -> &'a Schema {
        match schema {
            Schema::Ref { name } => names.get(&name.fullname(None)).copied().unwrap_or(schema),
            other => other,
        }
    }

    fn report(&mut self, kind: IncompatibilityKind, location: &str, message: String) {
        self.found.push(Incompatibility { kind, location: location.to_owned(), message });
    }

    /// Whether the reader's named type (a `kind`: record, enum, fixed) reads the writer's by
    /// name or alias; reports it when not, with `hint`.
    fn names_read(
        &mut self,
        kind: &str,
        (reader, aliases): (&Name, Option<&Vec<apache_avro::schema::Alias>>),
        writer: &Name,
        path: &str,
        hint: &str,
    ) -> bool {
        let read = names_match(reader, aliases, writer);
        if !read {
            let (reader, writer) = (reader.fullname(None), writer.fullname(None));
            let message = format!("the reader's {kind} {reader} does not read the writer's {kind} {writer}{hint}");
            self.report(IncompatibilityKind::NameMismatch, &format!("{path}/name"), message);
        }
        read
    }

    fn check(&mut self, reader: &'s Schema, writer: &'s Schema, path: String) {
        let reader_names = std::mem::take(&mut self.reader_names);
        let writer_names = std::mem::take(&mut self.writer_names);
        let r = self.deref(reader, &reader_names);
        let w = self.deref(writer, &writer_names);
        self.reader_names = reader_names;
        self.writer_names = writer_names;

        // A writer union is readable only if every branch it may have written is.
        if let Schema::Union(writer_union) = w {
            for (i, branch) in writer_union.variants().iter().enumerate() {
                let before = self.found.len();
                self.check(reader, branch, path.clone());
                for found in &mut self.found[before..] {
                    found.message = format!("writer union branch {i}: {}", found.message);
                }
            }
            return;
        }
        if let Schema::Union(reader_union) = r {
            // The first reader branch that matches the writer is resolved against it.
            let writer_resolved = w;
            let branch =
                reader_union.variants().iter().enumerate().find(|(_, b)| self.shallow_match(b, writer_resolved));
            match branch {
                Some((i, b)) => self.check(b, writer, format!("{path}/{i}")),
                None => self.report(
                    IncompatibilityKind::MissingUnionBranch,
                    &path,
                    format!("no branch of the reader's union can read the writer's {}", describe(w)),
                ),
            }
            return;
        }
        self.check_non_union(r, w, path);
    }

    /// The specification's "match" for choosing a reader union branch: same primitive type or
    /// a promotion, or named types with the same name (or alias), or both arrays, both maps.
    fn shallow_match(&self, reader: &Schema, writer: &Schema) -> bool {
        let r = self.deref(reader, &self.reader_names);
        let w = self.deref(writer, &self.writer_names);
        match (r, w) {
            (Schema::Record(rr), Schema::Record(wr)) => names_match(&rr.name, rr.aliases.as_ref(), &wr.name),
            (Schema::Enum(re), Schema::Enum(we)) => names_match(&re.name, re.aliases.as_ref(), &we.name),
            (Schema::Fixed(rf), Schema::Fixed(wf)) => names_match(&rf.name, rf.aliases.as_ref(), &wf.name),
            (Schema::Array(_), Schema::Array(_)) | (Schema::Map(_), Schema::Map(_)) => true,
            (Schema::Decimal(rd), Schema::Decimal(wd)) => rd.precision == wd.precision && rd.scale == wd.scale,
            _ => primitive_readable(r, w),
        }
    }

    fn check_non_union(&mut self, r: &'s Schema, w: &'s Schema, path: String) {
        use IncompatibilityKind as K;
        match (r, w) {
            (Schema::Record(rr), Schema::Record(wr)) => self.check_record(rr, wr, path),
            (Schema::Enum(re), Schema::Enum(we)) => {
                if !self.names_read("enum", (&re.name, re.aliases.as_ref()), &we.name, &path, "") {
                    return;
                }
                let missing: Vec<&str> =
                    we.symbols.iter().filter(|s| !re.symbols.contains(s)).map(String::as_str).collect();
                if !missing.is_empty() && re.default.is_none() {
                    self.report(
                        K::MissingEnumSymbols,
                        &format!("{path}/symbols"),
                        format!(
                            "the reader's enum {} lacks the writer's symbols [{}] and has no default",
                            re.name.fullname(None),
                            missing.join(", ")
                        ),
                    );
                }
            }
            (Schema::Fixed(rf), Schema::Fixed(wf)) => {
                if !self.names_read("fixed", (&rf.name, rf.aliases.as_ref()), &wf.name, &path, "") {
                    return;
                }
                if rf.size != wf.size {
                    self.report(
                        K::FixedSizeMismatch,
                        &format!("{path}/size"),
                        format!(
                            "the reader's fixed {} has size {}, the writer's {}",
                            rf.name.fullname(None),
                            rf.size,
                            wf.size
                        ),
                    );
                }
            }
            (Schema::Decimal(rd), Schema::Decimal(wd)) => {
                if rd.precision != wd.precision || rd.scale != wd.scale {
                    self.report(K::DecimalMismatch, &path, format!("the reader's decimal({}, {}) cannot read the writer's decimal({}, {}): precision and scale must match", rd.precision, rd.scale, wd.precision, wd.scale));
                }
                match (&rd.inner, &wd.inner) {
                    (InnerDecimalSchema::Bytes, InnerDecimalSchema::Bytes) => {}
                    (InnerDecimalSchema::Fixed(rf), InnerDecimalSchema::Fixed(wf)) if rf.size == wf.size => {}
                    _ => self.report(
                        K::TypeMismatch,
                        &path,
                        "the decimals are stored differently (bytes and fixed, or fixed of different sizes)".into(),
                    ),
                }
            }
            (Schema::Array(ra), Schema::Array(wa)) => self.check(&ra.items, &wa.items, format!("{path}/items")),
            (Schema::Map(rm), Schema::Map(wm)) => self.check(&rm.types, &wm.types, format!("{path}/values")),
            _ if primitive_readable(r, w) => {}
            _ => self.report(
                K::TypeMismatch,
                &path,
                format!("the reader's {} cannot read the writer's {}", describe(r), describe(w)),
            ),
        }
    }

    fn check_record(&mut self, rr: &'s RecordSchema, wr: &'s RecordSchema, path: String) {
        let hint = " (add an alias to rename)";
        if !self.names_read("record", (&rr.name, rr.aliases.as_ref()), &wr.name, &path, hint) {
            return;
        }
        let pair = (rr.name.fullname(None), wr.name.fullname(None));
        if !self.in_progress.insert(pair.clone()) {
            return; // a recursive type: this pair is already being checked further up
        }
        for (index, field) in rr.fields.iter().enumerate() {
            let written = wr
                .fields
                .iter()
                .find(|wf| wf.name == field.name)
                .or_else(|| wr.fields.iter().find(|wf| field.aliases.contains(&wf.name)));
            match written {
                Some(wf) => self.check(&field.schema, &wf.schema, format!("{path}/fields/{index}/type")),
                None if field.default.is_some() => {}
                None => self.report(
                    IncompatibilityKind::ReaderFieldMissingDefaultValue,
                    &format!("{path}/fields/{index}"),
                    format!(
                        "the reader's field '{}' of record {} is not in the writer's schema and has no default",
                        field.name,
                        rr.name.fullname(None)
                    ),
                ),
            }
        }
        self.in_progress.remove(&pair);
    }
}

/// Primitive and logical types: the same type, or one of the specification's promotions.
/// Logical types other than decimal read only the same logical type (strict where the
/// specification lets implementations differ).
fn primitive_readable(reader: &Schema, writer: &Schema) -> bool {
    use Schema as S;
    match (reader, writer) {
        (S::Null, S::Null) | (S::Boolean, S::Boolean) | (S::Int, S::Int) | (S::Long, S::Long) => true,
        (S::Float, S::Float) | (S::Double, S::Double) | (S::Bytes, S::Bytes) | (S::String, S::String) => true,
        (S::Long, S::Int) | (S::Float, S::Int | S::Long) | (S::Double, S::Int | S::Long | S::Float) => true,
        (S::String, S::Bytes) | (S::Bytes, S::String) => true,
        (S::Date, S::Date) | (S::TimeMillis, S::TimeMillis) | (S::TimeMicros, S::TimeMicros) => true,
        (S::TimestampMillis, S::TimestampMillis) | (S::TimestampMicros, S::TimestampMicros) => true,
        (S::TimestampNanos, S::TimestampNanos) | (S::LocalTimestampMillis, S::LocalTimestampMillis) => true,
        (S::LocalTimestampMicros, S::LocalTimestampMicros) | (S::LocalTimestampNanos, S::LocalTimestampNanos) => true,
        (S::BigDecimal, S::BigDecimal) => true,
        (S::Uuid(r), S::Uuid(w)) => {
            matches!((r, w), (UuidSchema::String, UuidSchema::String) | (UuidSchema::Bytes, UuidSchema::Bytes))
                || matches!((r, w), (UuidSchema::Fixed(a), UuidSchema::Fixed(b)) if a.size == b.size)
        }
        (S::Duration(_), S::Duration(_)) => true,
        _ => false,
    }
}

/// The writer's schema with its record fields renamed to the reader's names wherever a reader
/// field's alias names a writer field: the specification defines aliases this way ("the
/// writer's schema is rewritten using aliases from the reader's schema"), and readers that
/// match fields by name only (apache-avro) then resolve them.
pub fn apply_reader_aliases(reader: &Schema, writer: &Schema) -> Schema {
    let mut rewritten = writer.clone();
    rename_fields(reader, &mut rewritten, &named_types(reader), &mut HashSet::new());
    rewritten
}

fn rename_fields(
    reader: &Schema,
    writer: &mut Schema,
    reader_names: &HashMap<String, &Schema>,
    seen: &mut HashSet<String>,
) {
    let reader = match reader {
        Schema::Ref { name } => match reader_names.get(&name.fullname(None)) {
            Some(schema) => *schema,
            None => return,
        },
        other => other,
    };
    match (reader, writer) {
        (Schema::Record(rr), Schema::Record(wr)) => {
            if !seen.insert(wr.name.fullname(None)) {
                return;
            }
            for reader_field in &rr.fields {
                let has_own_name = wr.fields.iter().any(|wf| wf.name == reader_field.name);
                if !has_own_name {
                    if let Some(wf) = wr.fields.iter_mut().find(|wf| reader_field.aliases.contains(&wf.name)) {
                        wf.name = reader_field.name.clone();
                    }
                }
                if let Some(wf) = wr.fields.iter_mut().find(|wf| wf.name == reader_field.name) {
                    rename_fields(&reader_field.schema, &mut wf.schema, reader_names, seen);
                }
            }
            wr.lookup = wr.fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        }
        (Schema::Array(ra), Schema::Array(wa)) => rename_fields(&ra.items, &mut wa.items, reader_names, seen),
        (Schema::Map(rm), Schema::Map(wm)) => rename_fields(&rm.types, &mut wm.types, reader_names, seen),
        (reader_schema, Schema::Union(wu)) => {
            let mut branches = wu.variants().to_vec();
            for branch in &mut branches {
                let target = match reader_schema {
                    Schema::Union(ru) => ru.variants().iter().find(|rb| same_kind(rb, branch, reader_names)),
                    other => Some(other),
                };
                if let Some(target) = target {
                    rename_fields(target, branch, reader_names, seen);
                }
            }
            if let Ok(rebuilt) = apache_avro::schema::UnionSchema::new(branches) {
                *wu = rebuilt;
            }
        }
        (Schema::Union(ru), writer_schema) => {
            if let Some(target) = ru.variants().iter().find(|rb| same_kind(rb, writer_schema, reader_names)) {
                rename_fields(target, writer_schema, reader_names, seen);
            }
        }
        _ => {}
    }
}

fn same_kind(reader: &Schema, writer: &Schema, reader_names: &HashMap<String, &Schema>) -> bool {
    let reader = match reader {
        Schema::Ref { name } => reader_names.get(&name.fullname(None)).copied().unwrap_or(reader),
        other => other,
    };
    match (reader, writer) {
        (Schema::Record(r), Schema::Record(w)) => names_match(&r.name, r.aliases.as_ref(), &w.name),
        (Schema::Array(_), Schema::Array(_)) | (Schema::Map(_), Schema::Map(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
#[path = "compat_tests.rs"]
mod tests;

//! The Confluent wire format: byte 0 is the magic byte `0`, bytes 1..5 the schema id
//! (big-endian u32), the rest one Avro binary datum. Any Kafka tool with a Confluent-compatible
//! registry can read what govex writes.
//!
//! Encoding goes through apache-avro's schema-aware serde writer, which writes the datum
//! straight from the Rust value with no intermediate `Value` tree (the intake's hot path).
//! Decoding reads with the writer's schema, fetched by id, and resolves to the reader's.

use std::{
    collections::HashMap,
    io::Cursor,
    sync::{Arc, OnceLock},
};

use apache_avro::{reader::datum::GenericDatumReader, types::Value, writer::datum::GenericDatumWriter, Schema};
use parking_lot::Mutex;
use serde::{de::DeserializeOwned, Serialize};

use crate::registry_client::{RegistryClient, RegistryClientError};

/// The first byte of every Confluent-framed value.
pub const MAGIC_BYTE: u8 = 0;
/// Magic byte plus schema id.
pub const HEADER_LEN: usize = 5;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Fewer than five bytes: not even the header is there.
    #[error("value of {len} bytes is shorter than the 5-byte Confluent wire-format header")]
    TooShort {
        /// Bytes found.
        len: usize,
    },
    /// The first byte is not the Confluent magic byte.
    #[error("wrong magic byte 0x{found:02x}: expected 0x00 (Confluent wire format)")]
    WrongMagicByte {
        /// The byte found.
        found: u8,
    },
    /// The registry does not know the schema id in the header.
    #[error("schema id {0} is not known to the registry")]
    UnknownSchemaId(u32),
    /// The datum ends before the writer's schema says it should.
    #[error("avro datum truncated: the value ends before schema id {schema_id} is fully read ({detail})")]
    Truncated {
        /// The writer's schema id.
        schema_id: u32,
        /// What the reader was reading.
        detail: String,
    },
    /// Bytes are left over after one complete datum.
    #[error("{count} unexpected bytes after the avro datum of schema id {schema_id}")]
    TrailingBytes {
        /// The writer's schema id.
        schema_id: u32,
        /// Bytes left.
        count: usize,
    },
    /// The datum does not read with the writer's schema, or does not resolve to the reader's.
    #[error("avro datum of schema id {schema_id} is invalid: {detail}")]
    Invalid {
        /// The writer's schema id.
        schema_id: u32,
        /// What failed.
        detail: String,
    },
    /// The value does not fit the schema it is being encoded with.
    #[error("value does not match schema id {schema_id}: {detail}")]
    Encode {
        /// The schema id.
        schema_id: u32,
        /// What failed.
        detail: String,
    },
    /// The registry failed for another reason.
    #[error(transparent)]
    Registry(RegistryClientError),
}

impl CodecError {
    /// Whether the registry could not be reached (worth retrying), as opposed to an answer.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Registry(RegistryClientError::Unavailable { .. }))
    }
}

impl crate::dlq::Refusal for CodecError {
    fn class(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "too_short",
            Self::WrongMagicByte { .. } => "wrong_magic_byte",
            Self::UnknownSchemaId(_) => "unknown_schema_id",
            Self::Truncated { .. } => "truncated",
            Self::TrailingBytes { .. } => "trailing_bytes",
            Self::Invalid { .. } => "invalid_datum",
            Self::Encode { .. } => "encode",
            Self::Registry(_) => "registry",
        }
    }
}

impl From<RegistryClientError> for CodecError {
    fn from(error: RegistryClientError) -> Self {
        match error {
            RegistryClientError::UnknownSchemaId(id) => Self::UnknownSchemaId(id),
            other => Self::Registry(other),
        }
    }
}

/// Splits a framed value into its schema id and datum.
pub fn parse_frame(bytes: &[u8]) -> Result<(u32, &[u8]), CodecError> {
    if bytes.len() < HEADER_LEN {
        // An empty or one-byte value with the wrong first byte is more helpfully reported as
        // not-Confluent than as short.
        if let Some(&found) = bytes.first().filter(|b| **b != MAGIC_BYTE) {
            return Err(CodecError::WrongMagicByte { found });
        }
        return Err(CodecError::TooShort { len: bytes.len() });
    }
    if bytes[0] != MAGIC_BYTE {
        return Err(CodecError::WrongMagicByte { found: bytes[0] });
    }
    let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    Ok((id, &bytes[HEADER_LEN..]))
}

/// Writes the five header bytes for `schema_id` into `out`.
pub fn write_header(out: &mut Vec<u8>, schema_id: u32) {
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// Schemas the codec keeps for the life of the process, one per canonical form.
///
/// apache-avro's writers and readers borrow their schemas; the schemas of a node are few and
/// live as long as the node, so each distinct schema is leaked once and shared, which lets
/// the prepared writers and readers be cached instead of rebuilt for every record.
fn intern(schema: &Schema) -> &'static Schema {
    static INTERNED: OnceLock<Mutex<HashMap<String, &'static Schema>>> = OnceLock::new();
    let canonical = schema.canonical_form();
    let mut interned = INTERNED.get_or_init(Mutex::default).lock();
    interned.entry(canonical).or_insert_with(|| Box::leak(Box::new(schema.clone())))
}

/// Encodes values of one schema, registered under one id, in the wire format.
pub struct Encoder {
    schema_id: u32,
    schema: &'static Schema,
    writer: GenericDatumWriter<'static>,
}

impl Encoder {
    /// An encoder for `schema`, which the registry knows as `schema_id`.
    pub fn new(schema_id: u32, schema: &Schema) -> Result<Self, CodecError> {
        let schema = intern(schema);
        let writer = GenericDatumWriter::builder(schema)
            .build()
            .map_err(|e| CodecError::Encode { schema_id, detail: e.to_string() })?;
        Ok(Self { schema_id, schema, writer })
    }

    /// Registers `schema_text` under `subject` and returns an encoder for it.
    pub async fn register(registry: &RegistryClient, subject: &str, schema_text: &str) -> Result<Self, CodecError> {
        let schema_id = registry.register(subject, schema_text).await?;
        let schema = registry.schema_by_id(schema_id).await?;
        Self::new(schema_id, &schema)
    }

    /// The registry id written into every value.
    pub fn schema_id(&self) -> u32 {
        self.schema_id
    }

    /// The writer's schema.
    pub fn schema(&self) -> &Schema {
        self.schema
    }

    /// Encodes a serde value whose shape matches the schema.
    pub fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(value, &mut out)?;
        Ok(out)
    }

    /// Appends the framed encoding of `value` to `out`.
    pub fn encode_into<T: Serialize>(&self, value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let start = out.len();
        write_header(out, self.schema_id);
        self.writer.write_ser(out, value).map(drop).map_err(|e| {
            out.truncate(start);
            CodecError::Encode {
                schema_id: self.schema_id,
                detail: value_free(&e, "the value does not fit the schema"),
            }
        })
    }

    /// Encodes an Avro `Value`, validating it against the schema first.
    pub fn encode_value(&self, value: &Value) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(256);
        write_header(&mut out, self.schema_id);
        self.writer.write_value_ref(&mut out, value).map_err(|e| CodecError::Encode {
            schema_id: self.schema_id,
            detail: value_free(&e, "the value does not fit the schema"),
        })?;
        Ok(out)
    }
}

/// Decodes wire-format values into the shape of one reader schema, whatever schema (by id)
/// they were written with, as long as Avro resolution allows it.
pub struct Decoder {
    registry: RegistryClient,
    reader_schema: &'static Schema,
    reader_canonical: String,
    readers: Mutex<HashMap<u32, Arc<WriterReader>>>,
}

/// How the datums of one writer schema id are read.
struct WriterReader {
    /// Reads with the writer's schema (aliases of the reader applied).
    reader: GenericDatumReader<'static>,
    /// Whether the writer's schema differs from the reader's, so that values must be
    /// resolved to the reader's shape.
    resolve: bool,
    /// The writer's schema (with the reader's aliases applied).
    writer_schema: &'static Schema,
    /// Why the writer's schema does not resolve to the reader's (Avro's rules), if it does not.
    unreadable: Option<String>,
}

/// Reads one datum with its writer's schema, all of it.
fn read_datum(schema_id: u32, reader: &WriterReader, datum: &[u8]) -> Result<Value, CodecError> {
    let mut cursor = Cursor::new(datum);
    match reader.reader.read_value(&mut cursor) {
        Ok(value) => match datum.len() - cursor.position() as usize {
            0 => Ok(value),
            left => Err(CodecError::TrailingBytes { schema_id, count: left }),
        },
        Err(error) if is_unexpected_eof(&error) => {
            Err(CodecError::Truncated { schema_id, detail: format!("at byte {}", cursor.position()) })
        }
        Err(error) => Err(CodecError::Invalid {
            schema_id,
            detail: value_free(
                &error,
                &format!("the datum does not read with the writer's schema at byte {}", cursor.position()),
            ),
        }),
    }
}

impl Decoder {
    /// A decoder that reads into `reader_schema`, resolving writer ids through `registry`.
    pub fn new(registry: RegistryClient, reader_schema: &Schema) -> Self {
        Self {
            registry,
            reader_schema: intern(reader_schema),
            reader_canonical: reader_schema.canonical_form(),
            readers: Mutex::default(),
        }
    }

    /// Decodes one framed value into an Avro `Value` of the reader's schema.
    pub async fn decode(&self, bytes: &[u8]) -> Result<Value, CodecError> {
        let (schema_id, datum) = parse_frame(bytes)?;
        let reader = self.reader_for(schema_id).await?;
        let value = read_datum(schema_id, &reader, datum)?;
        if !reader.resolve {
            return Ok(value);
        }
        // apache-avro 0.22 refuses to resolve a bytes decimal encoded in fewer bytes than its
        // precision could need, although the specification (and every other writer) uses the
        // shortest two's-complement form; widen them first.
        widen_decimals(value).resolve(self.reader_schema).map_err(|e| CodecError::Invalid {
            schema_id,
            detail: value_free(&e, "the datum does not resolve to the reader's schema"),
        })
    }

    /// Decodes one framed value as it was written: every field of the writer's schema, those
    /// the reader does not know included, with that schema. The value must still resolve to
    /// the reader's schema (a record that does not is refused as [`Decoder::decode`] refuses
    /// it), so a view that shows it as written shows nothing the reader could not read.
    pub async fn decode_as_written(&self, bytes: &[u8]) -> Result<(Value, &'static Schema), CodecError> {
        let (schema_id, datum) = parse_frame(bytes)?;
        let reader = self.reader_for(schema_id).await?;
        // Whether the writer's schema resolves to the reader's is known once per schema id:
        // the datum is read once, as written.
        if let Some(reason) = &reader.unreadable {
            return Err(CodecError::Invalid {
                schema_id,
                detail: format!("the writer's schema does not resolve to the reader's: {reason}"),
            });
        }
        Ok((read_datum(schema_id, &reader, datum)?, reader.writer_schema))
    }

    /// Decodes one framed value into a Rust type that matches the reader's schema.
    pub async fn decode_into<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let value = self.decode(bytes).await?;
        let schema_id = parse_frame(bytes)?.0;
        apache_avro::from_value(&value).map_err(|e| CodecError::Invalid {
            schema_id,
            detail: value_free(&e, "the decoded value does not fit the expected type"),
        })
    }

    /// Decodes one framed value into a Rust type that matches the reader's schema, and, when
    /// the writer's schema is not the reader's, the value as written too (every field, those
    /// the reader does not know included) with that schema: what a view carries along
    /// unchanged. The datum is read once.
    pub async fn decode_into_carrying<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
    ) -> Result<(T, Option<(Value, &'static Schema)>), CodecError> {
        let (schema_id, datum) = parse_frame(bytes)?;
        let reader = self.reader_for(schema_id).await?;
        let written = read_datum(schema_id, &reader, datum)?;
        let typed = |value: &Value| {
            apache_avro::from_value::<T>(value).map_err(|e| CodecError::Invalid {
                schema_id,
                detail: value_free(&e, "the decoded value does not fit the expected type"),
            })
        };
        if !reader.resolve {
            return Ok((typed(&written)?, None));
        }
        let resolved =
            widen_decimals(written.clone()).resolve(self.reader_schema).map_err(|e| CodecError::Invalid {
                schema_id,
                detail: value_free(&e, "the datum does not resolve to the reader's schema"),
            })?;
        Ok((typed(&resolved)?, Some((written, reader.writer_schema))))
    }

    async fn reader_for(&self, schema_id: u32) -> Result<Arc<WriterReader>, CodecError> {
        if let Some(reader) = self.readers.lock().get(&schema_id) {
            return Ok(reader.clone());
        }
        // Field aliases of the reader rename the writer's fields first, as the Avro
        // specification defines them; apache-avro itself matches fields by name only.
        let writer_schema = self.registry.schema_by_id(schema_id).await?;
        let writer_schema = intern(&govex_schemas::compat::apply_reader_aliases(self.reader_schema, &writer_schema));
        let resolve = writer_schema.canonical_form() != self.reader_canonical;
        let reader = GenericDatumReader::builder(writer_schema)
            .build()
            .map_err(|e| CodecError::Invalid { schema_id, detail: e.to_string() })?;
        let unreadable = match resolve {
            true => govex_schemas::compat::can_read(self.reader_schema, writer_schema).first().map(ToString::to_string),
            false => None,
        };
        let reader = Arc::new(WriterReader { reader, resolve, writer_schema, unreadable });
        self.readers.lock().insert(schema_id, reader.clone());
        Ok(reader)
    }
}

/// What an error about a datum may say. apache-avro's messages print the values they failed
/// on (a whole record, with its citizen identity numbers), and these errors end up in logs
/// and dead-letter headers: so they keep only `what` (ours, with positions and schema ids),
/// and apache-avro's text is dropped, at every log level.
fn value_free(_error: &apache_avro::Error, what: &str) -> String {
    what.to_owned()
}

/// Sign-extends every decimal to 16 bytes, enough for the largest precision (38) Avro allows.
fn widen_decimals(value: Value) -> Value {
    match value {
        Value::Decimal(decimal) => match Vec::<u8>::try_from(&decimal) {
            Ok(bytes) if bytes.len() < 16 => {
                let fill = if bytes.first().is_some_and(|b| b & 0x80 != 0) { 0xff } else { 0x00 };
                let mut wide = vec![fill; 16 - bytes.len()];
                wide.extend_from_slice(&bytes);
                Value::Decimal(apache_avro::Decimal::from(wide))
            }
            _ => Value::Decimal(decimal),
        },
        Value::Record(fields) => Value::Record(fields.into_iter().map(|(name, v)| (name, widen_decimals(v))).collect()),
        Value::Union(index, inner) => Value::Union(index, Box::new(widen_decimals(*inner))),
        Value::Array(items) => Value::Array(items.into_iter().map(widen_decimals).collect()),
        Value::Map(entries) => Value::Map(entries.into_iter().map(|(k, v)| (k, widen_decimals(v))).collect()),
        other => other,
    }
}

fn is_unexpected_eof(error: &apache_avro::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::UnexpectedEof {
                return true;
            }
        }
        source = current.source();
    }
    false
}

//! `govex dlq list|show|replay`: a steward's look at what the sinks refused, and the replay of
//! it once the cause is fixed, through a node's API (`/v1/dead-letters`), so that the node's
//! rules hold: masking, the use log, and no dead letter put back twice unless asked.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Where a steward's tools find a node's API by default.
pub const DEFAULT_API: &str = "http://127.0.0.1:8080";

/// What `govex dlq` is asked to do.
pub enum Request {
    /// List dead letters (of one topic, open or replayed ones).
    List {
        /// A topic (the records' or its `.dlq`).
        topic: Option<String>,
        /// `open` or `replayed`.
        state: Option<String>,
        /// At most this many.
        limit: usize,
    },
    /// Show one, with its record masked.
    Show {
        /// `<dead-letter topic>/<partition>/<offset>`.
        id: String,
    },
    /// Put back one or more, a range, or all.
    Replay {
        /// Dead letters by id.
        ids: Vec<String>,
        /// Or a topic, with a partition and a range.
        topic: Option<String>,
        /// Its partition.
        partition: Option<i32>,
        /// From this offset.
        from: Option<i64>,
        /// To this offset.
        to: Option<i64>,
        /// Or every dead letter.
        all: bool,
        /// Also those put back before.
        again: bool,
    },
}

/// Runs `request` against the node API at `api` with a steward's `token`; prints JSON
/// (`json`) or lines for people. Returns whether everything asked for was done.
pub async fn run(api: &str, token: &str, request: Request, json: bool) -> Result<bool> {
    let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(120)).build()?;
    let base = api.trim_end_matches('/');
    let answer = match &request {
        Request::List { topic, state, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(topic.iter().map(|t| ("topic", t.clone())));
            query.extend(state.iter().map(|s| ("state", s.clone())));
            http.get(format!("{base}/v1/dead-letters")).query(&query)
        }
        Request::Show { id } => {
            let parts: Vec<&str> = id.rsplitn(3, '/').collect();
            let [offset, partition, topic] = parts.as_slice() else {
                bail!("a dead letter's id is <dead-letter topic>/<partition>/<offset>, as `govex dlq list` prints it")
            };
            let (topic, partition, offset) = (segment(topic), segment(partition), segment(offset));
            http.get(format!("{base}/v1/dead-letters/{topic}/{partition}/{offset}"))
        }
        Request::Replay { ids, topic, partition, from, to, all, again } => {
            let mut body = json!({"again": again});
            if !ids.is_empty() {
                body["ids"] = json!(ids);
            }
            if *all {
                body["all"] = json!(true);
            }
            for (name, value) in
                [("topic", json!(topic)), ("partition", json!(partition)), ("from", json!(from)), ("to", json!(to))]
            {
                if !value.is_null() {
                    body[name] = value;
                }
            }
            http.post(format!("{base}/v1/dead-letters/replay")).json(&body)
        }
    };
    let response =
        answer.bearer_auth(token).send().await.with_context(|| format!("the node at {base} did not answer"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = body["detail"].as_str().unwrap_or_default();
        let errors = body["errors"].as_array().map(|errors| {
            errors
                .iter()
                .map(|e| format!("{} ({}): {}", e["pointer"].as_str().unwrap_or(""), e["rule"], e["message"]))
                .collect::<Vec<_>>()
                .join("; ")
        });
        bail!("{status}: {} {detail} {}", body["title"].as_str().unwrap_or_default(), errors.unwrap_or_default());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
    } else {
        print_for_people(&request, &body);
    }
    Ok(match request {
        Request::Replay { .. } => body["refused_total"] == 0 && body["more"] != true,
        _ => true,
    })
}

/// A value for a terminal: a header some other tool wrote may hold escape sequences, which are
/// shown, not obeyed.
fn text(value: &Value) -> String {
    let text = match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// One path segment, percent-encoded.
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn print_for_people(request: &Request, body: &Value) {
    match request {
        Request::List { .. } => {
            for letter in body["dead_letters"].as_array().into_iter().flatten() {
                let state = if letter["replayed"].is_null() { "open" } else { "replayed" };
                println!(
                    "{}  {}  {}/{}  {}  {}: {}",
                    text(&letter["id"]),
                    state,
                    text(&letter["component"]),
                    text(&letter["stage"]),
                    text(&letter["key"]),
                    text(&letter["class"]),
                    text(&letter["message"]),
                );
            }
            println!("{} dead letters{}", body["total"], if body["more"] == true { " (more than shown)" } else { "" });
        }
        Request::Show { .. } => {
            for field in
                ["id", "component", "stage", "class", "message", "key", "event_id", "record_type", "source_department"]
            {
                println!("{field:18} {}", text(&body[field]));
            }
            println!("{:18} {}", "from", text(&body["from"]));
            println!("{:18} {}", "replayed", text(&body["replayed"]));
            println!("record (personal fields masked):");
            println!("{}", serde_json::to_string_pretty(&body["record"]).unwrap_or_default());
        }
        Request::Replay { .. } => {
            for replay in body["replayed"].as_array().into_iter().flatten() {
                println!(
                    "replayed {} -> {}/{}/{}",
                    text(&replay["id"]),
                    text(&replay["topic"]),
                    replay["partition"],
                    replay["offset"]
                );
            }
            for refused in body["refused"].as_array().into_iter().flatten() {
                println!("not replayed {}: {}", text(&refused["id"]), text(&refused["reason"]));
            }
            println!(
                "{} replayed, {} skipped (put back before, or refused again after a replay: name it, or --again), {} not replayed{}",
                body["replayed"].as_array().map_or(0, Vec::len),
                body["skipped"],
                body["refused_total"],
                if body["more"] == true { "; more remain: run it again" } else { "" }
            );
        }
    }
}

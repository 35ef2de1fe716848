//! The schema-driven mapping against the hand-written one it is to replace (issue 14: "speed
//! is kept"): for each record type, one thread maps the same samples both ways — parse the
//! JSON, check and map, encode the Avro value — and prints records per second and the ratio.
//! Run: `cargo bench -p govex-adapters --bench plan`.

use std::time::Instant;

use apache_avro::Schema;
use govex_adapters::{common::CheckContext, plan::Plan, samples::sample};
use govex_bus::Encoder;

const RECORDS: u32 = 20_000;
const ROUNDS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    println!("schema-driven mapping vs hand-written, one thread, {RECORDS} records, median of {ROUNDS} rounds");
    println!("{:<32} {:>14} {:>14} {:>8}", "record", "by hand rec/s", "plan rec/s", "ratio");
    let context = CheckContext::now();
    for spec in govex_adapters::all_records() {
        let text = govex_schemas::bundled_schemas().find(|s| s.topic == spec.topic).expect("bundled").text;
        let schema = Schema::parse_str(text).expect("schema");
        let encoder = Encoder::new(1, &schema).expect("encoder");
        let plan = Plan::compile(&schema).expect("plan");
        let lines: Vec<Vec<u8>> = (0..RECORDS)
            .map(|n| sample(spec.department.as_str(), spec.record, n).expect("sample").to_string().into_bytes())
            .collect();
        let (mut by_hand, mut planned) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let started = Instant::now();
            for line in &lines {
                let input: serde_json::Value = serde_json::from_slice(line).expect("json");
                std::hint::black_box((spec.map)(&input, &context, &encoder).expect("valid"));
            }
            by_hand.push(f64::from(RECORDS) / started.elapsed().as_secs_f64());
            let started = Instant::now();
            for line in &lines {
                let input: serde_json::Value = serde_json::from_slice(line).expect("json");
                let (key, value) = plan.map(&input, &context).expect("valid");
                let mut out = Vec::with_capacity(256);
                govex_adapters::plan::encode(encoder.schema_id(), &value, &mut out);
                std::hint::black_box((key, out));
            }
            planned.push(f64::from(RECORDS) / started.elapsed().as_secs_f64());
        }
        let (by_hand, planned) = (median(by_hand), median(planned));
        println!(
            "{:<32} {:>14.0} {:>14.0} {:>8.2}",
            format!("{}/{}", spec.department, spec.record),
            by_hand,
            planned,
            planned / by_hand
        );
    }
}

//! `govex demo`: a home purchase reviewed in parallel (并联审批) across three nodes in one
//! process — province 610000, city 610900, county 610921 — each on its own embedded cluster,
//! linked by level bridges, driven through the real HTTP APIs. Prints, for a government IT
//! reader, what happened where and how long it took; fails (non-zero exit) if any step does.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::config::NodeConfig;
use anyhow::{bail, Context, Result};
use govex_adapters::samples::{citizen_id, property_unit_number, sample};
use govex_bus::embedded::EmbeddedBroker;
use govex_http::auth::{hash_token, new_token};
use govex_http::config::TokenConfig;
use govex_schemas::identifiers::mask;
use govex_schemas::Division;
use govex_sinks::level_bridge::config::LinkConfig;
use serde_json::{json, Value};

use crate::node::{self, RunningNode};

const DEPARTMENTS: [&str; 5] = ["land-registry", "housing", "tax", "provident-fund", "platform"];

struct Level {
    name: &'static str,
    division: &'static str,
    broker: Arc<EmbeddedBroker>,
    /// Where the level's registry listens, chosen before any node starts: each bridge
    /// needs its neighbours' registries to translate schema ids.
    registry: SocketAddr,
}

/// A free loopback port for a registry.
fn free_registry_addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn cluster() -> Result<Arc<EmbeddedBroker>> {
    let broker = Arc::new(EmbeddedBroker::start(3)?);
    for schema in govex_schemas::bundled_schemas() {
        for topic in [schema.topic.to_owned(), govex_bus::dlq::dlq_topic(schema.topic)] {
            broker.create_topic(&topic, 3, 3)?;
        }
    }
    Ok(broker)
}

fn config(level: &Level, data: &Path, tokens: &[(String, String)]) -> Result<NodeConfig> {
    let mut config = NodeConfig::embedded_default();
    config.division = Division::parse(level.division)?;
    config.data_dir = data.join(level.division);
    config.bus.brokers = Some(level.broker.bootstrap_servers().to_owned());
    // The clusters are librdkafka's mock clusters, as the embedded bus is: their classic
    // consumer groups wait 3 s before the first assignment.
    config.bus.mock_cluster = true;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    config.listen.api = any;
    config.listen.registry = level.registry;
    config.listen.ops = any;
    config.intake.tokens = tokens
        .iter()
        .map(|(department, token)| TokenConfig {
            department: department.clone(),
            sha256: hash_token(token),
            label: Some("demo".into()),
            role: Default::default(),
        })
        .collect();
    Ok(config)
}

fn link(level: &Level, named: bool) -> LinkConfig {
    LinkConfig {
        division: named
            .then(|| Division::parse(level.division).unwrap_or_else(|_| unreachable!("demo divisions are valid"))),
        brokers: level.broker.bootstrap_servers().to_owned(),
        registry: Some(format!("http://{}", level.registry)),
        registry_token: None,
        registry_tls: None,
        properties: Default::default(),
    }
}

struct Demo {
    http: reqwest::Client,
    tokens: Vec<(String, String)>,
    started: Instant,
    steps: Vec<(String, Duration)>,
    /// The zone times are shown in (the nodes').
    zone: govex_schemas::zone::TimeZone,
}

impl Demo {
    fn token(&self, department: &str) -> &str {
        self.tokens.iter().find(|(d, _)| d == department).map(|(_, t)| t.as_str()).unwrap_or_default()
    }

    /// Sends the `n`th sample `record` of `department` to its intake route.
    async fn post_sample(&self, node: &RunningNode, department: &str, record: &str, n: u32) -> Result<Value> {
        let body = sample(department, record, n).context("sample")?;
        self.post(node, department, &format!("/v1/{department}/{record}"), &body).await
    }

    async fn post(&self, node: &RunningNode, department: &str, path: &str, body: &Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("http://{}{path}", node.api_addr()?))
            .bearer_auth(self.token(department))
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path} as {department}: HTTP {status}: {answer}");
        }
        Ok(answer)
    }

    async fn get(&self, node: &RunningNode, department: &str, path: &str) -> Result<(u16, Value)> {
        let response = self
            .http
            .get(format!("http://{}{path}", node.api_addr()?))
            .bearer_auth(self.token(department))
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    fn step(&mut self, name: &str, since: Instant) {
        let took = since.elapsed();
        println!("   took {:.0} ms", took.as_secs_f64() * 1e3);
        self.steps.push((name.to_owned(), took));
    }
}

/// Polls `probe` until it returns `Some`, for at most 30 s.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where the broker put an accepted record: its topic, partition and offset (the record's
/// position in the partition's log), and its event id.
fn accepted(answer: &Value) -> String {
    format!(
        "accepted: topic {}, partition {}, offset {} (event {})",
        answer["topic"].as_str().unwrap_or("?"),
        answer["partition"],
        answer["offset"],
        answer["event_id"].as_str().unwrap_or("?"),
    )
}

/// Waits until every node's consumer groups have joined and caught up (what `/readyz`
/// checks once a second; asked here directly), so that the scenario's timings are the
/// exchange's, not the start-up's.
async fn ready(nodes: &[&RunningNode]) -> Result<()> {
    for node in nodes {
        eventually("the nodes to be ready", || async { Ok(node.bus.catch_up().behind().is_empty().then_some(())) })
            .await?;
    }
    Ok(())
}

/// A value of the metric line starting with `prefix` on `node`'s ops port.
async fn metric(http: &reqwest::Client, node: &RunningNode, prefix: &str) -> Result<Option<f64>> {
    let text = http.get(format!("http://{}/metrics", node.ops_addr)).send().await?.text().await?;
    Ok(text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()))
}

/// Runs the scenario; `data` holds the three nodes' stores.
pub async fn run(data: &Path) -> Result<()> {
    let levels = [
        Level { name: "province", division: "610000", broker: cluster()?, registry: free_registry_addr()? },
        Level { name: "city", division: "610900", broker: cluster()?, registry: free_registry_addr()? },
        Level { name: "county", division: "610921", broker: cluster()?, registry: free_registry_addr()? },
    ];
    let tokens: Vec<(String, String)> = DEPARTMENTS.iter().map(|d| ((*d).to_owned(), new_token())).collect();
    let mut province = config(&levels[0], data, &tokens)?;
    province.bridge.children = vec![link(&levels[1], true)];
    let mut city = config(&levels[1], data, &tokens)?;
    city.bridge.parent = Some(link(&levels[0], false));
    city.bridge.children = vec![link(&levels[2], true)];
    let mut county = config(&levels[2], data, &tokens)?;
    county.bridge.parent = Some(link(&levels[1], false));

    let zone = county.time_zone.clone();
    println!("govex demo: a home purchase reviewed in parallel by four departments (并联审批)\n");
    println!("Three govex nodes run in this process, one per level of government, each with its own");
    println!("Kafka cluster (embedded, in memory), linked by level bridges: county ▸ city ▸ province.");
    let started = Instant::now();
    // Side by side, as three machines would: each node's start waits on its own cluster.
    let (province, city, county) = tokio::join!(node::start(province), node::start(city), node::start(county));
    let (province, city, county) =
        (province.context("the province node")?, city.context("the city node")?, county.context("the county node")?);
    for (level, node) in levels.iter().zip([&province, &city, &county]) {
        let name = govex_schemas::identifiers::shaanxi_division(level.division).map(|d| d.name).unwrap_or_default();
        println!("  {:<8} {} {:<6} API http://{}", level.name, level.division, name, node.api_addr()?);
    }
    let http = reqwest::Client::new();
    let up = started.elapsed();
    ready(&[&province, &city, &county]).await?;
    println!(
        "  started in {:.1} s, ready in {:.1} s (ready: each node's consumers have joined their groups)\n",
        up.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    let mut demo = Demo { http, tokens, started: Instant::now(), steps: Vec::new(), zone };
    let result = scenario(&mut demo, &province, &city, &county).await;
    let whole = demo.started.elapsed();
    let (county, city, province) = tokio::join!(county.shutdown(), city.shutdown(), province.shutdown());
    county?;
    city?;
    province?;
    result?;
    println!("\ntimings");
    for (name, took) in &demo.steps {
        println!("  {name:<48} {:>6.0} ms", took.as_secs_f64() * 1e3);
    }
    println!("  {:<48} {:>6.0} ms", "whole scenario", whole.as_secs_f64() * 1e3);
    println!("\nall steps passed");
    Ok(())
}

async fn scenario(demo: &mut Demo, province: &RunningNode, city: &RunningNode, county: &RunningNode) -> Result<()> {
    let n = 1;
    let unit = property_unit_number(n);
    let buyer = citizen_id(n);
    println!("The home is property unit U = {unit}; the buyer is B = {}.", mask(&buyer));
    println!("(Personal identifiers are masked in everything shown here, as in the nodes' logs.)");
    println!("Each department's record is \"accepted\" once Kafka has stored it: a topic is split into");
    println!("partitions, and the offset is the record's position in its partition.\n");

    let t = Instant::now();
    println!("1. Housing files the sale contract of U to B (网签备案) at the county node.");
    let answer = demo.post_sample(county, "housing", "contract-filing", n).await?;
    println!("   {}", accepted(&answer));
    demo.step("1 contract filing accepted", t);

    let t = Instant::now();
    println!("2. Tax records B's deed-tax payment for U (契税完税).");
    let answer = demo.post_sample(county, "tax", "deed-tax-payment", n).await?;
    println!("   {}", accepted(&answer));
    demo.step("2 deed-tax payment accepted", t);

    let t = Instant::now();
    println!("3. The land-registry clerk opens U's dossier: both records are there, no paper needed.");
    // The purpose (并联审核: parallel review of the transfer), percent-encoded for the query.
    let path = format!("/v1/dossiers/{unit}?purpose=%E5%B9%B6%E8%81%94%E5%AE%A1%E6%A0%B8");
    let dossier = eventually("the dossier to hold the filing and the payment", || async {
        let (status, body) = demo.get(county, "land-registry", &path).await?;
        let parts = body["parts"]
            .as_object()
            .map(|p| p.contains_key("contract_filing") && p.contains_key("deed_tax_payment"))
            .unwrap_or(false);
        Ok((status == 200 && parts).then_some(body))
    })
    .await?;
    for (kind, part) in dossier["parts"].as_object().into_iter().flatten() {
        println!(
            "   {kind:<18} from {:<8} buyer's identity {}",
            part["source_department"].as_str().unwrap_or("?"),
            if part["personal_data_masked"] == true {
                "masked (land registry is not entitled)"
            } else {
                "shown (land registry is entitled to it)"
            }
        );
    }
    println!(
        "   total price {} yuan, filed {}; deed tax {} yuan, paid {}",
        dossier["parts"]["contract_filing"]["record"]["total_price"].as_str().unwrap_or("?"),
        dossier["parts"]["contract_filing"]["record"]["filed_at"].as_str().unwrap_or("?"),
        dossier["parts"]["deed_tax_payment"]["record"]["tax_amount"].as_str().unwrap_or("?"),
        dossier["parts"]["deed_tax_payment"]["record"]["paid_at"].as_str().unwrap_or("?"),
    );
    demo.step("3 dossier complete for the clerk", t);

    let t = Instant::now();
    println!("   The transfer is approved: land registry publishes the registration.");
    let answer = demo.post_sample(county, "land-registry", "registration", n).await?;
    println!("   {}", accepted(&answer));
    let licence = sample("platform", "licence", n).context("sample")?;
    let licence_id = licence["licence_id"].as_str().unwrap_or_default().to_owned();
    let answer = demo.post(county, "platform", "/v1/platform/licence", &licence).await?;
    println!("   B's real-estate certificate is issued as an e-licence (电子证照):");
    println!("   {licence_id}");
    println!("   {}", accepted(&answer));
    demo.step("3 registration and e-licence published", t);

    let t = Instant::now();
    println!("4. The provident fund verifies B's certificate before paying out a purchase withdrawal.");
    // The licence reaches the county's e-licence store through its topic; every verification
    // is logged, so the demo waits for the store rather than asking until it answers.
    eventually("the e-licence store to hold the certificate", || async {
        Ok(metric(&demo.http, county, "govex_elicense_store_licences").await?.filter(|n| *n >= 1.0))
    })
    .await?;
    let verify_path = format!("/v1/licences/{licence_id}/verify");
    let purpose = "住房公积金购房提取：核验不动产权证书";
    let body = json!({ "purpose": purpose, "fields": { "holder_identifier_number": buyer } });
    let verdict = demo.post(county, "provident-fund", &verify_path, &body).await?;
    if verdict["result"] != "valid" {
        bail!("the certificate did not verify: {verdict}");
    }
    println!("   verify (with B's identity number, which the API never echoes): {}", verdict["result"]);
    let (_, uses) = demo
        .get(county, "provident-fund", &format!("/v1/licences/{licence_id}/uses?purpose=%E5%AE%A1%E8%AE%A1"))
        .await?;
    let entry = uses["uses"]
        .as_array()
        .and_then(|u| u.iter().find(|e| e["purpose"] == purpose && e["result"] == "valid"))
        .cloned()
        .with_context(|| format!("the verification is not in the use log: {uses}"))?;
    println!(
        "   the use log recorded it before answering: at {} by {}, purpose \"{}\", result {}",
        demo.zone.rfc3339(entry["at_ms"].as_i64().unwrap_or_default()).unwrap_or_default(),
        entry["caller"].as_str().unwrap_or("?"),
        entry["purpose"].as_str().unwrap_or("?"),
        entry["result"].as_str().unwrap_or("?"),
    );
    let mut withdrawal = sample("provident-fund", "event", n).context("sample")?;
    withdrawal["licence_id"] = json!(licence_id);
    let answer = demo.post(county, "provident-fund", "/v1/provident-fund/event", &withdrawal).await?;
    println!("   the withdrawal is recorded, citing the licence: {}", accepted(&answer));
    demo.step("4 certificate verified, withdrawal recorded", t);

    let t = Instant::now();
    println!("5. The case is reported upwards: the county publishes it, the bridges carry it on.");
    let mut event = sample("platform", "case-event", n).context("sample")?;
    for (stage, at) in [("ACCEPTED", "2026-11-20T09:00:00+08:00"), ("COMPLETED", "2026-11-24T16:00:00+08:00")] {
        event["stage"] = json!(stage);
        event["occurred_at"] = json!(at);
        demo.post(county, "platform", "/v1/platform/case-event", &event).await?;
        println!("   {stage:<9} at {at}, published at the county");
    }
    let on_time = r#"govex_case_completed_total{division="610921",on_time="true"}"#;
    eventually("the province to count the completed case", || async {
        Ok(metric(&demo.http, province, on_time).await?.filter(|n| *n >= 1.0))
    })
    .await?;
    println!("   the province counts it as completed on time (its /metrics: {on_time} 1)");
    let forwarded = metric(
        &demo.http,
        city,
        r#"govex_bridge_forwarded_records_total{link="up-from-610921",topic="gov.case.event.v1"}"#,
    )
    .await?
    .unwrap_or(0.0);
    println!("   on its way the city's bridge forwarded {forwarded} case events from the county");
    demo.step("5 case events at the province", t);
    Ok(())
}

/// A data directory for one demo run, removed afterwards.
pub fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("govex-demo-{}", uuid::Uuid::now_v7()))
}

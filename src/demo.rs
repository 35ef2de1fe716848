//! `govex demo`: the flagship scenario of the brief (§6) across three nodes in one process —
//! province 610000, city 610900, county 610921 — each on its own embedded cluster, linked by
//! level bridges, driven through the real HTTP APIs. Prints what happened where, with timings;
//! fails (non-zero exit) if any step does.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use govex_adapters::samples::{citizen_id, property_unit_number, sample};
use govex_bus::{
    auth::{hash_token, new_token},
    config::{LinkConfig, TokenConfig},
    embedded::EmbeddedBroker,
    identifiers::mask,
    Division, NodeConfig,
};
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
}

impl Demo {
    fn token(&self, department: &str) -> &str {
        self.tokens.iter().find(|(d, _)| d == department).map(|(_, t)| t.as_str()).unwrap_or_default()
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
        println!("    ({:.0} ms)", took.as_secs_f64() * 1e3);
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
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn accepted(answer: &Value) -> String {
    format!(
        "event {} on {} [{}] @{}",
        answer["event_id"].as_str().unwrap_or("?"),
        answer["topic"].as_str().unwrap_or("?"),
        answer["partition"],
        answer["offset"]
    )
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

    println!("govex demo: parallel review of a home purchase (brief §6)\n");
    let province = node::start(province).await.context("the province node")?;
    let city = node::start(city).await.context("the city node")?;
    let county = node::start(county).await.context("the county node")?;
    for (level, node) in levels.iter().zip([&province, &city, &county]) {
        println!(
            "  {:<8} {}  API http://{}  bus {}",
            level.name,
            level.division,
            node.api_addr()?,
            level.broker.bootstrap_servers()
        );
    }
    println!();

    let mut demo = Demo { http: reqwest::Client::new(), tokens, started: Instant::now(), steps: Vec::new() };
    let result = scenario(&mut demo, &province, &city, &county).await;
    for node in [county, city, province] {
        node.shutdown().await?;
    }
    result?;
    println!("\ntimings");
    for (name, took) in &demo.steps {
        println!("  {name:<48} {:>8.0} ms", took.as_secs_f64() * 1e3);
    }
    println!("  {:<48} {:>8.0} ms", "whole scenario", demo.started.elapsed().as_secs_f64() * 1e3);
    println!("\nall steps passed");
    Ok(())
}

async fn scenario(demo: &mut Demo, province: &RunningNode, city: &RunningNode, county: &RunningNode) -> Result<()> {
    let n = 1;
    let unit = property_unit_number(n);
    let buyer = citizen_id(n);
    println!("property unit U = {unit}, buyer B = {}\n", mask(&buyer));

    let t = Instant::now();
    println!("1. housing files the sale contract of U to B (网签备案) at the county node");
    let answer = demo
        .post(
            county,
            "housing",
            "/v1/housing/contract-filing",
            &sample("housing", "contract-filing", n).context("sample")?,
        )
        .await?;
    println!("   202 {}", accepted(&answer));
    demo.step("1 contract filing accepted", t);

    let t = Instant::now();
    println!("2. tax records B's deed-tax payment for U (契税完税)");
    let answer = demo
        .post(county, "tax", "/v1/tax/deed-tax-payment", &sample("tax", "deed-tax-payment", n).context("sample")?)
        .await?;
    println!("   202 {}", accepted(&answer));
    demo.step("2 deed-tax payment accepted", t);

    let t = Instant::now();
    println!("3. the land-registry clerk opens the dossier of U");
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
            "   {kind:<18} from {:<8} personal data {}",
            part["source_department"].as_str().unwrap_or("?"),
            if part["personal_data_masked"] == true { "masked" } else { "shown (entitled)" }
        );
    }
    println!(
        "   total price {}, deed tax {} — no paper from the applicant",
        dossier["parts"]["contract_filing"]["record"]["total_price"],
        dossier["parts"]["deed_tax_payment"]["record"]["tax_amount"]
    );
    demo.step("3 dossier complete for the clerk", t);

    let t = Instant::now();
    println!("   registration approved: land registry publishes the transfer registration");
    let answer = demo
        .post(
            county,
            "land-registry",
            "/v1/land-registry/registration",
            &sample("land-registry", "registration", n).context("sample")?,
        )
        .await?;
    println!("   202 {}", accepted(&answer));
    let licence = sample("platform", "licence", n).context("sample")?;
    let licence_id = licence["licence_id"].as_str().unwrap_or_default().to_owned();
    let answer = demo.post(county, "platform", "/v1/platform/licence", &licence).await?;
    println!("   B's real-estate certificate issued as e-licence {licence_id}");
    println!("   202 {}", accepted(&answer));
    demo.step("3 registration and e-licence published", t);

    let t = Instant::now();
    println!("4. the provident fund verifies B's certificate before a purchase withdrawal");
    let verify_path = format!("/v1/licences/{licence_id}/verify");
    let purpose = "住房公积金购房提取：核验不动产权证书";
    let verdict = eventually("the e-licence store to hold the certificate", || async {
        let body = json!({ "purpose": purpose, "fields": { "holder_identifier_number": buyer } });
        let verdict = demo.post(county, "provident-fund", &verify_path, &body).await?;
        Ok((verdict["result"] != "not_found").then_some(verdict))
    })
    .await?;
    if verdict["result"] != "valid" {
        bail!("the certificate did not verify: {verdict}");
    }
    println!("   verification: {}", verdict["result"]);
    let (_, uses) = demo
        .get(county, "provident-fund", &format!("/v1/licences/{licence_id}/uses?purpose=%E5%AE%A1%E8%AE%A1"))
        .await?;
    let logged = uses["uses"]
        .as_array()
        .map(|u| u.iter().any(|e| e["purpose"] == purpose && e["result"] == "valid"))
        .unwrap_or(false);
    if !logged {
        bail!("the verification is not in the use log: {uses}");
    }
    println!(
        "   the use log holds it, with its purpose ({} entries so far)",
        uses["uses"].as_array().map_or(0, Vec::len)
    );
    let mut withdrawal = sample("provident-fund", "event", n).context("sample")?;
    withdrawal["licence_id"] = json!(licence_id);
    let answer = demo.post(county, "provident-fund", "/v1/provident-fund/event", &withdrawal).await?;
    println!("   purchase withdrawal recorded: 202 {}", accepted(&answer));
    demo.step("4 certificate verified, withdrawal recorded", t);

    let t = Instant::now();
    println!("5. the case travels from the county to the city and the province");
    let mut event = sample("platform", "case-event", n).context("sample")?;
    for (stage, at) in [("ACCEPTED", "2026-11-20T09:00:00+08:00"), ("COMPLETED", "2026-11-24T16:00:00+08:00")] {
        event["stage"] = json!(stage);
        event["occurred_at"] = json!(at);
        demo.post(county, "platform", "/v1/platform/case-event", &event).await?;
        println!("   {stage:<9} published at the county");
    }
    let line = eventually("the province to count the completed case", || async {
        let metrics = demo.http.get(format!("http://{}/metrics", province.ops_addr)).send().await?.text().await?;
        Ok(metrics
            .lines()
            .find(|l| l.starts_with("govex_case_completed_total{") && l.contains("610921"))
            .map(str::to_owned))
    })
    .await?;
    println!("   province metrics: {line}");
    if !line.contains(r#"on_time="true""#) {
        bail!("the case was not completed on time: {line}");
    }
    let city_metrics = demo.http.get(format!("http://{}/metrics", city.ops_addr)).send().await?.text().await?;
    let forwarded = city_metrics
        .lines()
        .find(|l| l.starts_with("govex_bridge_forwarded_records_total{link=\"up-from-610921\""))
        .unwrap_or("none");
    println!("   city bridge: {forwarded}");
    demo.step("5 case events at the province", t);
    Ok(())
}

/// A data directory for one demo run, removed afterwards.
pub fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("govex-demo-{}", uuid::Uuid::now_v7()))
}

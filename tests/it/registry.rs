//! The registry's REST API against Confluent's behaviour: bodies, status codes, error codes,
//! and nothing stored when a request is refused.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::test_node_config;

const V1: &str = r#"{"type":"record","name":"Filing","namespace":"cn.gov.exchange.test","fields":[{"name":"number","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Filing","namespace":"cn.gov.exchange.test","fields":[{"name":"number","type":"string"},{"name":"area","type":"double","default":0}]}"#;
const BREAKS: &str = r#"{"type":"record","name":"Filing","namespace":"cn.gov.exchange.test","fields":[{"name":"number","type":"string"},{"name":"price","type":"long"}]}"#;

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(crate::support::STEWARD_TOKEN);
        if let Some(body) = body {
            request = request.header("content-type", "application/vnd.schemaregistry.v1+json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(response.headers()["content-type"], "application/vnd.schemaregistry.v1+json", "{path}");
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn error_code(&self, method: Method, path: &str, body: Option<Value>) -> (u16, u64) {
        let (status, body) = self.call(method, path, body).await;
        (status, body["error_code"].as_u64().unwrap_or_else(|| panic!("{path}: no error_code in {body}")))
    }
}

fn schema(text: &str) -> Option<Value> {
    Some(json!({ "schema": text }))
}

#[tokio::test]
async fn the_registry_answers_like_confluents() {
    let dir = tempfile::tempdir().unwrap();
    let node = govex::node::start(test_node_config(dir.path())).await.unwrap();
    let api = Api { base: format!("http://{}", node.registry_addr.unwrap()), http: reqwest::Client::new() };
    let s = "/subjects/gov.test.filing.v1-value";

    let (status, body) = api.call(Method::POST, &format!("{s}/versions"), schema(V1)).await;
    assert_eq!(status, 200);
    let id1 = body["id"].as_u64().unwrap();
    assert_eq!(api.call(Method::POST, &format!("{s}/versions"), schema(V1)).await.1["id"], id1, "same schema, same id");
    let id2 = api.call(Method::POST, &format!("{s}/versions"), schema(V2)).await.1["id"].as_u64().unwrap();

    // Bad input: invalid schema, incompatible schema; neither stores anything.
    assert_eq!(
        api.error_code(Method::POST, &format!("{s}/versions"), schema("{\"type\":\"recor\"}")).await,
        (422, 42201)
    );
    let (status, body) = api.call(Method::POST, &format!("{s}/versions"), schema(BREAKS)).await;
    assert_eq!((status, body["error_code"].as_u64()), (409, Some(409)));
    assert!(body["message"].as_str().unwrap().contains("READER_FIELD_MISSING_DEFAULT_VALUE at /fields/1"), "{body}");
    assert_eq!(api.call(Method::GET, &format!("{s}/versions"), None).await.1, json!([1, 2]));

    // Reads: latest and -1, by number, the raw schema, unknown subject and version.
    assert_eq!(api.call(Method::GET, &format!("{s}/versions/latest"), None).await.1["version"], 2);
    assert_eq!(api.call(Method::GET, &format!("{s}/versions/-1"), None).await.1["id"], id2);
    assert_eq!(api.call(Method::GET, &format!("{s}/versions/1"), None).await.1["schema"], V1);
    assert_eq!(
        api.call(Method::GET, &format!("{s}/versions/1/schema"), None).await.1,
        serde_json::from_str::<Value>(V1).unwrap()
    );
    assert_eq!(api.error_code(Method::GET, "/subjects/nope/versions/latest", None).await, (404, 40401));
    assert_eq!(api.error_code(Method::GET, &format!("{s}/versions/9"), None).await, (404, 40402));
    assert_eq!(api.error_code(Method::GET, &format!("{s}/versions/zero"), None).await, (422, 42202));
    assert_eq!(api.error_code(Method::GET, "/schemas/ids/4040", None).await, (404, 40403));
    assert_eq!(
        api.call(Method::GET, &format!("/schemas/ids/{id1}/versions"), None).await.1,
        json!([{"subject": "gov.test.filing.v1-value", "version": 1}])
    );
    assert_eq!(
        api.call(Method::GET, &format!("/schemas/ids/{id2}/subjects"), None).await.1,
        json!(["gov.test.filing.v1-value"])
    );
    assert_eq!(api.call(Method::GET, "/schemas/types", None).await.1, json!(["AVRO"]));
    let (status, found) = api.call(Method::POST, s, schema(V1)).await;
    assert_eq!((status, found["version"].as_u64()), (200, Some(1)));
    assert_eq!(api.error_code(Method::POST, s, schema(BREAKS)).await, (404, 40403));

    // Compatibility: every level, verbose reasons.
    assert_eq!(api.call(Method::GET, "/config", None).await.1, json!({"compatibilityLevel": "BACKWARD"}));
    assert_eq!(api.error_code(Method::GET, "/config/gov.test.filing.v1-value", None).await, (404, 40408));
    assert_eq!(
        api.call(Method::GET, "/config/gov.test.filing.v1-value?defaultToGlobal=true", None).await.1
            ["compatibilityLevel"],
        "BACKWARD"
    );
    for level in ["NONE", "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"]
    {
        let (status, body) =
            api.call(Method::PUT, "/config/gov.test.filing.v1-value", Some(json!({"compatibility": level}))).await;
        assert_eq!((status, body), (200, json!({"compatibility": level})));
    }
    assert_eq!(api.error_code(Method::PUT, "/config", Some(json!({"compatibility": "SIDEWAYS"}))).await, (422, 42203));
    let (_, verdict) = api
        .call(
            Method::POST,
            "/compatibility/subjects/gov.test.filing.v1-value/versions/latest?verbose=true",
            schema(BREAKS),
        )
        .await;
    assert_eq!(verdict["is_compatible"], false);
    assert_eq!(verdict["messages"].as_array().unwrap().len(), 1, "against one version, one reason: {verdict}");
    let (_, verdict) = api
        .call(Method::POST, "/compatibility/subjects/gov.test.filing.v1-value/versions?verbose=true", schema(BREAKS))
        .await;
    assert_eq!(verdict["messages"].as_array().unwrap().len(), 2, "FULL_TRANSITIVE against every version: {verdict}");
    let (_, verdict) =
        api.call(Method::POST, "/compatibility/subjects/gov.test.filing.v1-value/versions/latest", schema(V2)).await;
    assert_eq!(verdict, json!({"is_compatible": true}));
    assert_eq!(
        api.call(Method::DELETE, "/config/gov.test.filing.v1-value", None).await.1,
        json!({"compatibilityLevel": "FULL_TRANSITIVE"})
    );

    // Read-only mode refuses writes and stores nothing.
    assert_eq!(api.call(Method::PUT, "/mode", Some(json!({"mode": "READONLY"}))).await.1, json!({"mode": "READONLY"}));
    let v3 = V2.replace(r#""default":0}"#, r#""default":0},{"name":"note","type":["null","string"],"default":null}"#);
    assert_eq!(api.error_code(Method::POST, &format!("{s}/versions"), schema(&v3)).await, (422, 42205));
    assert_eq!(api.error_code(Method::PUT, "/mode", Some(json!({"mode": "WRITEONLY"}))).await, (422, 42204));
    api.call(Method::PUT, "/mode", Some(json!({"mode": "READWRITE"}))).await;
    assert_eq!(api.call(Method::GET, &format!("{s}/versions"), None).await.1, json!([1, 2]));

    // Deletes: soft, then permanent, with Confluent's codes for the wrong order.
    assert_eq!(api.error_code(Method::DELETE, &format!("{s}/versions/2?permanent=true"), None).await, (404, 40407));
    assert_eq!(api.call(Method::DELETE, &format!("{s}/versions/2"), None).await.1, json!(2));
    assert_eq!(api.error_code(Method::DELETE, &format!("{s}/versions/2"), None).await, (404, 40406));
    assert_eq!(api.call(Method::GET, &format!("{s}/versions?deleted=true"), None).await.1, json!([1, 2]));
    assert_eq!(api.error_code(Method::DELETE, &format!("{s}?permanent=true"), None).await, (404, 40405));
    assert_eq!(api.call(Method::DELETE, s, None).await.1, json!([1]));
    assert_eq!(api.error_code(Method::DELETE, s, None).await, (404, 40404));
    assert!(!api
        .call(Method::GET, "/subjects", None)
        .await
        .1
        .as_array()
        .unwrap()
        .contains(&json!("gov.test.filing.v1-value")));
    assert_eq!(api.call(Method::DELETE, &format!("{s}?permanent=true"), None).await.1, json!([1, 2]));
    assert_eq!(
        api.call(Method::GET, &format!("/schemas/ids/{id2}"), None).await.1["schema"],
        V2,
        "ids stay resolvable"
    );

    // A restart keeps settings and subjects.
    api.call(Method::PUT, "/config", Some(json!({"compatibility": "FULL"}))).await;
    node.shutdown().await.unwrap();
    let node = govex::node::start(test_node_config(dir.path())).await.unwrap();
    let api = Api { base: format!("http://{}", node.registry_addr.unwrap()), http: reqwest::Client::new() };
    assert_eq!(api.call(Method::GET, "/config", None).await.1, json!({"compatibilityLevel": "FULL"}));
    assert!(api
        .call(Method::GET, "/subjects", None)
        .await
        .1
        .as_array()
        .unwrap()
        .contains(&json!("gov.case.event.v1-value")));
    node.shutdown().await.unwrap();
}

/// Item by item, what a hostile caller tried on the registry: writes without a steward's
/// token, subjects that broke the store, booleans spelt as Python spells them.
#[tokio::test]
async fn registry_writes_need_a_steward_and_bad_subjects_cannot_corrupt_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_node_config(dir.path());
    config.intake.tokens.push(govex_http::config::TokenConfig::of(
        "tax",
        "test-token-of-tax",
        govex_http::auth::Role::Department,
    ));
    let node = govex::node::start(config).await.unwrap();
    let base = format!("http://{}", node.registry_addr.unwrap());
    let http = reqwest::Client::new();
    let put_config = |token: Option<&'static str>| {
        let request = http
            .put(format!("{base}/config"))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(r#"{"compatibility": "NONE"}"#);
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap()["error_code"].as_u64())
        }
    };
    assert_eq!(put_config(None).await, (401, Some(40101)), "no credentials");
    assert_eq!(put_config(Some("test-token-of-tax")).await, (403, Some(40301)), "a department's token");
    let api = Api { base: base.clone(), http: http.clone() };
    assert_eq!(api.call(Method::GET, "/config", None).await.1["compatibilityLevel"], "BACKWARD", "nothing changed");
    assert_eq!(put_config(Some(crate::support::STEWARD_TOKEN)).await.0, 200, "a steward's token");

    // Subjects with a control character or invalid UTF-8 are refused with Confluent's 42208,
    // and the store keeps answering for every real subject.
    for subject in ["gov.case.event.v1-value%00x", "a%0Ab", "%ED%A0%80", "%FF"] {
        let path = format!("/subjects/{subject}/versions");
        assert_eq!(api.error_code(Method::POST, &path, schema(V1)).await, (422, 42208), "{subject}");
        assert_eq!(api.error_code(Method::GET, &path, None).await, (422, 42208), "{subject}");
    }
    assert_eq!(api.call(Method::GET, "/subjects", None).await.0, 200);
    let (status, latest) = api.call(Method::GET, "/subjects/gov.case.event.v1-value/versions/latest", None).await;
    assert_eq!(status, 200, "{latest}");

    // Booleans in any case, as Confluent's server reads them (its Python client sends True).
    let s = "/compatibility/subjects/gov.case.event.v1-value/versions/latest";
    let (status, body) = api.call(Method::POST, &format!("{s}?normalize=False&verbose=True"), schema(V1)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["messages"].is_array(), "verbose=True is verbose: {body}");
    let (_, body) = api.call(Method::POST, &format!("{s}?verbose=FALSE"), schema(V1)).await;
    assert!(body.get("messages").is_none(), "{body}");
    assert_eq!(api.call(Method::GET, "/subjects?deleted=TRUE", None).await.0, 200);
    node.shutdown().await.unwrap();
}

/// A registry whose store fails answers 500 with 50001 naming the store, and a process that
/// uses it stops at once with that message instead of waiting two minutes for a registry that
/// is "unreachable".
#[tokio::test]
async fn a_failing_registry_store_is_named_not_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let registry_dir = dir.path().join("registry");
    {
        let db = govex_schemas::store::open_sled(&registry_dir).unwrap();
        let registry = govex_schemas::Registry::with_db(db.clone()).unwrap();
        registry.register("gov.case.event.v1-value", V1).unwrap();
        // A version entry of the wrong length, as a damaged disk would leave it.
        let mut key = b"ver/gov.case.event.v1-value\0".to_vec();
        key.extend_from_slice(&2u32.to_be_bytes());
        db.open_tree("registry").unwrap().insert(key, &[1, 2, 3][..]).unwrap();
        db.flush().unwrap();
    }
    let node = govex::node::start(test_node_config(dir.path())).await;
    let error = format!("{:#}", node.err().expect("a node on a damaged registry store does not start"));
    assert!(error.contains("backend data store") && error.contains("sled"), "{error}");
    assert!(!error.contains("not reachable") && !error.contains("error sending request"), "{error}");
}

/// A steward's mistake (a bundled subject deleted, then the registry made read-only) leaves a
/// node that cannot start whole; the registry still starts alone, so that it can be repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_registry_missing_a_bundled_schema_can_be_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let node = govex::node::start(test_node_config(dir.path())).await.unwrap();
    let api = Api { base: format!("http://{}", node.registry_addr.unwrap()), http: reqwest::Client::new() };
    let subject = "/subjects/gov.case.event.v1-value";
    assert_eq!(api.call(Method::DELETE, subject, None).await.0, 200);
    assert_eq!(api.call(Method::DELETE, &format!("{subject}?permanent=true"), None).await.0, 200);
    assert_eq!(api.call(Method::PUT, "/mode", Some(json!({"mode": "READONLY"}))).await.0, 200);
    node.shutdown().await.unwrap();

    let whole = govex::node::start(test_node_config(dir.path())).await;
    let error = format!("{:#}", whole.err().expect("a whole node needs its bundled schemas"));
    assert!(error.contains("start the registry alone"), "{error}");
    let mut alone = test_node_config(dir.path());
    alone.components = vec![govex::config::Component::Registry];
    let registry = govex::node::start(alone).await.unwrap();
    let api = Api { base: format!("http://{}", registry.registry_addr.unwrap()), http: reqwest::Client::new() };
    assert_eq!(api.call(Method::PUT, "/mode", Some(json!({"mode": "READWRITE"}))).await.0, 200);
    registry.shutdown().await.unwrap();
    let repaired = govex::node::start(test_node_config(dir.path())).await.unwrap();
    let (status, _) = api_of(&repaired).call(Method::GET, &format!("{subject}/versions/latest"), None).await;
    assert_eq!(status, 200, "the bundled schema is registered again");
    repaired.shutdown().await.unwrap();
}

fn api_of(node: &govex::node::RunningNode) -> Api {
    Api { base: format!("http://{}", node.registry_addr.unwrap()), http: reqwest::Client::new() }
}

//! The OpenAPI documents and the routers stay together: every route a router declares is in
//! its port's document with the same methods, every documented operation is routed on a
//! running node, and each port serves its document at `/openapi.json`. (The API fuzzer in
//! `.ci/fuzz-api` then checks every answer against the documents.)

use std::collections::BTreeSet;

use serde_json::Value;

const METHODS: [&str; 4] = ["get", "post", "put", "delete"];

/// `(path, method)` of every `.route(...)` in a router's source.
fn routes_in(source: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    // `.route("/path", ...)`, the path on the same line or the next (rustfmt breaks a long one).
    for call in source.split(".route(").skip(1) {
        let Some(call) = call.trim_start().strip_prefix('"') else { continue };
        let (path, rest) = call.split_once('"').unwrap();
        // The handlers of this route, up to the next route or the end of the chain.
        let handlers = rest.split(".route(").next().unwrap().split(".with_state").next().unwrap();
        for method in METHODS {
            let called = handlers.match_indices(&format!("{method}(")).any(|(at, _)| {
                at == 0 || !handlers.as_bytes()[at - 1].is_ascii_alphanumeric() && handlers.as_bytes()[at - 1] != b'_'
            });
            if called {
                out.insert((path.to_owned(), method.to_owned()));
            }
        }
    }
    out
}

fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                out.insert((path.clone(), method.to_owned()));
            }
        }
    }
    out
}

fn document(text: &str) -> Value {
    let document: Value = serde_json::from_str(text).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    assert!(document["components"]["securitySchemes"].is_object() || document["paths"]["/metrics"].is_object());
    document
}

#[test]
fn every_route_is_documented_with_its_methods() {
    use govex::node::openapi;
    let api_sources = [
        include_str!("../../src/node.rs"),
        include_str!("../../adapters/src/intake/http.rs"),
        include_str!("../../adapters/src/intake/component.rs"),
        include_str!("../../sinks/src/elicense/api.rs"),
        include_str!("../../sinks/src/dossier/api.rs"),
        include_str!("../../sinks/src/governance/api.rs"),
        include_str!("../../sinks/src/governance/dead_letters.rs"),
        include_str!("../../src/backup.rs"),
    ];
    for (name, text, sources) in [
        ("api", openapi::API, api_sources.as_slice()),
        ("registry", openapi::REGISTRY, [include_str!("../../schemas/src/http.rs")].as_slice()),
        ("ops", openapi::OPS, [include_str!("../../http/src/ops.rs")].as_slice()),
    ] {
        let documented = operations(&document(text));
        let mut routed: BTreeSet<(String, String)> = sources.iter().flat_map(|s| routes_in(s)).collect();
        routed.insert(("/openapi.json".into(), "get".into()));
        // The node's own `/` is on the API port only.
        if name != "api" {
            routed.remove(&("/".to_owned(), "get".to_owned()));
        }
        if name == "registry" {
            routed.insert(("/".into(), "get".into()));
        }
        for route in &routed {
            assert!(documented.contains(route), "{name}: {route:?} is routed but not documented");
        }
        for operation in &documented {
            // The intake's one route serves each department's records at their own paths.
            let intake = operation.0.starts_with("/v1/") && operation.1 == "post" && {
                let segments: Vec<&str> = operation.0.trim_start_matches("/v1/").split('/').collect();
                segments.len() == 2 && !["licences", "holders", "dossiers", "dead-letters"].contains(&segments[0])
            };
            assert!(intake || routed.contains(operation), "{name}: {operation:?} is documented but not routed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_serves_its_document_and_routes_every_operation() {
    use govex::node::openapi;
    let (_dir, node) = crate::intake::intake_node().await;
    let http = reqwest::Client::new();
    for (base, text) in [
        (format!("http://{}", node.api_addr().unwrap()), openapi::API),
        (format!("http://{}", node.registry_addr.unwrap()), openapi::REGISTRY),
        (format!("http://{}", node.ops_addr), openapi::OPS),
    ] {
        let served: Value = http.get(format!("{base}/openapi.json")).send().await.unwrap().json().await.unwrap();
        assert_eq!(served, document(text), "{base}");
        for (path, method) in operations(&served) {
            let concrete = path.replace(['{', '}'], "");
            let request = http.request(method.to_uppercase().parse().unwrap(), format!("{base}{concrete}"));
            let response = request.send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            // The fallbacks answer an unrouted path 404 `unknown-route`, a wrong method 405.
            assert_ne!(status, 405, "{method} {path}");
            assert!(!body.contains("urn:govex:problem:unknown-route"), "{method} {path} is not routed");
        }
    }
    node.shutdown().await.unwrap();
}

//! Config errors name the file, the key and what was expected.

use std::path::Path;

use govex_bus::NodeConfig;

fn load(text: &str) -> (tempfile::TempDir, Result<NodeConfig, govex_bus::ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).unwrap();
    let result = NodeConfig::load(Some(&path), Vec::new());
    (dir, result)
}

fn check(text: &str, key: &str, expected: &[&str]) {
    let (dir, result) = load(text);
    let error = result.expect_err("config must be rejected");
    let message = error.to_string();
    let file = dir.path().join("node.toml");
    assert!(message.starts_with(&format!("config file {}", file.display())), "{message}");
    assert_eq!(error.key, key, "{message}");
    for part in expected {
        assert!(message.contains(part), "'{message}' lacks '{part}'");
    }
}

#[test]
fn config_errors_name_file_key_and_expectation() {
    check("division = \"61092\"\n", "division", &["key `division`", "6 digits"]);
    check("division = \"990100\"\n", "division", &["not a GB/T 2260 province prefix"]);
    check(
        "division = \"610921\"\n[bus]\npartitons = 3\n",
        "bus.partitons",
        &["unknown field `partitons`", "expected one of"],
    );
    check("division = \"610921\"\n[bus]\npartitions = \"three\"\n", "bus.partitions", &["expected i32"]);
    check("division = \"610921\"\n[listen]\napi = \"localhost\"\n", "listen.api", &["socket address"]);
    check("data_dir = \"x\"\n", "", &["missing field `division`"]);
    check("division = \"610921\"\n[bus\n", "", &["TOML parse error", "line 2"]);
}

#[test]
fn a_documented_example_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node.toml");
    let config = NodeConfig::load(Some(&path), Vec::new()).unwrap();
    assert_eq!(config.division.as_str(), "610921");
    assert_eq!(config.division.parent().unwrap().as_str(), "610900");
}

#[test]
fn a_missing_file_is_named() {
    let error = NodeConfig::load(Some(Path::new("/nonexistent/govex.toml")), Vec::new()).unwrap_err();
    assert_eq!(error.to_string().split(':').next().unwrap(), "config file /nonexistent/govex.toml");
}

#[test]
fn a_commands_own_variable_does_not_trip_the_node_config() {
    // `govex schema` reads GOVEX_REGISTRY_URL; a node started in the same shell must not
    // take it for a setting.
    let env = [("GOVEX_REGISTRY_URL".to_owned(), "http://127.0.0.1:8081".to_owned())];
    let config = govex_bus::NodeConfig::load(None, env).expect("the variable is the schema command's");
    assert_eq!(config.registry.url, None);
}

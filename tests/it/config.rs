//! Config errors name the file, the key and what was expected.

use std::path::Path;

use govex::config::NodeConfig;

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
    let config = govex::config::NodeConfig::load(None, env).expect("the variable is the schema command's");
    assert_eq!(config.registry.url, None);
}

/// `govex config check` refuses what `govex node` would refuse at start, short of reaching
/// the network: each case runs the real binary.
#[test]
fn config_check_catches_what_start_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let under_a_file = file.join("data").display().to_string();
    let data = dir.path().join("data").display().to_string();
    let cases: [(&[(&str, &str)], &str); 8] = [
        (&[("GOVEX_BUS__COMPRESSION", "lzz")], "bus.compression"),
        (&[("GOVEX_LISTEN__OPS", "127.0.0.1:18080"), ("GOVEX_LISTEN__API", "0.0.0.0:18080")], "use the same port"),
        (&[("GOVEX_DATA_DIR", under_a_file.as_str())], "is not a directory"),
        (&[("GOVEX_DIVISION", "619999")], "division 619999 is not a GB/T 2260 division in force"),
        (
            &[
                ("GOVEX_COMPONENTS", "intake"),
                ("GOVEX_REGISTRY__URL", "https://127.0.0.1:9/"),
                ("GOVEX_REGISTRY__TLS__CA_PATH", "/nonexistent/ca.pem"),
            ],
            "registry.tls.ca_path",
        ),
        (
            &[
                ("GOVEX_LISTEN__TLS__CERT_PATH", "/nonexistent/cert.pem"),
                ("GOVEX_LISTEN__TLS__KEY_PATH", "/nonexistent/key.pem"),
            ],
            "listen.tls",
        ),
        (&[("GOVEX_BUS__PROPERTIES__NO_SUCH_PROPERTY", "1")], "bus.properties.\"no.such.property\""),
        // Two properties that are each fine but not together: librdkafka says so only when a
        // client is made.
        (
            &[
                ("GOVEX_BUS__PROPERTIES__GROUP_PROTOCOL", "consumer"),
                ("GOVEX_BUS__PROPERTIES__HEARTBEAT_INTERVAL_MS", "3000"),
            ],
            "`heartbeat.interval.ms` is not supported for `group.protocol=consumer`",
        ),
    ];
    for (env, expected) in cases {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_govex"))
            .args(["config", "check"])
            .env("GOVEX_DATA_DIR", &data)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{env:?} passed the check: {stderr}");
        assert!(stderr.contains(expected), "{env:?}: '{stderr}' lacks '{expected}'");
    }
    assert!(!Path::new(&data).exists(), "the check made the data directory");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(["config", "check"])
        .env("GOVEX_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// `govex import` run as a first try (no node config) says how to point it at a node.
#[test]
fn import_without_a_node_says_how_to_point_at_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("payments.ndjson");
    std::fs::write(&file, b"{}\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(["import", "tax", "deed-tax-payment"])
        .arg(&file)
        .env_remove("GOVEX_CONFIG")
        .env_remove("GOVEX_BUS__BROKERS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--config <node.toml>"), "{stderr}");
}

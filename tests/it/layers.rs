//! The workspace's layering, checked on its sources: only `bus` talks to rdkafka. Handlers
//! get govex's own `Incoming`; no production file elsewhere names an rdkafka type; and the
//! crates depend on each other only in the brief's direction.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_production_file_outside_bus_names_rdkafka() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "schemas/src", "http/src", "adapters/src", "sinks/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 40, "the walk found the sources: {}", files.len());
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            // Prose may name the library (librdkafka's mock cluster); code may not name its types.
            if ["rdkafka::", "OwnedMessage", "OwnedHeaders", "BorrowedMessage"].iter().any(|t| line.contains(t)) {
                found.push(format!("{}:{}: {}", file.strip_prefix(root).unwrap().display(), n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "rdkafka named outside bus/:\n{}", found.join("\n"));
}

/// The govex crates (and rdkafka and sqlx, which only `bus` may speak) a crate's manifest
/// names under `[dependencies]`.
fn dependencies(manifest: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(manifest)).unwrap();
    let section = text.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    section
        .lines()
        .filter_map(|line| line.split(['.', ' ', '=']).next())
        .filter(|name| name.starts_with("govex-") || *name == "rdkafka" || *name == "sqlx")
        .map(str::to_owned)
        .collect()
}

#[test]
fn crates_depend_on_each_other_only_downwards() {
    // schemas (with the domain) ← bus ← http ← adapters, sinks ← govex; only bus has rdkafka
    // and sqlx (the front-end databases), as only bus speaks to Kafka.
    let check = |manifest: &str, expected: &[&str]| {
        let mut found = dependencies(manifest);
        found.sort();
        assert_eq!(found, expected, "{manifest}");
    };
    check("schemas/Cargo.toml", &[]);
    check("bus/Cargo.toml", &["govex-schemas", "rdkafka", "sqlx"]);
    check("http/Cargo.toml", &["govex-bus", "govex-schemas"]);
    check("adapters/Cargo.toml", &["govex-bus", "govex-http", "govex-schemas"]);
    check("sinks/Cargo.toml", &["govex-bus", "govex-http", "govex-schemas"]);
    check("Cargo.toml", &["govex-adapters", "govex-bus", "govex-http", "govex-schemas", "govex-sinks"]);
}

#[test]
fn configuration_becomes_librdkafka_properties_in_one_place() {
    // `BusConfig::client_config` sets every property (profiles first, the operator's last):
    // a property set anywhere else would override the operator's settings unseen.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("bus/src"), &mut files);
    assert!(files.len() > 10, "the walk found the bus's sources: {}", files.len());
    let found: Vec<String> = files
        .iter()
        .filter(|file| !file.ends_with("bus/src/config.rs"))
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            let name = file.strip_prefix(root).unwrap().display().to_string();
            text.lines()
                .enumerate()
                .filter(|(_, line)| line.contains(".set(\"") || line.contains("ClientConfig::new("))
                .map(|(n, line)| format!("{name}:{}: {}", n + 1, line.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(found.is_empty(), "librdkafka properties set outside BusConfig::client_config:\n{}", found.join("\n"));
}

#[test]
fn every_test_architecture_md_names_as_a_guard_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut files = Vec::new();
    for dir in ["tests/it", "bus/src", "schemas/src", "http/src", "adapters/src", "sinks/src", "src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let sources: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    let mut named = 0;
    let mut missing = Vec::new();
    for guard in doc.split("*Guarded by*").skip(1) {
        let until = guard.find("\n- ").unwrap_or(guard.len()).min(guard.find("\n##").unwrap_or(guard.len()));
        for name in guard[..until].split('`').skip(1).step_by(2) {
            let function = name.rsplit("::").next().unwrap();
            named += 1;
            if !sources.contains(&format!("fn {function}(")) {
                missing.push(name.to_owned());
            }
        }
    }
    assert!(named > 40, "the guards were read: {named}");
    assert!(missing.is_empty(), "ARCHITECTURE.md names tests that do not exist: {missing:?}");
}

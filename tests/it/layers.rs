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

/// The govex crates (and rdkafka) a crate's manifest names under `[dependencies]`.
fn dependencies(manifest: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(manifest)).unwrap();
    let section = text.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    section
        .lines()
        .filter_map(|line| line.split(['.', ' ', '=']).next())
        .filter(|name| name.starts_with("govex-") || *name == "rdkafka")
        .map(str::to_owned)
        .collect()
}

#[test]
fn crates_depend_on_each_other_only_downwards() {
    // schemas (with the domain) ← bus ← http ← adapters, sinks ← govex; only bus has rdkafka.
    let check = |manifest: &str, expected: &[&str]| {
        let mut found = dependencies(manifest);
        found.sort();
        assert_eq!(found, expected, "{manifest}");
    };
    check("schemas/Cargo.toml", &[]);
    check("bus/Cargo.toml", &["govex-schemas", "rdkafka"]);
    check("http/Cargo.toml", &["govex-bus", "govex-schemas"]);
    check("adapters/Cargo.toml", &["govex-bus", "govex-http", "govex-schemas"]);
    check("sinks/Cargo.toml", &["govex-bus", "govex-http", "govex-schemas"]);
    check("Cargo.toml", &["govex-adapters", "govex-bus", "govex-http", "govex-schemas", "govex-sinks"]);
}

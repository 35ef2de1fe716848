//! Embeds every `avro/*.avsc` file in the crate so that a `govex` binary copied to a
//! fresh machine registers the same schemas as a checkout does.
use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("avro");
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed=catalog.toml");
    let mut files: Vec<_> = fs::read_dir(&dir)
        .expect("schemas/avro exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "avsc"))
        .collect();
    files.sort();
    let mut out = String::from("/// Every bundled `.avsc` file: (file stem, which is the topic; file text).\npub static BUNDLED_AVRO: &[(&str, &str)] = &[\n");
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("utf-8 file name");
        out.push_str(&format!("    ({stem:?}, include_str!({:?})),\n", path.display().to_string()));
    }
    out.push_str("];\n");

    // JSON Schemas of department inputs: json/<department>/<record>.v<major>.schema.json.
    let json_dir = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("json");
    println!("cargo:rerun-if-changed={}", json_dir.display());
    let mut json_files = Vec::new();
    for department in fs::read_dir(&json_dir).expect("schemas/json exists") {
        let department = department.expect("readable directory entry").path();
        println!("cargo:rerun-if-changed={}", department.display());
        for file in fs::read_dir(&department).expect("readable department folder") {
            let file = file.expect("readable directory entry").path();
            if file.to_str().is_some_and(|f| f.ends_with(".schema.json")) {
                json_files.push(file);
            }
        }
    }
    json_files.sort();
    out.push_str("/// Every bundled JSON Schema: (department, record file stem, file text).\npub static BUNDLED_JSON: &[(&str, &str, &str)] = &[\n");
    for path in &json_files {
        println!("cargo:rerun-if-changed={}", path.display());
        let department = path.parent().and_then(|p| p.file_name()).and_then(|s| s.to_str()).expect("utf-8 folder name");
        let record = path
            .file_name()
            .and_then(|s| s.to_str())
            .and_then(|s| s.strip_suffix(".schema.json"))
            .expect("utf-8 file name");
        out.push_str(&format!("    ({department:?}, {record:?}, include_str!({:?})),\n", path.display().to_string()));
    }
    out.push_str("];\n");
    fs::write(Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bundled.rs"), out)
        .expect("write bundled.rs");
}

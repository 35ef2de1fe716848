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

    fs::write(Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bundled.rs"), out)
        .expect("write bundled.rs");
}

//! `govex schema`: the stewards' commands against a running node's registry and a git ref.

use std::{path::Path, process::Command};

use crate::support::test_node_config;

fn govex(args: &[&str], dir: &Path) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(args)
        .env("GOVEX_REGISTRY__TOKEN", crate::support::STEWARD_TOKEN)
        .current_dir(dir)
        .output()
        .expect("govex runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn edit_tax_schema(dir: &Path, new_field: &str) {
    let path = dir.join("schemas/avro/gov.tax.deed-tax-payment.v1.avsc");
    let text = std::fs::read_to_string(&path).unwrap();
    let edited =
        text.replacen(r#"    {"name": "division""#, &format!("    {new_field},\n    {{\"name\": \"division\""), 1);
    assert_ne!(edited, text);
    std::fs::write(path, edited).unwrap();
}

// The commands run as child processes and block this thread while the node answers them, so
// the node needs worker threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stewards_lint_check_push_list_and_diff() {
    let data = tempfile::tempdir().unwrap();
    let node = govex::node::start(test_node_config(data.path())).await.unwrap();
    let registry = format!("http://{}", node.registry_addr.unwrap());
    let work = tempfile::tempdir().unwrap();
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"), &work.path().join("schemas"));
    let dir = work.path().to_path_buf();

    let (code, out) = govex(&["schema", "lint"], &dir);
    assert_eq!(code, 0, "{out}");
    let (code, out) = govex(&["schema", "list", "--registry", &registry], &dir);
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().next().unwrap().starts_with("SUBJECT"), "{out}");
    assert!(out.contains("gov.tax.deed-tax-payment.v1-value"), "{out}");

    // A new required field breaks BACKWARD: check fails, names the field and its location.
    edit_tax_schema(&dir, r#"{"name": "penalty", "type": "string", "doc": "滞纳金。Late-payment penalty."}"#);
    let (code, out) = govex(&["schema", "check", "--against", &registry], &dir);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("INCOMPATIBLE") && out.contains("'penalty'") && out.contains("/fields/10"), "{out}");
    let (code, out) = govex(&["schema", "check", "--against", &registry, "--json"], &dir);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ok"], false);
    let (code, out) = govex(&["schema", "push", "--registry", &registry], &dir);
    assert_eq!(code, 1, "push refuses what the registry refuses: {out}");
    assert!(out.contains("REFUSED"), "{out}");

    // Lint sees the missing bilingual doc and the untagged personal field.
    edit_tax_schema(
        &dir,
        r#"{"name": "payer_citizen_id", "type": ["null", "string"], "default": null, "doc": "only English"}"#,
    );
    let (code, out) = govex(&["schema", "lint", "--json"], &dir);
    assert_eq!(code, 1);
    let findings: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rules: Vec<&str> =
        findings["findings"].as_array().unwrap().iter().map(|f| f["rule"].as_str().unwrap()).collect();
    assert!(rules.contains(&"doc") && rules.contains(&"personal-data"), "{rules:?}");

    // A compatible change is pushed and shows up in diff.
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"), &dir.join("schemas"));
    edit_tax_schema(
        &dir,
        r#"{"name": "penalty", "type": ["null", "string"], "default": null, "doc": "滞纳金。Late-payment penalty."}"#,
    );
    let (code, out) = govex(&["schema", "push", "--registry", &registry], &dir);
    assert_eq!(code, 0, "{out}");
    let tax_row =
        |out: &str| out.lines().find(|l| l.starts_with("gov.tax.deed-tax-payment.v1-value")).unwrap().to_owned();
    assert!(tax_row(&out).ends_with("registered"), "{out}");
    assert!(out.lines().filter(|l| l.ends_with("unchanged")).count() > 5, "the others were there already: {out}");
    // Pushing again changes nothing, and says so.
    let (code, out) = govex(&["schema", "push", "--registry", &registry], &dir);
    assert_eq!(code, 0, "{out}");
    assert!(tax_row(&out).ends_with("unchanged"), "{out}");
    assert!(!out.lines().any(|l| l.ends_with("registered")), "{out}");
    // BACKWARD compares with the latest version only, and says that.
    let (code, out) = govex(&["schema", "check", "--against", &registry], &dir);
    assert_eq!(code, 0, "{out}");
    assert!(tax_row(&out).contains("v2 (latest)") && !out.contains("v1,v2"), "{out}");
    let (code, out) = govex(&["schema", "check", "--against", &registry, "--level", "backward_transitive"], &dir);
    assert_eq!(code, 0, "{out}");
    assert!(tax_row(&out).contains("v1,v2"), "{out}");
    let (code, out) =
        govex(&["schema", "diff", "gov.tax.deed-tax-payment.v1-value", "1", "2", "--registry", &registry], &dir);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("added") && out.contains("penalty") && out.contains("new reads old (backward): yes"), "{out}");
    let (code, out) =
        govex(&["schema", "diff", "gov.tax.deed-tax-payment.v1-value", "1", "3", "--registry", &registry], &dir);
    assert_eq!(code, 1);
    assert!(out.contains("gov.tax.deed-tax-payment.v1-value has no version 3; its versions are 1, 2"), "{out}");
    // From any folder of the repository, or with --schemas from outside it.
    let deeper = dir.join("schemas/avro");
    let (code, out) = govex(&["schema", "lint"], &deeper);
    assert_eq!(code, 0, "{out}");
    let outside = tempfile::tempdir().unwrap();
    let (code, out) = govex(&["schema", "lint"], outside.path());
    assert_eq!(code, 1);
    assert!(out.contains("pass --schemas DIR"), "{out}");
    let (code, out) = govex(&["schema", "lint", "--schemas", dir.join("schemas").to_str().unwrap()], outside.path());
    assert_eq!(code, 0, "{out}");
    node.shutdown().await.unwrap();
}

#[test]
fn check_against_a_git_ref_compares_with_the_committed_schema() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    copy_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas"), &dir.join("schemas"));
    let git = |args: &[&str]| {
        let status = Command::new("git").args(args).current_dir(dir).status().unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@example.invalid", "add", "."]);
    git(&["-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "schemas"]);
    let (code, out) = govex(&["schema", "check", "--against", "HEAD"], dir);
    assert_eq!(code, 0, "{out}");
    edit_tax_schema(dir, r#"{"name": "penalty", "type": "string", "doc": "滞纳金。Late-payment penalty."}"#);
    let (code, out) = govex(&["schema", "check", "--against", "HEAD"], dir);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("READER_FIELD_MISSING_DEFAULT_VALUE"), "{out}");
}

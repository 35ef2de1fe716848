//! `govex schema`: the data stewards' tools. Each command reads the working tree's
//! `schemas/` folder (or talks to a registry), prints an aligned report for people or JSON
//! for machines (`--json`), and exits non-zero when it finds something to fix.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use apache_avro::Schema;
use govex_bus::{registry_client::RegistryClientError, RegistryClient};
use govex_schemas::{
    bundled::value_subject,
    compat::{self, Compatibility},
    diff, lint, Catalog,
};
use serde_json::json;

/// The schema files of a working tree: (topic, file name, text).
pub struct WorkingTree {
    /// The `schemas/` folder.
    pub dir: PathBuf,
    /// Every `avro/*.avsc`, sorted by topic.
    pub schemas: Vec<(String, String)>,
}

impl WorkingTree {
    /// Reads `dir/avro/*.avsc`.
    pub fn read(dir: &Path) -> Result<Self> {
        let avro = dir.join("avro");
        let mut schemas = Vec::new();
        for entry in std::fs::read_dir(&avro).with_context(|| format!("cannot read {}", avro.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "avsc") {
                let topic = path.file_stem().and_then(|s| s.to_str()).context("file name is not UTF-8")?.to_owned();
                let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
                schemas.push((topic, text));
            }
        }
        schemas.sort();
        if schemas.is_empty() {
            bail!("no .avsc files in {}", avro.display());
        }
        Ok(Self { dir: dir.to_path_buf(), schemas })
    }
}

/// The schemas folder: `given`, or else the first folder with `avro/` and `catalog.toml`
/// found from the current directory upwards, as `schemas/` or as the folder itself, so that a
/// steward can run the tools from anywhere in the repository.
pub fn find_schemas(given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir);
    }
    let here = std::env::current_dir().context("the current directory cannot be read")?;
    let is_schemas = |dir: &Path| dir.join("avro").is_dir() && dir.join("catalog.toml").is_file();
    for dir in here.ancestors() {
        if is_schemas(dir) {
            return Ok(dir.to_path_buf());
        }
        if is_schemas(&dir.join("schemas")) {
            return Ok(dir.join("schemas"));
        }
    }
    bail!("no schemas folder (one with avro/ and catalog.toml) in {} or above it; pass --schemas DIR", here.display())
}

/// Prints rows as aligned columns under a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        let text: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == last { c.to_string() } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `govex schema lint`: exit status 1 when a rule is broken.
pub fn lint_command(dir: &Path, as_json: bool) -> Result<bool> {
    let tree = WorkingTree::read(dir)?;
    let catalog_path = dir.join("catalog.toml");
    let catalog_text =
        std::fs::read_to_string(&catalog_path).with_context(|| format!("cannot read {}", catalog_path.display()))?;
    let mut findings = Vec::new();
    let catalog = match Catalog::parse_against(&catalog_text, &tree.schemas) {
        Ok(catalog) => Some(catalog),
        Err(e) => {
            findings.push(lint::Finding {
                file: "catalog.toml".into(),
                location: String::new(),
                rule: "catalog",
                message: e.to_string(),
            });
            None
        }
    };
    // As the registry would hold them after a push: two files must not declare one record type.
    let latest: Vec<(String, String, bool)> =
        tree.schemas.iter().map(|(t, text)| (format!("{t}-value"), text.clone(), true)).collect();
    for (topic, text) in &tree.schemas {
        findings.extend(lint::lint(topic, text, catalog.as_ref()));
        // The same check the registry runs at push: a record type's annotations must compile
        // into a contract (named checks and rules that exist, a key, a shape JSON can take).
        if let Err(e) = govex_adapters::contract::usable(&format!("{topic}-value"), text, &latest) {
            findings.push(lint::Finding {
                file: format!("avro/{topic}.avsc"),
                location: String::new(),
                rule: "contract",
                message: e.to_string(),
            });
        }
    }
    if as_json {
        println!("{}", json!({ "ok": findings.is_empty(), "findings": findings }));
    } else if findings.is_empty() {
        println!("{} schemas checked: no findings", tree.schemas.len());
    } else {
        let rows: Vec<Vec<String>> = findings
            .iter()
            .map(|f| vec![f.file.clone(), f.location.clone(), f.rule.to_owned(), f.message.clone()])
            .collect();
        print_table(&["FILE", "LOCATION", "RULE", "MESSAGE"], &rows);
        println!("\n{} findings in {} schemas", findings.len(), tree.schemas.len());
    }
    Ok(findings.is_empty())
}

/// One row of `check`'s report.
struct Verdict {
    subject: String,
    against: String,
    level: String,
    problems: Vec<String>,
}

/// A client of the registry at `url`, sending `token` (a steward's) when one is given.
pub fn client(url: &str, token: Option<&str>) -> RegistryClient {
    RegistryClient::http_with_token(url, token)
}

/// `govex schema check --against <registry-url | git-ref>`: exit status 1 when a schema of
/// the working tree breaks compatibility.
pub async fn check_command(
    dir: &Path,
    against: &str,
    token: Option<&str>,
    level: Option<Compatibility>,
    as_json: bool,
) -> Result<bool> {
    let tree = WorkingTree::read(dir)?;
    let mut verdicts = Vec::new();
    for (topic, text) in &tree.schemas {
        let subject = value_subject(topic);
        let new = Schema::parse_str(text).with_context(|| format!("{topic}.avsc is not a valid Avro schema"))?;
        let verdict = if against.starts_with("http://") || against.starts_with("https://") {
            check_against_registry(&client(against, token), &subject, &new, level).await?
        } else {
            check_against_git(dir, against, topic, &subject, &new, level.unwrap_or(Compatibility::Backward))?
        };
        verdicts.push(verdict);
    }
    let ok = verdicts.iter().all(|v| v.problems.is_empty());
    if as_json {
        let rows: Vec<_> = verdicts
            .iter()
            .map(|v| json!({ "subject": v.subject, "against": v.against, "level": v.level, "compatible": v.problems.is_empty(), "problems": v.problems }))
            .collect();
        println!("{}", json!({ "ok": ok, "against": against, "subjects": rows }));
        return Ok(ok);
    }
    let rows: Vec<Vec<String>> = verdicts
        .iter()
        .map(|v| {
            let verdict = if v.problems.is_empty() {
                "compatible".to_owned()
            } else {
                format!("INCOMPATIBLE ({})", v.problems.len())
            };
            vec![v.subject.clone(), v.against.clone(), v.level.clone(), verdict]
        })
        .collect();
    print_table(&["SUBJECT", "AGAINST", "LEVEL", "RESULT"], &rows);
    for verdict in verdicts.iter().filter(|v| !v.problems.is_empty()) {
        println!("\n{}:", verdict.subject);
        for problem in &verdict.problems {
            println!("  - {problem}");
        }
    }
    Ok(ok)
}

async fn check_against_registry(
    registry: &RegistryClient,
    subject: &str,
    new: &Schema,
    level: Option<Compatibility>,
) -> Result<Verdict> {
    let versions = match registry.versions(subject).await {
        Ok(versions) => versions,
        Err(RegistryClientError::UnknownSubject(_)) => {
            return Ok(Verdict {
                subject: subject.into(),
                against: "(new subject)".into(),
                level: "-".into(),
                problems: vec![],
            })
        }
        Err(e) => return Err(e).context("the registry could not be read"),
    };
    let level = match level {
        Some(level) => level,
        None => registry.compatibility_level(subject).await?.parse().map_err(anyhow::Error::msg)?,
    };
    // The versions the level compares with: all of them when it is transitive, else the latest.
    let compared: &[u32] = match level {
        Compatibility::None => &[],
        level if level.transitive() => &versions,
        _ => versions.last().map(std::slice::from_ref).unwrap_or(&[]),
    };
    let mut existing = Vec::new();
    for version in compared {
        let found = registry.version(subject, &version.to_string()).await?;
        existing.push((
            found.version,
            Schema::parse_str(&found.schema).with_context(|| format!("{subject} v{version} does not parse"))?,
        ));
    }
    let problems = compat::check(level, new, &existing).into_iter().map(|(v, i)| format!("version {v}: {i}")).collect();
    let against = match compared {
        [] => "(no check)".to_owned(),
        [latest] if !level.transitive() => format!("v{latest} (latest)"),
        all => format!("v{}", all.iter().map(u32::to_string).collect::<Vec<_>>().join(",v")),
    };
    Ok(Verdict { subject: subject.into(), against, level: level.as_str().into(), problems })
}

fn check_against_git(
    dir: &Path,
    git_ref: &str,
    topic: &str,
    subject: &str,
    new: &Schema,
    level: Compatibility,
) -> Result<Verdict> {
    let root = Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .current_dir(dir)
        .output()
        .context("git is not available")?;
    if !root.status.success() {
        bail!("{} is not inside a git work tree", dir.display());
    }
    let root = PathBuf::from(String::from_utf8_lossy(&root.stdout).trim());
    let absolute = std::fs::canonicalize(dir.join("avro").join(format!("{topic}.avsc")))?;
    let relative = absolute.strip_prefix(std::fs::canonicalize(&root)?).context("schema outside the git work tree")?;
    let show =
        Command::new("git").arg("show").arg(format!("{git_ref}:{}", relative.display())).current_dir(&root).output()?;
    if !show.status.success() {
        let message = String::from_utf8_lossy(&show.stderr);
        if message.contains("does not exist") || message.contains("exists on disk, but not in") {
            return Ok(Verdict {
                subject: subject.into(),
                against: format!("{git_ref} (new file)"),
                level: "-".into(),
                problems: vec![],
            });
        }
        bail!("git show {git_ref}:{} failed: {}", relative.display(), message.trim());
    }
    let old = Schema::parse_str(&String::from_utf8_lossy(&show.stdout))
        .with_context(|| format!("{topic}.avsc at {git_ref} does not parse"))?;
    let problems = compat::check(level, new, &[(1, old)]).into_iter().map(|(_, i)| i.to_string()).collect();
    Ok(Verdict { subject: subject.into(), against: git_ref.into(), level: level.as_str().into(), problems })
}

/// `govex schema push`: registers every working-tree schema under its topic's subject.
pub async fn push_command(dir: &Path, registry: &RegistryClient, as_json: bool) -> Result<bool> {
    let tree = WorkingTree::read(dir)?;
    let registry_url = registry.describe();
    let mut rows = Vec::new();
    let mut refusals = Vec::new();
    let mut ok = true;
    for (topic, text) in &tree.schemas {
        let subject = value_subject(topic);
        let before = match registry.versions(&subject).await {
            Ok(versions) => versions,
            Err(RegistryClientError::UnknownSubject(_)) => Vec::new(),
            Err(e) => return Err(e).context("the registry could not be read"),
        };
        match registry.register(&subject, text).await {
            Ok(id) => {
                let latest = registry.version(&subject, "latest").await?;
                if latest.id == id && !before.contains(&latest.version) {
                    rows.push((subject, Some((id, latest.version)), "registered"));
                    continue;
                }
                // The registry had it already: under which version.
                let mut version = latest.version;
                for earlier in before.iter().rev() {
                    if registry.version(&subject, &earlier.to_string()).await?.id == id {
                        version = *earlier;
                        break;
                    }
                }
                rows.push((subject, Some((id, version)), "unchanged"));
            }
            Err(e) => {
                ok = false;
                refusals.push(e.to_string());
                rows.push((subject, None, "refused"));
            }
        }
    }
    if as_json {
        let mut refused = refusals.iter();
        let rows: Vec<_> = rows
            .iter()
            .map(|(s, r, result)| {
                let error = if r.is_none() { refused.next().cloned().unwrap_or_default() } else { String::new() };
                json!({ "subject": s, "id": r.map(|r| r.0), "version": r.map(|r| r.1), "result": result, "error": error })
            })
            .collect();
        println!("{}", json!({ "ok": ok, "registry": registry_url, "subjects": rows }));
    } else {
        let mut refused = refusals.iter();
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|(s, r, result)| match r {
                Some((id, version)) => vec![s.clone(), id.to_string(), version.to_string(), (*result).to_owned()],
                None => vec![
                    s.clone(),
                    "-".into(),
                    "-".into(),
                    format!("REFUSED: {}", refused.next().cloned().unwrap_or_default()),
                ],
            })
            .collect();
        print_table(&["SUBJECT", "ID", "VERSION", "RESULT"], &table);
        let new = rows.iter().filter(|r| r.2 == "registered").count();
        let same = rows.iter().filter(|r| r.2 == "unchanged").count();
        println!("\n{new} registered as new versions, {same} unchanged, {} refused", refusals.len());
    }
    Ok(ok)
}

/// `govex schema list`: every subject of a registry with its latest version.
pub async fn list_command(registry: &RegistryClient, as_json: bool) -> Result<bool> {
    let mut rows = Vec::new();
    for subject in registry.subjects().await? {
        let latest = registry.version(&subject, "latest").await?;
        let versions = registry.versions(&subject).await?.len();
        let level = registry.compatibility_level(&subject).await?;
        rows.push((subject, latest.version, latest.id, versions, level));
    }
    if as_json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(s, v, id, n, level)| json!({ "subject": s, "latest_version": v, "id": id, "versions": n, "compatibility": level }))
            .collect();
        println!("{}", json!(rows));
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|(s, v, id, n, level)| vec![s.clone(), v.to_string(), id.to_string(), n.to_string(), level.clone()])
            .collect();
        print_table(&["SUBJECT", "LATEST", "ID", "VERSIONS", "COMPATIBILITY"], &table);
    }
    Ok(true)
}

/// `govex schema diff <subject> <v1> <v2>`: field-level changes and both directions of
/// compatibility.
pub async fn diff_command(
    registry: &RegistryClient,
    subject: &str,
    from: &str,
    to: &str,
    as_json: bool,
) -> Result<bool> {
    let version = |asked: String| async move {
        match registry.version(subject, &asked).await {
            Ok(found) => Ok(found),
            Err(RegistryClientError::UnknownVersion(_)) => {
                let known = registry.versions(subject).await.unwrap_or_default();
                let known: Vec<String> = known.iter().map(u32::to_string).collect();
                bail!("{subject} has no version {asked}; its versions are {}", known.join(", "))
            }
            Err(e) => Err(e.into()),
        }
    };
    let old = version(from.to_owned()).await?;
    let new = version(to.to_owned()).await?;
    let old_schema = Schema::parse_str(&old.schema)?;
    let new_schema = Schema::parse_str(&new.schema)?;
    let changes = diff::diff(&old_schema, &new_schema);
    let backward: Vec<String> = compat::can_read(&new_schema, &old_schema).iter().map(ToString::to_string).collect();
    let forward: Vec<String> = compat::can_read(&old_schema, &new_schema).iter().map(ToString::to_string).collect();
    if as_json {
        println!(
            "{}",
            json!({ "subject": subject, "from": old.version, "to": new.version, "changes": changes,
                    "backward_compatible": backward.is_empty(), "forward_compatible": forward.is_empty(),
                    "backward_problems": backward, "forward_problems": forward })
        );
        return Ok(true);
    }
    println!("{subject}: version {} (id {}) -> version {} (id {})\n", old.version, old.id, new.version, new.id);
    if changes.is_empty() {
        println!("no field-level changes");
    } else {
        let rows: Vec<Vec<String>> =
            changes.iter().map(|c| vec![c.kind.to_owned(), c.path.clone(), c.old.clone(), c.new.clone()]).collect();
        print_table(&["CHANGE", "FIELD", "OLD", "NEW"], &rows);
    }
    let word = |problems: &[String]| {
        if problems.is_empty() {
            "yes".to_owned()
        } else {
            format!("no ({})", problems.join("; "))
        }
    };
    println!("\nnew reads old (backward): {}", word(&backward));
    println!("old reads new (forward):  {}", word(&forward));
    Ok(true)
}

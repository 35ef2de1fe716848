//! The `govex` binary itself: a standalone broker shared by a node in another process, and a
//! node that stops cleanly on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// Starts `govex` with `args` and `env`, and returns it with a channel of its stdout lines.
fn spawn(args: &[&str], env: &[(&str, String)]) -> (Child, mpsc::Receiver<String>) {
    let mut child = crate::child::govex(args, env).stderr(Stdio::null()).spawn().expect("govex starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a stdout line containing `needle` and returns it.
fn wait_for_line(lines: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = lines.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| panic!("no line with '{needle}'"));
        if line.contains(needle) {
            return line;
        }
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn a_node_process_shares_a_standalone_broker_and_stops_cleanly_on_sigterm() {
    let (mut broker, broker_lines) = spawn(&["broker"], &[]);
    let line = wait_for_line(&broker_lines, "bootstrap servers:");
    let bootstrap = line.rsplit(' ').next().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".to_owned();
    let (mut node, node_lines) = spawn(
        &["node"],
        &[
            ("GOVEX_DIVISION", "610921".into()),
            ("GOVEX_BUS__BROKERS", bootstrap.clone()),
            ("GOVEX_DATA_DIR", dir.path().display().to_string()),
            ("GOVEX_LISTEN__API", any.clone()),
            ("GOVEX_LISTEN__REGISTRY", any.clone()),
            ("GOVEX_LISTEN__OPS", any),
        ],
    );
    wait_for_line(&node_lines, "govex node for division 610921 is running");
    let health = wait_for_line(&node_lines, "/readyz");
    let readyz = health.split_whitespace().find(|w| w.ends_with("/readyz")).unwrap().to_owned();
    let bus = wait_for_line(&node_lines, "  bus ");
    assert!(bus.contains(&bootstrap), "the node uses the shared broker: {bus}");
    crate::support::wait_ready(&readyz).await;

    terminate(&node);
    let status = tokio::task::spawn_blocking(move || node.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the node exits cleanly on SIGTERM: {status}");
    terminate(&broker);
    let status = tokio::task::spawn_blocking(move || broker.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the broker exits cleanly on SIGTERM: {status}");
}

#[tokio::test]
async fn every_answered_use_survives_a_kill_of_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let hash = govex_adapters::intake::auth::hash_token("test-token-of-tax");
    std::fs::write(&tokens, format!("[[tokens]]\ndepartment = \"tax\"\nsha256 = \"{hash}\"\n")).unwrap();
    let data = dir.path().join("data");
    let any = "127.0.0.1:0".to_owned();
    let (mut node, node_lines) = spawn(
        &["node"],
        &[
            ("GOVEX_DIVISION", "610921".into()),
            ("GOVEX_DATA_DIR", data.display().to_string()),
            ("GOVEX_INTAKE__TOKENS_FILE", tokens.display().to_string()),
            ("GOVEX_LISTEN__API", any.clone()),
            ("GOVEX_LISTEN__REGISTRY", any.clone()),
            ("GOVEX_LISTEN__OPS", any),
        ],
    );
    let api = wait_for_line(&node_lines, "  API ");
    let base = api.split_whitespace().last().unwrap().trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    // Each verification is logged (here: of licences the store does not hold) before it is answered.
    for n in 0..20 {
        let answer = http
            .post(format!("{base}/v1/licences/L{n}/verify"))
            .bearer_auth("test-token-of-tax")
            .json(&serde_json::json!({ "purpose": "契税征收核验" }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    }
    // No shutdown, no final flush: as if the machine lost power.
    node.kill().unwrap();
    node.wait().unwrap();

    let audit = Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(["audit", "verify"])
        .env("GOVEX_DATA_DIR", &data)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
    assert_eq!(String::from_utf8_lossy(&audit.stdout).trim(), "use log: 20 entries, hash chain intact");
}

#[tokio::test]
async fn sigterm_ends_a_start_up_that_waits_for_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    // A registry that does not answer: start-up retries it for two minutes.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    let mut node = Command::new(env!("CARGO_BIN_EXE_govex"))
        .arg("node")
        .env("GOVEX_DIVISION", "610921")
        .env("GOVEX_DATA_DIR", dir.path())
        .env("GOVEX_COMPONENTS", "intake")
        .env("GOVEX_REGISTRY__URL", &silent)
        .env("GOVEX_LISTEN__API", "127.0.0.1:0")
        .env("GOVEX_LISTEN__OPS", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = node.stderr.take().unwrap();
    let (tx, waiting) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // stderr is a pipe here, not a terminal: no colour codes.
            assert!(!line.contains('\x1b'), "an escape code in a log written to a pipe: {line:?}");
            if line.contains("not reachable yet") {
                let _ = tx.send(());
            }
        }
    });
    waiting.recv_timeout(Duration::from_secs(60)).expect("the node waits for the registry");
    terminate(&node);
    // Well before the two minutes of retries would end.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = node.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            node.kill().unwrap();
            panic!("the node kept waiting for the registry after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a SIGTERM while starting is a clean stop: {status}");
}

#[test]
fn a_user_error_prints_its_message_only_and_help_answers_its_own_help() {
    let output = Command::new(env!("CARGO_BIN_EXE_govex"))
        .args(["token", "new", "No Such"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("Error: 'No Such' is not a department"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "no backtrace: {stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_govex")).args(["help", "--help"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("Usage: govex"));
}

/// With the broker unreachable, `govex import` shows each librdkafka error once (collapsed
/// and rate-limited), then its own message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_client_errors_are_shown_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::test_node_config(dir.path());
    config.components = vec![govex::config::Component::Registry];
    let node = govex::node::start(config).await.unwrap();
    let file = dir.path().join("payments.ndjson");
    std::fs::write(&file, b"{}\n").unwrap();
    let registry = format!("http://{}", node.registry_addr.unwrap());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_govex"))
            .args(["import", "tax", "deed-tax-payment"])
            .arg(&file)
            .env("GOVEX_BUS__BROKERS", "127.0.0.1:1")
            .env("GOVEX_REGISTRY__URL", registry)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Error: the bus failed"), "{stderr}");
    let client_lines: Vec<&str> = stderr.lines().filter(|l| l.contains("librdkafka")).collect();
    assert!(!client_lines.is_empty(), "the cause is shown: {stderr}");
    let connect_failures = client_lines.iter().filter(|l| l.contains("Connection refused")).count();
    assert!(connect_failures <= 2, "the connect failure is repeated {connect_failures} times: {stderr}");
    assert!(client_lines.len() <= 4, "{} client lines: {stderr}", client_lines.len());
    node.shutdown().await.unwrap();
}

/// A registry node on a shared broker, with a steward's token; returns it, its stdout lines
/// and its registry's base URL.
fn registry_process(bootstrap: &str, data: &std::path::Path, tokens: &std::path::Path) -> (Child, String) {
    let any = "127.0.0.1:0".to_owned();
    let (node, lines) = spawn(
        &["node"],
        &[
            ("GOVEX_DIVISION", "610921".into()),
            ("GOVEX_COMPONENTS", "registry".into()),
            ("GOVEX_BUS__BROKERS", bootstrap.to_owned()),
            ("GOVEX_BUS__REPLICATION_FACTOR", "1".into()),
            ("GOVEX_DATA_DIR", data.display().to_string()),
            ("GOVEX_INTAKE__TOKENS_FILE", tokens.display().to_string()),
            ("GOVEX_LISTEN__REGISTRY", any.clone()),
            ("GOVEX_LISTEN__OPS", any),
        ],
    );
    let line = wait_for_line(&lines, "schema registry ");
    let url = line.split_whitespace().find(|w| w.starts_with("http")).unwrap().trim_end_matches("/subjects").to_owned();
    (node, url)
}

/// Pushes keep coming while the registry process is killed (SIGKILL: no shutdown, no final
/// flush). Every push it acknowledged is on the topic: a registry restarted on its own
/// volume, and one on an empty volume, serve each with the id it was answered with, and at
/// most the one push in flight at the kill is there unacknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_push_survives_a_kill_of_the_registry() {
    let (mut broker, broker_lines) = spawn(&["broker"], &[]);
    let line = wait_for_line(&broker_lines, "bootstrap servers:");
    let bootstrap = line.rsplit(' ').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    let hash = govex_adapters::intake::auth::hash_token(crate::support::STEWARD_TOKEN);
    std::fs::write(
        &tokens,
        format!("[[tokens]]\ndepartment = \"platform\"\nrole = \"steward\"\nsha256 = \"{hash}\"\n"),
    )
    .unwrap();
    let (data, fresh) = (dir.path().join("data"), dir.path().join("fresh"));
    let (mut node, url) = registry_process(&bootstrap, &data, &tokens);

    let http = reqwest::Client::new();
    let schema = |n: usize| format!(r#"{{"type":"record","name":"Crash{n}","fields":[{{"name":"n","type":"int"}}]}}"#);
    let push = |n: usize, url: String| {
        let (http, schema) = (http.clone(), schema(n));
        async move {
            // Why a push was not acknowledged, said in full: a failure before the kill is a
            // bug to read, not a number to guess from.
            let response = http
                .post(format!("{url}/subjects/crash-{n}/versions"))
                .bearer_auth(crate::support::STEWARD_TOKEN)
                .json(&serde_json::json!({ "schema": schema }))
                .send()
                .await
                .map_err(|e| format!("not answered: {e:?}"))?;
            let status = response.status();
            let text = response.text().await.map_err(|e| format!("{status}, body cut: {e:?}"))?;
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            body["id"].as_u64().ok_or_else(|| format!("{status}: {text}"))
        }
    };
    let mut acknowledged = Vec::new();
    let mut attempted = 0;
    for n in 0..200 {
        attempted = n + 1;
        if n == 15 {
            // Killed while the next pushes are on their way.
            let pid = node.id();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(3)).await;
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            });
        }
        match push(n, url.clone()).await {
            Ok(id) => acknowledged.push((n, id)),
            Err(_) if n >= 15 => break,
            Err(why) => panic!("push {n} failed before the kill: {why}"),
        }
    }
    node.wait().unwrap();
    assert!(acknowledged.len() >= 15, "{acknowledged:?}");
    eprintln!("{} pushes acknowledged of {attempted} sent before the kill", acknowledged.len());

    for volume in [&data, &fresh] {
        let (mut node, url) = registry_process(&bootstrap, volume, &tokens);
        let subjects: Vec<String> = http.get(format!("{url}/subjects")).send().await.unwrap().json().await.unwrap();
        let crashed: Vec<&String> = subjects.iter().filter(|s| s.starts_with("crash-")).collect();
        for (n, id) in &acknowledged {
            let found: serde_json::Value =
                crate::support::json(http.get(format!("{url}/subjects/crash-{n}/versions/latest"))).await;
            assert_eq!(found["id"].as_u64(), Some(*id), "crash-{n} on {}: {found}", volume.display());
            assert_eq!(found["schema"].as_str(), Some(schema(*n).as_str()));
        }
        // Acknowledged = on the topic = applied, give or take the one push in flight.
        assert!(
            crashed.len() == acknowledged.len()
                || (crashed.len() == acknowledged.len() + 1 && attempted > acknowledged.len()),
            "{} acknowledged, {} there: {crashed:?}",
            acknowledged.len(),
            crashed.len()
        );
        node.kill().unwrap();
        node.wait().unwrap();
    }
    terminate(&broker);
    broker.wait().unwrap();
}

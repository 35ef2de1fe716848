//! Tokens rotate without a restart: a node follows its `intake.tokens_file` (a Kubernetes
//! Secret's mounted file), a token taken out of it is refused within seconds by every API of
//! the process, a new one is taken, and a file that does not parse changes nothing.

use std::time::Duration;

use govex_http::auth::{hash_token, new_token};
use serde_json::Value;

use crate::support;

fn tokens_file(entries: &[(&str, &str)]) -> String {
    entries
        .iter()
        .map(|(department, token)| {
            format!("[[tokens]]\ndepartment = \"{department}\"\nsha256 = \"{}\"\n", hash_token(token))
        })
        .collect()
}

/// The status a read of the licence store's holders list answers `token` (any API would do:
/// they share one set of tokens).
async fn status(api: &str, token: &str) -> u16 {
    let url = format!("{api}/v1/tax/deed-tax-payment:validate");
    let record = govex_adapters::samples::sample("tax", "deed-tax-payment", 1).unwrap();
    let response = reqwest::Client::new().post(url).bearer_auth(token).json(&record).send().await.unwrap();
    response.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_taken_out_of_the_tokens_file_is_refused_within_seconds_without_a_restart() {
    let (old, new) = (new_token(), new_token());
    let secret = tempfile::tempdir().unwrap();
    let path = secret.path().join("tokens.toml");
    std::fs::write(&path, tokens_file(&[("tax", &old)])).unwrap();
    let file = path.clone();
    let (_dir, node) = crate::intake::intake_node_with(move |config| config.intake.tokens_file = Some(file)).await;
    let api = format!("http://{}", node.api_addr().unwrap());
    assert_eq!(status(&api, &old).await, 200, "the token in the file is taken at start");
    assert_eq!(status(&api, &new).await, 401);

    // Rotation, the way the kubelet swaps a Secret's files: the old token out, the new one in.
    let swapped = secret.path().join("..tokens.toml.new");
    std::fs::write(&swapped, tokens_file(&[("tax", &new)])).unwrap();
    std::fs::rename(&swapped, &path).unwrap();
    let started = std::time::Instant::now();
    support::eventually_saw("the old token refused", Duration::from_secs(15), || async {
        match (status(&api, &old).await, status(&api, &new).await) {
            (401, 200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "revocation took {took:?}");

    // A file that does not parse (half-written, a typo) is refused whole: the tokens before it
    // stay, and the refusal is counted.
    std::fs::write(&path, "[[tokens]]\ndepartment = \"tax\"\nsha256 = \"not-a-hash\"\n").unwrap();
    let refused = "govex_tokens_reloads_total{result=\"refused\"}";
    support::eventually("the broken file refused", Duration::from_secs(15), || async {
        (crate::frontdb::metric(&node, refused).await == 1.0).then_some(())
    })
    .await;
    assert_eq!(status(&api, &new).await, 200, "the tokens before the broken file stay");
    assert_eq!(status(&api, &old).await, 401);

    // An emptied file is taken as start-up takes it: its tokens go, the config file's stay
    // (only a change that would leave no token at all is refused).
    std::fs::write(&path, "").unwrap();
    support::eventually_saw("the file's tokens gone", Duration::from_secs(15), || async {
        match (status(&api, &new).await, status(&api, &support::token("tax")).await) {
            (401, 200) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let request = reqwest::Client::new().post(format!("{api}/v1/tax/deed-tax-payment:validate"));
    let problem = support::json(request.bearer_auth(&old).json(&Value::Null)).await;
    assert_eq!(problem["title"], "Authentication failed", "{problem}");
    node.shutdown().await.unwrap();
}

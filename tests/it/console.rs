//! The console in a real browser: headless Chromium driven over WebDriver by Debian's
//! chromedriver (installed by `.ci/run`). Tax files a request for housing's contract filings
//! with the buyers' names, housing narrows it to no personal field and approves it, and tax's
//! first read shows the names masked; tax objects to a field of the filing, the record reads
//! disputed, and housing resolves it. Screenshots of the main pages go to
//! `target/console-screenshots/` (test artifacts, not committed).

use std::{path::PathBuf, process::Stdio, time::Duration};

use govex_adapters::samples::{property_unit_number, sample};
use serde_json::{json, Value};

use crate::support::{self, token};

const FILINGS: &str = "housing.contract-filing";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver session of a chromedriver child process (killed when dropped).
struct Browser {
    driver: std::process::Child,
    http: reqwest::Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Self {
        let addr = support::reserved_addr();
        let driver = std::process::Command::new("chromedriver")
            .arg(format!("--port={}", addr.port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; .ci/run installs it)");
        let http = reqwest::Client::new();
        let base = format!("http://{addr}");
        support::eventually("chromedriver answering", Duration::from_secs(30), || async {
            let status = http.get(format!("{base}/status")).send().await.ok()?;
            let status: Value = status.json().await.ok()?;
            (status["value"]["ready"] == true).then_some(())
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1000",
        ]
        .into_iter()
        .map(String::from)
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let created: Value =
            http.post(format!("{base}/session")).json(&capabilities).send().await.unwrap().json().await.unwrap();
        let session = created["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {created}"));
        let session = format!("{base}/session/{session}");
        Browser { driver, http, session, _profile: profile }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let request = self.http.request(method, format!("{}{path}", self.session));
        let request = if body.is_null() { request } else { request.json(&body) };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(answer["value"]["error"].is_null(), "WebDriver {path}: {answer}");
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", json!({"url": url})).await;
    }

    async fn find(&self, css: &str) -> String {
        let found =
            self.command(reqwest::Method::POST, "/element", json!({"using": "css selector", "value": css})).await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{element}/click"), json!({})).await;
    }

    async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{element}/clear"), json!({})).await;
        if !text.is_empty() {
            self.command(reqwest::Method::POST, &format!("/element/{element}/value"), json!({"text": text})).await;
        }
    }

    /// Sets a field's value directly (a date input takes keys in the browser's locale order).
    async fn set(&self, css: &str, value: &str) {
        let script = "document.querySelector(arguments[0]).value = arguments[1];";
        self.command(reqwest::Method::POST, "/execute/sync", json!({"script": script, "args": [css, value]})).await;
    }

    async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.command(reqwest::Method::GET, &format!("/element/{element}/text"), Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The text of `css` once it contains `needle` (a form's answer loads after its click
    /// returns); fails the test with the page's text after 20 s.
    async fn wait_for(&self, css: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .http
                .post(format!("{}/element", self.session))
                .json(&json!({"using": "css selector", "value": css}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap();
            if let Some(element) = found["value"][ELEMENT].as_str() {
                let text = self.http.get(format!("{}/element/{element}/text", self.session)).send().await.unwrap();
                let text: Value = text.json().await.unwrap();
                if let Some(text) = text["value"].as_str().filter(|t| t.contains(needle)) {
                    return text.to_owned();
                }
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{css} never showed {needle:?}; the page: {}", self.text("body").await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let png = self.command(reqwest::Method::GET, "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    async fn sign_in(&self, base: &str, who: &str) {
        self.go(&format!("{base}/console/")).await;
        self.fill("#token", &token(who)).await;
        self.click("#sign-in").await;
        let department = if who == "steward" { "platform" } else { who };
        self.wait_for("#who", department).await;
    }

    async fn sign_out(&self) {
        self.click("#sign-out").await;
        self.wait_for("h1", "govex console").await;
        self.find("#token").await;
    }

    /// Reads the filing of unit `key` through the console's read form (a form: its purpose is
    /// logged and stays out of URLs); the status line it answers.
    async fn read(&self, base: &str, key: &str) -> String {
        self.go(&format!("{base}/console/requests")).await;
        self.fill("#read-resource", FILINGS).await;
        self.fill("#read-key", key).await;
        self.fill("#read-purpose", "契税征收核验").await;
        self.click("#read").await;
        self.wait_for("h1", "Read a record").await;
        self.text("#read-status").await
    }

    async fn cookie(&self, name: &str) -> Value {
        self.command(reqwest::Method::GET, &format!("/cookie/{name}"), Value::Null).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_tax_asks_housing_narrows_and_approves_tax_reads_masked_and_an_objection_goes_round() {
    let (_dir, node) = crate::intake::intake_node_with(|config| {
        let catalogue = config.data_dir.join("catalog.toml");
        std::fs::write(&catalogue, crate::governance::catalogue_without_tax()).unwrap();
        config.catalog_file = Some(catalogue);
        let calendar = config.data_dir.join("calendar.toml");
        std::fs::write(&calendar, crate::governance::LATER_YEARS).unwrap();
        config.governance.calendar_file = Some(calendar);
    })
    .await;
    let base = format!("http://{}", node.api_addr().unwrap());
    let filing = sample("housing", "contract-filing", 7).unwrap();
    let buyer_name = filing["buyers"][0]["name"].as_str().unwrap().to_owned();
    let sent = support::post(&format!("{base}/v1/housing/contract-filing"), "housing", &filing).await;
    assert_eq!(sent.status(), 202);
    let key = property_unit_number(7);
    let http = reqwest::Client::new();
    support::eventually("the filing in the shared view", Duration::from_secs(60), || async {
        let url = format!("{base}/v1/resources/{FILINGS}/records/{key}?purpose=x");
        let response = http.get(url).bearer_auth(token("land-registry")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let browser = Browser::start().await;
    // The session cookie: HttpOnly, SameSite=Strict, for the console's path only.
    browser.sign_in(&base, "tax").await;
    browser.screenshot("home").await;
    let cookie = browser.cookie(govex::console::COOKIE).await;
    assert_eq!((cookie["httpOnly"].as_bool(), cookie["sameSite"].as_str()), (Some(true), Some("Strict")), "{cookie}");
    assert_eq!(cookie["path"], "/console");

    // 1. Before any request, tax's read is refused.
    let status = browser.read(&base, &key).await;
    assert!(status.starts_with("403"), "{status}");

    // 2. Tax files a request for the buyers' names.
    browser.go(&format!("{base}/console/requests")).await;
    browser.click(&format!("#resource option[value='{FILINGS}']")).await;
    browser.fill("#purpose", "契税征收核验").await;
    browser.fill("#fields", "buyers[].name").await;
    let until = govex_sinks::governance::today() + chrono::Days::new(60);
    browser.set("#until", &until.to_string()).await;
    browser.click("#file").await;
    let mine = browser.wait_for("#all-requests", "pending").await;
    assert!(mine.contains(FILINGS), "{mine}");

    // A form without this session's CSRF token is refused, even with the session's cookie.
    let session = browser.cookie(govex::console::COOKIE).await["value"].as_str().unwrap().to_owned();
    let forged = http
        .post(format!("{base}/console/requests"))
        .header("cookie", format!("{}={session}", govex::console::COOKIE))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf=forged&resource={FILINGS}&purpose=x&until={until}"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    // A form posted from another site's page is refused before it is read, a sign-in too; and
    // no console page may be framed, cached or run a script.
    let cross_site = http
        .post(format!("{base}/console/login"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", token("tax")))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    let page = http.get(format!("{base}/console/")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    browser.sign_out().await;

    // 3. Housing answers: no personal field, approved, with a reason.
    browser.sign_in(&base, "housing").await;
    browser.go(&format!("{base}/console/requests")).await;
    let waiting = browser.text("#to-answer").await;
    assert!(waiting.contains("tax") && waiting.contains("buyers[].name"), "{waiting}");
    browser.screenshot("requests").await;
    browser.fill("#to-answer form.decide input[name='fields']", "").await;
    browser.fill("#to-answer form.decide input[name='reason']", "核验契税只需合同金额，不含个人信息").await;
    browser.click("#to-answer form.decide button").await;
    browser.wait_for("#all-requests", "approved").await;
    browser.sign_out().await;

    // 4. Tax's first read: allowed, the buyers' names masked.
    browser.sign_in(&base, "tax").await;
    let status = browser.read(&base, &key).await;
    assert!(status.starts_with("200") && status.contains("personal data masked"), "{status}");
    let record = browser.text("#record").await;
    assert!(record.contains("buyers") && !record.contains(&buyer_name), "{record}");

    // 5. Tax objects to the price; the record reads disputed.
    browser.go(&format!("{base}/console/objections")).await;
    browser.fill("#objection-resource", FILINGS).await;
    browser.fill("#objection-key", &key).await;
    browser.fill("#objection-pointer", "/total_price").await;
    browser.fill("#objection-reason", "与完税凭证金额不符").await;
    browser.click("#object").await;
    let raised = browser.wait_for("#objections", "open").await;
    assert!(raised.contains("/total_price"), "{raised}");
    assert!(browser.read(&base, &key).await.contains("disputed"));
    browser.sign_out().await;

    // 6. Housing resolves it as rejected, with a reason; the flag clears.
    browser.sign_in(&base, "housing").await;
    browser.go(&format!("{base}/console/objections")).await;
    browser.screenshot("objections").await;
    browser.click("#objections form.resolve option[value='rejected']").await;
    browser.fill("#objections form.resolve input[name='reason']", "金额与备案合同一致").await;
    browser.click("#objections form.resolve button").await;
    browser.wait_for("#objections", "金额与备案合同一致").await;
    browser.go(&format!("{base}/console/usage")).await;
    assert_eq!(browser.text("#on-time").await, "1 of 1 on time (100 %)");
    browser.screenshot("usage").await;
    browser.go(&format!("{base}/console/catalogue")).await;
    assert!(browser.text("#catalogue").await.contains(FILINGS));
    browser.screenshot("catalogue").await;
    browser.sign_out().await;

    // 7. Tax reads it undisputed; a steward sees the dead-letter page.
    browser.sign_in(&base, "tax").await;
    let status = browser.read(&base, &key).await;
    assert!(status.starts_with("200") && !status.contains("disputed"), "{status}");
    browser.sign_out().await;
    browser.sign_in(&base, "steward").await;
    browser.go(&format!("{base}/console/dead-letters")).await;
    browser.find("#replay-all-button").await;
    browser.screenshot("dead-letters").await;
    node.shutdown().await.unwrap();
}

/// One token signing in again and again keeps at most 16 console sessions: its oldest is
/// signed out, its 16 newest stay, and another department's session is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signing_in_again_and_again_keeps_sixteen_sessions_and_pushes_out_only_its_own() {
    use crate::child::{child_config, child_token, ChildNode};
    let dir = tempfile::tempdir().unwrap();
    let node = ChildNode::start(dir.path(), &child_config(dir.path(), None)).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let sign_in = |token: String| {
        let http = http.clone();
        let url = format!("{}/console/login", node.api);
        async move {
            let answer = http
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 303, "signed in");
            let cookie = answer.headers()["set-cookie"].to_str().unwrap();
            cookie.split(';').next().unwrap().to_owned()
        }
    };
    let signed_in = |cookie: String| {
        let http = http.clone();
        let url = format!("{}/console/", node.api);
        async move {
            let page = http.get(url).header("cookie", cookie).send().await.unwrap().text().await.unwrap();
            page.contains("Signed in as")
        }
    };
    let housing = sign_in(child_token("housing")).await;
    let mut tax = Vec::new();
    for _ in 0..17 {
        tax.push(sign_in(child_token("tax")).await);
    }
    assert!(!signed_in(tax[0].clone()).await, "the oldest of the 17 was signed out");
    for cookie in &tax[1..] {
        assert!(signed_in(cookie.clone()).await, "the 16 newest stay");
    }
    assert!(signed_in(housing).await, "another token's session stays");
}

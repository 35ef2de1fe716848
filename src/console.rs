//! The console at `/console/`: pages for the people who answer and file requests, raise and
//! resolve objections, browse the catalogue, replay dead letters and read the usage figures.
//!
//! Server-rendered HTML with no script: every page is one request, every action one form.
//! The console holds no rule of its own. A person signs in with their department's (or a
//! steward's, or an auditor's) token; the session keeps it on the server, and every page and
//! action is a request to the node's own API router, in process, with that token. So access,
//! masking, purposes, deadlines and the use log are exactly the API's, and what the console
//! shows is what the API answered.
//!
//! Sessions: a random id in a cookie that is HttpOnly, SameSite=Strict, Path=/console (and
//! Secure when the API port serves TLS); idle for 30 minutes or 8 hours old, a session ends.
//! Every form that changes something carries the session's CSRF token, compared in constant
//! time; the sign-in form is the only form without a session.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Path, State},
    http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use govex_bus::RegistryClient;
use govex_http::auth::{new_token, Role, Tokens};
use serde_json::{json, Value};
use tower::ServiceExt as _;

/// The session cookie's name.
pub const COOKIE: &str = "govex_console";
/// A session unused this long ends.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however used.
const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions held at once; a sign-in past it is refused (no one's session is pushed out by
/// another's sign-ins).
const MAX_SESSIONS: usize = 1_000;
/// Sessions one token holds at once; a sign-in past it ends that token's oldest session.
const MAX_SESSIONS_PER_TOKEN: usize = 16;
/// The largest form the console reads.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// The largest API answer a page renders.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

struct Session {
    token: String,
    who: String,
    role: Role,
    csrf: String,
    started: Instant,
    used: Instant,
}

/// What the console needs: the node's API (to ask it as the signed-in person), the tokens (to
/// sign in), the registry (for the catalogue's schema versions).
pub struct Console {
    api: Router,
    tokens: Tokens,
    registry: RegistryClient,
    secure: bool,
    sessions: Mutex<HashMap<String, Session>>,
}

/// The routes the console serves, as the API port lists them.
pub const ROUTES: &[&str] = &[
    "GET /console",
    "GET /console/",
    "POST /console/login",
    "POST /console/logout",
    "GET /console/requests",
    "POST /console/requests",
    "POST /console/requests/{id}/decision",
    "POST /console/requests/{id}/revoke",
    "POST /console/read",
    "GET /console/objections",
    "POST /console/objections",
    "POST /console/objections/{id}/resolution",
    "GET /console/catalogue",
    "GET /console/dead-letters",
    "POST /console/dead-letters/replay",
    "GET /console/usage",
];

/// The console's routes over `api`, the node's API router. `secure`: the port serves TLS.
pub fn router(api: Router, tokens: Tokens, registry: RegistryClient, secure: bool) -> Router {
    let console = Arc::new(Console { api, tokens, registry, secure, sessions: Mutex::default() });
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(home))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
        .route("/console/requests", get(requests).post(file_request))
        .route("/console/requests/{id}/decision", post(decide))
        .route("/console/requests/{id}/revoke", post(revoke))
        .route("/console/read", post(read))
        .route("/console/objections", get(objections).post(raise))
        .route("/console/objections/{id}/resolution", post(resolve))
        .route("/console/catalogue", get(catalogue))
        .route("/console/dead-letters", get(dead_letters))
        .route("/console/dead-letters/replay", post(replay))
        .route("/console/usage", get(usage))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn(guarded))
        .with_state(console)
}

/// Every console answer: not cached, not framed, not sniffed, no referrer to another site (a
/// `no-referrer` policy would make the browser send `Origin: null` with its own forms), no
/// script; and a
/// form posted from another origin is refused before it is read (a sign-in included).
async fn guarded(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if request.method() == Method::POST && !same_origin(request.headers()) {
        return (StatusCode::FORBIDDEN, "a console form is posted from the console's own pages").into_response();
    }
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Whether a form comes from a page of this host: its `Origin` (browsers send it with every
/// POST) names the `Host` it is sent to. A request without `Origin` is a tool's, not a
/// browser's, and has no cookie a browser would add for another site.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    !host.is_empty() && authority == host
}

/// `text` safe inside HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as page text: strings as they are, null as a dash, the rest as JSON.
fn show(value: &Value) -> String {
    esc(&match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            items.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The signed-in person of a request: (their token, who, role, CSRF token).
struct Signed {
    token: String,
    who: String,
    role: Role,
    csrf: String,
}

/// A form's fields.
struct Form(HashMap<String, String>);

impl Form {
    fn parse(body: &Bytes) -> Result<Self, Box<Response>> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|_| Box::new((StatusCode::BAD_REQUEST, "the form does not read").into_response()))?;
        Ok(Self(pairs.into_iter().collect()))
    }

    fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or_default().trim()
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name).split(',').map(str::trim).filter(|f| !f.is_empty()).map(str::to_owned).collect()
    }
}

impl Console {
    fn session_id(headers: &HeaderMap) -> Option<String> {
        let cookies = headers.get_all(header::COOKIE);
        cookies
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')).map(str::to_owned))
    }

    /// The session of `headers`, if one is running (and it is used now).
    fn signed(&self, headers: &HeaderMap) -> Option<Signed> {
        let id = Self::session_id(headers)?;
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let session = sessions.get_mut(&id)?;
        if now.duration_since(session.used) > IDLE || now.duration_since(session.started) > LIFETIME {
            sessions.remove(&id);
            return None;
        }
        // A token revoked since sign-in ends the session at its next page.
        if self.tokens.authenticate_token(&session.token).is_err() {
            sessions.remove(&id);
            return None;
        }
        session.used = now;
        Some(Signed {
            token: session.token.clone(),
            who: session.who.clone(),
            role: session.role,
            csrf: session.csrf.clone(),
        })
    }

    /// The session of a form that changes something: signed in, and the form's CSRF token is
    /// the session's.
    fn signed_form(&self, headers: &HeaderMap, form: &Form) -> Result<Signed, Box<Response>> {
        let Some(signed) = self.signed(headers) else {
            return Err(Box::new(Redirect::to("/console/").into_response()));
        };
        if !constant_time_eq(form.get("csrf").as_bytes(), signed.csrf.as_bytes()) {
            let refused = (StatusCode::FORBIDDEN, "the form is not this session's (CSRF token): reload the page");
            return Err(Box::new(refused.into_response()));
        }
        Ok(signed)
    }

    /// Asks the node's API as `signed`; the status and the JSON answer.
    async fn ask(&self, signed: &Signed, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", signed.token));
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let Ok(request) = request.body(body) else {
            return (StatusCode::BAD_REQUEST, json!({"title": "the request cannot be made"}));
        };
        let Ok(response) = self.api.clone().oneshot(request).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES).await.unwrap_or_default();
        let value = serde_json::from_slice(&bytes).unwrap_or_else(
            |_| json!({"title": String::from_utf8_lossy(&bytes).chars().take(500).collect::<String>()}),
        );
        (status, value)
    }

    fn page(&self, signed: Option<&Signed>, title: &str, notice: Option<&str>, body: &str) -> Html<String> {
        let nav = match signed {
            Some(s) => format!(
                r#"<nav><a href="/console/">Home</a> <a href="/console/requests">Requests</a> <a href="/console/objections">Objections</a> <a href="/console/catalogue">Catalogue</a> <a href="/console/dead-letters">Dead letters</a> <a href="/console/usage">Usage</a>
<form method="post" action="/console/logout" class="inline"><input type="hidden" name="csrf" value="{}"><span id="who">{} ({})</span> <button id="sign-out">Sign out</button></form></nav>"#,
                esc(&s.csrf),
                esc(&s.who),
                s.role.as_str()
            ),
            None => String::new(),
        };
        let notice = notice.map(|n| format!(r#"<p class="notice" id="notice">{}</p>"#, esc(n))).unwrap_or_default();
        Html(format!(
            r#"<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title} · govex</title><style>
body{{font:15px/1.4 system-ui,sans-serif;margin:0 2em 2em;color:#222}} nav{{padding:.6em 0;border-bottom:1px solid #ccc;margin-bottom:1em}} nav a{{margin-right:1em}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}} td,th{{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}} th{{background:#f4f4f4}}
.notice{{background:#fff4d6;border:1px solid #e5c07b;padding:.5em}} .inline{{display:inline;float:right}} input,select{{margin:.1em}} pre{{background:#f7f7f7;padding:.5em}}
</style></head><body>{nav}<h1>{title}</h1>{notice}{body}</body></html>"#,
            title = esc(title)
        ))
    }

    /// The answer to an API refusal, as a notice: its title, detail and the rules it names.
    fn refusal(status: StatusCode, answer: &Value) -> String {
        let mut text = format!("{} {}", status.as_u16(), answer["title"].as_str().unwrap_or_default());
        if let Some(detail) = answer["detail"].as_str() {
            text.push_str(&format!(": {detail}"));
        }
        for error in answer["errors"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                " [{} {}: {}]",
                error["pointer"].as_str().unwrap_or_default(),
                error["rule"].as_str().unwrap_or_default(),
                error["message"].as_str().unwrap_or_default()
            ));
        }
        text
    }
}

fn csrf_field(signed: &Signed) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(&signed.csrf))
}

fn table(headers: &[&str], rows: &[String], id: &str) -> String {
    let head: String = headers.iter().map(|h| format!("<th>{}</th>", esc(h))).collect();
    if rows.is_empty() {
        return format!(r#"<p id="{id}">None.</p>"#);
    }
    format!(r#"<table id="{id}"><tr>{head}</tr>{}</table>"#, rows.concat())
}

/// After an action: back to `page` when the API took it, or the page again with why not.
async fn after(console: &Console, headers: &HeaderMap, page: &str, (status, answer): (StatusCode, Value)) -> Response {
    if status.is_success() {
        return Redirect::to(page).into_response();
    }
    let notice = Console::refusal(status, &answer);
    let Some(signed) = console.signed(headers) else { return Redirect::to("/console/").into_response() };
    let mut response = match page {
        "/console/objections" => objections_page(console, &signed, Some(&notice)).await,
        "/console/dead-letters" => dead_letters_page(console, &signed, Some(&notice)).await,
        _ => requests_page(console, &signed, Some(&notice)).await,
    }
    .into_response();
    *response.status_mut() = status;
    response
}

async fn home(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(signed) = console.signed(&headers) else {
        let body = r#"<p>Sign in with the token your department (or your steward or auditor office) was given. It stays on the server for this session.</p>
<form method="post" action="/console/login"><label>Token <input type="password" name="token" id="token" autocomplete="off" required></label> <button id="sign-in">Sign in</button></form>"#;
        return console.page(None, "govex console", None, body).into_response();
    };
    let body = format!(
        r#"<p>Signed in as <b>{}</b>, role {}.</p><ul>
<li><a href="/console/requests">Requests</a>: file a request for a conditional resource, answer those for yours (申请/审核), revoke.</li>
<li><a href="/console/objections">Objections</a>: object to a shared record, resolve objections to yours (数据异议).</li>
<li><a href="/console/catalogue">Catalogue</a>: every resource, its sharing class, personal fields and schema versions.</li>
<li><a href="/console/dead-letters">Dead letters</a>: what the sinks refused and why; replay (stewards).</li>
<li><a href="/console/usage">Usage</a>: reads by resource, department and purpose, and on-time answers (按期办结率).</li></ul>"#,
        esc(&signed.who),
        signed.role.as_str()
    );
    console.page(Some(&signed), "govex console", None, &body).into_response()
}

async fn login(State(console): State<Arc<Console>>, body: Bytes) -> Response {
    let form = match Form::parse(&body) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    let token = form.get("token").to_owned();
    let (who, role) = match console.tokens.authenticate_token(&token) {
        Ok(caller) => {
            let who = match caller.label {
                Some(label) => format!("{} · {label}", caller.department),
                None => caller.department.to_string(),
            };
            (who, caller.role)
        }
        Err(_) => {
            tracing::warn!("a console sign-in with an unknown token");
            let page = console.page(
                None,
                "govex console",
                Some("That token is not known here."),
                r#"<p><a href="/console/">Try again</a></p>"#,
            );
            return (StatusCode::UNAUTHORIZED, page).into_response();
        }
    };
    if role == Role::Operator {
        // An operator's token takes backups; it reads nothing a console shows.
        let page = console.page(
            None,
            "govex console",
            Some("An operator's token has no console: it takes backups (govex backup)."),
            r#"<p><a href="/console/">Back</a></p>"#,
        );
        return (StatusCode::FORBIDDEN, page).into_response();
    }
    let id = new_token();
    let now = Instant::now();
    {
        let mut sessions = console.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| now.duration_since(s.used) <= IDLE && now.duration_since(s.started) <= LIFETIME);
        // A token signing in again and again pushes out its own oldest sessions, no one else's.
        let mine: Vec<(Instant, String)> =
            sessions.iter().filter(|(_, s)| s.token == token).map(|(id, s)| (s.used, id.clone())).collect();
        if mine.len() >= MAX_SESSIONS_PER_TOKEN {
            if let Some((_, oldest)) = mine.into_iter().min() {
                sessions.remove(&oldest);
            }
        }
        if sessions.len() >= MAX_SESSIONS {
            let page = console.page(None, "govex console", Some("Too many people are signed in; try again later."), "");
            return (StatusCode::SERVICE_UNAVAILABLE, page).into_response();
        }
        sessions.insert(id.clone(), Session { token, who, role, csrf: new_token(), started: now, used: now });
    }
    let secure = if console.secure { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={}{secure}", LIFETIME.as_secs());
    let mut response = Redirect::to("/console/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn logout(State(console): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match Form::parse(&body) {
        Ok(form) => form,
        Err(refused) => return *refused,
    };
    if console.signed_form(&headers, &form).is_ok() {
        if let Some(id) = Console::session_id(&headers) {
            console.sessions.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        }
    }
    let mut response = Redirect::to("/console/").into_response();
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/console; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The page of `signed` or the sign-in page.
macro_rules! signed_or_sign_in {
    ($console:expr, $headers:expr) => {
        match $console.signed(&$headers) {
            Some(signed) => signed,
            None => return Redirect::to("/console/").into_response(),
        }
    };
}

/// A form's body, signed: or the answer that refuses it.
macro_rules! signed_form {
    ($console:expr, $headers:expr, $body:expr) => {{
        let form = match Form::parse(&$body) {
            Ok(form) => form,
            Err(refused) => return *refused,
        };
        match $console.signed_form(&$headers, &form) {
            Ok(signed) => (signed, form),
            Err(refused) => return *refused,
        }
    }};
}

async fn requests(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let signed = signed_or_sign_in!(console, headers);
    requests_page(&console, &signed, None).await.into_response()
}

async fn requests_page(console: &Console, signed: &Signed, notice: Option<&str>) -> Html<String> {
    if signed.role != Role::Department {
        return console.page(
            Some(signed),
            "Requests",
            notice,
            "<p>Requests are filed and answered by departments.</p>",
        );
    }
    let (_, catalog) = console.ask(signed, Method::GET, "/catalog", None).await;
    let me = signed.who.split(' ').next().unwrap_or_default().to_owned();
    let options: String = catalog["resource"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["owner"] != me.as_str() && r["sharing"] != "not_shared")
        .map(|r| {
            format!(
                r#"<option value="{0}">{0} ({1}; personal: {2})</option>"#,
                show(&r["id"]),
                show(&r["sharing"]),
                show(&r["personal_fields"])
            )
        })
        .collect();
    let csrf = csrf_field(signed);
    let file = format!(
        r#"<h2>File a request</h2><form method="post" action="/console/requests" id="file-request">{csrf}
<label>Resource <select name="resource" id="resource">{options}</select></label><br>
<label>Purpose <input name="purpose" id="purpose" size="40" required></label><br>
<label>Personal fields (comma-separated, as the catalogue names them) <input name="fields" id="fields" size="40"></label><br>
<label>Until <input type="date" name="until" id="until" required></label><br><button id="file">File the request</button></form>"#
    );
    let (status, pending) = console.ask(signed, Method::GET, "/v1/subscriptions?as=owner&state=pending", None).await;
    let mut body = file;
    if !status.is_success() {
        body.push_str(&format!("<p>{}</p>", esc(&Console::refusal(status, &pending))));
    }
    let rows: Vec<String> = pending["subscriptions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let id = show(&s["id"]);
            format!(
                r#"<tr data-id="{id}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>
<form method="post" action="/console/requests/{id}/decision" class="decide">{csrf}
<select name="decision"><option value="approve">approve</option><option value="reject">reject</option></select>
<label>fields <input name="fields" value="{}" size="20"></label> <label>until <input type="date" name="until" value="{}"></label>
<label>reason <input name="reason" size="20"></label> <button>Answer</button></form></td></tr>"#,
                show(&s["consumer"]),
                show(&s["resource"]),
                show(&s["purpose"]),
                show(&s["fields"]),
                show(&s["until"]),
                show(&s["due"]),
                if s["overdue"] == true { " <b>overdue</b>" } else { "" },
                show(&s["fields"]),
                show(&s["until"]),
            )
        })
        .collect();
    body.push_str("<h2>Waiting for your answer</h2>");
    body.push_str(&table(
        &["From", "Resource", "Purpose", "Fields asked", "Until", "Due", "Answer"],
        &rows,
        "to-answer",
    ));
    let (_, all) = console.ask(signed, Method::GET, "/v1/subscriptions", None).await;
    let all = all["subscriptions"].as_array().cloned().unwrap_or_default();
    let rows: Vec<String> = all
        .iter()
        .map(|s| {
            let revoke = if s["owner"] == me.as_str() && s["state"] == "approved" {
                format!(
                    r#"<form method="post" action="/console/requests/{}/revoke">{csrf}<input name="reason" placeholder="reason" size="14"> <button>Revoke</button></form>"#,
                    show(&s["id"])
                )
            } else {
                String::new()
            };
            format!(
                r#"<tr data-id="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="state">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{revoke}</td></tr>"#,
                show(&s["id"]),
                show(&s["consumer"]),
                show(&s["owner"]),
                show(&s["resource"]),
                show(&s["purpose"]),
                show(&s["state"]),
                show(&s["granted_fields"]),
                show(&s["granted_until"]),
                show(&s["reason"]),
                show(&s["answered_on_time"]),
            )
        })
        .collect();
    body.push_str("<h2>Every request you filed or own</h2>");
    body.push_str(&table(
        &[
            "Id",
            "Consumer",
            "Owner",
            "Resource",
            "Purpose",
            "State",
            "Granted fields",
            "Granted until",
            "Reason",
            "On time",
            "",
        ],
        &rows,
        "all-requests",
    ));
    body.push_str(
        &format!(r#"<h2>Read a record</h2><form method="post" action="/console/read" id="read-form">{csrf}
<label>Resource <input name="resource" id="read-resource" size="30"></label> <label>Key <input name="key" id="read-key" size="30"></label>
<label>Purpose <input name="purpose" id="read-purpose" size="20"></label> <button id="read">Read</button></form>"#),
    );
    console.page(Some(signed), "Requests", notice, &body)
}

async fn file_request(State(console): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let (signed, form) = signed_form!(console, headers, body);
    let request = json!({
        "resource": form.get("resource"),
        "purpose": form.get("purpose"),
        "fields": form.list("fields"),
        "until": form.get("until"),
    });
    let answer = console.ask(&signed, Method::POST, "/v1/subscriptions", Some(request)).await;
    after(&console, &headers, "/console/requests", answer).await
}

/// An id as one path segment of an API route: anything else is refused before it is asked.
fn segment(id: &str) -> Option<&str> {
    (!id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')).then_some(id)
}

async fn decide(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (signed, form) = signed_form!(console, headers, body);
    let Some(id) = segment(&id) else { return StatusCode::NOT_FOUND.into_response() };
    let mut decision = json!({"decision": form.get("decision"), "fields": form.list("fields")});
    if !form.get("until").is_empty() {
        decision["until"] = json!(form.get("until"));
    }
    if !form.get("reason").is_empty() {
        decision["reason"] = json!(form.get("reason"));
    }
    let answer = console.ask(&signed, Method::POST, &format!("/v1/subscriptions/{id}/decision"), Some(decision)).await;
    after(&console, &headers, "/console/requests", answer).await
}

async fn revoke(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (signed, form) = signed_form!(console, headers, body);
    let Some(id) = segment(&id) else { return StatusCode::NOT_FOUND.into_response() };
    let reason = json!({"reason": form.get("reason")});
    let answer = console.ask(&signed, Method::POST, &format!("/v1/subscriptions/{id}/revoke"), Some(reason)).await;
    after(&console, &headers, "/console/requests", answer).await
}

/// `POST /console/read` (resource, key, purpose): one record of the shared view, as the API
/// shows it to this department (masked as its grants say). A form, not a link: a read is
/// logged with its purpose, and neither belongs in a URL, a history or another page's hands.
async fn read(State(console): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let (signed, form) = signed_form!(console, headers, body);
    let path = format!(
        "/v1/resources/{}/records/{}?{}",
        urlencode(form.get("resource")),
        urlencode(form.get("key")),
        serde_urlencoded::to_string([("purpose", form.get("purpose"))]).unwrap_or_default()
    );
    let (status, answer) = console.ask(&signed, Method::GET, &path, None).await;
    let body = if status.is_success() {
        format!(
            r#"<p id="read-status">200: read{}{}</p><pre id="record">{}</pre>"#,
            if answer["personal_data_masked"] == true { ", personal data masked" } else { "" },
            if answer["disputed"].as_array().is_some_and(|d| !d.is_empty()) { ", disputed" } else { "" },
            esc(&serde_json::to_string_pretty(&answer).unwrap_or_default())
        )
    } else {
        format!(r#"<p id="read-status">{}</p>"#, esc(&Console::refusal(status, &answer)))
    };
    let mut response = console.page(Some(&signed), "Read a record", None, &body).into_response();
    *response.status_mut() = status;
    response
}

fn urlencode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn objections(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let signed = signed_or_sign_in!(console, headers);
    objections_page(&console, &signed, None).await.into_response()
}

async fn objections_page(console: &Console, signed: &Signed, notice: Option<&str>) -> Html<String> {
    if signed.role != Role::Department {
        return console.page(
            Some(signed),
            "Objections",
            notice,
            "<p>Objections are raised and resolved by departments.</p>",
        );
    }
    let csrf = csrf_field(signed);
    let mut body = format!(
        r#"<h2>Object to a record (数据异议)</h2><form method="post" action="/console/objections" id="raise">{csrf}
<label>Resource <input name="resource" id="objection-resource" size="30" required></label> <label>Key <input name="key" id="objection-key" size="30" required></label><br>
<label>Field (JSON pointer) <input name="pointer" id="objection-pointer" size="30" required></label> <label>Reason <input name="reason" id="objection-reason" size="40" required></label>
<button id="object">Object</button></form>"#
    );
    let (_, listed) = console.ask(signed, Method::GET, "/v1/objections", None).await;
    let me = signed.who.split(' ').next().unwrap_or_default().to_owned();
    let rows: Vec<String> = listed["objections"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let id = show(&o["id"]);
            let resolve = if o["owner"] == me.as_str() && o["outcome"] == "open" {
                format!(
                    r#"<form method="post" action="/console/objections/{id}/resolution" class="resolve">{csrf}
<select name="outcome"><option value="corrected">corrected</option><option value="rejected">rejected</option></select>
<label>correcting event id <input name="correcting_event_id" size="20"></label> <label>reason <input name="reason" size="20"></label> <button>Resolve</button></form>"#
                )
            } else {
                String::new()
            };
            format!(
                r#"<tr data-id="{id}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="outcome">{}</td><td>{}</td><td>{resolve}</td></tr>"#,
                show(&o["raised_by"]),
                show(&o["owner"]),
                show(&o["resource"]),
                show(&o["key"]),
                show(&o["pointer"]),
                show(&o["reason"]),
                show(&o["outcome"]),
                show(&o["resolution"]),
            )
        })
        .collect();
    body.push_str("<h2>Objections you raised or must resolve</h2>");
    body.push_str(&table(
        &["Raised by", "Owner", "Resource", "Key", "Field", "Reason", "Outcome", "Resolution", ""],
        &rows,
        "objections",
    ));
    console.page(Some(signed), "Objections", notice, &body)
}

async fn raise(State(console): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let (signed, form) = signed_form!(console, headers, body);
    let objection = json!({
        "resource": form.get("resource"),
        "key": form.get("key"),
        "pointer": form.get("pointer"),
        "reason": form.get("reason"),
    });
    let answer = console.ask(&signed, Method::POST, "/v1/objections", Some(objection)).await;
    after(&console, &headers, "/console/objections", answer).await
}

async fn resolve(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let (signed, form) = signed_form!(console, headers, body);
    let Some(id) = segment(&id) else { return StatusCode::NOT_FOUND.into_response() };
    let mut resolution = json!({"outcome": form.get("outcome")});
    for name in ["correcting_event_id", "reason"] {
        if !form.get(name).is_empty() {
            resolution[name] = json!(form.get(name));
        }
    }
    let path = format!("/v1/objections/{id}/resolution");
    let answer = console.ask(&signed, Method::POST, &path, Some(resolution)).await;
    after(&console, &headers, "/console/objections", answer).await
}

async fn catalogue(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let signed = signed_or_sign_in!(console, headers);
    let (_, catalog) = console.ask(&signed, Method::GET, "/catalog", None).await;
    let mut rows = Vec::new();
    for resource in catalog["resource"].as_array().into_iter().flatten() {
        let subject = format!("{}-value", resource["topic"].as_str().unwrap_or_default());
        let versions = match console.registry.versions(&subject).await {
            Ok(versions) => {
                let mut shown = Vec::new();
                for version in &versions {
                    match console.registry.version(&subject, &version.to_string()).await {
                        Ok(v) => shown.push(format!(
                            "<details><summary>v{} (id {})</summary><pre>{}</pre></details>",
                            v.version,
                            v.id,
                            esc(&pretty(&v.schema))
                        )),
                        Err(e) => shown.push(format!("v{version}: {}", esc(&e.to_string()))),
                    }
                }
                shown.concat()
            }
            Err(e) => esc(&e.to_string()),
        };
        rows.push(format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{versions}</td></tr>",
            show(&resource["id"]),
            show(&resource["owner"]),
            show(&resource["sharing"]),
            show(&resource["subscribers"]),
            show(&resource["personal_fields"]),
            show(&resource["topic"]),
        ));
    }
    let body = table(
        &["Resource", "Owner", "Sharing", "Subscribers", "Personal fields", "Topic", "Schema versions"],
        &rows,
        "catalogue",
    );
    console.page(Some(&signed), "Catalogue", None, &body).into_response()
}

fn pretty(schema: &str) -> String {
    serde_json::from_str::<Value>(schema)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| schema.to_owned())
}

async fn dead_letters(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let signed = signed_or_sign_in!(console, headers);
    dead_letters_page(&console, &signed, None).await.into_response()
}

async fn dead_letters_page(console: &Console, signed: &Signed, notice: Option<&str>) -> Html<String> {
    let (status, listed) = console.ask(signed, Method::GET, "/v1/dead-letters?limit=200", None).await;
    if !status.is_success() {
        let body = format!("<p>{}</p>", esc(&Console::refusal(status, &listed)));
        return console.page(Some(signed), "Dead letters", notice, &body);
    }
    let csrf = csrf_field(signed);
    let steward = signed.role == Role::Steward;
    let rows: Vec<String> = listed["dead_letters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let id = show(&l["id"]);
            let action = if steward && l["replayed"].is_null() {
                format!(
                    r#"<form method="post" action="/console/dead-letters/replay">{csrf}<input type="hidden" name="id" value="{id}"><button>Replay</button></form>"#
                )
            } else {
                String::new()
            };
            format!(
                "<tr><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{action}</td></tr>",
                show(&l["from"]["topic"]),
                show(&l["component"]),
                show(&l["stage"]),
                show(&l["class"]),
                show(&l["message"]),
                show(&l["key"]),
                if l["replayed"].is_null() { "open".to_owned() } else { format!("replayed ×{}", show(&l["replayed"]["times"])) },
            )
        })
        .collect();
    let mut body = format!(
        "<p>{} dead letters{}.</p>",
        listed["total"],
        if listed["more"] == true { " (the first 200 shown)" } else { "" }
    );
    if steward {
        body.push_str(&format!(
            r#"<form method="post" action="/console/dead-letters/replay" id="replay-all">{csrf}<input type="hidden" name="all" value="true"><button id="replay-all-button">Replay every open dead letter</button></form>"#
        ));
    }
    body.push_str(&table(
        &["Id", "Topic", "Component", "Stage", "Class", "Message", "Key (masked)", "State", ""],
        &rows,
        "dead-letters",
    ));
    console.page(Some(signed), "Dead letters", notice, &body)
}

async fn replay(State(console): State<Arc<Console>>, headers: HeaderMap, body: Bytes) -> Response {
    let (signed, form) = signed_form!(console, headers, body);
    let request = if form.get("all") == "true" { json!({"all": true}) } else { json!({"ids": [form.get("id")]}) };
    let answer = console.ask(&signed, Method::POST, "/v1/dead-letters/replay", Some(request)).await;
    after(&console, &headers, "/console/dead-letters", answer).await
}

async fn usage(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let signed = signed_or_sign_in!(console, headers);
    let (status, usage) = console.ask(&signed, Method::GET, "/v1/usage", None).await;
    let mut body = String::new();
    if status.is_success() {
        let rows: Vec<String> = usage["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    show(&r["resource"]),
                    show(&r["department"]),
                    show(&r["category"]),
                    show(&r["action"]),
                    show(&r["count"])
                )
            })
            .collect();
        body.push_str("<h2>Reads</h2>");
        body.push_str(&table(&["Resource", "Department", "Purpose category", "Action", "Count"], &rows, "usage"));
    } else {
        body.push_str(&format!("<p>{}</p>", esc(&Console::refusal(status, &usage))));
    }
    if signed.role == Role::Department {
        let (_, owned) = console.ask(&signed, Method::GET, "/v1/subscriptions?as=owner", None).await;
        let answered: Vec<bool> = owned["subscriptions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["answered_on_time"].as_bool())
            .collect();
        let on_time = answered.iter().filter(|on| **on).count();
        let rate = if answered.is_empty() {
            "no request answered yet".to_owned()
        } else {
            format!("{on_time} of {} on time ({:.0} %)", answered.len(), 100.0 * on_time as f64 / answered.len() as f64)
        };
        body.push_str(&format!(r#"<h2>Requests answered (按期办结率)</h2><p id="on-time">{}</p>"#, esc(&rate)));
    }
    console.page(Some(&signed), "Usage", None, &body).into_response()
}

//! Authentication: bearer tokens, kept in configuration only as SHA-256 hashes, each with a
//! department and a [`Role`]; and the per-token read limit. Shared by every HTTP API
//! (intake, e-licence store, dossiers, the schema registry).

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    http::{header, HeaderValue, StatusCode},
    response::Response,
};
use govex_schemas::http::Refusal;
use parking_lot::Mutex;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use govex_bus::Metrics;
use govex_schemas::Department;

pub use crate::config::Role;
use crate::{
    config::{ApiConfig, ReadAccess, TokenConfig},
    problem::problem,
};

/// Lower-case hex SHA-256 of a token, as configuration stores it.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (256 bits, hex).
pub fn new_token() -> String {
    let bytes: Vec<u8> =
        uuid::Uuid::new_v4().into_bytes().into_iter().chain(uuid::Uuid::new_v4().into_bytes()).collect();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token no department has.
    Unknown,
}

impl AuthError {
    /// The title and detail of the 401 answer, the same on every API.
    pub fn title_and_detail(self) -> (&'static str, &'static str) {
        match self {
            Self::Missing => ("Authentication required", "send Authorization: Bearer <token>"),
            Self::Unknown => ("Authentication failed", "the token is not valid"),
        }
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller<'a> {
    /// The token's department.
    pub department: Department,
    /// What the token may do.
    pub role: Role,
    /// The token's label, for logs.
    pub label: Option<Arc<str>>,
    /// The token's hash: the key of its read budget.
    hash: Arc<str>,
    at: std::marker::PhantomData<&'a Tokens>,
}

struct Entry {
    department: Department,
    role: Role,
    label: Option<Arc<str>>,
    hash: Arc<str>,
}

/// One set of tokens, as configured at one time.
#[derive(Default)]
struct Table {
    by_hash: HashMap<String, usize>,
    entries: Vec<Entry>,
}

/// The configured tokens, and the read limiter they share. Cheap to clone; every clone sees
/// a [`reload`](Self::reload) at once, so a revoked token is refused by every API of the
/// process from the next request on.
#[derive(Clone, Default)]
pub struct Tokens {
    table: Arc<parking_lot::RwLock<Arc<Table>>>,
    limiter: Option<Arc<ReadLimiter>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").field("count", &self.len()).finish_non_exhaustive()
    }
}

impl Tokens {
    /// Reads `intake.tokens`; an error names the entry and what is wrong with it. The same
    /// hash twice is an error naming both entries: one token cannot be two departments, and
    /// a copy-pasted entry would otherwise silently decide which of them wins.
    pub fn from_config(tokens: &[TokenConfig]) -> Result<Self, String> {
        Self::from_config_named(tokens, |i| format!("intake.tokens[{i}]"))
    }

    /// As [`Tokens::from_config`], with `name` saying where entry `i` came from (the config
    /// file's `intake.tokens`, or `intake.tokens_file`).
    pub fn from_config_named(tokens: &[TokenConfig], name: impl Fn(usize) -> String) -> Result<Self, String> {
        let table = Table::of(tokens, name)?;
        Ok(Self { table: Arc::new(parking_lot::RwLock::new(Arc::new(table))), limiter: None })
    }

    /// Replaces the tokens with `tokens` (checked as [`from_config_named`](Self::from_config_named)
    /// checks them; on an error nothing changes). Every clone sees the new set at once; read
    /// budgets of tokens that remain are kept. Returns how many tokens there are now.
    pub fn reload(&self, tokens: &[TokenConfig], name: impl Fn(usize) -> String) -> Result<usize, String> {
        let table = Table::of(tokens, name)?;
        let count = table.entries.len();
        if let Some(limiter) = &self.limiter {
            limiter.keep_only(&table.by_hash);
        }
        *self.table.write() = Arc::new(table);
        Ok(count)
    }

    fn current(&self) -> Arc<Table> {
        self.table.read().clone()
    }
}

impl Table {
    fn of(tokens: &[TokenConfig], name: impl Fn(usize) -> String) -> Result<Self, String> {
        let mut by_hash: HashMap<String, usize> = HashMap::new();
        let mut entries = Vec::with_capacity(tokens.len());
        for (i, token) in tokens.iter().enumerate() {
            let department: Department = token
                .department
                .parse()
                // The value is not shown: a token pasted into the wrong field would be logged.
                .map_err(|_| {
                    format!(
                        "{}.department: not a department name (lower-case letters, digits and single hyphens)",
                        name(i)
                    )
                })?;
            let hex_ok = token.sha256.len() == 64
                && token.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err(format!(
                    "{}.sha256: expected 64 lower-case hex digits (the SHA-256 of the token, not the token)",
                    name(i)
                ));
            }
            if let Some(first) = by_hash.insert(token.sha256.clone(), i) {
                return Err(format!(
                    "{}.sha256: the same token hash as {} ({} and {}); every entry needs a token of its own",
                    name(i),
                    name(first),
                    describe(&tokens[first]),
                    describe(token)
                ));
            }
            entries.push(Entry {
                department,
                role: token.role,
                label: token.label.as_deref().map(Arc::from),
                hash: Arc::from(token.sha256.as_str()),
            });
        }
        Ok(Self { by_hash, entries })
    }
}

impl Tokens {
    /// The same tokens, with every read limited as `config` says (and counted in `metrics`).
    pub fn with_read_limit(mut self, config: &ApiConfig, metrics: &Metrics) -> Self {
        self.limiter = Some(Arc::new(ReadLimiter::new(config, metrics)));
        self
    }

    /// Who an `Authorization` header value authenticates.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Caller<'_>, AuthError> {
        // The scheme's name is case-insensitive (RFC 9110 §11.1).
        let token = authorization
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        self.authenticate_token(token)
    }

    /// Who a bare token authenticates (for schemes that carry it elsewhere, such as HTTP
    /// Basic's password).
    pub fn authenticate_token(&self, token: &str) -> Result<Caller<'_>, AuthError> {
        // Hashing first makes the lookup's timing independent of how much of a guess matches.
        let table = self.current();
        let index = *table.by_hash.get(&hash_token(token)).ok_or(AuthError::Unknown)?;
        let entry = &table.entries[index];
        Ok(Caller {
            department: entry.department,
            role: entry.role,
            label: entry.label.clone(),
            hash: entry.hash.clone(),
            at: std::marker::PhantomData,
        })
    }

    /// Authenticates a read by a department system (licences, holders, verify, dossiers,
    /// use log) and takes one unit of its token's read budget. `roles` are the roles the
    /// route admits. The error is the answer to send.
    pub fn authorize_read(
        &self,
        authorization: Option<&str>,
        roles: &[Role],
        api: &'static str,
    ) -> Result<Caller<'_>, Box<Response>> {
        let caller = self.authenticate(authorization).map_err(|e| Box::new(unauthenticated(e)))?;
        if !roles.contains(&caller.role) {
            return Err(Box::new(problem(
                StatusCode::FORBIDDEN,
                "role",
                "Not allowed for this token's role",
                format!("{} token cannot call this API", caller.role.with_article()),
                Value::Null,
            )));
        }
        if let Some(limiter) = &self.limiter {
            limiter.take(&caller.hash, api).map_err(|wait| Box::new(too_many_requests(wait)))?;
        }
        Ok(caller)
    }

    /// Whether any token is configured.
    pub fn is_empty(&self) -> bool {
        self.current().entries.is_empty()
    }

    /// How many distinct tokens are configured.
    pub fn len(&self) -> usize {
        self.current().entries.len()
    }
}

/// Refuses a request without a valid token before anything reads its body: an anonymous
/// caller can make the node buffer nothing. The routes still check the role, the budget and
/// everything else themselves.
pub async fn require_token(
    axum::extract::State(tokens): axum::extract::State<Tokens>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match tokens.authenticate(authorization) {
        Ok(_) => next.run(request).await,
        Err(error) => unauthenticated(error),
    }
}

fn describe(token: &TokenConfig) -> String {
    match &token.label {
        Some(label) => format!("department {}, label {label}", token.department),
        None => format!("department {}", token.department),
    }
}

/// The 401 answer for a request that is not authenticated.
pub fn unauthenticated(error: AuthError) -> Response {
    let (title, detail) = error.title_and_detail();
    problem(StatusCode::UNAUTHORIZED, "unauthenticated", title, detail, Value::Null)
}

/// The 429 answer, with `Retry-After` in whole seconds (at least 1).
pub fn too_many_requests(wait: Duration) -> Response {
    let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut response = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        format!("this token's read limit is spent; retry after {seconds} s"),
        Value::Null,
    );
    if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Who may use the node's schema registry over HTTP: writes need a steward's token (as
/// `Bearer`, or as the password of HTTP Basic, which Confluent's clients send with
/// `basic.auth.user.info`), and are refused altogether where `registry.http_writes` is off;
/// reads are open or need any token, as `registry.read_access` says.
pub struct RegistryAccess {
    /// The node's tokens.
    pub tokens: Tokens,
    /// `registry.http_writes`.
    pub http_writes: bool,
    /// `registry.read_access`.
    pub read_access: ReadAccess,
}

impl RegistryAccess {
    fn caller(&self, authorization: Option<&str>) -> Result<Caller<'_>, AuthError> {
        let Some(value) = authorization else { return Err(AuthError::Missing) };
        match value.split_once(' ') {
            Some((scheme, credentials)) if scheme.eq_ignore_ascii_case("basic") => {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(credentials.trim())
                    .map_err(|_| AuthError::Unknown)?;
                let text = String::from_utf8(decoded).map_err(|_| AuthError::Unknown)?;
                let (_, password) = text.split_once(':').ok_or(AuthError::Unknown)?;
                self.tokens.authenticate_token(password)
            }
            _ => self.tokens.authenticate(Some(value)),
        }
    }
}

impl govex_schemas::http::Access for RegistryAccess {
    fn check(&self, authorization: Option<&str>, write: bool) -> Result<(), Refusal> {
        if !write && self.read_access == ReadAccess::Open {
            return Ok(());
        }
        let caller = self.caller(authorization).map_err(|error| match error {
            AuthError::Missing => Refusal::unauthenticated(
                "authentication required: send Authorization: Bearer <token> (or HTTP Basic with the token as password)",
            ),
            AuthError::Unknown => Refusal::unauthenticated("the credentials are not valid"),
        })?;
        if !write {
            return Ok(());
        }
        if !self.http_writes {
            return Err(Refusal::forbidden("this registry takes no writes over HTTP (registry.http_writes is off)"));
        }
        match caller.role {
            Role::Steward => Ok(()),
            other => Err(Refusal::forbidden(format!(
                "only a steward's token may change the registry; this is {} token",
                other.with_article()
            ))),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// `govex_tokens_reloads_total{result}`: changes of the tokens file taken (`ok`) or refused
/// (`refused`, the tokens before it staying).
#[derive(Clone)]
pub struct ReloadCounter(Family<ReloadLabels, Counter>);

impl ReloadCounter {
    /// Registered once per process.
    pub fn register(metrics: &Metrics) -> Self {
        Self(metrics.shared("tokens_reloads", "Changes of the tokens file taken (ok) or refused (refused)"))
    }

    /// Counts one change, taken or refused.
    pub fn count(&self, taken: bool) {
        self.0.get_or_create(&ReloadLabels { result: if taken { "ok" } else { "refused" } }).inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    api: &'static str,
}

/// A token bucket per configured token (by its hash, made at its first read): memory is
/// bounded by the configuration, not by what callers send, since only a token that
/// authenticated gets a bucket, and a reload drops the buckets of tokens no longer there.
struct ReadLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<Arc<str>, (f64, Instant)>>,
    limited: Family<ApiLabels, Counter>,
}

impl ReadLimiter {
    fn new(config: &ApiConfig, metrics: &Metrics) -> Self {
        let burst = f64::from(config.read_burst.max(1));
        let limit: Gauge = Gauge::default();
        limit.set(i64::from(config.reads_per_second));
        let limited = Family::<ApiLabels, Counter>::default();
        metrics.register(|r| {
            r.register(
                "api_rate_limited_requests",
                "Reads refused with 429 because the token's budget was spent, by API",
                limited.clone(),
            );
            r.register(
                "api_read_limit_per_second",
                "Sustained reads allowed per token and second (0: no limit)",
                limit,
            );
        });
        Self { per_second: f64::from(config.reads_per_second), burst, buckets: Mutex::new(HashMap::new()), limited }
    }

    /// Drops the buckets of tokens not in `current`.
    fn keep_only(&self, current: &HashMap<String, usize>) {
        self.buckets.lock().retain(|hash, _| current.contains_key(&**hash));
    }

    /// Takes one read from the bucket of the token hashed `hash`, or says how long until one
    /// is there.
    fn take(&self, hash: &Arc<str>, api: &'static str) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let (level, last) = buckets.entry(hash.clone()).or_insert((self.burst, now));
        *level = (*level + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *level >= 1.0 {
            *level -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - *level) / self.per_second);
        drop(buckets);
        self.limited.get_or_create(&ApiLabels { api }).inc();
        Err(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(department: &str, sha256: String, label: Option<&str>, role: Role) -> TokenConfig {
        TokenConfig { department: department.into(), sha256, label: label.map(Into::into), role }
    }

    #[test]
    fn tokens_authenticate_by_hash_only() {
        let token = new_token();
        assert_eq!(token.len(), 64);
        let config = vec![entry("tax", hash_token(&token), Some("tax-core"), Role::Department)];
        let tokens = Tokens::from_config(&config).unwrap();
        let caller = tokens.authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(
            (caller.department, caller.role, caller.label.as_deref()),
            (Department::TAX, Role::Department, Some("tax-core"))
        );
        assert_eq!(tokens.authenticate(Some("Bearer nope")), Err(AuthError::Unknown));
        assert!(tokens.authenticate(Some(&format!("bearer {token}"))).is_ok(), "the scheme in any case");
        assert_eq!(tokens.authenticate(Some(&token)), Err(AuthError::Missing), "the Bearer scheme is required");
        assert_eq!(tokens.authenticate(None), Err(AuthError::Missing));
        let plain = vec![entry("tax", token.to_uppercase(), None, Role::Department)];
        assert!(Tokens::from_config(&plain).unwrap_err().starts_with("intake.tokens[0].sha256"));
        // A department is a name (configuration, not code): a new one is taken, a name that
        // cannot be one is refused.
        let new = vec![entry("market-regulation", hash_token("x"), None, Role::Department)];
        assert!(Tokens::from_config(&new).is_ok());
        let malformed = vec![entry("Police Dept", hash_token("x"), None, Role::Department)];
        let error = Tokens::from_config(&malformed).unwrap_err();
        assert!(error.contains("not a department name") && !error.contains("Police"), "never echoed: {error}");
    }

    #[test]
    fn registry_writes_need_a_stewards_token_by_bearer_or_basic() {
        use base64::Engine;
        use govex_schemas::http::Access;
        let (steward, tax) = (new_token(), new_token());
        let config = vec![
            entry("platform", hash_token(&steward), None, Role::Steward),
            entry("tax", hash_token(&tax), None, Role::Department),
        ];
        let access = RegistryAccess {
            tokens: Tokens::from_config(&config).unwrap(),
            http_writes: true,
            read_access: ReadAccess::Open,
        };
        let basic = |password: &str| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("anyone:{password}")))
        };
        assert_eq!(access.check(None, false), Ok(()), "open reads");
        assert_eq!(access.check(None, true).unwrap_err().code, 40101);
        assert_eq!(access.check(Some("Bearer wrong"), true).unwrap_err().code, 40101);
        assert_eq!(access.check(Some(&format!("Bearer {tax}")), true).unwrap_err().code, 40301);
        assert_eq!(access.check(Some(&basic(&tax)), true).unwrap_err().code, 40301);
        assert_eq!(access.check(Some(&format!("Bearer {steward}")), true), Ok(()));
        assert_eq!(access.check(Some(&basic(&steward)), true), Ok(()));
        assert_eq!(access.check(Some("Basic !!!"), true).unwrap_err().code, 40101);
        let closed = RegistryAccess { http_writes: false, read_access: ReadAccess::Token, ..access };
        assert_eq!(closed.check(Some(&format!("Bearer {steward}")), true).unwrap_err().code, 40301);
        assert_eq!(closed.check(None, false).unwrap_err().code, 40101, "reads need a token");
        assert_eq!(closed.check(Some(&format!("Bearer {tax}")), false), Ok(()));
    }

    #[test]
    fn the_same_hash_twice_is_an_error_naming_both_entries() {
        let hash = hash_token("shared");
        let config = vec![
            entry("tax", hash_token("other"), None, Role::Department),
            entry("tax", hash.clone(), Some("tax-core"), Role::Department),
            entry("platform", hash, Some("steward-desk"), Role::Steward),
        ];
        let error = Tokens::from_config(&config).unwrap_err();
        assert!(error.starts_with("intake.tokens[2].sha256"), "{error}");
        assert!(error.contains("intake.tokens[1]"), "{error}");
        assert!(error.contains("tax-core") && error.contains("steward-desk"), "{error}");
    }

    #[test]
    fn reads_are_limited_per_token_and_refill_with_time() {
        tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(
            async {
                let (a, b) = (new_token(), new_token());
                let config = vec![
                    entry("tax", hash_token(&a), None, Role::Department),
                    entry("housing", hash_token(&b), None, Role::Department),
                ];
                let metrics = Metrics::new();
                let limit = ApiConfig { reads_per_second: 2, read_burst: 3 };
                let tokens = Tokens::from_config(&config).unwrap().with_read_limit(&limit, &metrics);
                let read = |token: &str| {
                    tokens.authorize_read(Some(&format!("Bearer {token}")), &[Role::Department], "licences")
                };
                for _ in 0..3 {
                    assert!(read(&a).is_ok());
                }
                let refused = read(&a).unwrap_err();
                assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
                assert_eq!(refused.headers()[header::RETRY_AFTER], "1");
                assert!(read(&b).is_ok(), "another token has a budget of its own");
                tokio::time::advance(Duration::from_millis(500)).await;
                assert!(read(&a).is_ok(), "half a second at 2/s refills one read");
                assert!(read(&a).is_err());
                assert!(metrics.encode().contains("govex_api_rate_limited_requests_total{api=\"licences\"} 2"));
                let steward = vec![entry("platform", hash_token(&a), None, Role::Steward)];
                let tokens = Tokens::from_config(&steward).unwrap();
                let refused = tokens.authorize_read(Some(&format!("Bearer {a}")), &[Role::Department], "licences");
                assert_eq!(refused.unwrap_err().status(), StatusCode::FORBIDDEN);
            },
        );
    }
}

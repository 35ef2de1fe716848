//! The schema registry in a node: this process's view of the registry's topic (the writer's,
//! a read replica's or a follower's), the seeding of the bundled schemas and the event topics,
//! and the registry component, which serves the view over Confluent's REST API.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use govex_bus::{
    schema_log::{Role as SchemaLogRole, SchemaLog},
    Bus, RegistryClient,
};
use govex_http::{
    auth::RegistryAccess,
    problem::with_route_list,
    server::{serve, Stop},
    Context,
};
use govex_schemas::{bundled_schemas, Registry};

use crate::{
    config::{Component, NodeConfig},
    node::{openapi, Listener, Plan},
};

/// Whether this process keeps the registry on its volume (it is the registry's writer); a
/// read replica or a process with `registry.url` keeps none.
pub fn keeps_store(config: &NodeConfig, plan: &Plan) -> bool {
    plan.registry_url.is_none()
        && plan.components.contains(&Component::Registry)
        && config.registry.writer_url.is_none()
}

/// This process's registry: the external one `registry.url` names, or a view of the
/// registry's topic, kept by the [`SchemaLog`] returned with it. The registry component writes
/// the topic (or, as a read replica, follows it into memory); every other process without a
/// registry URL follows it into a view of its own.
pub async fn view(config: &NodeConfig, plan: &Plan, bus: &Bus) -> Result<(RegistryClient, Option<SchemaLog>)> {
    if let Some(url) = &plan.registry_url {
        return Ok((client(url, config)?, None));
    }
    let (store, role) = match keeps_store(config, plan) {
        true => (open_store(config.data_dir.join("registry"))?, SchemaLogRole::Writer),
        // A read replica keeps its view in memory: the topic is its data, the writer's volume
        // the only one.
        false => (Registry::temporary().context("an in-memory registry view cannot be made")?, SchemaLogRole::Follower),
    };
    let (view, log) = SchemaLog::start(bus, store, role)
        .await
        .with_context(|| format!("the registry's topic {} cannot be used", govex_schemas::journal::TOPIC))?;
    Ok((RegistryClient::local(view), Some(log)))
}

fn open_store(dir: PathBuf) -> Result<Registry> {
    let registry = Registry::open(&dir).with_context(|| {
        format!(
            "schema registry store {} cannot be opened (is another govex node using this data directory?)",
            dir.display()
        )
    })?;
    // A department record type that cannot be compiled into a contract is refused at push,
    // so it never reaches an intake.
    Ok(registry.with_contract_check(Arc::new(|subject: &str, text: &str, history: &[(String, String, bool)]| {
        govex_adapters::contract::usable(subject, text, history).map_err(|e| e.to_string())
    })))
}

/// Seeds the registry with the bundled schemas and creates the event topics, returning them.
/// A registry on its own writes only its own topic: it leaves the event topics to the
/// processes that use them.
pub async fn seed(plan: &Plan, registry: &RegistryClient, bus: &Bus) -> Result<Vec<String>> {
    let uses_bus = plan.uses_bus();
    let topics = match seed_schemas(registry).await {
        Ok(topics) => topics,
        // A registry that refuses the bundled schemas (a steward deleted one and set READONLY,
        // say) must still come up on its own, or nothing could put it right.
        Err(e) if !uses_bus => {
            tracing::error!(error = %format!("{e:#}"), "the registry refuses a bundled schema; serving it so that a steward can repair it");
            bundled_schemas().map(|s| s.topic.to_owned()).collect()
        }
        Err(e) => {
            return Err(e.context(
                "if the registry refuses it (read-only, incompatible), start the registry alone \
                 (components = [\"registry\"]) and let a steward repair it",
            ))
        }
    };
    if uses_bus {
        bus.ensure_topics(&topics).await?;
    }
    Ok(topics)
}

/// How long start-up keeps trying a registry that does not answer yet. In Kubernetes the
/// registry's pod may start after the others; waiting here beats a crash loop.
const REGISTRY_WAIT: Duration = Duration::from_secs(120);

/// Seeds the registry with the bundled schemas whose subjects it does not have
/// (TopicNameStrategy), retrying while it is unreachable, and returns the topics to make:
/// the bundled ones and those of record types stewards added.
async fn seed_schemas(registry: &RegistryClient) -> Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + REGISTRY_WAIT;
    let mut delay = Duration::from_millis(200);
    loop {
        match govex_adapters::intake::seed(registry).await {
            Ok(()) => break,
            Err(govex_adapters::intake::IntakeError::Registry(e))
                if matches!(e, govex_bus::registry_client::RegistryClientError::Unavailable { .. })
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(registry = %registry.describe(), error = %e, "schema registry not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e).with_context(|| format!("the registry {} cannot be seeded", registry.describe())),
        }
    }
    let subjects = registry.subjects().await.with_context(|| format!("{} lists no subjects", registry.describe()))?;
    let mut topics: Vec<String> = bundled_schemas().map(|s| s.topic.to_owned()).collect();
    // The topics of record types stewards added; a subject that is not one (a steward's own,
    // another system's) gets no topic from govex.
    for subject in subjects {
        let Some(topic) = govex_adapters::contract::topic_of(&subject) else { continue };
        if topics.iter().any(|t| t == topic) {
            continue;
        }
        let latest = registry.version(&subject, "latest").await.with_context(|| format!("{subject} cannot be read"))?;
        let schema = apache_avro::Schema::parse_str(&latest.schema);
        if schema.is_ok_and(|s| govex_adapters::contract::declared(&s).is_ok_and(|d| d.is_some())) {
            topics.push(topic.to_owned());
        }
    }
    Ok(topics)
}

/// The client of the external registry at `url`, with the configured token and TLS.
pub fn client(url: &str, config: &NodeConfig) -> Result<RegistryClient> {
    let token = config.registry.token.as_deref();
    Ok(match &config.registry.tls {
        Some(tls) => {
            RegistryClient::https(url, token, tls).map_err(anyhow::Error::msg).context("invalid configuration")?
        }
        None => RegistryClient::http_with_token(url, token),
    })
}

/// The registry component: serves this process's view of the registry on `listen.registry`
/// (a read replica forwards writes to the writer). Returns where it listens.
pub fn build(cx: &mut Context, config: &NodeConfig, listener: Option<Listener>) -> Result<Option<SocketAddr>> {
    let (Some((listener, tls)), Some(store)) = (listener, cx.registry.local_store()) else { return Ok(None) };
    let addr = listener.local_addr()?;
    let access = Arc::new(RegistryAccess {
        tokens: cx.tokens.clone(),
        http_writes: config.registry.http_writes,
        read_access: config.registry.read_access,
    });
    // The document is open to read, whatever the registry's access rules.
    let mut router =
        govex_schemas::http::router(store.clone(), access).route("/openapi.json", openapi::route(openapi::REGISTRY));
    if let Some(writer) = &config.registry.writer_url {
        router = router.layer(axum::middleware::from_fn_with_state(
            Arc::new(forward::Writer::new(writer, store.clone())),
            forward::writes_to_the_writer,
        ));
    }
    let router = with_route_list(router, openapi::routes(openapi::REGISTRY));
    let stop = Stop { stop: cx.stop.clone(), cut: cx.cut.clone() };
    cx.tasks.spawn(serve(listener, tls, router, config.listen.limits(), stop, cx.tasks.clone()));
    Ok(Some(addr))
}

/// A read replica's forwarding of registry writes to the writer, as Confluent's followers
/// forward to their leader: the caller's method, path, query, token and body, the writer's
/// answer unchanged. Reads (and the POSTs that only read: a lookup, a compatibility test) are
/// served from the replica's own view.
mod forward {
    use std::time::Duration;

    use axum::{
        body::{to_bytes, Body},
        extract::{Request, State},
        http::{header, Method, StatusCode},
        middleware::Next,
        response::{IntoResponse, Response},
    };

    /// The largest body forwarded: a schema, with room to spare.
    const MAX_BODY: usize = 4 * 1024 * 1024;

    pub struct Writer {
        base: String,
        client: reqwest::Client,
        /// This replica's view, which a forwarded write waits for before it is answered.
        view: govex_schemas::Registry,
    }

    impl Writer {
        pub fn new(base: &str, view: govex_schemas::Registry) -> Self {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default();
            Self { base: base.trim_end_matches('/').to_owned(), client, view }
        }
    }

    /// Whether a request changes the registry.
    fn is_write(method: &Method, path: &str) -> bool {
        match *method {
            Method::PUT | Method::DELETE => true,
            Method::POST => path.starts_with("/subjects/") && path.ends_with("/versions"),
            _ => false,
        }
    }

    fn failed(message: String) -> Response {
        let body = serde_json::json!({ "error_code": 50003, "message": message }).to_string();
        (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, govex_schemas::http::CONTENT_TYPE)], body)
            .into_response()
    }

    pub async fn writes_to_the_writer(
        State(writer): State<std::sync::Arc<Writer>>,
        request: Request,
        next: Next,
    ) -> Response {
        if !is_write(request.method(), request.uri().path()) {
            return next.run(request).await;
        }
        let (parts, body) = request.into_parts();
        let path_and_query = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let Ok(body) = to_bytes(body, MAX_BODY).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large").into_response();
        };
        let Ok(method) = reqwest::Method::from_bytes(parts.method.as_str().as_bytes()) else {
            return failed("the method cannot be forwarded".into());
        };
        let mut forwarded = writer.client.request(method, format!("{}{path_and_query}", writer.base)).body(body);
        for name in [header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT] {
            if let Some(value) = parts.headers.get(&name).and_then(|v| v.to_str().ok()) {
                forwarded = forwarded.header(name.as_str(), value);
            }
        }
        let answer = match forwarded.send().await {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(writer = %writer.base, error = %e, "a registry write could not be forwarded to the writer");
                return failed(format!("error while forwarding the request to the registry's writer: {e}"));
            }
        };
        let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let content_type = answer
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(govex_schemas::http::CONTENT_TYPE)
            .to_owned();
        if status.is_success() {
            // Read-your-writes on this replica: its view takes the write before the answer.
            let view = writer.view.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || view.caught_up()).await {
                tracing::warn!(error = %e, "a forwarded write is answered before this replica's view has it");
            }
        }
        match answer.bytes().await {
            Ok(bytes) => (status, [(header::CONTENT_TYPE, content_type)], Body::from(bytes)).into_response(),
            Err(e) => failed(format!("the registry's writer's answer could not be read: {e}")),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn writes_are_told_from_reads_that_post() {
            assert!(is_write(&Method::POST, "/subjects/a-value/versions"));
            assert!(is_write(&Method::PUT, "/config"));
            assert!(is_write(&Method::DELETE, "/subjects/a-value"));
            assert!(!is_write(&Method::POST, "/subjects/a-value"));
            assert!(!is_write(&Method::POST, "/compatibility/subjects/a-value/versions"));
            assert!(!is_write(&Method::GET, "/subjects/a-value/versions"));
        }
    }
}

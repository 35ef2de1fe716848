//! Mutual TLS on the API: a department system with a certificate from the configured CA is
//! served; one without a certificate, or with a certificate from another CA, is refused at
//! the handshake.

use std::{path::Path, sync::Arc};

use govex_http::config::TlsConfig;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
        ClientConfig, RootCertStore,
    },
    TlsConnector,
};

use crate::intake::intake_config;

pub(crate) struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        Self { ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    /// A leaf certificate and its key, as PEM.
    pub(crate) fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn request(addr: std::net::SocketAddr, ca: &Pki, client: Option<(String, String)>) -> Result<String, String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => {
            let certs = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let body = govex_adapters::samples::sample("tax", "deed-tax-payment", 5).unwrap().to_string();
    let request = format!(
        "POST /v1/tax/deed-tax-payment HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer test-token-of-tax\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await.map_err(|e| e.to_string())?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_known_clients_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("govex test CA");
    let (server_cert, server_key) = pki.leaf(&["localhost"]);
    let mut config = intake_config(dir.path());
    config.listen.tls = Some(TlsConfig {
        cert_path: write(dir.path(), "server.pem", &server_cert),
        key_path: write(dir.path(), "server.key", &server_key),
        client_ca_path: Some(write(dir.path(), "ca.pem", &pki.ca.pem())),
    });
    let node = govex::node::start(config).await.unwrap();

    let answer = request(node.api_addr().unwrap(), &pki, Some(pki.leaf(&["tax-core"]))).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

    let refused = request(node.api_addr().unwrap(), &pki, None).await;
    assert!(refused.is_err() || refused.as_ref().is_ok_and(|a| a.is_empty()), "no client certificate: {refused:?}");
    let rogue = Pki::new("another CA");
    let refused = request(node.api_addr().unwrap(), &pki, Some(rogue.leaf(&["intruder"]))).await;
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|a| a.is_empty()),
        "a certificate from another CA: {refused:?}"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_over_mutual_tls_serves_known_clients_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("govex registry CA");
    let (server_cert, server_key) = pki.leaf(&["127.0.0.1"]);
    let ca_path = write(dir.path(), "ca.pem", &pki.ca.pem());
    let mut config = crate::support::test_node_config(&dir.path().join("registry"));
    config.components = vec![govex::config::Component::Registry];
    config.listen.registry_tls = Some(TlsConfig {
        cert_path: write(dir.path(), "server.pem", &server_cert),
        key_path: write(dir.path(), "server.key", &server_key),
        client_ca_path: Some(ca_path.clone()),
    });
    let registry = govex::node::start(config).await.unwrap();
    let url = format!("https://{}", registry.registry_addr.unwrap());
    let (client_cert, client_key) = pki.leaf(&["intake"]);
    let tls = govex_bus::config::RegistryTlsConfig {
        ca_path: ca_path.clone(),
        client_cert_path: Some(write(dir.path(), "client.pem", &client_cert)),
        client_key_path: Some(write(dir.path(), "client.key", &client_key)),
    };
    let schema =
        r#"{"type":"record","name":"T","namespace":"cn.gov.exchange.test","fields":[{"name":"a","type":"string"}]}"#;

    // A client with a certificate from the CA and a steward's token writes.
    let known = govex_bus::RegistryClient::https(&url, Some(crate::support::STEWARD_TOKEN), &tls).unwrap();
    assert!(known.register("gov.test.tls.v1-value", schema).await.unwrap() > 0);
    // Without a client certificate, or over plain HTTP, nothing is read.
    let anonymous = govex_bus::config::RegistryTlsConfig { ca_path, client_cert_path: None, client_key_path: None };
    let no_certificate =
        govex_bus::RegistryClient::https(&url, Some(crate::support::STEWARD_TOKEN), &anonymous).unwrap();
    assert!(no_certificate.subjects().await.is_err(), "no client certificate");
    let plain = govex_bus::RegistryClient::http(&url.replace("https", "http"));
    assert!(plain.subjects().await.is_err(), "plain HTTP");

    // A process of the node reaches it through its registry.tls settings.
    let mut intake = crate::intake::intake_config(&dir.path().join("intake"));
    intake.components = vec![govex::config::Component::Intake];
    intake.registry.url = Some(url);
    intake.registry.tls = Some(tls);
    // The mock cluster has no CreateTopics; an operator's cluster would have the topics.
    let broker = govex_bus::embedded::EmbeddedBroker::start(1).unwrap();
    for schema in govex_schemas::bundled_schemas() {
        for topic in [schema.topic.to_owned(), govex_bus::dlq::dlq_topic(schema.topic)] {
            broker.create_topic(&topic, 3, 1).unwrap();
        }
    }
    intake.bus.brokers = Some(broker.bootstrap_servers().to_owned());
    intake.bus.replication_factor = 1;
    let intake = govex::node::start(intake).await.unwrap();
    assert!(intake.topics.contains(&"gov.elicense.licence.v1".to_owned()));
    intake.shutdown().await.unwrap();
    registry.shutdown().await.unwrap();
}

/// The expiry gauge reads each served certificate's notAfter, as UTCTime (before 2050) and as
/// GeneralizedTime (from 2050), so that the chart's alert warns before a certificate lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tls_listener_reports_when_its_certificate_expires() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("govex test CA");
    let leaf = |(year, month, day): (i32, u8, u8)| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let cert = params.signed_by(&key, &pki.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (api_cert, api_key) = leaf((2031, 6, 15));
    let (registry_cert, registry_key) = leaf((2051, 1, 2));
    let mut config = intake_config(dir.path());
    config.listen.tls = Some(TlsConfig {
        cert_path: write(dir.path(), "api.pem", &api_cert),
        key_path: write(dir.path(), "api.key", &api_key),
        client_ca_path: None,
    });
    config.listen.registry_tls = Some(TlsConfig {
        cert_path: write(dir.path(), "registry.pem", &registry_cert),
        key_path: write(dir.path(), "registry.key", &registry_key),
        client_ca_path: None,
    });
    let node = govex::node::start(config).await.unwrap();
    let text = reqwest::get(format!("http://{}/metrics", node.ops_addr)).await.unwrap().text().await.unwrap();
    let value = |listener: &str| {
        let series = format!("govex_tls_certificate_expiry_timestamp_seconds{{listener=\"{listener}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&series)).map(|v| v.trim().to_owned())
    };
    assert_eq!(value("api").as_deref(), Some("1939248000"), "{text}");
    assert_eq!(value("registry").as_deref(), Some("2556230400"), "{text}");
    node.shutdown().await.unwrap();
}

//! Helpers shared by this crate's test binaries: a self-signed certificate for the gateway's
//! TLS listener, and a client that trusts it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tideway_gateway::config::TlsSettings;
use tokio::net::TcpStream;

/// A certificate and its key, made by rcgen.
pub(crate) type TestCert = rcgen::CertifiedKey<rcgen::KeyPair>;

/// A self-signed certificate for `localhost`, written to `dir`, and the gateway's TLS settings
/// naming its files.
pub(crate) fn self_signed(dir: &Path) -> (TestCert, TlsSettings) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let settings = TlsSettings {
        cert: cert_path,
        key: key_path,
    };
    (cert, settings)
}

/// A TLS connection (ALPN `http/1.1`) to `addr` as `localhost`, trusting `cert`.
pub(crate) async fn tls_connect(
    addr: SocketAddr,
    cert: &TestCert,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

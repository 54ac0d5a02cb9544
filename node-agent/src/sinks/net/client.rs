//! The HTTP client of the network sinks: hyper 1 through hyper-util's pooled client and
//! hyper-rustls, the stack kube already brings (no second HTTP stack in the build).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tailor_crds::collection::TlsSpec;

use super::{RetryPolicy, TlsMaterial};

/// Responses larger than this are cut off: a bulk response of 100k items stays well below.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("transport error: {0}")]
    Transport(#[source] hyper_util::client::legacy::Error),
    #[error("reading the response: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("invalid PEM in {what}: {source}")]
    Pem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

impl ClientError {
    pub fn category(&self) -> &'static str {
        match self {
            ClientError::Timeout(_) => "timeout",
            ClientError::Transport(_) => "transport",
            ClientError::Body(_) => "body",
            ClientError::Pem { .. } => "pem",
            ClientError::Rustls(_) => "tls_config",
        }
    }
}

/// A status and a body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// A pooled HTTP/1.1 client (http and https) with a whole-request timeout.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(
        tls: Option<&TlsSpec>,
        material: &TlsMaterial,
        policy: &RetryPolicy,
    ) -> Result<Self, ClientError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(policy.connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(tls, material)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(HttpClient { inner, timeout: policy.request_timeout })
    }

    /// Sends a request and reads the whole response, within the request timeout.
    pub async fn send(&self, req: http::Request<Full<Bytes>>) -> Result<Response, ClientError> {
        let exchange = async {
            let resp = self.inner.request(req).await.map_err(ClientError::Transport)?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(ClientError::Body)?
                .to_bytes();
            Ok(Response { status, body })
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| ClientError::Timeout(self.timeout))?
    }
}

/// The rustls configuration of an output: the Secret's CA if it has one (and only it), else the
/// system's roots; a client certificate when the Secret has `tls.crt` and `tls.key`; no
/// verification at all with `insecureSkipVerify` (for tests against self-signed servers).
pub fn tls_config(spec: Option<&TlsSpec>, material: &TlsMaterial) -> Result<ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = if spec.is_some_and(|s| s.insecure_skip_verify) {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &material.ca_pem {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem) {
                    roots.add(cert.map_err(|source| ClientError::Pem { what: "ca.crt", source })?)?;
                }
            }
            None => {
                // A node without a CA bundle can still reach plain-HTTP outputs.
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&material.client_cert_pem, &material.client_key_pem) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| ClientError::Pem { what: "tls.crt", source })?;
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|source| ClientError::Pem { what: "tls.key", source })?;
            builder.with_client_auth_cert(chain, key)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

/// Accepts any server certificate (`insecureSkipVerify`).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_with_system_roots_and_insecure() {
        tls_config(None, &TlsMaterial::default()).unwrap();
        let insecure = TlsSpec { secret_ref: None, insecure_skip_verify: true };
        tls_config(Some(&insecure), &TlsMaterial::default()).unwrap();
    }

    #[test]
    fn bad_ca_pem_is_an_error() {
        let m = TlsMaterial {
            ca_pem: Some(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".to_vec()),
            ..TlsMaterial::default()
        };
        assert!(tls_config(None, &m).is_err());
    }
}

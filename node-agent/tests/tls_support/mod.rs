//! A test CA and a `localhost` certificate it signed, made by the `openssl` command (Debian
//! package `openssl`), for the TLS tests.

use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command is needed for the TLS tests (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA and a certificate it signed for `localhost`: (CA PEM, certificate PEM, key PEM).
pub fn make_certs(dir: &Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    openssl(
        dir,
        &[
            &["req", "-x509"],
            &ec[..],
            &["-days", "1", "-subj", "/CN=tailor-test-ca", "-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[&["req"], &ec[..], &["-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "leaf.csr"]].concat(),
    );
    std::fs::write(dir.join("leaf.ext"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n")
        .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
        ]
        .into_iter()
        .chain(["-extfile", "leaf.ext", "-out", "cert.pem"])
        .collect::<Vec<_>>(),
    );
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    (read("ca.pem"), read("cert.pem"), read("key.pem"))
}

/// A TLS acceptor serving `cert` (a PEM chain) with `key`, on rustls with ring.
pub fn acceptor(cert: &[u8], key: &[u8]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

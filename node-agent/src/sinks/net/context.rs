//! What a network sink is built with besides its `OutputSpec`: resolved secrets, retry policy,
//! counters, and what it keeps of the agent's `SinkContext` (state directory, stop signal).
//!
//! Secrets: the spec only names a Secret (`credentialsSecretRef`, `tls.secretRef`); the agent
//! resolves it (e.g. from files of a mounted Secret, see `Credentials::from_dir` and
//! `TlsMaterial::from_dir`) and hands the values in here, so sinks never talk to the API server.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Credentials of an output, from the Secret named by `credentialsSecretRef`.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `username` and `password` keys: HTTP basic auth, Kafka SASL/PLAIN.
    Basic { username: String, password: String },
    /// `token` key: `Authorization: Bearer <token>`.
    Token(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets in logs.
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// The keys of a Secret, as the agent resolved them (from a mounted Secret's files or a mirror
/// Secret's `data`). Only the keys an output uses are ever read into it (`SECRET_KEYS`).
pub type SecretData = std::collections::BTreeMap<String, Vec<u8>>;

pub use tailor_crds::secrets::SECRET_KEYS;

/// Why a Secret's content cannot be used (never carries a value).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretFormatError {
    #[error("has only one of username/password")]
    HalfBasic,
    #[error("has none of the keys token, username/password")]
    NoCredentials,
    #[error("has none of the keys ca.crt, tls.crt/tls.key")]
    NoTlsMaterial,
    #[error("has only one of tls.crt/tls.key")]
    HalfClientCert,
    #[error("key {0} is not UTF-8")]
    NotUtf8(&'static str),
}

impl Credentials {
    /// The credentials of a Secret's keys: `token`, or `username` + `password`. `Ok(None)` when
    /// none of them is there. Trailing newlines are trimmed (as `kubectl create secret
    /// --from-file` keeps them).
    pub fn from_secret(data: &SecretData) -> Result<Option<Credentials>, SecretFormatError> {
        let text = |key: &'static str| -> Result<Option<String>, SecretFormatError> {
            data.get(key)
                .map(|v| {
                    std::str::from_utf8(v)
                        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                        .map_err(|_| SecretFormatError::NotUtf8(key))
                })
                .transpose()
        };
        if let Some(token) = text("token")? {
            return Ok(Some(Credentials::Token(token)));
        }
        match (text("username")?, text("password")?) {
            (Some(username), Some(password)) => Ok(Some(Credentials::Basic { username, password })),
            (None, None) => Ok(None),
            _ => Err(SecretFormatError::HalfBasic),
        }
    }

    /// Reads the keys of a Secret mounted as files in `dir` (see `from_secret`).
    pub fn from_dir(dir: &Path) -> io::Result<Option<Credentials>> {
        Credentials::from_secret(&read_secret_dir(dir)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("secret {e}")))
    }

    /// The `Authorization` header value.
    pub fn authorization(&self) -> String {
        use base64::Engine;
        match self {
            Credentials::Basic { username, password } => {
                let raw = format!("{username}:{password}");
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
            }
            Credentials::Token(t) => format!("Bearer {t}"),
        }
    }
}

/// Largest Secret file read: the API server's limit of a whole Secret.
const MAX_SECRET_FILE: u64 = 1 << 20;

/// Reads the `SECRET_KEYS` files of a mounted Secret in `dir` (missing ones are left out).
pub fn read_secret_dir(dir: &Path) -> io::Result<SecretData> {
    use std::io::Read;
    let mut data = SecretData::new();
    for key in SECRET_KEYS {
        match std::fs::File::open(dir.join(key)) {
            Ok(f) => {
                let mut buf = Vec::new();
                f.take(MAX_SECRET_FILE).read_to_end(&mut buf)?;
                data.insert(key.to_string(), buf);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(data)
}

/// PEM material from the Secret named by `tls.secretRef` (`ca.crt`, `tls.crt`, `tls.key`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    pub ca_pem: Option<Vec<u8>>,
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca", &self.ca_pem.is_some())
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("client_key", &self.client_key_pem.is_some())
            .finish()
    }
}

impl TlsMaterial {
    /// The PEM material of a Secret's keys `ca.crt`, `tls.crt`, `tls.key` (each optional, but a
    /// client certificate needs both halves).
    pub fn from_secret(data: &SecretData) -> Result<TlsMaterial, SecretFormatError> {
        let m = TlsMaterial {
            ca_pem: data.get("ca.crt").cloned(),
            client_cert_pem: data.get("tls.crt").cloned(),
            client_key_pem: data.get("tls.key").cloned(),
        };
        if m.client_cert_pem.is_some() != m.client_key_pem.is_some() {
            return Err(SecretFormatError::HalfClientCert);
        }
        Ok(m)
    }

    /// Reads `ca.crt`, `tls.crt`, `tls.key` of a Secret mounted as files in `dir` (each optional).
    pub fn from_dir(dir: &Path) -> io::Result<TlsMaterial> {
        TlsMaterial::from_secret(&read_secret_dir(dir)?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("secret {e}")))
    }

    /// Whether it holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.ca_pem.is_none() && self.client_cert_pem.is_none() && self.client_key_pem.is_none()
    }
}

/// Timeouts and back-off of a network sink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First back-off delay; doubles per failed attempt.
    pub initial_backoff: Duration,
    /// Cap of the back-off delay.
    pub max_backoff: Duration,
    /// Whole request (connect, send, read the response).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of a network sink beyond the runner's (`runner::SinkStats`), for the metrics endpoint.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Events the destination accepted.
    pub delivered: AtomicU64,
    /// Events re-sent after a transient failure (per attempt).
    pub retried: AtomicU64,
    /// Events the destination rejected for good, written to the dead-letter file.
    pub dead_lettered: AtomicU64,
    /// Events dropped by a `dropNewest` disk buffer that was full.
    pub dropped: AtomicU64,
    /// Requests that failed (transport error, timeout, retryable status).
    pub failed_requests: AtomicU64,
}

impl NetStats {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What the agent hands a network output besides its spec (`SinkContext.net`): the values of
/// the Secrets the output names, resolved by the agent (e.g. with `Credentials::from_dir` and
/// `TlsMaterial::from_dir` on the mounted Secret), the retry policy, and the counters it reads.
#[derive(Clone, Debug)]
pub struct NetOptions {
    /// Resolved `credentialsSecretRef`, if the output has one.
    pub credentials: Option<Credentials>,
    /// Resolved `tls.secretRef`, if the output has one.
    pub tls: TlsMaterial,
    pub retry: RetryPolicy,
    /// Size cap of each dead-letter file (one older file is kept beside it).
    pub dead_letter_max_bytes: u64,
    pub stats: Arc<NetStats>,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            credentials: None,
            tls: TlsMaterial::default(),
            retry: RetryPolicy::default(),
            dead_letter_max_bytes: 64 << 20,
            stats: Arc::new(NetStats::default()),
        }
    }
}

/// What a network sink keeps from the agent's `SinkContext`.
#[derive(Clone, Debug)]
pub struct NetContext {
    /// `<namespace>/<resource>/<output>`: for logs, metrics and file names.
    pub name: String,
    /// The agent's state directory: dead-letter files and disk buffers live under it.
    pub state_dir: PathBuf,
    pub opts: NetOptions,
    /// Turns `true` when the agent must stop now: stop retrying, give the batch back.
    pub force_stop: watch::Receiver<bool>,
}

impl NetContext {
    pub fn new(output: &tailor_crds::collection::OutputSpec, ctx: &crate::sinks::SinkContext) -> Self {
        NetContext {
            name: ctx.sink_name(output),
            state_dir: ctx.state_dir.clone(),
            opts: ctx.net.clone(),
            force_stop: ctx.force_stop.clone(),
        }
    }
}

/// Resolves once `force_stop` turns `true`. A dropped sender never stops anything: giving up on
/// data needs an explicit decision.
pub async fn stopped(force_stop: &watch::Receiver<bool>) {
    let mut rx = force_stop.clone();
    if rx.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A file-name-safe form of a sink name (`ns/res/out` → `ns_res_out`).
pub fn file_safe_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_mounted_secret() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Credentials::from_dir(d.path()).unwrap(), None);
        std::fs::write(d.path().join("username"), "elastic\n").unwrap();
        assert!(Credentials::from_dir(d.path()).is_err());
        std::fs::write(d.path().join("password"), "s3cret").unwrap();
        let c = Credentials::from_dir(d.path()).unwrap().unwrap();
        assert_eq!(c.authorization(), "Basic ZWxhc3RpYzpzM2NyZXQ=");
        assert!(!format!("{c:?}").contains("s3cret"));
        std::fs::write(d.path().join("token"), "abc\n").unwrap();
        assert_eq!(Credentials::from_dir(d.path()).unwrap().unwrap().authorization(), "Bearer abc");
    }

    #[test]
    fn secret_keys_become_credentials_and_tls_material() {
        let data = |pairs: &[(&str, &[u8])]| -> SecretData {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
        };
        assert_eq!(Credentials::from_secret(&data(&[])), Ok(None));
        assert_eq!(
            Credentials::from_secret(&data(&[("username", b"u\n"), ("password", b"p")])),
            Ok(Some(Credentials::Basic { username: "u".into(), password: "p".into() }))
        );
        // A token wins over a username/password pair.
        assert_eq!(
            Credentials::from_secret(&data(&[("token", b"t"), ("username", b"u")])),
            Ok(Some(Credentials::Token("t".into())))
        );
        assert_eq!(Credentials::from_secret(&data(&[("password", b"p")])), Err(SecretFormatError::HalfBasic));
        assert_eq!(
            Credentials::from_secret(&data(&[("token", &[0xff, 0xfe])])),
            Err(SecretFormatError::NotUtf8("token"))
        );
        let tls = TlsMaterial::from_secret(&data(&[("ca.crt", b"CA"), ("username", b"u")])).unwrap();
        assert_eq!(tls, TlsMaterial { ca_pem: Some(b"CA".to_vec()), ..TlsMaterial::default() });
        assert!(TlsMaterial::from_secret(&data(&[])).unwrap().is_empty());
        assert_eq!(
            TlsMaterial::from_secret(&data(&[("tls.crt", b"C")])),
            Err(SecretFormatError::HalfClientCert)
        );
        let both = TlsMaterial::from_secret(&data(&[("tls.crt", b"C"), ("tls.key", b"K")])).unwrap();
        assert_eq!(
            (both.client_cert_pem.as_deref(), both.client_key_pem.as_deref()),
            (Some(&b"C"[..]), Some(&b"K"[..]))
        );
    }

    #[test]
    fn file_safe_names() {
        assert_eq!(file_safe_name("team-a/cfg/es-1"), "team-a_cfg_es-1");
        assert_eq!(file_safe_name("../x"), "___x");
    }
}

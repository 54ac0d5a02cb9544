//! Where the agent finds the values of the Secrets that outputs name (`credentialsSecretRef`,
//! `tls.secretRef`), and their resolution into what a sink is built with.
//!
//! - `--secrets-dir DIR` (`run --config`, Docker mode): `DIR/<namespace>/<name>/<key>` files,
//!   the layout of Secrets mounted as volumes; `<namespace>` is the collection's namespace.
//! - In a cluster: the operator's mirror Secrets in the agent's own namespace (see
//!   `tailor_crds::secrets`), watched with a label selector, so that the agent needs no access to
//!   any other namespace's Secrets. A mirror is used only for a collection of the namespace it
//!   was copied from.
//!
//! Values never appear in logs, errors or status: only Secret names and key names do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tailor_crds::collection::{OutputSpec, OutputType};
use tailor_crds::secrets::{MIRROR_LABEL, SECRET_KEYS, SOURCE_NAMESPACE_ANNOTATION, is_object_name};

use crate::sinks::net::{Credentials, SecretData, SecretFormatError, TlsMaterial, read_secret_dir};

/// Why a Secret an output names could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret name {name:?} is not a valid object name")]
    InvalidName { name: String },
    #[error("secret {namespace}/{name} not found{hint}")]
    NotFound { namespace: String, name: String, hint: &'static str },
    #[error("secret {name}: the agent has no source of Secrets (run with --secrets-dir)")]
    NoSource { name: String },
    #[error("secret mirrors not loaded yet")]
    NotSynced,
    #[error("secret mirror {mirror} belongs to namespace {owner:?}, not {namespace}")]
    ForeignMirror { mirror: String, owner: Option<String>, namespace: String },
    #[error("reading secret {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret {name} {source}")]
    Format {
        name: String,
        #[source]
        source: SecretFormatError,
    },
}

impl SecretError {
    /// Label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            SecretError::InvalidName { .. } => "invalid_name",
            SecretError::NotFound { .. } => "not_found",
            SecretError::NoSource { .. } => "no_source",
            SecretError::NotSynced => "not_synced",
            SecretError::ForeignMirror { .. } => "foreign_mirror",
            SecretError::Io { .. } => "io",
            SecretError::Format { .. } => "format",
        }
    }
}

/// A place Secrets are read from. `get` is called from the collection engine's thread: it must
/// not block on the network.
pub trait SecretSource: Send + Sync + std::fmt::Debug {
    /// The `SECRET_KEYS` of the Secret `name` that a collection of `namespace` names.
    fn get(&self, namespace: &str, name: &str) -> Result<SecretData, SecretError>;

    /// Whether something may have changed since the last call (the engine then resolves every
    /// output's Secrets again and rebuilds the outputs whose values changed).
    fn take_changed(&self) -> bool {
        true
    }
}

/// No source: an output that names a Secret cannot be built (a clear error, not a crash).
#[derive(Debug, Default)]
pub struct NoSecrets;

impl SecretSource for NoSecrets {
    fn get(&self, _namespace: &str, name: &str) -> Result<SecretData, SecretError> {
        Err(SecretError::NoSource { name: name.to_string() })
    }

    fn take_changed(&self) -> bool {
        false
    }
}

/// `DIR/<namespace>/<name>/<key>` files (mounted Secrets). Polled: files change under it.
#[derive(Debug)]
pub struct DirSecrets {
    pub root: PathBuf,
}

impl DirSecrets {
    /// The folder of a Secret, or why the names cannot be one (no `..`, no `/`).
    pub fn secret_dir(root: &Path, namespace: &str, name: &str) -> Result<PathBuf, SecretError> {
        for n in [namespace, name] {
            if !is_object_name(n) {
                return Err(SecretError::InvalidName { name: n.to_string() });
            }
        }
        Ok(root.join(namespace).join(name))
    }
}

impl SecretSource for DirSecrets {
    fn get(&self, namespace: &str, name: &str) -> Result<SecretData, SecretError> {
        let dir = Self::secret_dir(&self.root, namespace, name)?;
        if !dir.is_dir() {
            return Err(SecretError::NotFound {
                namespace: namespace.to_string(),
                name: name.to_string(),
                hint: " under --secrets-dir",
            });
        }
        read_secret_dir(&dir).map_err(|source| SecretError::Io { path: dir, source })
    }
}

/// The operator's mirror Secrets in the agent's namespace, from a watch.
#[derive(Clone)]
pub struct KubeMirrors {
    namespace: String,
    store: Store<Secret>,
    synced: Arc<AtomicBool>,
    changed: Arc<AtomicBool>,
}

impl KubeMirrors {
    /// Starts watching the mirrors of `namespace` (only Secrets labelled as mirrors).
    pub fn start(client: Client, namespace: &str) -> Self {
        let (store, writer) = reflector::store();
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let cfg = watcher::Config::default().labels(&format!("{MIRROR_LABEL}=true"));
        let mirrors = KubeMirrors {
            namespace: namespace.to_string(),
            store,
            synced: Arc::new(AtomicBool::new(false)),
            changed: Arc::new(AtomicBool::new(true)),
        };
        let (synced, changed) = (mirrors.synced.clone(), mirrors.changed.clone());
        let stream = watcher(api, cfg).default_backoff().modify(strip_mirror).reflect(writer);
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::InitDone) => {
                        synced.store(true, Ordering::Release);
                        changed.store(true, Ordering::Release);
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Ok(_) => changed.store(true, Ordering::Release),
                    Err(e) => tracing::warn!(error = %e, "secret mirror watch error; retrying"),
                }
            }
        });
        mirrors
    }
}

impl std::fmt::Debug for KubeMirrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the store: it holds the values.
        write!(f, "KubeMirrors({}, {} mirrors)", self.namespace, self.store.len())
    }
}

/// Keeps of a mirror only what resolution reads.
fn strip_mirror(s: &mut Secret) {
    s.metadata.managed_fields = None;
    s.string_data = None;
    if let Some(data) = s.data.as_mut() {
        data.retain(|k, _| SECRET_KEYS.contains(&k.as_str()));
    }
}

impl SecretSource for KubeMirrors {
    fn get(&self, namespace: &str, name: &str) -> Result<SecretData, SecretError> {
        if !self.synced.load(Ordering::Acquire) {
            return Err(SecretError::NotSynced);
        }
        let Some(secret) = self.store.get(&ObjectRef::new(name).within(&self.namespace)) else {
            return Err(SecretError::NotFound {
                namespace: self.namespace.clone(),
                name: name.to_string(),
                hint: " (the operator mirrors a Secret once it exists and is labelled logging.tailor.dev/output-secret=true)",
            });
        };
        mirror_data(&secret, namespace)
    }

    fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::AcqRel)
    }
}

/// The keys of `mirror`, if it was copied from `namespace` (a NodeLogConfig that named another
/// namespace's mirror must not get its values).
pub fn mirror_data(mirror: &Secret, namespace: &str) -> Result<SecretData, SecretError> {
    let owner = mirror.metadata.annotations.as_ref().and_then(|a| a.get(SOURCE_NAMESPACE_ANNOTATION));
    if owner.map(String::as_str) != Some(namespace) {
        return Err(SecretError::ForeignMirror {
            mirror: mirror.metadata.name.clone().unwrap_or_default(),
            owner: owner.cloned(),
            namespace: namespace.to_string(),
        });
    }
    Ok(mirror
        .data
        .iter()
        .flatten()
        .filter(|(k, _)| SECRET_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect())
}

/// What an output is built with from its Secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputSecrets {
    pub credentials: Option<Credentials>,
    pub tls: TlsMaterial,
}

/// Resolves the Secrets `output` names, for a collection of `namespace`. Outputs that are not
/// network outputs use none.
pub fn resolve_output(
    output: &OutputSpec,
    namespace: &str,
    source: &dyn SecretSource,
) -> Result<OutputSecrets, SecretError> {
    if matches!(output.type_, OutputType::File | OutputType::Stdout) {
        return Ok(OutputSecrets::default());
    }
    let mut out = OutputSecrets::default();
    if let Some(r) = &output.credentials_secret_ref {
        let data = source.get(namespace, &r.name)?;
        let format = |source| SecretError::Format { name: r.name.clone(), source };
        let credentials = Credentials::from_secret(&data).map_err(&format)?;
        out.credentials = Some(credentials.ok_or_else(|| format(SecretFormatError::NoCredentials))?);
    }
    if let Some(r) = output.tls.as_ref().and_then(|t| t.secret_ref.as_ref()) {
        let data = source.get(namespace, &r.name)?;
        let tls = TlsMaterial::from_secret(&data)
            .map_err(|source| SecretError::Format { name: r.name.clone(), source })?;
        if tls.is_empty() {
            return Err(SecretError::Format {
                name: r.name.clone(),
                source: SecretFormatError::NoTlsMaterial,
            });
        }
        out.tls = tls;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use kube::api::ObjectMeta;

    fn output(yaml: &str) -> OutputSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn write(root: &Path, ns: &str, name: &str, keys: &[(&str, &str)]) {
        let d = root.join(ns).join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (k, v) in keys {
            std::fs::write(d.join(k), v).unwrap();
        }
    }

    #[test]
    fn resolves_from_a_secrets_dir() {
        let d = tempfile::tempdir().unwrap();
        let src = DirSecrets { root: d.path().to_path_buf() };
        write(d.path(), "team", "creds", &[("username", "u\n"), ("password", "p"), ("other", "x")]);
        write(d.path(), "team", "tls", &[("ca.crt", "CA")]);
        let http = output(
            "{name: o, type: http, http: {uri: 'https://x'}, credentialsSecretRef: {name: creds}, tls: {secretRef: {name: tls}}}",
        );
        let r = resolve_output(&http, "team", &src).unwrap();
        assert_eq!(r.credentials, Some(Credentials::Basic { username: "u".into(), password: "p".into() }));
        assert_eq!(r.tls.ca_pem.as_deref(), Some(&b"CA"[..]));
        // Only the keys an output uses are read.
        assert!(!src.get("team", "creds").unwrap().contains_key("other"));
        // Another namespace's Secret of the same name is not this one.
        let e = resolve_output(&http, "other", &src).unwrap_err();
        assert!(matches!(e, SecretError::NotFound { .. }), "{e}");
        // A file output ignores Secrets.
        assert_eq!(
            resolve_output(&output("{name: f, type: file}"), "team", &NoSecrets).unwrap(),
            OutputSecrets::default()
        );
        // Without a source: a clear error naming the Secret.
        let e = resolve_output(&http, "team", &NoSecrets).unwrap_err();
        assert!(e.to_string().contains("creds") && e.to_string().contains("--secrets-dir"), "{e}");
    }

    #[test]
    fn bad_names_and_contents_are_errors_without_values() {
        let d = tempfile::tempdir().unwrap();
        let src = DirSecrets { root: d.path().to_path_buf() };
        write(d.path(), "team", "half", &[("password", "hunter2")]);
        write(d.path(), "team", "empty-tls", &[("username", "u")]);
        for name in ["../team/half", "a/b", ".."] {
            assert!(matches!(src.get("team", name), Err(SecretError::InvalidName { .. })), "{name}");
        }
        assert!(matches!(src.get("..", "half"), Err(SecretError::InvalidName { .. })));
        let half =
            output("{name: o, type: loki, loki: {endpoint: 'http://x'}, credentialsSecretRef: {name: half}}");
        let e = resolve_output(&half, "team", &src).unwrap_err();
        assert!(matches!(e, SecretError::Format { source: SecretFormatError::HalfBasic, .. }), "{e}");
        assert!(!e.to_string().contains("hunter2"));
        let tls = output(
            "{name: o, type: loki, loki: {endpoint: 'http://x'}, tls: {secretRef: {name: empty-tls}}}",
        );
        let e = resolve_output(&tls, "team", &src).unwrap_err();
        assert!(matches!(e, SecretError::Format { source: SecretFormatError::NoTlsMaterial, .. }), "{e}");
    }

    #[test]
    fn a_mirror_serves_only_its_source_namespace() {
        let mirror = Secret {
            metadata: ObjectMeta {
                name: Some("tailor-abc".into()),
                annotations: Some([(SOURCE_NAMESPACE_ANNOTATION.to_string(), "team".to_string())].into()),
                ..Default::default()
            },
            data: Some(
                [("token", "t"), ("extra", "x")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        let data = mirror_data(&mirror, "team").unwrap();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["token"]);
        let e = mirror_data(&mirror, "intruder").unwrap_err();
        assert!(matches!(e, SecretError::ForeignMirror { .. }), "{e}");
        let mut unannotated = mirror.clone();
        unannotated.metadata.annotations = None;
        assert!(mirror_data(&unannotated, "team").is_err());
    }
}

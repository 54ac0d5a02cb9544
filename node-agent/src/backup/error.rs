//! Errors of the backup engine, each with a category for metrics, status reasons and Events.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("destination {destination:?} rejected: {reason}")]
    Destination { destination: String, reason: String },
    #[error("invalid policy setting: {0}")]
    Policy(#[from] tailor_crds::units::UnitError),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("resolving inputs of {target}: {message}")]
    Resolve { target: String, message: String },
    #[error("state file {path}: {message}")]
    State { path: PathBuf, message: String },
    #[error("writing status of {namespace}/{name}: {message}")]
    Status { namespace: String, name: String, message: String },
    #[error("backup API: {0}")]
    Api(String),
}

impl BackupError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        BackupError::Io { op, path: path.into(), source }
    }

    /// Label for metrics and the status' condition reason.
    pub fn category(&self) -> &'static str {
        match self {
            BackupError::Destination { .. } => "InvalidDestination",
            BackupError::Policy(_) => "InvalidPolicy",
            BackupError::Io { source, .. } => match source.kind() {
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => "NoSpace",
                io::ErrorKind::ReadOnlyFilesystem => "ReadOnly",
                io::ErrorKind::PermissionDenied => "PermissionDenied",
                _ => "IOError",
            },
            BackupError::Resolve { .. } => "ResolveError",
            BackupError::State { .. } => "StateError",
            BackupError::Status { .. } => "StatusError",
            BackupError::Api(_) => "ApiError",
        }
    }

    /// Does the error say the backup root cannot take writes now (a full disk, a read-only
    /// mount)? Those degrade a backup; copying resumes by itself once they clear.
    pub fn is_destination_unavailable(&self) -> bool {
        matches!(self.category(), "NoSpace" | "ReadOnly" | "PermissionDenied")
    }

    /// Errors that no retry fixes until the configuration changes.
    pub fn is_permanent(&self) -> bool {
        matches!(self, BackupError::Destination { .. } | BackupError::Policy(_))
    }
}

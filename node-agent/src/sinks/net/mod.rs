//! Plumbing shared by the network sinks (HTTP, Elasticsearch, Loki, Kafka): the context a sink is
//! built with, the HTTP client with TLS, body compression, the JSON document of an event, field
//! lookup, back-off and the dead-letter file.

pub mod backoff;
pub mod client;
pub mod compress;
pub mod context;
pub mod deadletter;
pub mod document;
pub mod fields;
pub mod send;
pub mod verdict;

pub use context::{Credentials, RetryPolicy, SinkContext, SinkStats, TlsMaterial, file_safe_name};

use tailor_crds::collection::OutputType;

/// Why a network sink could not be built from its spec.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("output {output}: type {type_:?} needs its {type_:?} section")]
    MissingSection { output: String, type_: OutputType },
    #[error("output {output}: invalid URL {url:?}: {reason}")]
    InvalidUrl { output: String, url: String, reason: String },
    #[error("output {output}: invalid header {name:?}")]
    InvalidHeader { output: String, name: String },
    #[error("output {output}: invalid {what} {value:?}")]
    Invalid { output: String, what: &'static str, value: String },
    #[error("output {output}: TLS: {source}")]
    Tls {
        output: String,
        #[source]
        source: client::ClientError,
    },
    #[error("output {output}: {source}")]
    DeadLetter {
        output: String,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    /// Label for metrics and status.
    pub fn category(&self) -> &'static str {
        match self {
            BuildError::MissingSection { .. } => "missing_section",
            BuildError::InvalidUrl { .. } => "invalid_url",
            BuildError::InvalidHeader { .. } => "invalid_header",
            BuildError::Invalid { .. } => "invalid",
            BuildError::Tls { .. } => "tls",
            BuildError::DeadLetter { .. } => "dead_letter",
        }
    }
}

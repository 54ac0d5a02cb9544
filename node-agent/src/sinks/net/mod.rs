//! Plumbing shared by the network sinks (HTTP, Elasticsearch, Loki, Kafka): the context a sink is
//! built with, the HTTP client with TLS, body compression, field lookup, back-off, the retry loop
//! and the dead-letter file. Events are encoded by `crate::encode` like every other sink's.

pub mod backoff;
pub mod bench;
pub mod client;
pub mod compress;
pub mod context;
pub mod deadletter;
pub mod fields;
pub mod send;
pub mod verdict;

#[cfg(test)]
pub(crate) mod testutil;

pub use context::{
    Credentials, NetContext, NetOptions, NetStats, RetryPolicy, SECRET_KEYS, SecretData, SecretFormatError,
    TlsMaterial, file_safe_name, read_secret_dir, stopped,
};

use tailor_crds::collection::{BufferType, OutputSpec, OutputType};

use crate::buffer::DiskBuffer;
use crate::sinks::elasticsearch::ElasticsearchSink;
use crate::sinks::http::HttpSink;
use crate::sinks::kafka::KafkaSink;
use crate::sinks::loki::LokiSink;
use crate::sinks::{Sink, SinkBuildError, SinkContext};

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

/// Builds the sink of a network output (`SinkContext.net` carries its resolved Secrets), behind
/// a disk buffer when the output asks for one.
pub fn build(output: &OutputSpec, ctx: &SinkContext) -> Result<Box<dyn Sink>, SinkBuildError> {
    let invalid = |message: String| SinkBuildError::Invalid { output: ctx.sink_name(output), message };
    let sink: Box<dyn Sink> = match output.type_ {
        OutputType::Elasticsearch => {
            Box::new(ElasticsearchSink::new(output, ctx).map_err(|e| invalid(e.to_string()))?)
        }
        OutputType::Loki => Box::new(LokiSink::new(output, ctx).map_err(|e| invalid(e.to_string()))?),
        OutputType::Kafka => Box::new(KafkaSink::new(output, ctx).map_err(|e| invalid(e.to_string()))?),
        OutputType::Http => Box::new(HttpSink::new(output, ctx).map_err(|e| invalid(e.to_string()))?),
        OutputType::File | OutputType::Stdout => {
            return Err(invalid(format!("{:?} is not a network output", output.type_)));
        }
    };
    match output.buffer.type_ {
        BufferType::Memory => Ok(sink),
        BufferType::Disk => {
            let buffer = DiskBuffer::open(&output.buffer, &NetContext::new(output, ctx), sink)
                .map_err(|e| invalid(e.to_string()))?;
            Ok(Box::new(buffer))
        }
    }
}

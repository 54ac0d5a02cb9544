//! Sinks: where events go. A sink only delivers batches; batching, bounded queues, back-pressure
//! and acknowledgements are the sink runner's job, so that every sink gets them alike and the
//! tailer never knows which sinks exist.
//!
//! The contract: `deliver` returns `Ok(())` only once every event of the batch is delivered (or,
//! for events the destination rejects for good, dead-lettered and counted). Retrying transient
//! failures with back-off is the sink's job; it returns `Err` only when it gives up on the batch
//! (shutdown), and then nothing of the batch counts as delivered.

pub mod elasticsearch;
pub mod file;
pub mod http;
pub mod kafka;
pub mod loki;
pub mod net;
pub mod runner;
pub mod stdout;

use std::path::PathBuf;

use futures::future::BoxFuture;
use tailor_crds::collection::{OutputSpec, OutputType};
use tailor_crds::node::SourceRef;
use tokio::sync::watch;

use crate::event::Event;

pub use runner::{Chunk, SinkHandle, spawn_sink};

/// Why a batch was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink {sink} is shutting down")]
    ShuttingDown { sink: String },
    #[error("sink {sink}: {message}")]
    Failed {
        sink: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl SinkError {
    /// Label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            SinkError::ShuttingDown { .. } => "shutdown",
            SinkError::Failed { .. } => "failed",
        }
    }
}

/// A destination of events.
pub trait Sink: Send + 'static {
    /// A name for logs and metrics (`<namespace>/<resource>/<output>`).
    fn name(&self) -> &str;

    /// Deliver every event of the batch (see the module's contract).
    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>>;
}

/// What building a sink may need besides its `OutputSpec`.
#[derive(Clone, Debug)]
pub struct SinkContext {
    pub node_name: String,
    /// The collection the output belongs to.
    pub collection: SourceRef,
    /// `--output-dir`: root of the `file` output.
    pub output_dir: Option<PathBuf>,
    /// `--state-dir`: where disk buffers live.
    pub state_dir: PathBuf,
    /// Size at which the `file` output rotates a target's file.
    pub file_max_bytes: u64,
    /// Rotated files the `file` output keeps per target.
    pub file_max_files: usize,
    /// Turns `true` when the agent must stop now (second signal or end of the grace period):
    /// a sink then gives up retrying and returns `SinkError::ShuttingDown`.
    pub force_stop: watch::Receiver<bool>,
    /// For network outputs: the output's resolved Secrets, retry policy and extra counters
    /// (see `net::NetOptions`).
    pub net: net::NetOptions,
}

impl SinkContext {
    /// `<namespace>/<resource>/<output>`: the name of the sink of `output`.
    pub fn sink_name(&self, output: &OutputSpec) -> String {
        format!("{}/{}/{}", self.collection.namespace, self.collection.name, output.name)
    }
}

/// Why a sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SinkBuildError {
    #[error("output {output}: type {type_:?} is not available in this build")]
    NotAvailable { output: String, type_: OutputType },
    #[error("output {output}: type file needs the agent's --output-dir")]
    NoOutputDir { output: String },
    #[error("output {output}: {message}")]
    Invalid { output: String, message: String },
    #[error("output {output}: {source}")]
    Io {
        output: String,
        #[source]
        source: std::io::Error,
    },
}

impl SinkBuildError {
    /// Label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            SinkBuildError::NotAvailable { .. } => "not_available",
            SinkBuildError::NoOutputDir { .. } => "no_output_dir",
            SinkBuildError::Invalid { .. } => "invalid",
            SinkBuildError::Io { .. } => "io",
        }
    }
}

/// Builds the sink of one output.
pub fn build(output: &OutputSpec, ctx: &SinkContext) -> Result<Box<dyn Sink>, SinkBuildError> {
    match output.type_ {
        OutputType::File => Ok(Box::new(file::FileSink::new(output, ctx)?)),
        OutputType::Stdout => Ok(Box::new(stdout::StdoutSink::new(ctx.sink_name(output)))),
        OutputType::Elasticsearch | OutputType::Loki | OutputType::Kafka | OutputType::Http => {
            net::build(output, ctx)
        }
    }
}

//! Sinks: where events go. A sink only delivers batches; batching, bounded queues, back-pressure
//! and acknowledgements are the sink runner's job, so that every sink gets them alike and the
//! tailer never knows which sinks exist.
//!
//! The contract: `deliver` returns `Ok(())` only once every event of the batch is delivered (or,
//! for events the destination rejects for good, dead-lettered and counted). Retrying transient
//! failures with back-off is the sink's job; it returns `Err` only when it gives up on the batch
//! (shutdown), and then nothing of the batch counts as delivered.

use futures::future::BoxFuture;

use crate::event::Event;

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

pub mod elasticsearch;
pub mod http;
pub mod kafka;
pub mod loki;
pub mod net;

//! The hook between decoding and the sinks: a per-target processor (multiline, parsing,
//! enrichment, filters) that the pipeline team provides. The collection engine only knows this
//! trait, so the pipeline can change without touching the tailer.

use std::sync::Arc;
use std::time::Instant;

use tailor_crds::node::NodeCollection;

use crate::event::{Event, TargetMeta};
use crate::pipeline::PipelineCounters;

/// Turns decoded events into the events the sinks get. May hold events back (multiline) and
/// drop some (filters); must keep the order of the events of each file.
pub trait Processor: Send {
    /// Handles one decoded event, pushing zero or more events to `out`.
    fn process(&mut self, event: Event, out: &mut Vec<Event>);

    /// Emits events held back for longer than their timeout (`force`: all of them, at shutdown
    /// or when a file goes away).
    fn flush(&mut self, now: Instant, force: bool, out: &mut Vec<Event>);

    /// Whether events are held back (a target is not let go of before they were flushed).
    fn holds(&self) -> bool {
        false
    }
}

/// Passes every event through unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl Processor for Identity {
    fn process(&mut self, event: Event, out: &mut Vec<Event>) {
        out.push(event);
    }

    fn flush(&mut self, _now: Instant, _force: bool, _out: &mut Vec<Event>) {}
}

/// Why a target's processor could not be built (a regex that does not compile, ...).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ProcessorError {
    pub message: String,
}

/// Builds the processor of one target (`crate::pipeline::build`); `counters` are shared by the
/// targets of a collection.
pub fn build_processor(
    collection: &NodeCollection,
    meta: &TargetMeta,
    counters: Arc<PipelineCounters>,
) -> Result<Box<dyn Processor>, ProcessorError> {
    crate::pipeline::build(collection, meta, counters).map_err(|e| ProcessorError { message: e.to_string() })
}

//! The per-target processing between decoding and the sinks, in this order:
//! multiline → parse → timestamp → enrich → include/exclude filters.
//!
//! Built once per target from its `NodeCollection` and `TargetMeta` (regexes compiled once, scratch
//! space reused), then fed one decoded line at a time. Nothing is dropped except by a filter (and
//! counted): a line that does not parse goes on raw, marked `parse_failed`.
//!
//! Checkpoints: an event that comes out carries the offset of its last line, and multiline never
//! releases an event while a line at or before that offset is still held back in the same file.
//! An event that a filter drops does not come out at all; its offset is passed by the next event
//! of the file that does.

mod bench;
mod counters;
pub mod enrich;
pub mod filter;
pub mod multiline;
pub mod parse;
pub mod timestamp;

use std::sync::Arc;
use std::time::Instant;

use tailor_crds::node::NodeCollection;

pub use bench::{BenchReport, bench_pipeline};
pub use counters::{CountersSnapshot, PipelineCounters};
use filter::{Filters, Verdict};
use multiline::Multiline;
use parse::Parser;
use timestamp::TimestampField;

use crate::event::{Event, TargetMeta};
pub use crate::process::Processor;

/// A configuration the pipeline cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{field}: invalid regex: {source}")]
    InvalidRegex {
        field: String,
        #[source]
        source: regex::Error,
    },
    #[error("{field}: {message}")]
    MissingSetting { field: String, message: String },
    #[error(
        "parse.timestamp.format: {format:?} is not rfc3339, unix, unixMillis, unixNanos or a valid strftime format"
    )]
    InvalidTimestampFormat { format: String },
}

impl PipelineError {
    /// Label for metrics and status reasons.
    pub fn category(&self) -> &'static str {
        match self {
            PipelineError::InvalidRegex { .. } => "invalid_regex",
            PipelineError::MissingSetting { .. } => "missing_setting",
            PipelineError::InvalidTimestampFormat { .. } => "invalid_timestamp_format",
        }
    }
}

/// Builds the processor of one target.
pub fn build(
    collection: &NodeCollection,
    meta: &TargetMeta,
    counters: Arc<PipelineCounters>,
) -> Result<Box<dyn Processor>, PipelineError> {
    Ok(Box::new(Pipeline::new(collection, meta, counters)?))
}

/// The pipeline of one target.
#[derive(Debug)]
pub struct Pipeline {
    multiline: Option<Multiline>,
    stages: Stages,
    /// Events released by multiline, reused between calls.
    released: Vec<Event>,
}

/// Everything after multiline, applied to one complete event.
#[derive(Debug)]
struct Stages {
    /// The target's metadata, for the conflicts of parsed fields (events carry the same).
    meta: TargetMeta,
    parser: Parser,
    timestamp: Option<TimestampField>,
    keep_original: bool,
    filters: Filters,
    counters: Arc<PipelineCounters>,
}

impl Pipeline {
    /// Compiles the pipeline; `counters` may be shared by several targets (e.g. per collection).
    pub fn new(
        collection: &NodeCollection,
        meta: &TargetMeta,
        counters: Arc<PipelineCounters>,
    ) -> Result<Self, PipelineError> {
        let multiline = collection.multiline.as_ref().map(Multiline::new).transpose()?;
        let parse = &collection.parse;
        let stages = Stages {
            meta: meta.clone(),
            parser: Parser::compile(parse)?,
            timestamp: parse.timestamp.as_ref().map(TimestampField::compile).transpose()?,
            keep_original: parse.keep_original,
            filters: Filters::compile(&collection.filters)?,
            counters,
        };
        Ok(Self { multiline, stages, released: Vec::new() })
    }

    pub fn counters(&self) -> Arc<PipelineCounters> {
        self.stages.counters.clone()
    }

    /// Lines held back by multiline.
    pub fn held(&self) -> usize {
        self.multiline.as_ref().map_or(0, Multiline::held)
    }

    fn run_released(&mut self, out: &mut Vec<Event>) {
        if let Some(multiline) = &mut self.multiline {
            PipelineCounters::add(&self.stages.counters.lines_joined, multiline.take_joined());
        }
        for event in self.released.drain(..) {
            self.stages.run(event, out);
        }
    }
}

impl Processor for Pipeline {
    fn process(&mut self, event: Event, out: &mut Vec<Event>) {
        PipelineCounters::add(&self.stages.counters.events_in, 1);
        match &mut self.multiline {
            None => self.stages.run(event, out),
            Some(multiline) => {
                multiline.process(event, &mut self.released);
                self.run_released(out);
            }
        }
    }

    fn flush(&mut self, now: Instant, force: bool, out: &mut Vec<Event>) {
        if let Some(multiline) = &mut self.multiline {
            multiline.flush(now, force, &mut self.released);
            self.run_released(out);
        }
    }

    fn holds(&self) -> bool {
        self.held() > 0
    }
}

impl Stages {
    fn run(&mut self, mut event: Event, out: &mut Vec<Event>) {
        let mut parsed = false;
        if !self.parser.is_none() {
            match self.parser.parse(&event.message) {
                Some(mut fields) => {
                    if let Some(ts) = &self.timestamp {
                        match ts.extract(&fields) {
                            Some(nanos) => event.timestamp_nanos = nanos,
                            None => PipelineCounters::add(&self.counters.timestamp_failed, 1),
                        }
                    }
                    let moved = enrich::resolve_conflicts(&mut fields, &self.meta, self.keep_original);
                    PipelineCounters::add(&self.counters.field_conflicts, moved);
                    event.fields = Some(fields);
                    parsed = true;
                }
                None => {
                    event.flags.parse_failed = true;
                    PipelineCounters::add(&self.counters.parse_failed, 1);
                }
            }
        }
        if !self.filters.is_empty() {
            match self.filters.verdict(&event, &event.message) {
                Verdict::Keep => {}
                Verdict::NotIncluded => return PipelineCounters::add(&self.counters.dropped_include, 1),
                Verdict::Excluded => return PipelineCounters::add(&self.counters.dropped_exclude, 1),
            }
        }
        if parsed && !self.keep_original {
            enrich::replace_message(&mut event);
        }
        PipelineCounters::add(&self.counters.events_out, 1);
        out.push(event);
    }
}

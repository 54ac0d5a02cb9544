//! Counters of what the pipeline did, shared with the agent's metrics.
//!
//! Plain atomics so that the hot path only does relaxed increments and the metrics endpoint can
//! read them at any time without a lock.

use std::sync::atomic::{AtomicU64, Ordering};

/// What the pipeline of one target (or of every target that shares it) did, since start.
#[derive(Debug, Default)]
pub struct PipelineCounters {
    /// Events handed to the pipeline (lines, before multiline joining).
    pub events_in: AtomicU64,
    /// Events handed on to the sinks.
    pub events_out: AtomicU64,
    /// Lines appended to an earlier line by multiline joining.
    pub lines_joined: AtomicU64,
    /// Events a configured parser could not parse (kept raw, marked `parse_failed`).
    pub parse_failed: AtomicU64,
    /// Events whose timestamp field was missing or did not match the format (time left as read).
    pub timestamp_failed: AtomicU64,
    /// Parsed fields that collided with metadata and were moved under `_parsed`.
    pub field_conflicts: AtomicU64,
    /// Events dropped because no include filter matched.
    pub dropped_include: AtomicU64,
    /// Events dropped because an exclude filter matched.
    pub dropped_exclude: AtomicU64,
}

/// A plain copy of the counters, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    pub events_in: u64,
    pub events_out: u64,
    pub lines_joined: u64,
    pub parse_failed: u64,
    pub timestamp_failed: u64,
    pub field_conflicts: u64,
    pub dropped_include: u64,
    pub dropped_exclude: u64,
}

impl PipelineCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads every counter (each one atomically; the set is not a consistent cut).
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            events_in: get(&self.events_in),
            events_out: get(&self.events_out),
            lines_joined: get(&self.lines_joined),
            parse_failed: get(&self.parse_failed),
            timestamp_failed: get(&self.timestamp_failed),
            field_conflicts: get(&self.field_conflicts),
            dropped_include: get(&self.dropped_include),
            dropped_exclude: get(&self.dropped_exclude),
        }
    }
}

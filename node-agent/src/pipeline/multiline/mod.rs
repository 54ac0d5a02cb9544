//! Multiline joining: lines of one file and one stream become one event (stack traces).
//!
//! Events are held back while they may still grow, and released when a line shows they are
//! complete, when `max_lines`/`max_bytes` would be exceeded (the event is split, never cut), or by
//! `flush` once `flush_timeout` passed without a new line.
//!
//! Checkpoint safety: an event's `offset` is the offset of its last line, and an event is only
//! released once no line at or before that offset is still held back in the same file. CRI files
//! interleave stdout and stderr, so while a stderr stack trace is open, later stdout events of
//! that file wait behind it (for at most the flush timeout); events come out in offset order per
//! file. Lines of different files or streams are never joined.

mod rules;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tailor_crds::collection::MultilineSpec;
use tailor_crds::node::StdStream;

pub use rules::{Decision, Phase, Rule};

use crate::event::{Event, FileId};
use crate::pipeline::PipelineError;

/// Completed events waiting behind an open event of the same file, beyond which the open events
/// are released early, so that memory stays bounded when one stream floods while the other holds
/// a trace open.
const HELD_EVENTS_LIMIT: usize = 4096;

/// The multiline stage of one target.
#[derive(Debug)]
pub struct Multiline {
    rule: Rule,
    max_lines: u32,
    max_bytes: usize,
    timeout: Duration,
    files: Vec<FileQueue>,
    /// Lines appended to an earlier line since the last `take_joined`.
    joined: u64,
}

/// What is held back for one file.
#[derive(Debug)]
struct FileQueue {
    file: FileId,
    /// The open event of each stream: stdout, stderr, none (plain files).
    open: [Option<Group>; 3],
    /// Completed events not yet released, sorted by offset.
    done: VecDeque<Done>,
}

#[derive(Debug)]
struct Done {
    /// Offset of the event's first line: no line of it is at or before an earlier offset.
    first_offset: u64,
    event: Event,
}

/// An event under construction.
#[derive(Debug)]
struct Group {
    first_offset: u64,
    /// The first line's event, carrying the latest offset and flags.
    event: Event,
    /// The joined message, once a second line arrived (single lines are never copied).
    joined: Option<BytesMut>,
    lines: u32,
    bytes: usize,
    phase: Phase,
    /// A line arrived since the last `flush`: the deadline restarts at the next flush.
    touched: bool,
    deadline: Option<Instant>,
}

impl Group {
    fn new(event: Event, phase: Phase) -> Self {
        Self {
            first_offset: event.offset,
            bytes: event.message.len(),
            event,
            joined: None,
            lines: 1,
            phase,
            touched: true,
            deadline: None,
        }
    }

    fn fits(&self, line: &Event, max_lines: u32, max_bytes: usize) -> bool {
        self.lines < max_lines && self.bytes + 1 + line.message.len() <= max_bytes
    }

    fn append(&mut self, line: Event, phase: Phase) {
        let joined = self.joined.get_or_insert_with(|| {
            let mut buf = BytesMut::with_capacity((self.bytes + 1 + line.message.len()).max(1024));
            buf.extend_from_slice(&self.event.message);
            buf
        });
        joined.extend_from_slice(b"\n");
        joined.extend_from_slice(&line.message);
        self.bytes += 1 + line.message.len();
        self.lines += 1;
        self.event.offset = line.offset;
        self.event.flags.truncated |= line.flags.truncated;
        self.phase = phase;
        self.touched = true;
    }

    fn finish(self) -> Done {
        let mut event = self.event;
        if let Some(joined) = self.joined {
            event.message = joined.freeze();
        }
        Done { first_offset: self.first_offset, event }
    }
}

fn stream_slot(stream: Option<StdStream>) -> usize {
    match stream {
        Some(StdStream::Stdout) => 0,
        Some(StdStream::Stderr) => 1,
        None => 2,
    }
}

impl FileQueue {
    fn new(file: FileId) -> Self {
        Self { file, open: [None, None, None], done: VecDeque::new() }
    }

    fn is_empty(&self) -> bool {
        self.done.is_empty() && self.open.iter().all(Option::is_none)
    }

    fn complete(&mut self, done: Done) {
        // Usually the newest; a group closed late may belong further forward.
        let at = self.done.partition_point(|d| d.event.offset <= done.event.offset);
        self.done.insert(at, done);
    }

    fn close(&mut self, slot: usize) {
        if let Some(group) = self.open[slot].take() {
            self.complete(group.finish());
        }
    }

    /// Releases the longest prefix of completed events such that no line still held back lies
    /// at or before the last released offset.
    fn release(&mut self, out: &mut Vec<Event>) {
        let min_open = self.open.iter().flatten().map(|g| g.first_offset).min().unwrap_or(u64::MAX);
        match self.done.front() {
            Some(front) if front.event.offset < min_open => {}
            _ => return,
        }
        let mut later_min = u64::MAX;
        let mut cut = 0;
        for k in (1..=self.done.len()).rev() {
            if self.done[k - 1].event.offset < later_min.min(min_open) {
                cut = k;
                break;
            }
            later_min = later_min.min(self.done[k - 1].first_offset);
        }
        out.extend(self.done.drain(..cut).map(|d| d.event));
    }
}

impl Multiline {
    pub fn new(spec: &MultilineSpec) -> Result<Self, PipelineError> {
        Ok(Self {
            rule: Rule::compile(spec)?,
            max_lines: spec.max_lines.max(1),
            max_bytes: spec.max_bytes as usize,
            timeout: Duration::from_millis(u64::from(spec.flush_timeout_ms)),
            files: Vec::new(),
            joined: 0,
        })
    }

    /// Number of lines appended to earlier lines since the last call.
    pub fn take_joined(&mut self) -> u64 {
        std::mem::take(&mut self.joined)
    }

    /// Events currently held back (for tests and metrics).
    pub fn held(&self) -> usize {
        self.files.iter().map(|f| f.done.len() + f.open.iter().flatten().count()).sum()
    }

    /// Takes one line; completed events are appended to `out` in offset order per file.
    pub fn process(&mut self, line: Event, out: &mut Vec<Event>) {
        let index = match self.files.iter().position(|f| f.file == line.file) {
            Some(index) => index,
            None => {
                self.files.push(FileQueue::new(line.file));
                self.files.len() - 1
            }
        };
        let queue = &mut self.files[index];
        let slot = stream_slot(line.stream);
        let current = queue.open[slot].as_ref().map(|g| g.phase);
        match self.rule.decide(current, &line.message) {
            Decision::Continue(phase) => match &mut queue.open[slot] {
                Some(group)
                    if group.phase != Phase::Closed && group.fits(&line, self.max_lines, self.max_bytes) =>
                {
                    group.append(line, phase);
                    self.joined += 1;
                }
                _ => {
                    queue.close(slot);
                    queue.open[slot] = Some(Group::new(line, phase));
                }
            },
            Decision::Start(phase) => {
                queue.close(slot);
                queue.open[slot] = Some(Group::new(line, phase));
            }
        }
        if queue.open[slot].as_ref().is_some_and(|g| g.phase == Phase::Closed) {
            queue.close(slot);
        }
        if queue.done.len() >= HELD_EVENTS_LIMIT {
            for slot in 0..3 {
                queue.close(slot);
            }
        }
        queue.release(out);
        if queue.is_empty() {
            self.files.swap_remove(index);
        }
    }

    /// Releases events whose flush timeout passed (every held event when `force`).
    ///
    /// The timeout of an event restarts at the first `flush` after its last line, so an event is
    /// released between `flush_timeout` and `flush_timeout` + the flush period after its last line.
    pub fn flush(&mut self, now: Instant, force: bool, out: &mut Vec<Event>) {
        for queue in &mut self.files {
            for slot in 0..3 {
                let expired = match &mut queue.open[slot] {
                    None => false,
                    Some(_) if force => true,
                    Some(group) if group.touched => {
                        group.touched = false;
                        group.deadline = Some(now + self.timeout);
                        false
                    }
                    Some(group) => group.deadline.is_some_and(|d| d <= now),
                };
                if expired {
                    queue.close(slot);
                }
            }
            queue.release(out);
        }
        self.files.retain(|f| !f.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tailor_crds::collection::MultilineMode;

    use super::*;
    use crate::event::{EventFlags, TargetMeta};

    fn spec(start: &str) -> MultilineSpec {
        MultilineSpec {
            mode: MultilineMode::Custom,
            start_pattern: Some(start.into()),
            continuation_pattern: None,
            max_lines: 500,
            max_bytes: 1024,
            flush_timeout_ms: 1000,
        }
    }

    fn line(offset: u64, stream: Option<StdStream>, text: &str) -> Event {
        Event {
            meta: Arc::new(TargetMeta::default()),
            file: FileId { dev: 1, ino: 2, fingerprint: 3 },
            offset,
            timestamp_nanos: offset as i64,
            stream,
            message: Bytes::copy_from_slice(text.as_bytes()),
            fields: None,
            flags: EventFlags::default(),
        }
    }

    fn texts(events: &[Event]) -> Vec<(u64, String)> {
        events.iter().map(|e| (e.offset, String::from_utf8_lossy(&e.message).into_owned())).collect()
    }

    #[test]
    fn joins_until_next_start_and_keeps_first_timestamp() {
        let mut m = Multiline::new(&spec("^S")).unwrap();
        let mut out = Vec::new();
        for (o, t) in [(10, "S one"), (20, " a"), (30, " b"), (40, "S two")] {
            m.process(line(o, None, t), &mut out);
        }
        assert_eq!(texts(&out), [(30, "S one\n a\n b".to_string())]);
        assert_eq!(out[0].timestamp_nanos, 10);
        assert_eq!(m.take_joined(), 2);
        assert_eq!(m.held(), 1);
    }

    #[test]
    fn flush_releases_after_timeout_only() {
        let mut m = Multiline::new(&spec("^S")).unwrap();
        let mut out = Vec::new();
        let t0 = Instant::now();
        m.process(line(10, None, "S one"), &mut out);
        m.flush(t0, false, &mut out);
        m.flush(t0 + Duration::from_millis(999), false, &mut out);
        assert!(out.is_empty());
        m.process(line(20, None, " more"), &mut out);
        // The new line restarts the timeout at the next flush.
        m.flush(t0 + Duration::from_millis(1000), false, &mut out);
        m.flush(t0 + Duration::from_millis(1999), false, &mut out);
        assert!(out.is_empty());
        m.flush(t0 + Duration::from_millis(2000), false, &mut out);
        assert_eq!(texts(&out), [(20, "S one\n more".to_string())]);
        assert_eq!(m.held(), 0);
    }

    #[test]
    fn streams_never_mix_and_offsets_stay_ordered() {
        let mut m = Multiline::new(&spec("^S")).unwrap();
        let mut out = Vec::new();
        let (o, e) = (Some(StdStream::Stdout), Some(StdStream::Stderr));
        m.process(line(10, e, "S err"), &mut out);
        m.process(line(20, o, "S out1"), &mut out);
        m.process(line(30, e, " err cont"), &mut out);
        m.process(line(40, o, "S out2"), &mut out);
        // out1 (20) is complete but the stderr event that started at 10 is still open.
        assert!(out.is_empty());
        m.process(line(50, e, "S err2"), &mut out);
        assert_eq!(texts(&out), [(20, "S out1".to_string()), (30, "S err\n err cont".to_string())]);
        out.clear();
        m.flush(Instant::now(), true, &mut out);
        assert_eq!(texts(&out), [(40, "S out2".to_string()), (50, "S err2".to_string())]);
    }

    #[test]
    fn limits_split_events_without_losing_lines() {
        let mut s = spec("^S");
        s.max_lines = 2;
        let mut m = Multiline::new(&s).unwrap();
        let mut out = Vec::new();
        for (o, t) in [(1, "S"), (2, "a"), (3, "b"), (4, "c"), (5, "d")] {
            m.process(line(o, None, t), &mut out);
        }
        m.flush(Instant::now(), true, &mut out);
        assert_eq!(texts(&out), [(2, "S\na".into()), (4, "b\nc".into()), (5, "d".to_string())]);

        let mut s = spec("^S");
        s.max_bytes = 8;
        let mut m = Multiline::new(&s).unwrap();
        let mut out = Vec::new();
        for (o, t) in [(1, "S 123"), (2, "45"), (3, "6789")] {
            m.process(line(o, None, t), &mut out);
        }
        m.flush(Instant::now(), true, &mut out);
        assert_eq!(texts(&out), [(2, "S 123\n45".into()), (3, "6789".to_string())]);
    }

    #[test]
    fn an_open_trace_cannot_hold_back_unbounded_events() {
        let mut m = Multiline::new(&spec("^S")).unwrap();
        let mut out = Vec::new();
        m.process(line(1, Some(StdStream::Stderr), "S trace"), &mut out);
        for i in 0..(HELD_EVENTS_LIMIT as u64 * 2) {
            m.process(line(10 + i, Some(StdStream::Stdout), "S flood"), &mut out);
            assert!(m.held() <= HELD_EVENTS_LIMIT + 2, "{} held", m.held());
        }
        assert!(out.len() >= HELD_EVENTS_LIMIT);
        assert!(out.windows(2).all(|w| w[0].offset < w[1].offset));
    }

    #[test]
    fn files_are_independent() {
        let mut m = Multiline::new(&spec("^S")).unwrap();
        let mut out = Vec::new();
        let mut other = line(5, None, " x");
        other.file.ino = 99;
        m.process(line(10, None, "S a"), &mut out);
        m.process(other, &mut out);
        m.process(line(20, None, " b"), &mut out);
        m.flush(Instant::now(), true, &mut out);
        let mut got = texts(&out);
        got.sort();
        assert_eq!(got, [(5, " x".to_string()), (20, "S a\n b".to_string())]);
    }
}

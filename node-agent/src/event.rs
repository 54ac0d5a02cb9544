//! The event: what the tailer hands to the pipeline and the pipeline hands to sinks.
//!
//! An event's message is a slice of the read buffer (`Bytes`), so that splitting lines does not
//! allocate per line; per-target metadata is shared through an `Arc`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tailor_crds::node::StdStream;

/// Identity of a file: device and inode, plus a fingerprint of its first bytes so that a reused
/// inode is told apart from the file that had it before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub fingerprint: u64,
}

/// What every event of one target carries, built once per target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetMeta {
    /// `kind/namespace/name/pod/container` of the target: the checkpoint's key.
    pub target: String,
    pub node: String,
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub image: String,
    pub workload: Option<String>,
    /// Resolved labels, annotations, env and static fields the resource asked for.
    pub fields: BTreeMap<String, String>,
}

/// One log event (one line, or several joined by multiline).
#[derive(Clone, Debug)]
pub struct Event {
    pub meta: Arc<TargetMeta>,
    /// The file it was read from.
    pub file: FileId,
    /// Byte offset in the file just past this event: where reading resumes once it is committed.
    pub offset: u64,
    /// Time from the runtime's log line (CRI / docker json) or a parsed field, else read time;
    /// nanoseconds since the Unix epoch.
    pub timestamp_nanos: i64,
    /// For stdio inputs: which stream; `None` for files.
    pub stream: Option<StdStream>,
    /// The message, without the line ending and without the runtime's prefix.
    pub message: Bytes,
    /// Fields a parser extracted (`None` when no parser ran or it failed).
    pub fields: Option<serde_json::Map<String, serde_json::Value>>,
    pub flags: EventFlags,
}

/// Marks on an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventFlags {
    /// The event was longer than the maximum event size and was cut.
    pub truncated: bool,
    /// A parser was configured and failed; the event is kept raw.
    pub parse_failed: bool,
}

impl Event {
    /// Deterministic ID from file identity and offset: a re-sent event gets the same ID, so an
    /// idempotent sink (Elasticsearch `_id`) overwrites instead of duplicating.
    pub fn id(&self) -> String {
        format!("{:x}-{:x}-{:x}-{:x}", self.file.dev, self.file.ino, self.file.fingerprint, self.offset)
    }
}

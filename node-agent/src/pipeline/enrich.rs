//! Enrichment: how parsed fields sit next to the Kubernetes metadata.
//!
//! The metadata is already resolved per target (`TargetMeta`, shared by every event through an
//! `Arc`), so nothing is copied per event. What this stage guarantees is that a parsed field
//! never silently replaces metadata. Precedence, highest first:
//!
//! 1. the event itself: `timestamp`, `stream`, and `message` (the raw line, when it is kept);
//! 2. Kubernetes metadata: `namespace`, `pod`, `pod_uid`, `container`, `node`, `image`, `workload`;
//! 3. the fields the resource asked for (labels, annotations, env, static fields:
//!    `TargetMeta::fields`);
//! 4. parsed fields.
//!
//! A parsed field whose name is taken by a level above it is moved, unchanged, under the object
//! `_parsed` (so `{"pod":"x"}` logged by the app becomes `_parsed.pod`), and counted in
//! `field_conflicts`. When the original line is not kept (`keepOriginal: false`) a parsed
//! `message` is the event's message and does not conflict.
//!
//! `document` is the reference layout of an event for sinks that write JSON documents.

use serde_json::{Map, Value};
use tailor_crds::node::StdStream;

use crate::event::{Event, TargetMeta};

/// Where conflicting parsed fields go.
pub const CONFLICTS_KEY: &str = "_parsed";

/// Names that the event and the Kubernetes metadata own (levels 1 and 2 above).
pub const RESERVED_KEYS: [&str; 10] = [
    "timestamp",
    "stream",
    "message",
    "namespace",
    "pod",
    "pod_uid",
    "container",
    "node",
    "image",
    "workload",
];

/// Whether a parsed field named `key` would collide with a higher level.
pub fn is_reserved(key: &str, meta: &TargetMeta, keep_original: bool) -> bool {
    if key == "message" {
        return keep_original;
    }
    key == CONFLICTS_KEY || RESERVED_KEYS.contains(&key) || meta.fields.contains_key(key)
}

/// Moves parsed fields that collide with metadata under `_parsed`; returns how many moved.
pub fn resolve_conflicts(fields: &mut Map<String, Value>, meta: &TargetMeta, keep_original: bool) -> u64 {
    // The common case is no conflict at all: check before touching the map.
    if !fields.keys().any(|k| is_reserved(k, meta, keep_original)) {
        return 0;
    }
    let mut moved = Map::new();
    let conflicting: Vec<String> =
        fields.keys().filter(|k| is_reserved(k, meta, keep_original)).cloned().collect();
    for key in conflicting {
        if let Some(value) = fields.remove(&key) {
            moved.insert(key, value);
        }
    }
    let count = moved.len() as u64;
    fields.insert(CONFLICTS_KEY.into(), Value::Object(moved));
    count
}

/// The event as one JSON object, in the precedence above: parsed fields, then the resource's
/// fields, then Kubernetes metadata, then the event's own (each level overwriting the one
/// before, which after `resolve_conflicts` never happens for parsed fields). The message is left
/// out when empty (the pipeline empties it after a successful parse unless `keepOriginal`).
pub fn document(event: &Event) -> Map<String, Value> {
    let meta = &*event.meta;
    let mut doc = event.fields.clone().unwrap_or_default();
    for (k, v) in &meta.fields {
        doc.insert(k.clone(), Value::String(v.clone()));
    }
    for (k, v) in [
        ("namespace", &meta.namespace),
        ("pod", &meta.pod),
        ("pod_uid", &meta.pod_uid),
        ("container", &meta.container),
        ("node", &meta.node),
        ("image", &meta.image),
    ] {
        if !v.is_empty() {
            doc.insert(k.into(), Value::String(v.clone()));
        }
    }
    if let Some(workload) = &meta.workload {
        doc.insert("workload".into(), Value::String(workload.clone()));
    }
    doc.insert("timestamp".into(), Value::from(event.timestamp_nanos));
    if let Some(stream) = event.stream {
        doc.insert("stream".into(), Value::String(stream_name(stream).into()));
    }
    if !event.message.is_empty() {
        doc.insert("message".into(), Value::String(String::from_utf8_lossy(&event.message).into_owned()));
    }
    doc
}

pub fn stream_name(stream: StdStream) -> &'static str {
    match stream {
        StdStream::Stdout => "stdout",
        StdStream::Stderr => "stderr",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::event::{EventFlags, FileId};

    fn meta() -> TargetMeta {
        TargetMeta {
            namespace: "shop".into(),
            pod: "web-1".into(),
            node: "n1".into(),
            fields: [("team".to_string(), "payments".to_string())].into(),
            ..TargetMeta::default()
        }
    }

    #[test]
    fn conflicting_parsed_fields_move_under_parsed() {
        let mut fields =
            json!({"pod": "app-says", "team": "x", "level": "info", "message": "m", "_parsed": 1})
                .as_object()
                .unwrap()
                .clone();
        let moved = resolve_conflicts(&mut fields, &meta(), true);
        assert_eq!(moved, 4);
        assert_eq!(
            Value::Object(fields),
            json!({"level": "info", "_parsed": {"pod": "app-says", "team": "x", "message": "m", "_parsed": 1}})
        );
        let mut fields = json!({"message": "m", "level": "info"}).as_object().unwrap().clone();
        assert_eq!(resolve_conflicts(&mut fields, &meta(), false), 0);
        assert_eq!(fields["message"], "m");
    }

    #[test]
    fn document_layout() {
        let mut fields = json!({"pod": "app-says", "level": "info"}).as_object().unwrap().clone();
        resolve_conflicts(&mut fields, &meta(), true);
        let event = Event {
            meta: Arc::new(meta()),
            file: FileId { dev: 0, ino: 0, fingerprint: 0 },
            offset: 10,
            timestamp_nanos: 5,
            stream: Some(StdStream::Stderr),
            message: Bytes::from_static(b"raw"),
            fields: Some(fields),
            flags: EventFlags::default(),
        };
        assert_eq!(
            Value::Object(document(&event)),
            json!({"level": "info", "_parsed": {"pod": "app-says"}, "team": "payments", "namespace": "shop",
                   "pod": "web-1", "node": "n1", "timestamp": 5, "stream": "stderr", "message": "raw"})
        );
    }
}

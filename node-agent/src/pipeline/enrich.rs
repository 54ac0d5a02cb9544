//! Enrichment: how parsed fields sit next to the Kubernetes metadata.
//!
//! The metadata is already resolved per target (`TargetMeta`, shared by every event through an
//! `Arc`) and written by the shared encoder (`crate::encode`), so nothing is copied per event.
//! What this stage guarantees is that a parsed field never silently replaces, nor is silently
//! dropped in favour of, metadata. Precedence, highest first:
//!
//! 1. the event's own fields: `@timestamp`, `message`, `stream`, `flags`, `tailor_id`;
//! 2. Kubernetes metadata: `namespace`, `pod`, `pod_uid`, `container`, `node`, `image`, `workload`;
//! 3. the fields the resource asked for (labels, annotations, env, static: `TargetMeta::fields`);
//! 4. parsed fields.
//!
//! A parsed field whose name is taken by a level above it is moved, unchanged, under the object
//! `_parsed` (an app that logs `{"pod":"x"}` gets `_parsed.pod`), and counted in
//! `field_conflicts`.
//!
//! `message`: with `keepOriginal: true` the raw line stays the message and a parsed `message`
//! conflicts like any other name. With `keepOriginal: false` (the default) the parsed fields
//! replace the line: a parsed string `message` becomes the event's message, otherwise the message
//! is empty (the line's content is in the fields).

use bytes::Bytes;
use serde_json::{Map, Value};
use tailor_crds::node::StdStream;

use crate::encode::RESERVED;
use crate::event::{Event, TargetMeta};

/// Where conflicting parsed fields go.
pub const CONFLICTS_KEY: &str = "_parsed";

/// Whether the parsed field `key` (with `value`) would collide with a higher level.
pub fn is_conflict(key: &str, value: &Value, meta: &TargetMeta, keep_original: bool) -> bool {
    if key == "message" {
        return keep_original || !value.is_string();
    }
    key == CONFLICTS_KEY || RESERVED.contains(&key) || meta.fields.contains_key(key)
}

/// Moves parsed fields that collide with metadata under `_parsed`; returns how many moved.
pub fn resolve_conflicts(fields: &mut Map<String, Value>, meta: &TargetMeta, keep_original: bool) -> u64 {
    // The common case is no conflict at all: check before touching the map.
    if !fields.iter().any(|(k, v)| is_conflict(k, v, meta, keep_original)) {
        return 0;
    }
    let conflicting: Vec<String> = fields
        .iter()
        .filter(|(k, v)| is_conflict(k, v, meta, keep_original))
        .map(|(k, _)| k.clone())
        .collect();
    let mut moved = Map::new();
    for key in conflicting {
        if let Some(value) = fields.remove(&key) {
            moved.insert(key, value);
        }
    }
    let count = moved.len() as u64;
    fields.insert(CONFLICTS_KEY.into(), Value::Object(moved));
    count
}

/// For `keepOriginal: false`, after a successful parse: the parsed `message` (a string, see
/// `resolve_conflicts`) becomes the message, else the message is emptied.
pub fn replace_message(event: &mut Event) {
    let parsed = event.fields.as_mut().and_then(|f| f.remove("message"));
    event.message = match parsed {
        Some(Value::String(s)) => Bytes::from(s.into_bytes()),
        _ => Bytes::new(),
    };
}

pub fn stream_name(stream: StdStream) -> &'static str {
    match stream {
        StdStream::Stdout => "stdout",
        StdStream::Stderr => "stderr",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn meta() -> TargetMeta {
        TargetMeta {
            namespace: "shop".into(),
            pod: "web-1".into(),
            node: "n1".into(),
            fields: [("team".to_string(), "payments".to_string())].into(),
            ..TargetMeta::default()
        }
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn conflicting_parsed_fields_move_under_parsed() {
        let mut fields =
            map(json!({"pod": "app", "team": "x", "level": "info", "message": "m", "_parsed": 1,
                                    "@timestamp": "t", "flags": [], "timestamp": "kept"}));
        assert_eq!(resolve_conflicts(&mut fields, &meta(), true), 6);
        assert_eq!(
            Value::Object(fields),
            json!({"level": "info", "timestamp": "kept", "_parsed": {"pod": "app", "team": "x", "message": "m",
                   "_parsed": 1, "@timestamp": "t", "flags": []}})
        );
    }

    #[test]
    fn parsed_message_replaces_the_line_unless_kept() {
        let mut fields = map(json!({"message": "m", "level": "info"}));
        assert_eq!(resolve_conflicts(&mut fields, &meta(), false), 0);
        assert_eq!(fields["message"], "m");
        let mut fields = map(json!({"message": {"text": "m"}}));
        assert_eq!(resolve_conflicts(&mut fields, &meta(), false), 1);
        assert_eq!(fields["_parsed"]["message"]["text"], "m");
    }
}

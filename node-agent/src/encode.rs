//! The JSON shape of an event, shared by every sink so that all of them encode alike.
//!
//! Fields: `@timestamp` (RFC 3339, nanoseconds, UTC), `message`, `stream` (stdio only),
//! `namespace`, `pod`, `pod_uid`, `container`, `node`, `image`, `workload` (when known), then the
//! target's fields, then the parsed fields (neither overrides a field above), then `flags` (a list,
//! only when an event is marked).

use std::io::Write;

use chrono::{DateTime, Datelike, Timelike};
use serde_json::Value;
use tailor_crds::node::StdStream;

use crate::event::Event;

/// Names of the fields every event has; target and parsed fields never override them.
pub const RESERVED: [&str; 12] = [
    "@timestamp",
    "message",
    "stream",
    "namespace",
    "pod",
    "pod_uid",
    "container",
    "node",
    "image",
    "workload",
    "flags",
    "tailor_id",
];

/// Appends the event as one JSON object (no newline) to `out`.
pub fn encode_json(event: &Event, out: &mut Vec<u8>) {
    let m = &event.meta;
    out.extend_from_slice(b"{\"@timestamp\":\"");
    write_timestamp(event.timestamp_nanos, out);
    out.extend_from_slice(b"\",\"message\":");
    write_str(&String::from_utf8_lossy(&event.message), out);
    if let Some(s) = event.stream {
        out.extend_from_slice(match s {
            StdStream::Stdout => b",\"stream\":\"stdout\"".as_slice(),
            StdStream::Stderr => b",\"stream\":\"stderr\"".as_slice(),
        });
    }
    for (k, v) in [
        ("namespace", &m.namespace),
        ("pod", &m.pod),
        ("pod_uid", &m.pod_uid),
        ("container", &m.container),
        ("node", &m.node),
        ("image", &m.image),
    ] {
        write_key(k, out);
        write_str(v, out);
    }
    if let Some(w) = &m.workload {
        write_key("workload", out);
        write_str(w, out);
    }
    for (k, v) in &m.fields {
        if !is_reserved(k) {
            write_key(k, out);
            write_str(v, out);
        }
    }
    if let Some(fields) = &event.fields {
        for (k, v) in fields {
            if !is_reserved(k) && !m.fields.contains_key(k) {
                write_key(k, out);
                write_value(v, out);
            }
        }
    }
    if event.flags.truncated || event.flags.parse_failed {
        out.extend_from_slice(b",\"flags\":[");
        let mut first = true;
        for (on, name) in [(event.flags.truncated, "truncated"), (event.flags.parse_failed, "parse_failed")] {
            if on {
                if !first {
                    out.push(b',');
                }
                first = false;
                write_str(name, out);
            }
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// Appends the event as one NDJSON line.
pub fn encode_ndjson(event: &Event, out: &mut Vec<u8>) {
    encode_json(event, out);
    out.push(b'\n');
}

fn is_reserved(k: &str) -> bool {
    RESERVED.contains(&k)
}

fn write_key(k: &str, out: &mut Vec<u8>) {
    out.push(b',');
    write_str(k, out);
    out.push(b':');
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_value(v: &Value, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// `2024-01-02T03:04:05.123456789Z`.
pub fn write_timestamp(nanos: i64, out: &mut Vec<u8>) {
    let t = DateTime::from_timestamp_nanos(nanos);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::event::{EventFlags, FileId, TargetMeta};

    fn event() -> Event {
        let mut fields = BTreeMap::new();
        fields.insert("team".to_string(), "payments".to_string());
        fields.insert("pod".to_string(), "must-not-override".to_string());
        Event {
            meta: Arc::new(TargetMeta {
                target: "lcc/ns/c/p/app".into(),
                node: "n1".into(),
                namespace: "ns".into(),
                pod: "p".into(),
                pod_uid: "u".into(),
                container: "app".into(),
                image: "img:1".into(),
                workload: Some("Deployment/web".into()),
                fields,
            }),
            file: FileId { dev: 1, ino: 2, fingerprint: 3 },
            offset: 10,
            timestamp_nanos: 1_700_000_000_123_456_789,
            stream: Some(StdStream::Stderr),
            message: Bytes::from_static(b"he said \"hi\"\n\x01"),
            fields: Some(serde_json::from_str(r#"{"level":"info","n":3,"team":"x"}"#).unwrap()),
            flags: EventFlags { truncated: true, parse_failed: false },
        }
    }

    #[test]
    fn encodes_every_field_once_and_valid_json() {
        let mut out = Vec::new();
        encode_ndjson(&event(), &mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["@timestamp"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(v["message"], "he said \"hi\"\n\u{1}");
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["pod"], "p");
        assert_eq!(v["workload"], "Deployment/web");
        assert_eq!(v["team"], "payments");
        assert_eq!(v["level"], "info");
        assert_eq!(v["n"], 3);
        assert_eq!(v["flags"], serde_json::json!(["truncated"]));
        // No duplicate keys: the raw text has `"pod":` once.
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("\"pod\":").count(), 1);
        assert_eq!(text.matches("\"team\":").count(), 1);
    }
}

//! The JSON document of an event, as every network sink sends it:
//!
//! ```json
//! {"@timestamp":"2026-01-02T03:04:05.123456789Z","message":"...","stream":"stdout",
//!  "kubernetes":{"namespace":"..","pod":"..","pod_uid":"..","container":"..","node":"..",
//!                "image":"..","workload":"Deployment/api"},
//!  "<attached field>":"..", "<parsed field>":..., "tailor":{"truncated":true,"parse_failed":true}}
//! ```
//!
//! Parsed fields win over attached ones of the same name; names the document reserves are not
//! overwritten, except `message`, which a parser may replace (a JSON log's own message is the
//! one people search). Keys are never duplicated (Elasticsearch rejects such documents). The
//! document is written straight into the request buffer: no per-event allocation beyond what
//! non-UTF-8 input needs.

use std::io::Write;

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::event::Event;
use crate::sinks::net::fields::stream_name;

const RESERVED: [&str; 5] = ["@timestamp", "message", "stream", "kubernetes", "tailor"];

/// The document of one event.
pub struct Document<'a>(pub &'a Event);

/// An event's timestamp in RFC 3339 UTC with nanoseconds.
pub struct Rfc3339(pub i64);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = chrono::DateTime::from_timestamp_nanos(self.0);
        write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.9fZ"))
    }
}

struct Kubernetes<'a>(&'a Event);

impl Serialize for Kubernetes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = &*self.0.meta;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("namespace", &m.namespace)?;
        map.serialize_entry("pod", &m.pod)?;
        map.serialize_entry("pod_uid", &m.pod_uid)?;
        map.serialize_entry("container", &m.container)?;
        map.serialize_entry("node", &m.node)?;
        if !m.image.is_empty() {
            map.serialize_entry("image", &m.image)?;
        }
        if let Some(w) = &m.workload {
            map.serialize_entry("workload", w)?;
        }
        map.end()
    }
}

struct Flags(crate::event::EventFlags);

impl Serialize for Flags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        if self.0.truncated {
            map.serialize_entry("truncated", &true)?;
        }
        if self.0.parse_failed {
            map.serialize_entry("parse_failed", &true)?;
        }
        map.end()
    }
}

impl Serialize for Document<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ev = self.0;
        let parsed = ev.fields.as_ref();
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("@timestamp", &format_args!("{}", Rfc3339(ev.timestamp_nanos)))?;
        match parsed.and_then(|p| p.get("message")) {
            Some(m) => map.serialize_entry("message", m)?,
            None => map.serialize_entry("message", &String::from_utf8_lossy(&ev.message))?,
        }
        if let Some(st) = ev.stream {
            map.serialize_entry("stream", stream_name(st))?;
        }
        map.serialize_entry("kubernetes", &Kubernetes(ev))?;
        for (k, v) in &ev.meta.fields {
            if !RESERVED.contains(&k.as_str()) && !parsed.is_some_and(|p| p.contains_key(k)) {
                map.serialize_entry(k, v)?;
            }
        }
        if let Some(p) = parsed {
            for (k, v) in p {
                if !RESERVED.contains(&k.as_str()) {
                    map.serialize_entry(k, v)?;
                }
            }
        }
        if ev.flags.truncated || ev.flags.parse_failed {
            map.serialize_entry("tailor", &Flags(ev.flags))?;
        }
        map.end()
    }
}

/// Appends the document of `ev` to `buf`.
pub fn write_json(buf: &mut Vec<u8>, ev: &Event) {
    // Writing into a Vec cannot fail, and every value here is serializable JSON.
    let _ = serde_json::to_writer(&mut *buf, &Document(ev));
}

/// Appends the documents of `events` as NDJSON.
pub fn write_ndjson(buf: &mut Vec<u8>, events: &[Event]) {
    for ev in events {
        write_json(buf, ev);
        let _ = buf.write_all(b"\n");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use bytes::Bytes;
    use tailor_crds::node::StdStream;

    use super::*;
    use crate::event::{EventFlags, FileId, TargetMeta};

    pub(crate) fn sample_event(offset: u64) -> Event {
        let meta = TargetMeta {
            target: "pod/shop/api-1/api".into(),
            node: "node-1".into(),
            namespace: "shop".into(),
            pod: "api-1".into(),
            pod_uid: "uid-1".into(),
            container: "api".into(),
            image: "shop/api:1".into(),
            workload: Some("Deployment/api".into()),
            fields: BTreeMap::from([("tenant".into(), "t-1".into()), ("level".into(), "shadowed".into())]),
        };
        let mut parsed = serde_json::Map::new();
        parsed.insert("level".into(), "info".into());
        parsed.insert("status".into(), 200.into());
        parsed.insert("kubernetes".into(), "spoof".into());
        Event {
            meta: Arc::new(meta),
            file: FileId { dev: 1, ino: 2, fingerprint: 3 },
            offset,
            timestamp_nanos: 1_767_323_045_123_456_789,
            stream: Some(StdStream::Stdout),
            message: Bytes::from_static(b"GET /cart \"ok\""),
            fields: Some(parsed),
            flags: EventFlags::default(),
        }
    }

    #[test]
    fn document_shape_without_duplicate_keys() {
        let mut buf = Vec::new();
        write_json(&mut buf, &sample_event(1));
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.matches("\"level\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"kubernetes\"").count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["@timestamp"], "2026-01-02T03:04:05.123456789Z");
        assert_eq!(v["message"], "GET /cart \"ok\"");
        assert_eq!(v["stream"], "stdout");
        assert_eq!(v["kubernetes"]["namespace"], "shop");
        assert_eq!(v["kubernetes"]["workload"], "Deployment/api");
        assert_eq!(v["level"], "info");
        assert_eq!(v["tenant"], "t-1");
        assert_eq!(v["status"], 200);
        assert!(v.get("tailor").is_none());
    }

    #[test]
    fn invalid_utf8_and_flags() {
        let mut ev = sample_event(1);
        ev.message = Bytes::from_static(b"bad \xff byte");
        ev.fields = None;
        ev.flags.truncated = true;
        let mut buf = Vec::new();
        write_ndjson(&mut buf, &[ev.clone(), ev]);
        let lines: Vec<serde_json::Value> = buf
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["message"], "bad \u{fffd} byte");
        assert_eq!(lines[0]["tailor"]["truncated"], true);
        assert_eq!(lines[0]["level"], "shadowed");
    }
}

//! Loki output through the push API (`POST /loki/api/v1/push`, JSON body).
//!
//! Stream labels come from event fields (`labels`: label name → field, looked up with
//! `net::fields::lookup`; a missing field leaves the label out); without configured labels the
//! streams are `namespace`, `pod`, `container`. Events are grouped by stream and each stream's
//! entries are sorted by time (stable, so lines of the same nanosecond keep their file order),
//! because Loki rejects entries older than what a stream already has. The line is the event's
//! JSON document. `tenant` goes into `X-Scope-OrgID`.
//!
//! Loki ignores an entry identical (same stream, time and line) to one it has, so re-sending
//! a batch after a timeout does not duplicate it. A 400 (out of order, too old, line too long)
//! is never going to be accepted: those batches are dead-lettered.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write as _;

use futures::future::BoxFuture;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tailor_crds::collection::{Compression, OutputSpec, OutputType};

use crate::event::Event;
use crate::sinks::http::parse_http_uri;
use crate::sinks::net::send::Sender;
use crate::sinks::net::{BuildError, NetContext, compress, fields};
use crate::sinks::{Sink, SinkContext, SinkError};

/// Label name → event field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelMap(Vec<(String, String)>);

impl LabelMap {
    /// Validates label names (`[a-zA-Z_][a-zA-Z0-9_]*`, as Prometheus and Loki require).
    pub fn new(output: &str, labels: &BTreeMap<String, String>) -> Result<Self, BuildError> {
        if labels.is_empty() {
            let default = ["namespace", "pod", "container"].map(|l| (l.to_string(), l.to_string()));
            return Ok(LabelMap(default.into()));
        }
        for name in labels.keys() {
            let mut chars = name.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid || name.starts_with("__") {
                return Err(BuildError::Invalid {
                    output: output.into(),
                    what: "Loki label name",
                    value: name.clone(),
                });
            }
        }
        Ok(LabelMap(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()))
    }

    /// The label values of an event, in label order (`None` for a missing field).
    fn values<'a>(&self, ev: &'a Event) -> Vec<Option<Cow<'a, str>>> {
        self.0.iter().map(|(_, field)| fields::lookup(ev, field)).collect()
    }
}

/// Writes the push body of `events`: one stream per distinct label set, entries sorted by time.
pub fn write_push(buf: &mut Vec<u8>, labels: &LabelMap, events: &[Event]) {
    let mut streams: BTreeMap<Vec<Option<Cow<'_, str>>>, Vec<usize>> = BTreeMap::new();
    for (i, ev) in events.iter().enumerate() {
        streams.entry(labels.values(ev)).or_default().push(i);
    }
    buf.extend_from_slice(b"{\"streams\":[");
    for (n, (values, mut idx)) in streams.into_iter().enumerate() {
        idx.sort_by_key(|&i| events[i].timestamp_nanos);
        if n > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"stream\":{");
        let mut first = true;
        for ((name, _), value) in labels.0.iter().zip(&values) {
            let Some(value) = value else { continue };
            if !first {
                buf.push(b',');
            }
            first = false;
            let _ = serde_json::to_writer(&mut *buf, name);
            buf.push(b':');
            let _ = serde_json::to_writer(&mut *buf, value);
        }
        buf.extend_from_slice(b"},\"values\":[");
        let mut line = Vec::with_capacity(512);
        for (k, &i) in idx.iter().enumerate() {
            if k > 0 {
                buf.push(b',');
            }
            let _ = write!(buf, "[\"{}\",", events[i].timestamp_nanos);
            line.clear();
            crate::encode::encode_json(&events[i], &mut line);
            // The line is a JSON string holding the document.
            let _ = serde_json::to_writer(&mut *buf, &String::from_utf8_lossy(&line));
            buf.push(b']');
        }
        buf.extend_from_slice(b"]}");
    }
    buf.extend_from_slice(b"]}");
}

/// Loki push output.
#[derive(Debug)]
pub struct LokiSink {
    sender: Sender,
    uri: http::Uri,
    labels: LabelMap,
    headers: HeaderMap,
    compression: Compression,
}

impl LokiSink {
    pub fn new(spec: &OutputSpec, ctx: &SinkContext) -> Result<Self, BuildError> {
        let loki = spec.loki.as_ref().ok_or_else(|| BuildError::MissingSection {
            output: spec.name.clone(),
            type_: OutputType::Loki,
        })?;
        let uri =
            parse_http_uri(&spec.name, &format!("{}/loki/api/v1/push", loki.endpoint.trim_end_matches('/')))?;
        let mut headers = HeaderMap::new();
        if let Some(t) = &loki.tenant {
            let v = HeaderValue::from_str(t).map_err(|_| BuildError::Invalid {
                output: spec.name.clone(),
                what: "tenant",
                value: t.clone(),
            })?;
            headers.insert(HeaderName::from_static("x-scope-orgid"), v);
        }
        Ok(LokiSink {
            sender: Sender::new(&spec.name, spec.tls.as_ref(), &NetContext::new(spec, ctx))?,
            uri,
            labels: LabelMap::new(&spec.name, &loki.labels)?,
            headers,
            compression: spec.compression,
        })
    }

    async fn deliver_all(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let (compression, labels) = (self.compression, &self.labels);
        let encode = |part: &[Event]| {
            let mut buf = Vec::with_capacity(part.len() * 640);
            write_push(&mut buf, labels, part);
            compress::encode(compression, buf)
        };
        self.sender.post_splitting(events, "loki", &self.uri, "application/json", &self.headers, encode).await
    }
}

impl Sink for LokiSink {
    fn name(&self) -> &str {
        &self.sender.name
    }

    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.deliver_all(events))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::sinks::net::testutil::sample_event;

    #[test]
    fn label_names_are_validated() {
        let ok = [("app".to_string(), "container".to_string())].into();
        assert!(LabelMap::new("o", &ok).is_ok());
        for bad in ["1app", "a-b", "__name__", ""] {
            let m = [(bad.to_string(), "pod".to_string())].into();
            assert!(LabelMap::new("o", &m).is_err(), "{bad}");
        }
    }

    #[test]
    fn groups_streams_and_orders_entries() {
        let labels =
            LabelMap::new("o", &[("ns".into(), "namespace".into()), ("lvl".into(), "level".into())].into())
                .unwrap();
        let mut a = sample_event(1);
        a.timestamp_nanos = 30;
        a.message = "a".into();
        let mut b = sample_event(2);
        b.timestamp_nanos = 10;
        b.message = "b".into();
        let mut c = sample_event(3);
        c.fields = None;
        c.timestamp_nanos = 20;
        let mut meta = (*c.meta).clone();
        meta.fields.remove("level");
        c.meta = Arc::new(meta);
        let mut d = sample_event(4);
        d.timestamp_nanos = 10;
        d.message = "d".into();
        let mut buf = Vec::new();
        write_push(&mut buf, &labels, &[a, b, c, d]);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let streams = v["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 2);
        let info = streams.iter().find(|s| s["stream"]["lvl"] == "info").unwrap();
        assert_eq!(info["stream"]["ns"], "shop");
        let ts: Vec<&str> =
            info["values"].as_array().unwrap().iter().map(|e| e[0].as_str().unwrap()).collect();
        assert_eq!(ts, ["10", "10", "30"]);
        let messages: Vec<String> = info["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let doc: serde_json::Value = serde_json::from_str(e[1].as_str().unwrap()).unwrap();
                assert_eq!(doc["namespace"], "shop");
                doc["message"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(messages, ["b", "d", "a"]);
        let nolvl = streams.iter().find(|s| s["stream"].get("lvl").is_none()).unwrap();
        assert_eq!(nolvl["values"].as_array().unwrap().len(), 1);
    }
}

//! Elasticsearch / OpenSearch output through the bulk API.
//!
//! Every event is an `index` action with `_id` = `Event::id()` (file identity + offset), so a
//! batch sent again after a timeout or a restart overwrites the same documents instead of
//! duplicating them. The index comes from the pattern with the event's UTC date (`%Y`, `%m`,
//! `%d`). A 2xx bulk response is read item by item: items with 429, 5xx or an
//! `es_rejected_execution_exception` are sent again (only them), other failed items (mapping
//! errors...) are dead-lettered; both are counted. Endpoints are tried in turn when one fails.

use std::fmt::Write as _;
use std::io::Write as _;

use futures::future::BoxFuture;
use http::header::HeaderMap;
use serde::Deserialize;
use tailor_crds::collection::{Compression, OutputSpec, OutputType};

use crate::event::Event;
use crate::sinks::http::parse_http_uri;
use crate::sinks::net::backoff::Backoff;
use crate::sinks::net::send::{Sender, snippet};
use crate::sinks::net::verdict::{Verdict, classify_status};
use crate::sinks::net::{BuildError, NetContext, NetStats, compress};
use crate::sinks::{Sink, SinkContext, SinkError};

/// One piece of an index pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Year,
    Month,
    Day,
}

/// An index name pattern, rendered per UTC day and cached (batches rarely span days).
#[derive(Clone, Debug)]
pub struct IndexPattern {
    parts: Vec<Part>,
    cached_day: Option<i64>,
    /// The JSON-escaped index name of `cached_day`, quotes included.
    cached: String,
}

impl IndexPattern {
    pub fn parse(pattern: &str) -> Self {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            let part = match (c, chars.peek()) {
                ('%', Some('Y')) => Part::Year,
                ('%', Some('m')) => Part::Month,
                ('%', Some('d')) => Part::Day,
                _ => {
                    lit.push(c);
                    continue;
                }
            };
            chars.next();
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit)));
            }
            parts.push(part);
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        IndexPattern { parts, cached_day: None, cached: String::new() }
    }

    /// The index name for an event time (nanoseconds since the epoch, UTC).
    pub fn render(&self, timestamp_nanos: i64) -> String {
        let date = chrono::DateTime::from_timestamp_nanos(timestamp_nanos).date_naive();
        let mut out = String::new();
        for p in &self.parts {
            // Writing to a String cannot fail.
            let _ = match p {
                Part::Literal(s) => write!(out, "{s}"),
                Part::Year => write!(out, "{:04}", chrono::Datelike::year(&date)),
                Part::Month => write!(out, "{:02}", chrono::Datelike::month(&date)),
                Part::Day => write!(out, "{:02}", chrono::Datelike::day(&date)),
            };
        }
        out
    }

    /// The JSON string (quoted, escaped) of the index for this time, cached per day.
    fn json_for(&mut self, timestamp_nanos: i64) -> &str {
        let day = timestamp_nanos.div_euclid(86_400_000_000_000);
        if self.cached_day != Some(day) {
            self.cached = serde_json::Value::String(self.render(timestamp_nanos)).to_string();
            self.cached_day = Some(day);
        }
        &self.cached
    }
}

/// Appends the bulk body (action line + document per event) of the events at `indices`.
pub fn write_bulk(buf: &mut Vec<u8>, index: &mut IndexPattern, events: &[Event], indices: &[usize]) {
    for &i in indices {
        let ev = &events[i];
        let _ = writeln!(
            buf,
            "{{\"index\":{{\"_index\":{},\"_id\":\"{:x}-{:x}-{:x}-{:x}\"}}}}",
            index.json_for(ev.timestamp_nanos),
            ev.file.dev,
            ev.file.ino,
            ev.file.fingerprint,
            ev.offset
        );
        crate::encode::encode_ndjson(ev, buf);
    }
}

#[derive(Deserialize)]
struct BulkHead {
    #[serde(default)]
    errors: bool,
}

#[derive(Deserialize)]
struct BulkResponse {
    items: Vec<BulkItem>,
}

#[derive(Deserialize)]
struct BulkItem {
    #[serde(alias = "create", alias = "update", alias = "delete")]
    index: ItemResult,
}

#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    type_: String,
    #[serde(default)]
    reason: Option<String>,
}

/// The fate of each item of a bulk response, in request order.
#[derive(Debug, PartialEq, Eq)]
pub enum ItemsOutcome {
    AllDelivered,
    /// Per item: `None` delivered, `Some((Retry|Reject, reason))` otherwise.
    PerItem(Vec<Option<(Verdict, String)>>),
    /// The body is not a bulk response for this request (wrong length, not JSON).
    Malformed(String),
}

/// Reads a 2xx bulk response for a request of `sent` items.
pub fn parse_bulk_response(body: &[u8], sent: usize) -> ItemsOutcome {
    match serde_json::from_slice::<BulkHead>(body) {
        Ok(h) if !h.errors => return ItemsOutcome::AllDelivered,
        Ok(_) => {}
        Err(e) => return ItemsOutcome::Malformed(e.to_string()),
    }
    let resp: BulkResponse = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return ItemsOutcome::Malformed(e.to_string()),
    };
    if resp.items.len() != sent {
        return ItemsOutcome::Malformed(format!("{} items for {sent} actions", resp.items.len()));
    }
    ItemsOutcome::PerItem(resp.items.into_iter().map(|it| classify_item(&it.index)).collect())
}

fn classify_item(r: &ItemResult) -> Option<(Verdict, String)> {
    let err_type = r.error.as_ref().map(|e| e.type_.as_str()).unwrap_or("");
    let verdict = match classify_status(r.status) {
        Verdict::Delivered if r.error.is_none() => return None,
        _ if err_type == "es_rejected_execution_exception" => Verdict::Retry,
        Verdict::Retry if matches!(r.status, 429 | 500..=599) => Verdict::Retry,
        _ => Verdict::Reject,
    };
    let reason = match &r.error {
        Some(e) => format!("{} {}: {}", r.status, e.type_, e.reason.as_deref().unwrap_or("")),
        None => format!("status {}", r.status),
    };
    Some((verdict, reason))
}

/// Elasticsearch / OpenSearch bulk output.
#[derive(Debug)]
pub struct ElasticsearchSink {
    sender: Sender,
    bulk_uris: Vec<http::Uri>,
    /// The endpoint to use next; moves on when one fails.
    current: usize,
    index: IndexPattern,
    compression: Compression,
    headers: HeaderMap,
}

impl ElasticsearchSink {
    pub fn new(spec: &OutputSpec, ctx: &SinkContext) -> Result<Self, BuildError> {
        let es = spec.elasticsearch.as_ref().ok_or_else(|| BuildError::MissingSection {
            output: spec.name.clone(),
            type_: OutputType::Elasticsearch,
        })?;
        if es.endpoints.is_empty() {
            return Err(BuildError::Invalid {
                output: spec.name.clone(),
                what: "endpoints",
                value: "[]".into(),
            });
        }
        let query = match &es.pipeline {
            Some(p) => format!("?pipeline={}", percent_encode(p)),
            None => String::new(),
        };
        let bulk_uris = es
            .endpoints
            .iter()
            .map(|e| parse_http_uri(&spec.name, &format!("{}/_bulk{query}", e.trim_end_matches('/'))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ElasticsearchSink {
            sender: Sender::new(&spec.name, spec.tls.as_ref(), &NetContext::new(spec, ctx))?,
            bulk_uris,
            current: 0,
            index: IndexPattern::parse(&es.index),
            compression: spec.compression,
            headers: HeaderMap::new(),
        })
    }

    async fn deliver_all(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let mut pending: Vec<usize> = (0..events.len()).collect();
        // Items the cluster pushed back (429/5xx per item) wait a back-off before the next round.
        let mut item_backoff = Backoff::new(self.sender.policy.clone());
        // A 413 halves how many actions go into one request.
        let mut chunk = pending.len().max(1);
        while !pending.is_empty() {
            let mut retry_next = Vec::new();
            let mut rejected: Vec<(usize, String)> = Vec::new();
            let mut start = 0;
            while start < pending.len() {
                let ids = &pending[start..(start + chunk).min(pending.len())];
                let mut buf = Vec::with_capacity(ids.len() * 640);
                write_bulk(&mut buf, &mut self.index, events, ids);
                let (body, encoding) =
                    compress::encode(self.compression, buf).map_err(|e| SinkError::Failed {
                        sink: self.sender.name.clone(),
                        message: "compressing the body".into(),
                        source: Some(Box::new(e)),
                    })?;
                let uris = &self.bulk_uris;
                let mut used = self.current;
                let first = self.current;
                let (verdict, resp) = self
                    .sender
                    .send_until_final(ids.len(), |attempt| {
                        used = (first + attempt as usize) % uris.len();
                        self.sender.post(&uris[used], &body, "application/x-ndjson", encoding, &self.headers)
                    })
                    .await?;
                // Stay on the endpoint that answered.
                self.current = used;
                match verdict {
                    Verdict::Delivered => match parse_bulk_response(&resp.body, ids.len()) {
                        ItemsOutcome::AllDelivered => NetStats::add(&self.sender.stats.delivered, ids.len()),
                        ItemsOutcome::PerItem(items) => {
                            let mut ok = 0;
                            for (&i, fate) in ids.iter().zip(items) {
                                match fate {
                                    None => ok += 1,
                                    Some((Verdict::Retry, _)) => retry_next.push(i),
                                    Some((_, reason)) => rejected.push((i, reason)),
                                }
                            }
                            NetStats::add(&self.sender.stats.delivered, ok);
                        }
                        ItemsOutcome::Malformed(why) => {
                            // Idempotent thanks to `_id`: sending the items again is safe.
                            tracing::warn!(sink = %self.sender.name, error = %why, "unreadable bulk response, retrying");
                            retry_next.extend_from_slice(ids);
                        }
                    },
                    Verdict::Split if ids.len() > 1 => {
                        chunk = (ids.len() / 2).max(1);
                        continue;
                    }
                    _ => {
                        let reason = format!("bulk {}: {}", resp.status, snippet(&resp.body));
                        rejected.extend(ids.iter().map(|&i| (i, reason.clone())));
                    }
                }
                start += ids.len();
            }
            if !rejected.is_empty() {
                let entries: Vec<_> = rejected.iter().map(|(i, r)| (&events[*i], r.as_str())).collect();
                self.sender.dead_letter(&entries).await?;
            }
            if !retry_next.is_empty() {
                NetStats::add(&self.sender.stats.retried, retry_next.len());
                tracing::warn!(sink = %self.sender.name, items = retry_next.len(), "bulk items pushed back, retrying them");
                if retry_next.len() < pending.len() {
                    item_backoff.reset();
                }
                self.sender.wait(&mut item_backoff).await?;
            }
            pending = retry_next;
        }
        Ok(())
    }
}

impl Sink for ElasticsearchSink {
    fn name(&self) -> &str {
        &self.sender.name
    }

    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.deliver_all(events))
    }
}

/// Percent-encodes a query value (unreserved characters kept).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::net::testutil::sample_event;

    #[test]
    fn index_pattern_uses_the_event_date() {
        let p = IndexPattern::parse("logs-%Y.%m.%d");
        assert_eq!(p.render(1_767_323_045_123_456_789), "logs-2026.01.02");
        assert_eq!(p.render(0), "logs-1970.01.01");
        assert_eq!(p.render(-1), "logs-1969.12.31");
        assert_eq!(IndexPattern::parse("app").render(0), "app");
        assert_eq!(IndexPattern::parse("a-%Y-%q%").render(0), "a-1970-%q%");
    }

    #[test]
    fn bulk_body_has_deterministic_ids() {
        let mut p = IndexPattern::parse("logs-%Y.%m.%d");
        let evs = [sample_event(10), sample_event(20)];
        let mut buf = Vec::new();
        write_bulk(&mut buf, &mut p, &evs, &[1, 0]);
        let lines: Vec<serde_json::Value> = buf
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0]["index"]["_index"], "logs-2026.01.02");
        assert_eq!(lines[0]["index"]["_id"], evs[1].id());
        assert_eq!(lines[2]["index"]["_id"], evs[0].id());
        assert_eq!(lines[3]["pod"], "api-1");
    }

    #[test]
    fn bulk_response_items() {
        assert_eq!(
            parse_bulk_response(br#"{"took":1,"errors":false,"items":[]}"#, 3),
            ItemsOutcome::AllDelivered
        );
        let body = br#"{"errors":true,"items":[
            {"index":{"_id":"a","status":201}},
            {"index":{"_id":"b","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"create":{"_id":"c","status":400,"error":{"type":"mapper_parsing_exception","reason":"bad field"}}},
            {"index":{"_id":"d","status":503,"error":{"type":"unavailable_shards_exception"}}},
            {"index":{"_id":"e","status":409,"error":{"type":"version_conflict_engine_exception"}}}]}"#;
        let ItemsOutcome::PerItem(items) = parse_bulk_response(body, 5) else { panic!() };
        assert_eq!(items[0], None);
        assert_eq!(items[1].as_ref().unwrap().0, Verdict::Retry);
        assert_eq!(items[2].as_ref().unwrap().0, Verdict::Reject);
        assert!(items[2].as_ref().unwrap().1.contains("mapper_parsing_exception"));
        assert_eq!(items[3].as_ref().unwrap().0, Verdict::Retry);
        assert_eq!(items[4].as_ref().unwrap().0, Verdict::Reject);
        assert!(matches!(parse_bulk_response(body, 4), ItemsOutcome::Malformed(_)));
        assert!(matches!(parse_bulk_response(b"<html>", 1), ItemsOutcome::Malformed(_)));
    }

    #[test]
    fn query_encoding() {
        assert_eq!(percent_encode("my pipe/1"), "my%20pipe%2F1");
    }
}

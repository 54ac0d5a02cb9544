//! HTTP output: each batch is one POST of NDJSON (one event per line, as `crate::encode` shapes
//! it), with the configured headers, compression and credentials.
//!
//! 2xx delivers the batch; 408, 429, 5xx, 401/403/404, timeouts and connection errors are
//! retried with back-off; 413 splits the batch in halves; any other status dead-letters it.
//! A batch re-sent after a timeout may reach the receiver twice (plain HTTP has no idempotency
//! key); receivers that must deduplicate can key on the document's fields.

use futures::future::BoxFuture;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tailor_crds::collection::{Compression, OutputSpec, OutputType};

use crate::event::Event;
use crate::sinks::net::send::Sender;
use crate::sinks::net::{BuildError, NetContext, compress};
use crate::sinks::{Sink, SinkContext, SinkError};

/// NDJSON over HTTP POST.
#[derive(Debug)]
pub struct HttpSink {
    sender: Sender,
    uri: http::Uri,
    headers: HeaderMap,
    compression: Compression,
}

impl HttpSink {
    pub fn new(spec: &OutputSpec, ctx: &SinkContext) -> Result<Self, BuildError> {
        let http = spec.http.as_ref().ok_or_else(|| BuildError::MissingSection {
            output: spec.name.clone(),
            type_: OutputType::Http,
        })?;
        let uri = parse_http_uri(&spec.name, &http.uri)?;
        let headers = header_map(&spec.name, &http.headers)?;
        Ok(HttpSink {
            sender: Sender::new(&spec.name, spec.tls.as_ref(), &NetContext::new(spec, ctx))?,
            uri,
            headers,
            compression: spec.compression,
        })
    }

    async fn deliver_all(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let compression = self.compression;
        let encode = |part: &[Event]| encode_ndjson(compression, part);
        self.sender
            .post_splitting(events, "http", &self.uri, "application/x-ndjson", &self.headers, encode)
            .await
    }
}

impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.sender.name
    }

    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.deliver_all(events))
    }
}

/// The NDJSON body of `events`, compressed as configured.
pub fn encode_ndjson(
    compression: Compression,
    events: &[Event],
) -> std::io::Result<(bytes::Bytes, Option<&'static str>)> {
    let mut buf = Vec::with_capacity(events.len() * 512);
    for ev in events {
        crate::encode::encode_ndjson(ev, &mut buf);
    }
    compress::encode(compression, buf)
}

/// An absolute `http`/`https` URL.
pub(crate) fn parse_http_uri(output: &str, url: &str) -> Result<http::Uri, BuildError> {
    let bad = |reason: &str| BuildError::InvalidUrl {
        output: output.into(),
        url: url.into(),
        reason: reason.into(),
    };
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("the scheme must be http or https")),
    }
    if uri.host().is_none() {
        return Err(bad("no host"));
    }
    Ok(uri)
}

fn header_map(
    output: &str,
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<HeaderMap, BuildError> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let bad = || BuildError::InvalidHeader { output: output.into(), name: k.clone() };
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad())?;
        map.insert(name, HeaderValue::from_str(v).map_err(|_| bad())?);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(parse_http_uri("o", "http://collector:8080/ingest").is_ok());
        assert!(parse_http_uri("o", "https://collector/").is_ok());
        assert!(parse_http_uri("o", "ftp://collector/").is_err());
        assert!(parse_http_uri("o", "/relative").is_err());
        assert!(parse_http_uri("o", "http://exa mple/").is_err());
    }

    #[test]
    fn headers() {
        let ok = [("X-Api-Key".to_string(), "k".to_string())].into();
        assert_eq!(header_map("o", &ok).unwrap()["x-api-key"], "k");
        let bad = [("bad header".to_string(), "k".to_string())].into();
        assert!(header_map("o", &bad).is_err());
    }
}

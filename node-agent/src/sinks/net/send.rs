//! Sending a request until the destination gives a final answer, and dead-lettering what it
//! refuses: the retry loop the HTTP-based sinks share.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};
use http_body_util::Full;
use tokio::sync::watch;

use super::backoff::{Backoff, Cancelled};
use super::client::{HttpClient, Response};
use super::deadletter::DeadLetter;
use super::verdict::{Verdict, classify_status};
use super::{BuildError, NetContext, NetStats, RetryPolicy};
use crate::event::Event;
use crate::sinks::SinkError;

/// What the HTTP-based sinks share: client, counters, back-off policy, dead-letter file.
#[derive(Debug)]
pub struct Sender {
    pub name: String,
    pub client: HttpClient,
    pub stats: Arc<NetStats>,
    pub force_stop: watch::Receiver<bool>,
    pub policy: RetryPolicy,
    pub dead_letter: DeadLetter,
    /// `Authorization` from the resolved credentials.
    pub authorization: Option<HeaderValue>,
}

impl Sender {
    pub fn new(
        output: &str,
        tls: Option<&tailor_crds::collection::TlsSpec>,
        ctx: &NetContext,
    ) -> Result<Self, BuildError> {
        let client = HttpClient::new(tls, &ctx.opts.tls, &ctx.opts.retry)
            .map_err(|source| BuildError::Tls { output: output.to_string(), source })?;
        let dead_letter = DeadLetter::new(&ctx.state_dir, &ctx.name, ctx.opts.dead_letter_max_bytes)
            .map_err(|source| BuildError::DeadLetter { output: output.to_string(), source })?;
        let authorization = match &ctx.opts.credentials {
            Some(c) => Some(HeaderValue::from_str(&c.authorization()).map_err(|_| {
                BuildError::InvalidHeader { output: output.to_string(), name: "authorization".into() }
            })?),
            None => None,
        };
        Ok(Sender {
            name: ctx.name.clone(),
            client,
            stats: ctx.opts.stats.clone(),
            force_stop: ctx.force_stop.clone(),
            policy: ctx.opts.retry.clone(),
            dead_letter,
            authorization,
        })
    }

    /// A POST with the body, its type and encoding, the credentials and `extra` headers.
    pub fn post(
        &self,
        uri: &http::Uri,
        body: &Bytes,
        content_type: &'static str,
        encoding: Option<&'static str>,
        extra: &HeaderMap,
    ) -> http::Request<Full<Bytes>> {
        let mut req = http::Request::new(Full::new(body.clone()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = uri.clone();
        let h = req.headers_mut();
        for (k, v) in extra {
            h.insert(k, v.clone());
        }
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(e) = encoding {
            h.insert(CONTENT_ENCODING, HeaderValue::from_static(e));
        }
        if let Some(a) = &self.authorization {
            h.insert(AUTHORIZATION, a.clone());
        }
        req
    }

    /// POSTs `events` to `uri` as bodies built by `encode`, one request per batch: a 413 splits
    /// the batch in halves, a final refusal dead-letters it (`kind` names the destination in
    /// the reason). The delivery loop of the sinks whose batch is one POST.
    pub async fn post_splitting(
        &self,
        events: &[Event],
        kind: &str,
        uri: &http::Uri,
        content_type: &'static str,
        headers: &HeaderMap,
        mut encode: impl FnMut(&[Event]) -> std::io::Result<(Bytes, Option<&'static str>)>,
    ) -> Result<(), SinkError> {
        let mut todo: Vec<std::ops::Range<usize>> = Vec::with_capacity(8);
        todo.push(0..events.len());
        while let Some(range) = todo.pop() {
            let part = &events[range.clone()];
            if part.is_empty() {
                continue;
            }
            let (body, encoding) = encode(part).map_err(|e| SinkError::Failed {
                sink: self.name.clone(),
                message: "compressing the body".into(),
                source: Some(Box::new(e)),
            })?;
            let (verdict, resp) = self
                .send_until_final(part.len(), |_| self.post(uri, &body, content_type, encoding, headers))
                .await?;
            match verdict {
                Verdict::Delivered => NetStats::add(&self.stats.delivered, part.len()),
                Verdict::Split if part.len() > 1 => {
                    let [first, second] = halves(range);
                    todo.push(second);
                    todo.push(first);
                }
                _ => {
                    let reason = format!("{kind} {}: {}", resp.status, snippet(&resp.body));
                    let entries: Vec<_> = part.iter().map(|e| (e, reason.as_str())).collect();
                    self.dead_letter(&entries).await?;
                }
            }
        }
        Ok(())
    }

    /// Sends requests built by `make(attempt)` until one gets a status that is not transient
    /// (`Delivered`, `Split` or `Reject`); transport errors, timeouts and transient statuses
    /// are retried with jittered exponential back-off. `events` is for the counters.
    pub async fn send_until_final(
        &self,
        events: usize,
        mut make: impl FnMut(u32) -> http::Request<Full<Bytes>>,
    ) -> Result<(Verdict, Response), SinkError> {
        let mut backoff = Backoff::new(self.policy.clone());
        loop {
            match self.client.send(make(backoff.attempts())).await {
                Ok(resp) => {
                    let verdict = classify_status(resp.status);
                    if verdict != Verdict::Retry {
                        return Ok((verdict, resp));
                    }
                    tracing::warn!(sink = %self.name, status = resp.status, body = %snippet(&resp.body), "transient refusal, retrying");
                }
                Err(e) => {
                    tracing::warn!(sink = %self.name, error = %error_chain(&e), kind = e.category(), "request failed, retrying")
                }
            }
            NetStats::add(&self.stats.failed_requests, 1);
            NetStats::add(&self.stats.retried, events);
            self.wait(&mut backoff).await?;
        }
    }

    /// Backs off, or gives up at shutdown.
    pub async fn wait(&self, backoff: &mut Backoff) -> Result<(), SinkError> {
        backoff
            .wait(&self.force_stop)
            .await
            .map_err(|Cancelled| SinkError::ShuttingDown { sink: self.name.clone() })
    }

    /// Dead-letters events and counts them; retries the file write until it works or shutdown
    /// (an event counts as handled only once it is on disk).
    pub async fn dead_letter<'a>(&self, entries: &[(&'a Event, &'a str)]) -> Result<(), SinkError> {
        let mut backoff = Backoff::new(self.policy.clone());
        loop {
            match self.dead_letter.write(&self.name, entries.iter().copied()).await {
                Ok(()) => {
                    NetStats::add(&self.stats.dead_lettered, entries.len());
                    tracing::warn!(sink = %self.name, events = entries.len(), reason = entries.first().map(|e| e.1).unwrap_or(""), "events dead-lettered");
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "cannot write the dead-letter file, retrying")
                }
            }
            self.wait(&mut backoff).await?;
        }
    }
}

/// An error with its causes (`client error (Connect): tls handshake eof`), for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// The start of a response body, for logs and dead-letter reasons.
pub fn snippet(body: &[u8]) -> String {
    let cut = &body[..body.len().min(256)];
    String::from_utf8_lossy(cut).into_owned()
}

/// Halves of a range, for a destination that answered 413.
pub fn halves(range: std::ops::Range<usize>) -> [std::ops::Range<usize>; 2] {
    let mid = range.start + range.len() / 2;
    [range.start..mid, mid..range.end]
}

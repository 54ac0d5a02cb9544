//! Kafka output, with `rskafka`: a pure-Rust client from InfluxData (0.6, 2025; maintained, with
//! commits in 2026), that speaks the Kafka protocol natively on Tokio and builds in seconds,
//! where `rdkafka` would compile librdkafka's C code (minutes on 2 cores, or link Debian's
//! librdkafka-dev) and bring its own threads and queues.
//!
//! - Topic from a pattern: `{field}` is replaced by the event's field (`net::fields::lookup`;
//!   characters Kafka does not allow in topic names become `_`, a missing field becomes
//!   `unknown`).
//! - Key from `keyField`; the partition is chosen like the Java client does (murmur2 of the key
//!   modulo the partition count), so consumers see one key in one partition; events without a
//!   key go round-robin per batch.
//! - `acks=all` (rskafka always sends `acks=-1`), so a produce succeeds only once every in-sync
//!   replica has the records. rskafka has no idempotent producer (no InitProducerId, batches go
//!   out with producer id -1 and no sequence numbers), so delivery is at-least-once: a produce
//!   retried after a lost response can duplicate that partition's records. Every record carries
//!   `Event::id` (file identity + offset, the Elasticsearch `_id`) in its `tailor-id` header, so
//!   consumers can drop the copies.
//! - TLS when the output has a `tls` section; `username`/`password` credentials become
//!   SASL/PLAIN.
//! - A produce that fails is retried with back-off for the failed partitions only; records the
//!   broker refuses for good (too large, invalid, unknown topic) are dead-lettered.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use rskafka::client::partition::{Compression as KafkaCompression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder, Credentials as SaslCredentials, SaslConfig};
use rskafka::record::Record;
use tailor_crds::collection::{Compression, OutputSpec, OutputType};
use tokio::sync::watch;

use crate::event::Event;
use crate::sinks::net::backoff::Backoff;
use crate::sinks::net::deadletter::DeadLetter;
use crate::sinks::net::{BuildError, Credentials, NetContext, NetStats, RetryPolicy, client, fields};
use crate::sinks::{Sink, SinkContext, SinkError};

/// A topic name pattern: literal text and `{field}` references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicPattern(Vec<TopicPart>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum TopicPart {
    Literal(String),
    Field(String),
}

impl TopicPattern {
    pub fn parse(pattern: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = pattern;
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else { break };
            if open > 0 {
                parts.push(TopicPart::Literal(rest[..open].to_string()));
            }
            parts.push(TopicPart::Field(rest[open + 1..close].to_string()));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(TopicPart::Literal(rest.to_string()));
        }
        TopicPattern(parts)
    }

    /// The topic of an event (borrowed when the pattern has no field).
    pub fn render<'a>(&'a self, ev: &Event) -> Cow<'a, str> {
        if let [TopicPart::Literal(s)] = self.0.as_slice() {
            return Cow::Borrowed(s);
        }
        let mut out = String::new();
        for p in &self.0 {
            match p {
                TopicPart::Literal(s) => out.push_str(s),
                TopicPart::Field(f) => match fields::lookup(ev, f) {
                    Some(v) => out.extend(v.chars().map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }
                    })),
                    None => out.push_str("unknown"),
                },
            }
        }
        Cow::Owned(out)
    }
}

/// Kafka's murmur2 (as in the Java client's default partitioner), so that tools and other
/// producers agree on where a key goes.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const SEED: u32 = 0x9747_b28c;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a key among `n` partitions (Java's `toPositive(murmur2(key)) % n`).
pub fn partition_for_key(key: &[u8], n: usize) -> usize {
    ((murmur2(key) & 0x7fff_ffff) as usize) % n.max(1)
}

/// The record header carrying `Event::id`, so that consumers can drop the copies an
/// at-least-once producer may write.
pub const ID_HEADER: &str = "tailor-id";

/// The Kafka record of an event: the JSON document as value, the key field as key, the event's
/// deterministic id as a header.
pub fn record_for(ev: &Event, key_field: Option<&str>) -> Record {
    let mut value = Vec::with_capacity(ev.message.len() + 256);
    crate::encode::encode_json(ev, &mut value);
    Record {
        key: key_field.and_then(|f| fields::lookup(ev, f)).map(|k| k.as_bytes().to_vec()),
        value: Some(value),
        headers: BTreeMap::from([(ID_HEADER.to_string(), ev.id().into_bytes())]),
        timestamp: chrono::DateTime::from_timestamp_nanos(ev.timestamp_nanos),
    }
}

/// What to do after a failed produce.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Retry,
    Reject(String),
}

fn classify(err: &rskafka::client::error::Error) -> Fate {
    use rskafka::client::error::{Error, ProtocolError};
    match err {
        Error::ServerError { protocol_error, .. } => match protocol_error {
            ProtocolError::MessageTooLarge
            | ProtocolError::RecordListTooLarge
            | ProtocolError::InvalidRecord
            | ProtocolError::CorruptMessage
            | ProtocolError::InvalidTopicException => Fate::Reject(format!("kafka: {protocol_error}")),
            _ => Fate::Retry,
        },
        _ => Fate::Retry,
    }
}

/// Kafka producer output.
pub struct KafkaSink {
    name: String,
    brokers: Vec<String>,
    topic: TopicPattern,
    key_field: Option<String>,
    compression: KafkaCompression,
    tls: Option<Arc<rustls::ClientConfig>>,
    sasl: Option<(String, String)>,
    client: Option<Client>,
    /// Partition count per topic, from the cluster's metadata.
    topics: HashMap<String, usize>,
    partitions: HashMap<(String, i32), Arc<PartitionClient>>,
    round_robin: usize,
    stats: Arc<NetStats>,
    force_stop: watch::Receiver<bool>,
    policy: RetryPolicy,
    dead_letter: DeadLetter,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("name", &self.name).field("brokers", &self.brokers).finish()
    }
}

impl KafkaSink {
    pub fn new(spec: &OutputSpec, ctx: &SinkContext) -> Result<Self, BuildError> {
        let kafka = spec.kafka.as_ref().ok_or_else(|| BuildError::MissingSection {
            output: spec.name.clone(),
            type_: OutputType::Kafka,
        })?;
        let net = NetContext::new(spec, ctx);
        if kafka.brokers.is_empty() {
            return Err(BuildError::Invalid {
                output: spec.name.clone(),
                what: "brokers",
                value: "[]".into(),
            });
        }
        let tls = match &spec.tls {
            Some(t) => Some(Arc::new(
                client::tls_config(Some(t), &net.opts.tls)
                    .map_err(|source| BuildError::Tls { output: spec.name.clone(), source })?,
            )),
            None => None,
        };
        let sasl = match &net.opts.credentials {
            None => None,
            Some(Credentials::Basic { username, password }) => Some((username.clone(), password.clone())),
            Some(Credentials::Token(_)) => {
                return Err(BuildError::Invalid {
                    output: spec.name.clone(),
                    what: "credentials",
                    value: "token (Kafka takes username/password, SASL/PLAIN)".into(),
                });
            }
        };
        let dead_letter = DeadLetter::new(&net.state_dir, &net.name, net.opts.dead_letter_max_bytes)
            .map_err(|source| BuildError::DeadLetter { output: spec.name.clone(), source })?;
        Ok(KafkaSink {
            name: net.name.clone(),
            brokers: kafka.brokers.clone(),
            topic: TopicPattern::parse(&kafka.topic),
            key_field: kafka.key_field.clone(),
            compression: match spec.compression {
                Compression::None => KafkaCompression::NoCompression,
                Compression::Gzip => KafkaCompression::Gzip,
                Compression::Zstd => KafkaCompression::Zstd,
            },
            tls,
            sasl,
            client: None,
            topics: HashMap::new(),
            partitions: HashMap::new(),
            round_robin: 0,
            stats: net.opts.stats.clone(),
            force_stop: net.force_stop.clone(),
            policy: net.opts.retry.clone(),
            dead_letter,
        })
    }

    /// Connects (bootstrap + metadata) if not connected.
    async fn connect(&mut self) -> Result<&Client, String> {
        if self.client.is_none() {
            let mut b = ClientBuilder::new(self.brokers.clone())
                .client_id("tailor-agent")
                // rskafka retries on its own; bound it so that our loop (which honours
                // force_stop and counts) stays in charge.
                .backoff_config(rskafka::BackoffConfig {
                    init_backoff: self.policy.initial_backoff,
                    max_backoff: self.policy.max_backoff,
                    base: 2.0,
                    deadline: Some(self.policy.request_timeout),
                });
            if let Some(tls) = &self.tls {
                b = b.tls_config(tls.clone());
            }
            if let Some((u, p)) = &self.sasl {
                b = b.sasl_config(SaslConfig::Plain(SaslCredentials::new(u.clone(), p.clone())));
            }
            let client = tokio::time::timeout(self.policy.request_timeout, b.build())
                .await
                .map_err(|_| "connecting timed out".to_string())?
                .map_err(|e| e.to_string())?;
            self.client = Some(client);
        }
        self.client.as_ref().ok_or_else(|| "no client".to_string())
    }

    /// Partition counts of the topics `wanted`, refreshing the metadata when one is unknown.
    async fn refresh_topics(&mut self, wanted: &[&str]) -> Result<(), String> {
        if wanted.iter().all(|t| self.topics.contains_key(*t)) {
            return Ok(());
        }
        let timeout = self.policy.request_timeout;
        let client = self.connect().await?;
        let list = tokio::time::timeout(timeout, client.list_topics())
            .await
            .map_err(|_| "listing topics timed out".to_string())?
            .map_err(|e| e.to_string())?;
        self.topics = list.into_iter().map(|t| (t.name, t.partitions.len())).collect();
        Ok(())
    }

    async fn partition_client(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Arc<PartitionClient>, String> {
        if let Some(pc) = self.partitions.get(&(topic.to_string(), partition)) {
            return Ok(pc.clone());
        }
        let timeout = self.policy.request_timeout;
        let client = self.connect().await?;
        let pc = tokio::time::timeout(
            timeout,
            client.partition_client(topic, partition, UnknownTopicHandling::Retry),
        )
        .await
        .map_err(|_| "partition lookup timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let pc = Arc::new(pc);
        self.partitions.insert((topic.to_string(), partition), pc.clone());
        Ok(pc)
    }

    fn forget_connections(&mut self) {
        self.client = None;
        self.partitions.clear();
        self.topics.clear();
    }

    async fn deliver_all(&mut self, events: &[Event]) -> Result<(), SinkError> {
        let mut backoff = Backoff::new(self.policy.clone());
        let mut pending: Vec<usize> = (0..events.len()).collect();
        // A copy, so that topics borrowed from it can live across `&mut self` calls.
        let pattern = self.topic.clone();
        while !pending.is_empty() {
            let mut retry_next: Vec<usize> = Vec::new();
            let mut rejected: Vec<(usize, String)> = Vec::new();
            let topics: Vec<Cow<'_, str>> = pending.iter().map(|&i| pattern.render(&events[i])).collect();
            let mut distinct: Vec<&str> = topics.iter().map(|t| t.as_ref()).collect();
            distinct.sort_unstable();
            distinct.dedup();
            if let Err(e) = self.refresh_topics(&distinct).await {
                tracing::warn!(sink = %self.name, error = %e, "kafka metadata unavailable, retrying");
                self.fail_round(pending.len());
                self.wait(&mut backoff).await?;
                continue;
            }
            // Group by (topic, partition), keeping event order within each.
            self.round_robin = self.round_robin.wrapping_add(1);
            let mut groups: BTreeMap<(&str, i32), Vec<usize>> = BTreeMap::new();
            for (&i, topic) in pending.iter().zip(&topics) {
                let Some(&n) = self.topics.get(topic.as_ref()).filter(|n| **n > 0) else {
                    rejected.push((i, format!("kafka: topic {topic:?} does not exist")));
                    continue;
                };
                let key = self.key_field.as_deref().and_then(|f| fields::lookup(&events[i], f));
                let p = match &key {
                    Some(k) => partition_for_key(k.as_bytes(), n),
                    None => self.round_robin % n,
                };
                groups.entry((topic.as_ref(), p as i32)).or_default().push(i);
            }
            let mut connection_trouble = false;
            for ((topic, partition), idx) in groups {
                let records: Vec<Record> = idx.iter().map(|&i| self.record(&events[i])).collect();
                let res = match self.partition_client(topic, partition).await {
                    Ok(pc) => tokio::time::timeout(
                        self.policy.request_timeout,
                        pc.produce(records, self.compression),
                    )
                    .await
                    .map_err(|_| Fate::Retry)
                    .and_then(|r| {
                        r.map_err(|e| {
                            tracing::warn!(sink = %self.name, topic, partition, error = %e, "produce failed");
                            classify(&e)
                        })
                    }),
                    Err(e) => {
                        tracing::warn!(sink = %self.name, topic, partition, error = %e, "no partition client");
                        Err(Fate::Retry)
                    }
                };
                match res {
                    Ok(_) => NetStats::add(&self.stats.delivered, idx.len()),
                    Err(Fate::Reject(reason)) => rejected.extend(idx.iter().map(|&i| (i, reason.clone()))),
                    Err(Fate::Retry) => {
                        connection_trouble = true;
                        retry_next.extend(idx);
                    }
                }
            }
            drop(topics);
            if !rejected.is_empty() {
                self.dead_letter_events(events, &rejected).await?;
            }
            if !retry_next.is_empty() {
                if connection_trouble {
                    self.forget_connections();
                }
                self.fail_round(retry_next.len());
                self.wait(&mut backoff).await?;
            }
            retry_next.sort_unstable();
            pending = retry_next;
        }
        Ok(())
    }

    fn record(&self, ev: &Event) -> Record {
        record_for(ev, self.key_field.as_deref())
    }

    fn fail_round(&self, events: usize) {
        NetStats::add(&self.stats.failed_requests, 1);
        NetStats::add(&self.stats.retried, events);
    }

    async fn wait(&self, backoff: &mut Backoff) -> Result<(), SinkError> {
        backoff.wait(&self.force_stop).await.map_err(|_| SinkError::ShuttingDown { sink: self.name.clone() })
    }

    async fn dead_letter_events(
        &self,
        events: &[Event],
        rejected: &[(usize, String)],
    ) -> Result<(), SinkError> {
        let entries: Vec<(&Event, &str)> = rejected.iter().map(|(i, r)| (&events[*i], r.as_str())).collect();
        let mut backoff = Backoff::new(self.policy.clone());
        loop {
            match self.dead_letter.write(&self.name, entries.iter().copied()).await {
                Ok(()) => {
                    NetStats::add(&self.stats.dead_lettered, entries.len());
                    tracing::warn!(sink = %self.name, events = entries.len(), "events dead-lettered");
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

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(self.deliver_all(events))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::net::testutil::sample_event;

    #[test]
    fn topic_patterns() {
        let ev = sample_event(1);
        assert_eq!(TopicPattern::parse("logs").render(&ev), "logs");
        assert_eq!(TopicPattern::parse("logs-{namespace}").render(&ev), "logs-shop");
        assert_eq!(TopicPattern::parse("{image}.{absent}").render(&ev), "shop_api_1.unknown");
        assert_eq!(TopicPattern::parse("a{b").render(&ev), "a{b");
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // Reference values of org.apache.kafka.common.utils.Utils.murmur2.
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32, -58897971);
        assert_eq!(murmur2(b"abc") as i32, 479470107);
        for n in 1..10 {
            assert!(partition_for_key(b"pod-a", n) < n);
        }
    }
}

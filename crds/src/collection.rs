//! `LogCollectionConfig`: which pods of a namespace to collect from, how to parse, where to send.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{LogSources, PodSelector, SelectionStatus, StartPosition};

/// Collect logs of selected pods of this namespace and ship them to one or more outputs.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "logging.tailor.dev",
    version = "v1alpha1",
    kind = "LogCollectionConfig",
    namespaced,
    shortname = "lcc",
    category = "tailor",
    status = "SelectionStatus",
    printcolumn = r#"{"name":"Pods","type":"integer","jsonPath":".status.pods"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.nodes"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct LogCollectionConfigSpec {
    /// Which pods of this namespace, and which of their containers.
    #[serde(default)]
    pub selector: PodSelector,
    /// What to read from each selected container.
    #[serde(default)]
    pub sources: LogSources,
    /// Where to start in files that exist when the configuration is first applied.
    #[serde(default)]
    pub start: StartPosition,
    /// Joining of lines into multi-line events (stack traces), before parsing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<MultilineSpec>,
    /// How to turn a line into fields.
    #[serde(default)]
    pub parse: ParseSpec,
    /// Events to keep or drop, by a regex on a field.
    #[serde(default, skip_serializing_if = "FilterSpec::is_empty")]
    pub filters: FilterSpec,
    /// Metadata attached to each event, beyond namespace, pod, container, node, image, workload.
    #[serde(default)]
    pub metadata: MetadataSpec,
    /// Where events go. Every output must acknowledge an event before its offset is committed.
    #[schemars(length(min = 1, max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub outputs: Vec<OutputSpec>,
}

/// Multi-line joining. Either a preset `mode` or a custom `startPattern`/`continuationPattern`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.mode != 'custom' || has(self.startPattern) || has(self.continuationPattern)",
     "message": "mode custom needs startPattern or continuationPattern"}
]))]
pub struct MultilineSpec {
    /// `java`, `python` and `go` join stack traces with ready-made patterns.
    #[serde(default)]
    pub mode: MultilineMode,
    /// A line matching this regex starts a new event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_pattern: Option<String>,
    /// A line matching this regex continues the current event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation_pattern: Option<String>,
    /// At most this many lines in one event.
    #[serde(default = "default_max_lines")]
    #[schemars(range(min = 2, max = 10000))]
    pub max_lines: u32,
    /// At most this many bytes in one event.
    #[serde(default = "default_max_bytes")]
    #[schemars(range(min = 1024, max = 16777216))]
    pub max_bytes: u32,
    /// An incomplete event is flushed after this many milliseconds without a new line.
    #[serde(default = "default_flush_ms")]
    #[schemars(range(min = 10, max = 60000))]
    pub flush_timeout_ms: u32,
}

fn default_max_lines() -> u32 {
    500
}
fn default_max_bytes() -> u32 {
    256 * 1024
}
fn default_flush_ms() -> u32 {
    1000
}

/// Ready-made multi-line modes.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum MultilineMode {
    #[default]
    Custom,
    Java,
    Python,
    Go,
}

/// Parsing of an event's message into fields. On failure the event is kept raw and marked.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.format != 'regex' || has(self.pattern)", "message": "format regex needs pattern"},
    {"rule": "self.format != 'delimiter' || (has(self.columns) && size(self.columns) > 0)",
     "message": "format delimiter needs columns"}
]))]
pub struct ParseSpec {
    /// `none` keeps the message as is.
    #[serde(default)]
    pub format: ParseFormat,
    /// For `regex`: a regex with named captures, one field per capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// For `delimiter`: the separator (default `,`; `\t` for TSV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4))]
    pub delimiter: Option<String>,
    /// For `delimiter`: the column names, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// Take the event's time from a parsed field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<TimestampSpec>,
    /// Keep the original line in the `message` field next to the parsed fields.
    #[serde(default)]
    pub keep_original: bool,
}

/// Parser formats.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ParseFormat {
    #[default]
    None,
    Json,
    Regex,
    Delimiter,
    Nginx,
    Apache,
}

/// Which parsed field holds the event time, and its format.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TimestampSpec {
    /// The field name.
    pub field: String,
    /// `rfc3339`, `unix`, `unixMillis`, or a strftime format such as `%d/%b/%Y:%H:%M:%S %z`.
    #[serde(default = "default_ts_format")]
    pub format: String,
}

fn default_ts_format() -> String {
    "rfc3339".into()
}

/// Keep or drop events by a regex on a field (`message` for the raw line).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FilterSpec {
    /// If any are given, an event is kept only when one matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<FieldMatch>,
    /// An event that matches any of these is dropped (and counted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<FieldMatch>,
}

impl FilterSpec {
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }
}

/// A regex matched against one field of the event.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FieldMatch {
    /// The field (`message` for the raw line).
    #[serde(default = "default_field")]
    pub field: String,
    /// The regex.
    #[schemars(length(min = 1, max = 4096))]
    pub pattern: String,
}

fn default_field() -> String {
    "message".into()
}

/// Metadata attached to each event.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MetadataSpec {
    /// Pod labels to attach (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Pod annotations to attach (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub annotations: Vec<String>,
    /// Environment variables of the container to attach as fields (literal values only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Static fields.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

/// One destination of events.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.type != 'elasticsearch' || has(self.elasticsearch)", "message": "type elasticsearch needs elasticsearch"},
    {"rule": "self.type != 'loki' || has(self.loki)", "message": "type loki needs loki"},
    {"rule": "self.type != 'kafka' || has(self.kafka)", "message": "type kafka needs kafka"},
    {"rule": "self.type != 'http' || has(self.http)", "message": "type http needs http"}
]))]
pub struct OutputSpec {
    /// A name unique within this resource.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,
    /// The kind of output.
    #[serde(rename = "type")]
    pub type_: OutputType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elasticsearch: Option<ElasticsearchOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loki: Option<LokiOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpOutput>,
    /// Batching of events into requests.
    #[serde(default)]
    pub batch: BatchSpec,
    /// Compression of request bodies.
    #[serde(default)]
    pub compression: Compression,
    /// TLS settings for network outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// A Secret of this namespace with `username`/`password` or `token` keys (labelled
    /// `logging.tailor.dev/output-secret: "true"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// Buffering while the output is slow or down.
    #[serde(default)]
    pub buffer: BufferSpec,
}

/// Kinds of outputs.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum OutputType {
    /// NDJSON files per target under the agent's output root (set at install time).
    File,
    /// NDJSON on the agent's stdout.
    Stdout,
    Elasticsearch,
    Loki,
    Kafka,
    Http,
}

/// Elasticsearch / OpenSearch bulk API.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ElasticsearchOutput {
    /// Base URLs, e.g. `https://es:9200`.
    #[schemars(length(min = 1))]
    pub endpoints: Vec<String>,
    /// Index name; `%Y`, `%m`, `%d` are replaced from the event's date.
    #[serde(default = "default_index")]
    pub index: String,
    /// Optional ingest pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
}

fn default_index() -> String {
    "logs-%Y.%m.%d".into()
}

/// Loki push API.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LokiOutput {
    /// Base URL, e.g. `http://loki:3100`.
    pub endpoint: String,
    /// Stream labels: label name → event field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `X-Scope-OrgID` tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Kafka producer.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaOutput {
    /// Bootstrap brokers, `host:port`.
    #[schemars(length(min = 1))]
    pub brokers: Vec<String>,
    /// Topic; `{field}` is replaced from the event.
    pub topic: String,
    /// Event field used as the message key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_field: Option<String>,
}

/// NDJSON over HTTP POST.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpOutput {
    /// The URL events are POSTed to.
    pub uri: String,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Batching of events.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BatchSpec {
    #[serde(default = "default_batch_events")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_events: u32,
    #[serde(default = "default_batch_bytes")]
    #[schemars(range(min = 1024, max = 104857600))]
    pub max_bytes: u32,
    #[serde(default = "default_batch_ms")]
    #[schemars(range(min = 1, max = 60000))]
    pub timeout_ms: u32,
}

impl Default for BatchSpec {
    fn default() -> Self {
        Self {
            max_events: default_batch_events(),
            max_bytes: default_batch_bytes(),
            timeout_ms: default_batch_ms(),
        }
    }
}

fn default_batch_events() -> u32 {
    1000
}
fn default_batch_bytes() -> u32 {
    1024 * 1024
}
fn default_batch_ms() -> u32 {
    1000
}

/// Request body compression.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

/// TLS for network outputs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A Secret of this namespace holding `ca.crt` (and `tls.crt`/`tls.key` for client auth),
    /// labelled `logging.tailor.dev/output-secret: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Skip server certificate verification (testing only).
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A Secret in the resource's own namespace.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name. In a LogCollectionConfig: a Secret of its namespace labelled
    /// `logging.tailor.dev/output-secret: "true"`; in a NodeLogConfig: the operator's mirror of it.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
}

/// What happens when an output cannot keep up.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BufferSpec {
    /// `memory` (bounded) or `disk` (under the agent's state directory).
    #[serde(default, rename = "type")]
    pub type_: BufferType,
    /// Size cap of the buffer, e.g. `64Mi`.
    #[serde(default = "default_buffer_size")]
    #[schemars(regex(pattern = r"^[0-9]+(Ki|Mi|Gi|Ti|K|M|G|T)?$"))]
    pub max_size: String,
    /// `block` pauses reading (nothing lost); `dropNewest` drops and counts.
    #[serde(default)]
    pub when_full: WhenFull,
}

impl Default for BufferSpec {
    fn default() -> Self {
        Self { type_: BufferType::Memory, max_size: default_buffer_size(), when_full: WhenFull::Block }
    }
}

fn default_buffer_size() -> String {
    "16Mi".into()
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum BufferType {
    #[default]
    Memory,
    Disk,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum WhenFull {
    #[default]
    Block,
    DropNewest,
}

//! Include/exclude filters: a regex on one field of the event.
//!
//! `message` is the raw line (as joined by multiline); the metadata names of `enrich` are read
//! from the target; any other name is a parsed field (a dotted path reaches into objects), then a
//! field of the resource. A missing field matches nothing. Non-string values are matched in their
//! JSON form (`status: 500` matches `^5`).

use std::fmt::Write as _;

use regex::bytes::Regex;
use serde_json::Value;
use tailor_crds::collection::{FieldMatch, FilterSpec};

use super::enrich::stream_name;
use super::timestamp::lookup;
use crate::event::Event;
use crate::pipeline::PipelineError;

/// Why an event was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Include filters exist and none matched.
    NotIncluded,
    Excluded,
}

#[derive(Clone, Debug)]
struct FieldRegex {
    field: String,
    regex: Regex,
}

/// The compiled filters of a target.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    include: Vec<FieldRegex>,
    exclude: Vec<FieldRegex>,
    /// Text form of non-string values, reused between events.
    scratch: String,
}

impl Filters {
    pub fn compile(spec: &FilterSpec) -> Result<Self, PipelineError> {
        let compile = |list: &str, matches: &[FieldMatch]| {
            matches
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    Regex::new(&m.pattern).map(|regex| FieldRegex { field: m.field.clone(), regex }).map_err(
                        |source| PipelineError::InvalidRegex {
                            field: format!("filters.{list}[{i}].pattern (field {})", m.field),
                            source,
                        },
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            include: compile("include", &spec.include)?,
            exclude: compile("exclude", &spec.exclude)?,
            scratch: String::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Decides on `event`; `raw` is the message before the pipeline cleared it.
    pub fn verdict(&mut self, event: &Event, raw: &[u8]) -> Verdict {
        if !self.include.is_empty() && !self.include.iter().any(|f| matches(f, event, raw, &mut self.scratch))
        {
            return Verdict::NotIncluded;
        }
        if self.exclude.iter().any(|f| matches(f, event, raw, &mut self.scratch)) {
            return Verdict::Excluded;
        }
        Verdict::Keep
    }
}

fn matches(filter: &FieldRegex, event: &Event, raw: &[u8], scratch: &mut String) -> bool {
    let meta = &*event.meta;
    let text: &[u8] = match filter.field.as_str() {
        "message" => raw,
        "namespace" => meta.namespace.as_bytes(),
        "pod" => meta.pod.as_bytes(),
        "pod_uid" => meta.pod_uid.as_bytes(),
        "container" => meta.container.as_bytes(),
        "node" => meta.node.as_bytes(),
        "image" => meta.image.as_bytes(),
        "workload" => match &meta.workload {
            Some(w) => w.as_bytes(),
            None => return false,
        },
        "stream" => match event.stream {
            Some(s) => stream_name(s).as_bytes(),
            None => return false,
        },
        name => match event.fields.as_ref().and_then(|f| lookup(f, name)) {
            Some(Value::String(s)) => s.as_bytes(),
            Some(other) => {
                scratch.clear();
                // Writing into a String cannot fail.
                let _ = write!(scratch, "{other}");
                scratch.as_bytes()
            }
            None => match meta.fields.get(name) {
                Some(v) => v.as_bytes(),
                None => return false,
            },
        },
    };
    filter.regex.is_match(text)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::event::{EventFlags, FileId, TargetMeta};

    fn event(message: &str, fields: Value) -> Event {
        Event {
            meta: Arc::new(TargetMeta {
                pod: "web-1".into(),
                fields: [("team".into(), "a".into())].into(),
                ..TargetMeta::default()
            }),
            file: FileId { dev: 0, ino: 0, fingerprint: 0 },
            offset: 0,
            timestamp_nanos: 0,
            stream: None,
            message: Bytes::copy_from_slice(message.as_bytes()),
            fields: fields.as_object().cloned(),
            flags: EventFlags::default(),
        }
    }

    fn m(field: &str, pattern: &str) -> FieldMatch {
        FieldMatch { field: field.into(), pattern: pattern.into() }
    }

    #[test]
    fn include_and_exclude() {
        let spec = FilterSpec {
            include: vec![m("level", "^(warn|error)$"), m("message", "PANIC")],
            exclude: vec![m("http.status", "^2")],
        };
        let mut f = Filters::compile(&spec).unwrap();
        let e = event("x", json!({"level": "error", "http": {"status": 500}}));
        assert_eq!(f.verdict(&e, &e.message), Verdict::Keep);
        let e = event("x", json!({"level": "error", "http": {"status": 204}}));
        assert_eq!(f.verdict(&e, &e.message), Verdict::Excluded);
        let e = event("x", json!({"level": "info"}));
        assert_eq!(f.verdict(&e, &e.message), Verdict::NotIncluded);
        let e = event("PANIC now", json!(null));
        assert_eq!(f.verdict(&e, &e.message), Verdict::Keep);
    }

    #[test]
    fn metadata_fields() {
        let spec = FilterSpec { include: vec![], exclude: vec![m("pod", "^web-"), m("team", "^b$")] };
        let mut f = Filters::compile(&spec).unwrap();
        let e = event("x", json!(null));
        assert_eq!(f.verdict(&e, &e.message), Verdict::Excluded);
        let spec = FilterSpec { include: vec![m("team", "^a$")], exclude: vec![] };
        let mut f = Filters::compile(&spec).unwrap();
        assert_eq!(f.verdict(&e, &e.message), Verdict::Keep);
    }

    #[test]
    fn bad_regex_names_the_filter() {
        let spec = FilterSpec { include: vec![], exclude: vec![m("level", "ok"), m("level", "(")] };
        let err = Filters::compile(&spec).unwrap_err().to_string();
        assert!(err.contains("filters.exclude[1].pattern (field level)"), "{err}");
    }
}

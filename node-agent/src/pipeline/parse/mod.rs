//! Parsers: turn an event's message into fields.
//!
//! A parser never fails an event: when a line does not parse, the caller keeps it raw and marks
//! it `parse_failed`. Everything is compiled once per target and scratch space is reused.

mod access_log;
mod delimiter;
mod named;

use regex::bytes::Regex;
use serde_json::{Map, Value};
use tailor_crds::collection::{ParseFormat, ParseSpec};

pub use access_log::{AccessLogParser, Flavor};
pub use delimiter::{DelimiterError, DelimiterParser};
pub use named::NamedRegex;

use crate::pipeline::PipelineError;

/// The compiled parser of a target.
#[derive(Clone, Debug)]
pub enum Parser {
    /// No parsing: the message stays as is and no field is added.
    None,
    /// A JSON object per line; nested objects and arrays are kept as JSON values.
    Json,
    Regex(NamedRegex),
    Delimiter(DelimiterParser),
    AccessLog(AccessLogParser),
}

impl Parser {
    pub fn compile(spec: &ParseSpec) -> Result<Self, PipelineError> {
        Ok(match spec.format {
            ParseFormat::None => Parser::None,
            ParseFormat::Json => Parser::Json,
            ParseFormat::Regex => {
                let pattern = spec.pattern.as_deref().ok_or_else(|| PipelineError::MissingSetting {
                    field: "parse.pattern".into(),
                    message: "format regex needs a pattern".into(),
                })?;
                let regex = Regex::new(pattern).map_err(|source| PipelineError::InvalidRegex {
                    field: "parse.pattern".into(),
                    source,
                })?;
                let parser = NamedRegex::new(regex);
                if !parser.has_names() {
                    return Err(PipelineError::MissingSetting {
                        field: "parse.pattern".into(),
                        message: "the pattern has no named capture such as (?P<level>\\w+)".into(),
                    });
                }
                Parser::Regex(parser)
            }
            ParseFormat::Delimiter => {
                if spec.columns.is_empty() {
                    return Err(PipelineError::MissingSetting {
                        field: "parse.columns".into(),
                        message: "format delimiter needs columns".into(),
                    });
                }
                Parser::Delimiter(DelimiterParser::new(spec.delimiter.as_deref(), spec.columns.clone()))
            }
            ParseFormat::Nginx | ParseFormat::Apache => {
                let flavor = if spec.format == ParseFormat::Nginx { Flavor::Nginx } else { Flavor::Apache };
                let parser = AccessLogParser::new(flavor)
                    .map_err(|source| PipelineError::InvalidRegex { field: "parse.format".into(), source })?;
                Parser::AccessLog(parser)
            }
        })
    }

    /// Whether a parser is configured at all.
    pub fn is_none(&self) -> bool {
        matches!(self, Parser::None)
    }

    /// The fields of `line`, or `None` when it does not parse (or no parser is configured).
    pub fn parse(&mut self, line: &[u8]) -> Option<Map<String, Value>> {
        match self {
            Parser::None => None,
            Parser::Json => serde_json::from_slice::<Map<String, Value>>(line).ok(),
            Parser::Regex(parser) => parser.parse(line),
            Parser::Delimiter(parser) => parser.parse(line).ok(),
            Parser::AccessLog(parser) => parser.parse(line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(format: ParseFormat) -> ParseSpec {
        ParseSpec { format, ..ParseSpec::default() }
    }

    #[test]
    fn json_keeps_nested_values_and_rejects_non_objects() {
        let mut p = Parser::compile(&spec(ParseFormat::Json)).unwrap();
        let line = br#"{"level":"error","msg":"upstream timed out","http":{"method":"GET","status":504,"headers":{"x-request-id":"abc"}},"tags":["a","b"],"latency_ms":1500.5}"#;
        let f = p.parse(line).unwrap();
        assert_eq!(f["http"]["headers"]["x-request-id"], "abc");
        assert_eq!(f["http"]["status"], 504);
        assert_eq!(f["tags"][1], "b");
        assert_eq!(f["latency_ms"], 1500.5);
        for bad in [&b"[1,2]"[..], b"42", b"{\"a\":", b"plain text", b"{\"a\":1} trailing", b"\xff{}"] {
            assert!(p.parse(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let mut s = spec(ParseFormat::Regex);
        let err = Parser::compile(&s).unwrap_err();
        assert!(err.to_string().contains("parse.pattern"), "{err}");
        s.pattern = Some("(?P<a>[".into());
        let err = Parser::compile(&s).unwrap_err();
        assert!(err.to_string().contains("parse.pattern"), "{err}");
        s.pattern = Some("no names".into());
        assert!(Parser::compile(&s).unwrap_err().to_string().contains("named capture"));
        let err = Parser::compile(&spec(ParseFormat::Delimiter)).unwrap_err();
        assert!(err.to_string().contains("parse.columns"), "{err}");
    }
}

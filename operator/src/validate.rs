//! Spec checks beyond what the CRD schema can express. An invalid resource renders nothing
//! and says why in its `Invalid` condition; it never affects other resources.

use std::collections::BTreeSet;

use regex::{Regex, RegexBuilder};
use tailor_crds::backup::LogBackupPolicySpec;
use tailor_crds::collection::{LogCollectionConfigSpec, MultilineMode, OutputType, ParseFormat};
use tailor_crds::units::{self, UnitError};
use tailor_crds::{LabelOperator, LogSources, PodSelector};

use crate::layout::{self, LayoutError};
use crate::mapping::{self, MappingError};

/// Compiled regexes are capped so that a hostile pattern has a bounded cost.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a resource is invalid. `reason()` is the condition reason and the metric label.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("{field}: regex does not compile: {source}")]
    Regex {
        field: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("parse.pattern has no named capture group, so it would produce no field")]
    NoNamedCapture,
    #[error("{field}: {source}")]
    Path {
        field: String,
        #[source]
        source: MappingError,
    },
    #[error("{field}: {source}")]
    Unit {
        field: &'static str,
        #[source]
        source: UnitError,
    },
    #[error("layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("{0}")]
    Spec(String),
    #[error("the resource does not match the API: {0}")]
    Malformed(String),
}

impl ValidationError {
    /// The condition reason (CamelCase) and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Regex { .. } | Self::NoNamedCapture => "InvalidRegex",
            Self::Path { .. } => "InvalidPath",
            Self::Unit { .. } => "InvalidValue",
            Self::Layout(_) => "InvalidLayout",
            Self::Spec(_) => "InvalidSpec",
            Self::Malformed(_) => "Malformed",
        }
    }
}

/// Checks a `LogCollectionConfig` spec.
pub fn validate_collection(spec: &LogCollectionConfigSpec) -> Result<(), ValidationError> {
    selector(&spec.selector)?;
    sources(&spec.sources)?;
    if let Some(m) = &spec.multiline {
        let start = m.start_pattern.as_deref().map(|p| regex("multiline.startPattern", p)).transpose()?;
        let cont = m
            .continuation_pattern
            .as_deref()
            .map(|p| regex("multiline.continuationPattern", p))
            .transpose()?;
        if m.mode == MultilineMode::Custom && start.is_none() && cont.is_none() {
            return spec_err("multiline mode custom needs startPattern or continuationPattern");
        }
    }
    match spec.parse.format {
        ParseFormat::Regex => {
            let Some(p) = spec.parse.pattern.as_deref() else {
                return spec_err("parse format regex needs pattern");
            };
            if regex("parse.pattern", p)?.capture_names().flatten().next().is_none() {
                return Err(ValidationError::NoNamedCapture);
            }
        }
        ParseFormat::Delimiter if spec.parse.columns.is_empty() => {
            return spec_err("parse format delimiter needs columns");
        }
        _ => {}
    }
    for (i, f) in spec.filters.include.iter().enumerate() {
        regex(&format!("filters.include[{i}].pattern"), &f.pattern)?;
    }
    for (i, f) in spec.filters.exclude.iter().enumerate() {
        regex(&format!("filters.exclude[{i}].pattern"), &f.pattern)?;
    }
    if spec.outputs.is_empty() {
        return spec_err("at least one output is needed");
    }
    let mut names = BTreeSet::new();
    for o in &spec.outputs {
        if !names.insert(o.name.as_str()) {
            return spec_err(&format!("output name {:?} is used twice", o.name));
        }
        let settings = match o.type_ {
            OutputType::File | OutputType::Stdout => true,
            OutputType::Elasticsearch => o.elasticsearch.is_some(),
            OutputType::Loki => o.loki.is_some(),
            OutputType::Kafka => o.kafka.is_some(),
            OutputType::Http => o.http.is_some(),
        };
        if !settings {
            return spec_err(&format!("output {:?} of type {:?} lacks its settings", o.name, o.type_));
        }
        units::parse_bytes(&o.buffer.max_size)
            .map_err(|source| ValidationError::Unit { field: "outputs[].buffer.maxSize", source })?;
        let creds = o.credentials_secret_ref.as_ref().map(|r| &r.name);
        let tls = o.tls.as_ref().and_then(|t| t.secret_ref.as_ref()).map(|r| &r.name);
        // The name becomes a path under the agent's --secrets-dir: no `/`, no `..`.
        if let Some(bad) = creds.into_iter().chain(tls).find(|n| !tailor_crds::secrets::is_object_name(n)) {
            return spec_err(&format!("output {:?}: {bad:?} is not a valid Secret name", o.name));
        }
    }
    Ok(())
}

/// Checks a `LogBackupPolicy` spec.
pub fn validate_backup(spec: &LogBackupPolicySpec) -> Result<(), ValidationError> {
    selector(&spec.selector)?;
    sources(&spec.sources)?;
    layout::validate_layout(&spec.layout)?;
    units::parse_duration(&spec.interval)
        .map_err(|source| ValidationError::Unit { field: "interval", source })?;
    units::parse_duration(&spec.retention.max_age)
        .map_err(|source| ValidationError::Unit { field: "retention.maxAge", source })?;
    units::parse_bytes(&spec.retention.max_bytes)
        .map_err(|source| ValidationError::Unit { field: "retention.maxBytes", source })?;
    Ok(())
}

fn selector(s: &PodSelector) -> Result<(), ValidationError> {
    for r in &s.match_expressions {
        let needs_values = matches!(r.operator, LabelOperator::In | LabelOperator::NotIn);
        if needs_values == r.values.is_empty() {
            return spec_err(&format!(
                "selector expression on {:?}: In and NotIn need values, Exists and DoesNotExist take none",
                r.key
            ));
        }
    }
    Ok(())
}

fn sources(s: &LogSources) -> Result<(), ValidationError> {
    if !s.stdout && !s.stderr && s.files.is_empty() {
        return spec_err("sources select nothing: enable stdout or stderr, or list files");
    }
    for (i, f) in s.files.iter().enumerate() {
        let path_err = |source| ValidationError::Path { field: format!("sources.files[{i}].path"), source };
        let parts = mapping::clean_components("container path", &f.path).map_err(path_err)?;
        if parts.is_empty() {
            return Err(path_err(MappingError::NoFile { path: f.path.clone() }));
        }
    }
    Ok(())
}

fn regex(field: &str, pattern: &str) -> Result<Regex, ValidationError> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ValidationError::Regex { field: field.to_string(), source: Box::new(e) })
}

fn spec_err(msg: &str) -> Result<(), ValidationError> {
    Err(ValidationError::Spec(msg.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcc(yaml: &str) -> LogCollectionConfigSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn lbp(yaml: &str) -> LogBackupPolicySpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const OUT: &str = "outputs: [{name: out, type: stdout}]\n";

    #[test]
    fn a_complete_collection_is_valid() {
        let spec = lcc(&format!(
            "{OUT}sources: {{files: [{{path: /opt/logs/*.log}}]}}\n\
             multiline: {{startPattern: '^\\d{{4}}-'}}\n\
             parse: {{format: regex, pattern: '^(?P<level>\\w+) (?P<msg>.*)$'}}\n\
             filters: {{exclude: [{{pattern: healthz}}]}}\n"
        ));
        validate_collection(&spec).unwrap();
    }

    #[test]
    fn collection_errors_have_clear_reasons() {
        let cases = [
            ("multiline: {startPattern: '(unclosed'}", "InvalidRegex", "multiline.startPattern"),
            ("multiline: {mode: custom}", "InvalidSpec", "custom needs"),
            ("parse: {format: regex, pattern: '^(\\w+)$'}", "InvalidRegex", "named capture"),
            ("parse: {format: delimiter}", "InvalidSpec", "columns"),
            ("filters: {include: [{pattern: 'a{99999}{99999}'}]}", "InvalidRegex", "filters.include[0]"),
            ("sources: {files: [{path: relative/a.log}]}", "InvalidPath", "not absolute"),
            ("sources: {files: [{path: /a/../etc/shadow}]}", "InvalidPath", ".."),
            ("sources: {files: [{path: /./}]}", "InvalidPath", "names no file"),
            ("sources: {stdout: false, stderr: false}", "InvalidSpec", "select nothing"),
            (
                "selector: {matchExpressions: [{key: a, operator: In}]}",
                "InvalidSpec",
                "In and NotIn need values",
            ),
        ];
        for (extra, reason, needle) in cases {
            let err = validate_collection(&lcc(&format!("{OUT}{extra}"))).unwrap_err();
            assert_eq!(err.reason(), reason, "{extra}: {err}");
            assert!(err.to_string().contains(needle), "{extra}: {err}");
        }
        let two = lcc("outputs: [{name: a, type: stdout}, {name: a, type: file}]");
        assert!(validate_collection(&two).unwrap_err().to_string().contains("used twice"));
        let loki = lcc("outputs: [{name: a, type: loki}]");
        assert!(validate_collection(&loki).unwrap_err().to_string().contains("lacks its settings"));
        let size = lcc("outputs: [{name: a, type: stdout, buffer: {maxSize: 12Q}}]");
        assert_eq!(validate_collection(&size).unwrap_err().reason(), "InvalidValue");
    }

    #[test]
    fn backup_checks() {
        validate_backup(&lbp("{}")).unwrap();
        let cases = [
            ("layout: '/abs/{pod}'", "InvalidLayout"),
            ("layout: '{namespace}/../x'", "InvalidLayout"),
            ("layout: '{secret}'", "InvalidLayout"),
            ("interval: 10x", "InvalidValue"),
            ("retention: {maxAge: forever}", "InvalidValue"),
            ("retention: {maxBytes: lots}", "InvalidValue"),
            ("sources: {files: [{path: x.log}]}", "InvalidPath"),
        ];
        for (yaml, reason) in cases {
            assert_eq!(validate_backup(&lbp(yaml)).unwrap_err().reason(), reason, "{yaml}");
        }
    }
}

//! Which lines start an event and which continue the one before: custom patterns and the
//! ready-made modes for Java, Python and Go stack traces.
//!
//! A decision looks at one line and the phase of the event it would join; it is a pure function
//! so that the modes are tested line by line.

use regex::bytes::Regex;
use tailor_crds::collection::{MultilineMode, MultilineSpec};

use crate::pipeline::PipelineError;

/// Where an event under construction stands; decides what may still join it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Any continuation line may join.
    Open,
    /// Nothing may join: the event is complete as soon as it is seen.
    Closed,
    /// Inside a Python traceback or a Go panic trace.
    Trace,
    /// Python: the exception line after a traceback was seen; a chained traceback may follow.
    AfterTrace,
    /// Python: "During handling of the above exception..." was seen; a traceback follows.
    Chain,
}

/// What to do with a line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Append to the current event (or start one if there is none) and move it to this phase.
    Continue(Phase),
    /// Complete the current event and start a new one in this phase.
    Start(Phase),
}

/// The compiled rule of one multiline configuration.
#[derive(Clone, Debug)]
pub enum Rule {
    /// A start pattern, a continuation pattern, or both.
    Custom {
        start: Option<Regex>,
        continuation: Option<Regex>,
    },
    /// Indented `at` frames, `Caused by:`, `Suppressed:` and `... N more` continue the event; an
    /// exception line (`java.lang.IllegalStateException: boom`) joins the log line just before it
    /// (the logger's message that announced it), and otherwise starts a trace.
    Java {
        continuation: Regex,
        exception: Regex,
    },
    Python {
        traceback: Regex,
        chain: Regex,
        indented_or_blank: Regex,
    },
    Go {
        opener: Regex,
        trace_line: Regex,
    },
}

const JAVA_CONTINUATION: &str = r"^(?:\s+at\s|\s*Caused by:|\s*Suppressed:|\s+\.\.\. \d+ (?:more|common frames omitted)|\s*\.\.\. \d+ more)";
// A fully qualified Throwable at the margin: `pkg.Name(Exception|Error|Throwable)`, then `:` or the end.
const JAVA_EXCEPTION: &str = r"^(?:[A-Za-z_$][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error|Throwable)(?::|\r?$)";
const PY_TRACEBACK: &str = r"^Traceback \(most recent call last\):";
const PY_CHAIN: &str = r"^(?:During handling of the above exception, another exception occurred:|The above exception was the direct cause of the following exception:)";
const PY_INDENTED_OR_BLANK: &str = r"^(?:[ \t]|\r?$)";
const GO_OPENER: &str = r"^(?:panic: |fatal error: )";
// Everything a Go runtime trace prints after `panic:`: blank lines, `goroutine N [...]:`,
// function lines (`main.(*T).f(...)`), tab-indented file lines, `created by`, signal and
// runtime notes, nested panics, and the `exit status` of `go run`.
const GO_TRACE_LINE: &str = r"^(?:\r?$|\s|goroutine \d+|created by |\[signal |runtime stack:|runtime: |panic: .*\[recovered\]|exit status \d+|\.\.\.|[A-Za-z_][\w./*()\[\]\-]*\(.*\)\r?$)";

impl Rule {
    /// Compiles the rule of a spec; `field` names the setting in errors.
    pub fn compile(spec: &MultilineSpec) -> Result<Self, PipelineError> {
        let compile = |field: &'static str, pattern: &str| {
            Regex::new(pattern).map_err(|source| PipelineError::InvalidRegex { field: field.into(), source })
        };
        Ok(match spec.mode {
            MultilineMode::Custom => {
                let start = spec
                    .start_pattern
                    .as_deref()
                    .map(|p| compile("multiline.startPattern", p))
                    .transpose()?;
                let continuation = spec
                    .continuation_pattern
                    .as_deref()
                    .map(|p| compile("multiline.continuationPattern", p))
                    .transpose()?;
                if start.is_none() && continuation.is_none() {
                    return Err(PipelineError::MissingSetting {
                        field: "multiline".into(),
                        message: "mode custom needs startPattern or continuationPattern".into(),
                    });
                }
                Rule::Custom { start, continuation }
            }
            MultilineMode::Java => Rule::Java {
                continuation: compile("multiline.mode(java)", JAVA_CONTINUATION)?,
                exception: compile("multiline.mode(java)", JAVA_EXCEPTION)?,
            },
            MultilineMode::Python => Rule::Python {
                traceback: compile("multiline.mode(python)", PY_TRACEBACK)?,
                chain: compile("multiline.mode(python)", PY_CHAIN)?,
                indented_or_blank: compile("multiline.mode(python)", PY_INDENTED_OR_BLANK)?,
            },
            MultilineMode::Go => Rule::Go {
                opener: compile("multiline.mode(go)", GO_OPENER)?,
                trace_line: compile("multiline.mode(go)", GO_TRACE_LINE)?,
            },
        })
    }

    /// Decides what `line` does, given the phase of the event it would join (`None`: no event
    /// is open on this stream).
    pub fn decide(&self, current: Option<Phase>, line: &[u8]) -> Decision {
        use Decision::{Continue, Start};
        match self {
            Rule::Custom { start, continuation } => match (start, continuation) {
                (Some(start), None) => {
                    if start.is_match(line) {
                        Start(Phase::Open)
                    } else {
                        Continue(Phase::Open)
                    }
                }
                (None, Some(cont)) => {
                    if cont.is_match(line) {
                        Continue(Phase::Open)
                    } else {
                        Start(Phase::Open)
                    }
                }
                // Both: a start line opens, a continuation line joins, any other line stands
                // alone (as Fluent Bit's start/cont state machines do).
                (Some(start), Some(cont)) => {
                    if start.is_match(line) {
                        Start(Phase::Open)
                    } else if cont.is_match(line) {
                        Continue(Phase::Open)
                    } else {
                        Start(Phase::Closed)
                    }
                }
                (None, None) => Start(Phase::Closed),
            },
            // `Open`: a log line with nothing joined yet; `Trace`: an exception and its frames.
            Rule::Java { continuation, exception } => {
                if continuation.is_match(line) {
                    Continue(Phase::Trace)
                } else if exception.is_match(line) {
                    if current == Some(Phase::Open) { Continue(Phase::Trace) } else { Start(Phase::Trace) }
                } else {
                    Start(Phase::Open)
                }
            }
            Rule::Python { traceback, chain, indented_or_blank } => {
                let blank = line.is_empty() || line == b"\r";
                match current {
                    Some(Phase::Trace) => {
                        if indented_or_blank.is_match(line) {
                            Continue(Phase::Trace)
                        } else {
                            // The first line back at the margin is the exception itself.
                            Continue(Phase::AfterTrace)
                        }
                    }
                    Some(Phase::AfterTrace) if blank => Continue(Phase::AfterTrace),
                    Some(Phase::AfterTrace) | Some(Phase::Chain) if chain.is_match(line) => {
                        Continue(Phase::Chain)
                    }
                    Some(Phase::Chain) if blank => Continue(Phase::Chain),
                    Some(Phase::Chain) if traceback.is_match(line) => Continue(Phase::Trace),
                    _ if traceback.is_match(line) => Start(Phase::Trace),
                    _ => Start(Phase::Closed),
                }
            }
            Rule::Go { opener, trace_line } => {
                if current == Some(Phase::Trace) && !opener.is_match(line) && trace_line.is_match(line) {
                    Continue(Phase::Trace)
                } else if opener.is_match(line) {
                    Start(Phase::Trace)
                } else {
                    Start(Phase::Closed)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mode: MultilineMode) -> MultilineSpec {
        MultilineSpec {
            mode,
            start_pattern: None,
            continuation_pattern: None,
            max_lines: 500,
            max_bytes: 256 * 1024,
            flush_timeout_ms: 1000,
        }
    }

    /// Runs the rule over lines and returns, per line, whether it joined the previous one.
    fn joins(rule: &Rule, lines: &[&str]) -> Vec<bool> {
        let mut phase = None;
        lines
            .iter()
            .map(|line| match rule.decide(phase, line.as_bytes()) {
                Decision::Continue(p) => {
                    let joined = phase.is_some() && phase != Some(Phase::Closed);
                    phase = Some(p);
                    joined
                }
                Decision::Start(p) => {
                    phase = Some(p);
                    false
                }
            })
            .collect()
    }

    #[test]
    fn java_frames_and_causes_join() {
        let rule = Rule::compile(&spec(MultilineMode::Java)).unwrap();
        let lines = [
            "2024-05-01 10:00:00.123 ERROR [main] c.e.App - request failed",
            "java.lang.IllegalStateException: boom",
            "\tat com.example.App.handle(App.java:42)",
            "\tat com.example.App.main(App.java:10)",
            "Caused by: java.io.IOException: disk full",
            "\tat java.base/java.io.FileOutputStream.write(FileOutputStream.java:354)",
            "\t... 2 more",
            "2024-05-01 10:00:01.000 INFO  [main] c.e.App - next",
        ];
        assert_eq!(joins(&rule, &lines), [false, true, true, true, true, true, true, false]);
        // Exceptions logged without a message line: each starts its own event, and one does not
        // join the trace of the one before.
        let lines = [
            "java.lang.IllegalStateException: first",
            "\tat com.example.App.a(App.java:1)",
            "java.lang.IllegalArgumentException",
            "\tat com.example.App.b(App.java:2)",
            "org.example.CustomError: third, no frames",
            "com.example.Shutdown: not a Throwable name, a log line",
        ];
        assert_eq!(joins(&rule, &lines), [false, true, false, true, false, false]);
    }

    #[test]
    fn python_traceback_with_chain() {
        let rule = Rule::compile(&spec(MultilineMode::Python)).unwrap();
        let lines = [
            "INFO starting",
            "Traceback (most recent call last):",
            "  File \"/app/main.py\", line 3, in <module>",
            "    int('x')",
            "ValueError: invalid literal for int() with base 10: 'x'",
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            "Traceback (most recent call last):",
            "  File \"/app/main.py\", line 5, in <module>",
            "    raise RuntimeError('wrapped')",
            "RuntimeError: wrapped",
            "INFO after",
        ];
        assert_eq!(
            joins(&rule, &lines),
            [false, false, true, true, true, true, true, true, true, true, true, true, false]
        );
    }

    #[test]
    fn go_panic_trace() {
        let rule = Rule::compile(&spec(MultilineMode::Go)).unwrap();
        let lines = [
            "2024/05/01 10:00:00 serving",
            "panic: runtime error: index out of range [5] with length 3",
            "",
            "goroutine 1 [running]:",
            "main.(*Server).handle(0xc000012345, {0x4b3e20, 0x5})",
            "\t/app/server.go:42 +0x1d",
            "main.main()",
            "\t/app/main.go:12 +0x18",
            "exit status 2",
            "2024/05/01 10:00:05 restarted",
        ];
        assert_eq!(joins(&rule, &lines), [false, false, true, true, true, true, true, true, true, false]);
    }

    #[test]
    fn custom_start_and_continuation() {
        let mut s = spec(MultilineMode::Custom);
        s.start_pattern = Some(r"^\d{4}-".into());
        let rule = Rule::compile(&s).unwrap();
        assert_eq!(joins(&rule, &["2024- a", "b", "c", "2024- d"]), [false, true, true, false]);

        s.start_pattern = None;
        s.continuation_pattern = Some(r"^\s".into());
        let rule = Rule::compile(&s).unwrap();
        assert_eq!(joins(&rule, &["a", " b", "c", " d"]), [false, true, false, true]);

        s.start_pattern = Some(r"^BEGIN".into());
        let rule = Rule::compile(&s).unwrap();
        // A line that is neither start nor continuation stands alone: nothing joins it.
        assert_eq!(joins(&rule, &["BEGIN", " x", "other", " y"]), [false, true, false, false]);
    }

    #[test]
    fn bad_pattern_names_the_field() {
        let mut s = spec(MultilineMode::Custom);
        s.continuation_pattern = Some("(unclosed".into());
        let err = Rule::compile(&s).unwrap_err();
        assert!(err.to_string().contains("multiline.continuationPattern"), "{err}");
        let err = Rule::compile(&spec(MultilineMode::Custom)).unwrap_err();
        assert!(err.to_string().contains("startPattern"), "{err}");
    }
}

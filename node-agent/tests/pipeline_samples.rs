//! The pipeline as the collection engine drives it (`build` → `process`/`flush`), on real-world
//! samples: nginx access logs, Java exceptions with causes on CRI stderr interleaved with stdout,
//! Python tracebacks between JSON lines, a Go panic, nested JSON, CSV with quotes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tailor_agent::encode::encode_json;
use tailor_agent::event::{Event, EventFlags, FileId, TargetMeta};
use tailor_agent::pipeline::{Pipeline, PipelineCounters, Processor, build};
use tailor_crds::node::{NodeCollection, StdStream};

fn collection(yaml: &str) -> NodeCollection {
    let base = "source: {namespace: shop, name: logs}\noutputs: []\ntargets: []\n";
    serde_yaml_ng::from_str(&format!("{base}{yaml}")).unwrap()
}

fn meta() -> TargetMeta {
    TargetMeta {
        target: "collection/shop/logs/web-1/app".into(),
        node: "node-1".into(),
        namespace: "shop".into(),
        pod: "web-1".into(),
        pod_uid: "6f0c".into(),
        container: "app".into(),
        image: "nginx:1.27".into(),
        workload: Some("Deployment/web".into()),
        fields: [("team".to_string(), "payments".to_string())].into(),
    }
}

/// Feeds lines (stream, text) of one file, offsets 100, 200, ...; then a forced flush.
fn run(p: &mut dyn Processor, lines: &[(Option<StdStream>, &str)]) -> Vec<Event> {
    let meta = Arc::new(meta());
    let mut out = Vec::new();
    for (i, (stream, text)) in lines.iter().enumerate() {
        let event = Event {
            meta: meta.clone(),
            file: FileId { dev: 8, ino: 42, fingerprint: 7 },
            offset: (i as u64 + 1) * 100,
            timestamp_nanos: i as i64,
            stream: *stream,
            message: Bytes::copy_from_slice(text.as_bytes()),
            fields: None,
            flags: EventFlags::default(),
        };
        p.process(event, &mut out);
    }
    p.flush(Instant::now(), true, &mut out);
    out
}

fn text(e: &Event) -> &str {
    std::str::from_utf8(&e.message).unwrap()
}

#[test]
fn nginx_access_log_with_time_and_filter() {
    let c = collection(
        "parse: {format: nginx, keepOriginal: true, timestamp: {field: time, format: '%d/%b/%Y:%H:%M:%S %z'}}\n\
         filters: {exclude: [{field: path, pattern: '^/healthz'}]}\n",
    );
    let counters = Arc::new(PipelineCounters::default());
    let mut p = Pipeline::new(&c, &meta(), counters.clone()).unwrap();
    let out = run(
        &mut p,
        &[
            (
                Some(StdStream::Stdout),
                r#"10.244.0.1 - - [01/May/2024:10:00:00 +0000] "GET /healthz HTTP/1.1" 200 2 "-" "kube-probe/1.30""#,
            ),
            (
                Some(StdStream::Stdout),
                r#"203.0.113.9 - bob [01/May/2024:12:00:01 +0200] "POST /api/orders HTTP/1.1" 201 88 "https://shop.example.com/cart" "Mozilla/5.0" "198.51.100.4""#,
            ),
            (
                Some(StdStream::Stderr),
                "2024/05/01 10:00:02 [warn] 29#29: *1 an upstream response is buffered to a temporary file",
            ),
        ],
    );
    assert_eq!(out.len(), 2);
    let fields = out[0].fields.as_ref().unwrap();
    assert_eq!(fields["method"], "POST");
    assert_eq!(fields["status"], 201);
    assert_eq!(fields["x_forwarded_for"], "198.51.100.4");
    assert_eq!(out[0].timestamp_nanos, 1_714_557_601_000_000_000);
    assert!(text(&out[0]).starts_with("203.0.113.9"), "keepOriginal keeps the line");
    // The error log line is not an access log: kept raw and marked, never dropped.
    assert!(out[1].flags.parse_failed && out[1].fields.is_none());
    assert!(text(&out[1]).contains("[warn]"));
    let n = counters.snapshot();
    assert_eq!((n.events_in, n.events_out, n.dropped_exclude, n.parse_failed), (3, 2, 1, 1));
}

#[test]
fn java_exception_with_causes_on_stderr_between_stdout_lines() {
    let c = collection("multiline: {mode: java}\n");
    let mut p = build(&c, &meta(), Default::default()).unwrap();
    let (o, e) = (Some(StdStream::Stdout), Some(StdStream::Stderr));
    let out = run(
        &mut *p,
        &[
            (
                e,
                "2024-05-01 10:00:00.123 ERROR 1 --- [nio-8080-exec-1] o.a.c.c.C.[.[.[/].[dispatcherServlet] : Servlet.service() threw exception",
            ),
            (
                e,
                "org.springframework.web.util.NestedServletException: Request processing failed; nested exception is java.lang.IllegalStateException: order 17 not found",
            ),
            (
                o,
                "2024-05-01 10:00:00.130  INFO 1 --- [nio-8080-exec-2] c.e.shop.OrderController : GET /orders/18",
            ),
            (
                e,
                "\tat org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1014)",
            ),
            (e, "\tat javax.servlet.http.HttpServlet.service(HttpServlet.java:645)"),
            (e, "Caused by: java.lang.IllegalStateException: order 17 not found"),
            (e, "\tat com.example.shop.OrderService.find(OrderService.java:42)"),
            (e, "\tat com.example.shop.OrderController.get(OrderController.java:27)"),
            (e, "\t... 48 common frames omitted"),
            (
                o,
                "2024-05-01 10:00:00.150  INFO 1 --- [nio-8080-exec-3] c.e.shop.OrderController : GET /orders/19",
            ),
        ],
    );
    let got: Vec<(u64, Option<StdStream>, usize)> =
        out.iter().map(|e| (e.offset, e.stream, text(e).lines().count())).collect();
    // Spring's message line and the exception it announced are one event.
    assert_eq!(got, [(300, o, 1), (900, e, 8), (1000, o, 1)]);
    let trace = text(&out[1]);
    assert!(trace.starts_with("2024-05-01 10:00:00.123 ERROR 1"));
    assert!(trace.contains("threw exception\norg.springframework.web.util.NestedServletException"));
    assert!(trace.contains("\nCaused by: java.lang.IllegalStateException") && trace.ends_with("omitted"));
    // Timestamp of a joined event: its first line's.
    assert_eq!(out[1].timestamp_nanos, 0);
}

#[test]
fn python_traceback_between_json_lines() {
    let c = collection("multiline: {mode: python, flushTimeoutMs: 500}\nparse: {format: json}\n");
    let counters = Arc::new(PipelineCounters::default());
    let mut p = Pipeline::new(&c, &meta(), counters.clone()).unwrap();
    let lines = [
        r#"{"level":"info","msg":"worker started","pid":7}"#,
        "Traceback (most recent call last):",
        r#"  File "/app/worker.py", line 88, in run"#,
        "    result = handler(job)",
        r#"  File "/app/handlers.py", line 12, in resize"#,
        "    img = Image.open(path)",
        "FileNotFoundError: [Errno 2] No such file or directory: '/data/17.png'",
        r#"{"level":"info","msg":"next job","job":18}"#,
    ];
    let mut out = Vec::new();
    let meta = Arc::new(meta());
    let t0 = Instant::now();
    for (i, line) in lines.iter().enumerate() {
        let event = Event {
            meta: meta.clone(),
            file: FileId { dev: 1, ino: 1, fingerprint: 1 },
            offset: i as u64 + 1,
            timestamp_nanos: 0,
            stream: None,
            message: Bytes::copy_from_slice(line.as_bytes()),
            fields: None,
            flags: EventFlags::default(),
        };
        p.process(event, &mut out);
        if i == 6 {
            // The traceback may still be followed by a chained one: held until the timeout.
            assert_eq!(out.len(), 1);
            assert_eq!(p.held(), 1);
            p.flush(t0, false, &mut out);
            assert_eq!(out.len(), 1);
            p.flush(t0 + Duration::from_millis(500), false, &mut out);
            assert_eq!(out.len(), 2);
        }
    }
    // Outside a traceback, a line is complete at once in python mode.
    assert_eq!(out.len(), 3);
    assert_eq!(p.held(), 0);
    assert_eq!(out[0].fields.as_ref().unwrap()["pid"], 7);
    assert!(
        out[0].message.is_empty(),
        "parsed, no message field, keepOriginal false: the fields are the event"
    );
    assert!(out[1].flags.parse_failed);
    assert_eq!(text(&out[1]).lines().count(), 6);
    assert!(text(&out[1]).ends_with("'/data/17.png'"));
    assert_eq!(out[2].fields.as_ref().unwrap()["job"], 18);
    let n = counters.snapshot();
    assert_eq!((n.events_in, n.events_out, n.lines_joined, n.parse_failed), (8, 3, 5, 1));
}

#[test]
fn go_panic() {
    let c = collection("multiline: {mode: go}\n");
    let mut p = build(&c, &meta(), Default::default()).unwrap();
    let e = Some(StdStream::Stderr);
    let out = run(
        &mut *p,
        &[
            (e, "2024/05/01 10:00:00 listening on :8080"),
            (e, "panic: assignment to entry in nil map"),
            (e, ""),
            (e, "goroutine 34 [running]:"),
            (e, "main.(*Cache).Put(...)"),
            (e, "\t/src/cache.go:21"),
            (e, "main.handler({0x7f5c28, 0xc0001a2000}, 0xc0001b4000)"),
            (e, "\t/src/main.go:44 +0x9c"),
            (e, "net/http.HandlerFunc.ServeHTTP(0xc000012345?, {0x7f5c28?, 0xc0001a2000?}, 0x0?)"),
            (e, "\t/usr/local/go/src/net/http/server.go:2171 +0x29"),
            (e, "created by net/http.(*Server).Serve in goroutine 1"),
            (e, "\t/usr/local/go/src/net/http/server.go:3285 +0x4b4"),
            (e, "2024/05/01 10:00:01 listening on :8080"),
        ],
    );
    let sizes: Vec<usize> = out.iter().map(|e| text(e).split('\n').count()).collect();
    assert_eq!(sizes, [1, 11, 1]);
    assert_eq!(out[1].offset, 1200);
}

#[test]
fn json_nested_objects_and_metadata_precedence() {
    let c = collection("parse: {format: json, timestamp: {field: time}}\n");
    let counters = Arc::new(PipelineCounters::default());
    let mut p = Pipeline::new(&c, &meta(), counters.clone()).unwrap();
    let out = run(
        &mut p,
        &[(
            Some(StdStream::Stdout),
            r#"{"time":"2024-05-01T10:00:00.5Z","level":"error","message":"payment declined","pod":"from-app","team":"spoofed","order":{"id":17,"items":[{"sku":"A-1","qty":2}],"customer":{"tier":"gold"}}}"#,
        )],
    );
    let event = &out[0];
    assert_eq!(event.timestamp_nanos, 1_714_557_600_500_000_000);
    let mut encoded = Vec::new();
    encode_json(event, &mut encoded);
    let doc: serde_json::Value = serde_json::from_slice(&encoded).unwrap();
    assert_eq!(doc["order"]["items"][0]["sku"], "A-1");
    assert_eq!(doc["order"]["customer"]["tier"], "gold");
    // Kubernetes metadata and the resource's fields win; the app's values are kept under _parsed.
    assert_eq!(doc["pod"], "web-1");
    assert_eq!(doc["team"], "payments");
    assert_eq!(doc["_parsed"], json!({"pod": "from-app", "team": "spoofed"}));
    // Without keepOriginal, the parsed message is the message.
    assert_eq!(doc["message"], "payment declined");
    assert_eq!(counters.snapshot().field_conflicts, 2);

    // keepOriginal: the raw line is the message; the app's `message` is kept under _parsed.
    let c = collection("parse: {format: json, keepOriginal: true}\n");
    let mut p = build(&c, &meta(), Default::default()).unwrap();
    let line = r#"{"message":"hi","flags":"app-flags","level":"debug"}"#;
    let out = run(&mut *p, &[(None, line)]);
    let mut encoded = Vec::new();
    encode_json(&out[0], &mut encoded);
    let doc: serde_json::Value = serde_json::from_slice(&encoded).unwrap();
    assert_eq!(doc["message"], line);
    assert_eq!(doc["level"], "debug");
    assert_eq!(doc["_parsed"], json!({"message": "hi", "flags": "app-flags"}));
}

#[test]
fn csv_with_quotes_and_embedded_delimiters() {
    let c = collection(
        "parse: {format: delimiter, columns: [time, level, user, action, detail]}\n\
         filters: {include: [{field: level, pattern: '^(WARN|ERROR)$'}]}\n",
    );
    let counters = Arc::new(PipelineCounters::default());
    let mut p = Pipeline::new(&c, &meta(), counters.clone()).unwrap();
    let out = run(
        &mut p,
        &[
            (None, r#"2024-05-01T10:00:00Z,INFO,alice,login,"""remember me"" set""#),
            (None, r#"2024-05-01T10:00:01Z,WARN,"O'Brien, Pat",export,"rows: 10,000; format ""csv""""#),
            (None, r#"2024-05-01T10:00:02Z,ERROR,bob,"broken quote"#),
        ],
    );
    assert_eq!(out.len(), 1);
    let f = out[0].fields.as_ref().unwrap();
    assert_eq!(f["user"], "O'Brien, Pat");
    assert_eq!(f["detail"], r#"rows: 10,000; format "csv""#);
    // The INFO line is not included; the line with an unclosed quote is kept raw by the parser
    // but has no `level` for the include filter, so it is not included either. Both are counted.
    let n = counters.snapshot();
    assert_eq!((n.events_in, n.events_out, n.dropped_include, n.parse_failed), (3, 1, 2, 1));

    // Without the filter, the CSV line with the first column quoted-quotes parses and the broken
    // one comes out raw and marked.
    let c = collection("parse: {format: delimiter, columns: [time, level, user, action, detail]}\n");
    let mut p = build(&c, &meta(), Default::default()).unwrap();
    let out = run(
        &mut *p,
        &[
            (None, r#"2024-05-01T10:00:00Z,INFO,alice,login,"""remember me"" set""#),
            (None, r#"2024-05-01T10:00:02Z,ERROR,bob,"broken quote"#),
        ],
    );
    assert_eq!(out[0].fields.as_ref().unwrap()["detail"], r#""remember me" set"#);
    assert!(out[1].flags.parse_failed && text(&out[1]).ends_with("broken quote"));
}

#[test]
fn broken_configuration_is_an_error_naming_the_field() {
    for (yaml, field) in [
        ("multiline: {startPattern: '(['}\n", "multiline.startPattern"),
        ("multiline: {mode: custom}\n", "multiline"),
        ("parse: {format: regex, pattern: '(?P<x>'}\n", "parse.pattern"),
        ("parse: {format: json, timestamp: {field: t, format: '%Y-%'}}\n", "parse.timestamp.format"),
        ("filters: {include: [{field: level, pattern: '*'}]}\n", "filters.include[0].pattern (field level)"),
    ] {
        let err = build(&collection(yaml), &meta(), Default::default())
            .err()
            .unwrap_or_else(|| panic!("{yaml} must fail"));
        assert!(err.to_string().starts_with(field), "{yaml}: {err}");
    }
}

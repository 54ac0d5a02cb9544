//! Properties over arbitrary input: no parser or multiline mode panics on any bytes (invalid
//! UTF-8 included), nothing is lost without a filter, and multiline neither loses nor reorders
//! bytes and never lets an offset pass a line it still holds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use tailor_agent::event::{Event, EventFlags, FileId, TargetMeta};
use tailor_agent::pipeline::build;
use tailor_crds::node::{NodeCollection, StdStream};

fn collection(yaml: &str) -> NodeCollection {
    let base = "source: {namespace: ns, name: c}\noutputs: []\ntargets: []\n";
    serde_yaml_ng::from_str(&format!("{base}{yaml}")).unwrap()
}

const PARSERS: [&str; 8] = [
    "parse: {format: json, timestamp: {field: t, format: rfc3339}}",
    "parse: {format: json, timestamp: {field: t, format: unix}}",
    "parse: {format: regex, pattern: '^(?P<a>\\S+) (?P<b>(?s-u:.*))$', timestamp: {field: a, format: '%d/%b/%Y:%H:%M:%S %z'}}",
    "parse: {format: delimiter, columns: [a, b, c]}",
    "parse: {format: delimiter, delimiter: '\\t', columns: [a, _, c]}",
    "parse: {format: nginx, timestamp: {field: time, format: '%d/%b/%Y:%H:%M:%S %z'}}",
    "parse: {format: apache, keepOriginal: true}",
    "parse: {format: json, timestamp: {field: t, format: unixMillis}}",
];

const MULTILINE: [&str; 6] = [
    "multiline: {mode: java, maxLines: 3, maxBytes: 1024}",
    "multiline: {mode: python, maxLines: 4, maxBytes: 1024}",
    "multiline: {mode: go, maxLines: 5, maxBytes: 1024}",
    "multiline: {startPattern: '^S', maxLines: 2, maxBytes: 1024}",
    "multiline: {continuationPattern: '^\\s', maxLines: 500, maxBytes: 1024}",
    "multiline: {startPattern: '^S', continuationPattern: '^ ', maxLines: 3, maxBytes: 1024}",
];

fn event(meta: &Arc<TargetMeta>, offset: u64, stream: Option<StdStream>, message: Vec<u8>) -> Event {
    Event {
        meta: meta.clone(),
        file: FileId { dev: 1, ino: 2, fingerprint: 3 },
        offset,
        timestamp_nanos: 0,
        stream,
        message: Bytes::from(message),
        fields: None,
        flags: EventFlags::default(),
    }
}

fn stream_of(n: u8) -> Option<StdStream> {
    match n % 3 {
        0 => Some(StdStream::Stdout),
        1 => Some(StdStream::Stderr),
        _ => None,
    }
}

/// Lines that look like what the modes react to, mixed with arbitrary bytes.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        proptest::sample::select(vec![
            "S start",
            " cont",
            "\tat a.B.c(B.java:1)",
            "Caused by: x",
            "\t... 3 more",
            "Traceback (most recent call last):",
            "  File \"x\", line 1",
            "ValueError: x",
            "",
            "During handling of the above exception, another exception occurred:",
            "panic: boom",
            "goroutine 1 [running]:",
            "main.main()",
            "\t/x.go:1 +0x1",
            "{\"t\":\"2024-05-01T10:00:00Z\",\"a\":{\"b\":[1]}}",
            "a,\"b,\"\"c\",d",
            "1.2.3.4 - - [01/May/2024:10:00:00 +0000] \"GET / HTTP/1.1\" 200 1 \"-\" \"ua\"",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_nor_lose_events(which in 0..PARSERS.len(), lines in proptest::collection::vec(line(), 0..40)) {
        let meta = Arc::new(TargetMeta::default());
        let mut p = build(&collection(PARSERS[which]), &meta, Default::default()).unwrap();
        let mut out = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            p.process(event(&meta, i as u64 + 1, None, l.clone()), &mut out);
        }
        p.flush(Instant::now(), true, &mut out);
        prop_assert_eq!(out.len(), lines.len());
        for (e, l) in out.iter().zip(&lines) {
            // Either parsed into fields, or kept raw (its bytes intact) and marked.
            if e.flags.parse_failed {
                prop_assert!(e.fields.is_none());
                prop_assert_eq!(&e.message[..], &l[..]);
            } else {
                prop_assert!(e.fields.is_some());
            }
        }
    }

    #[test]
    fn multiline_keeps_every_byte_in_order_and_offsets_safe(
        which in 0..MULTILINE.len(),
        input in proptest::collection::vec((line(), any::<u8>(), 0u8..4), 0..80),
    ) {
        let meta = Arc::new(TargetMeta::default());
        let mut p = build(&collection(MULTILINE[which]), &meta, Default::default()).unwrap();
        // Lines never contain a newline (the decoder split on them).
        let input: Vec<(Vec<u8>, Option<StdStream>, u8)> = input
            .into_iter()
            .map(|(l, s, f)| (l.into_iter().filter(|&b| b != b'\n').collect(), stream_of(s), f))
            .collect();
        let mut out = Vec::new();
        let mut now = Instant::now();
        // Per stream: how many of its lines came out so far.
        let mut released = [0usize; 3];
        let slot = |s: Option<StdStream>| match s { Some(StdStream::Stdout) => 0, Some(StdStream::Stderr) => 1, None => 2 };
        let mut checked = 0;
        let mut last_offset = 0;
        let mut check = |out: &Vec<Event>, released: &mut [usize; 3], upto: usize| -> Result<(), TestCaseError> {
            for e in &out[checked..] {
                prop_assert!(e.offset > last_offset, "offsets come out in order");
                last_offset = e.offset;
                released[slot(e.stream)] += e.message.iter().filter(|&&b| b == b'\n').count() + 1;
            }
            checked = out.len();
            // Every line at or before the last released offset is out.
            for (i, (_, stream, _)) in input[..upto].iter().enumerate() {
                if (i as u64 + 1) * 10 <= last_offset {
                    let nth = input[..=i].iter().filter(|(_, s, _)| s == stream).count();
                    prop_assert!(released[slot(*stream)] >= nth, "line {} is held but offset {} passed it", i, last_offset);
                }
            }
            Ok(())
        };
        for (i, (l, stream, flush)) in input.iter().enumerate() {
            p.process(event(&meta, (i as u64 + 1) * 10, *stream, l.clone()), &mut out);
            if *flush == 0 {
                now += Duration::from_millis(700);
                p.flush(now, false, &mut out);
            }
            check(&out, &mut released, i + 1)?;
        }
        p.flush(now, true, &mut out);
        check(&out, &mut released, input.len())?;
        for s in [Some(StdStream::Stdout), Some(StdStream::Stderr), None] {
            let expected: Vec<u8> = input.iter().filter(|(_, st, _)| *st == s).map(|(l, _, _)| l.clone()).collect::<Vec<_>>().join(&b'\n');
            let got: Vec<u8> = out.iter().filter(|e| e.stream == s).map(|e| e.message.to_vec()).collect::<Vec<_>>().join(&b'\n');
            prop_assert_eq!(got, expected);
        }
    }
}

//! Figures of the pipeline alone (not a timed assertion): run with
//! `cargo test --release -p tailor-agent --test pipeline_bench -- --ignored --nocapture`.
//! The agent's `bench` command is meant to call `tailor_agent::pipeline::bench_pipeline` too.

#[test]
#[ignore = "benchmark: prints figures, run explicitly"]
fn json_parse_and_enrichment_at_256_byte_lines() {
    let events =
        std::env::var("PIPELINE_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let report = tailor_agent::pipeline::bench_pipeline(events, 256).unwrap();
    println!(
        "pipeline json+enrich 256B: {} events, {:.1} MB in {:.2?} (cpu {:.2?}): {:.0} events/s, {:.1} MB/s, {:.2} CPU s/GB",
        report.events,
        report.bytes as f64 / 1e6,
        report.wall,
        report.cpu,
        report.events_per_sec,
        report.bytes as f64 / 1e6 / report.wall.as_secs_f64(),
        report.cpu_secs_per_gb
    );
    assert_eq!(report.events, events);
}

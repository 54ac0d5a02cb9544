//! Benchmark, not a test of speed: `cargo test --release -p tailor-agent --test docker_bench --
//! --ignored --nocapture` prints json-file decode MB/s and CPU seconds per GB (with the agent's
//! splitter and decoder), next to the same messages in CRI format. The json-file log is written
//! by the real engine (400k lines of 100 bytes plus 16 KiB-split long lines).

mod docker_support;

use std::time::Instant;

use bytes::Bytes;
use docker_support::{Engine, docker};
use tailor_agent::decode::{DEFAULT_MAX_EVENT_BYTES, Decoder, Format, Splitter};

const LINES: usize = 400_000;
const LONG_LINES: usize = 20;
const CHUNK: usize = 64 * 1024;
const TARGET_BYTES: usize = 1 << 30;

fn thread_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Decodes `data` in read-sized chunks until about 1 GiB went through; returns records per
/// pass, MB/s and CPU seconds per GB.
fn measure(format: Format, data: &Bytes) -> (usize, f64, f64) {
    let passes = TARGET_BYTES.div_ceil(data.len()).max(1);
    let mut lines = Vec::with_capacity(4096);
    let mut records = Vec::with_capacity(4096);
    let mut per_pass = 0;
    let (wall, cpu) = (Instant::now(), thread_cpu_seconds());
    for pass in 0..passes {
        let mut splitter = Splitter::new(DEFAULT_MAX_EVENT_BYTES);
        let mut decoder = Decoder::new(format, DEFAULT_MAX_EVENT_BYTES);
        let mut count = 0;
        let mut offset = 0;
        while offset < data.len() {
            let end = (offset + CHUNK).min(data.len());
            splitter.push(data.slice(offset..end), offset as u64, &mut lines);
            for line in lines.drain(..) {
                decoder.decode(line, &mut records);
            }
            count += records.len();
            records.clear();
            offset = end;
        }
        if pass == 0 {
            per_pass = count;
        }
        assert_eq!(count, per_pass);
    }
    let (wall, cpu) = (wall.elapsed().as_secs_f64(), thread_cpu_seconds() - cpu);
    let bytes = (data.len() * passes) as f64;
    (per_pass, bytes / 1e6 / wall, cpu / (bytes / 1e9))
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn json_file_decode_figures() {
    let engine = Engine::new("bench");
    let script = format!(
        "m=$(printf '%0100d' 0); yes \"$m\" | head -n {LINES}; l=$(printf '%040000d' 0); \
         for i in $(seq 1 {LONG_LINES}); do echo \"$l\"; done"
    );
    let id = engine.start("writer", &[], &script);
    docker(&["wait", &id]);
    let log_path = docker(&["inspect", "-f", "{{.LogPath}}", &id]);
    let json = Bytes::from(std::fs::read(&log_path).unwrap());

    // The same messages as CRI lines, for comparison.
    let mut cri = Vec::with_capacity(json.len());
    for _ in 0..LINES {
        cri.extend_from_slice(b"2026-11-25T14:00:00.123456789Z stdout F ");
        cri.extend_from_slice(&[b'0'; 100]);
        cri.push(b'\n');
    }
    for _ in 0..LONG_LINES {
        cri.extend_from_slice(b"2026-11-25T14:00:00.123456789Z stdout F ");
        cri.extend_from_slice(&[b'0'; 40_000]);
        cri.push(b'\n');
    }
    let cri = Bytes::from(cri);

    let (records, mbs, cpu_per_gb) = measure(Format::DockerJson, &json);
    assert_eq!(records, LINES + LONG_LINES, "every json-file line decodes, 16 KiB splits joined");
    println!(
        "docker json-file decode: {mbs:.0} MB/s, {cpu_per_gb:.2} CPU-s/GB ({} MB file from the engine, {records} records/pass)",
        json.len() / 1_000_000
    );
    let (records, mbs, cpu_per_gb) = measure(Format::Cri, &cri);
    assert_eq!(records, LINES + LONG_LINES);
    println!(
        "CRI decode (same messages):  {mbs:.0} MB/s, {cpu_per_gb:.2} CPU-s/GB ({} MB)",
        cri.len() / 1_000_000
    );
}

//! `tailor-agent bench --sinks`: 256-byte CRI lines whose content is a JSON object go through a
//! real `tailor-agent run` process (JSON parse, timestamp, enrichment with pod metadata and
//! static fields) into each output: the file sink, and the HTTP, Elasticsearch and Loki sinks
//! posting to a local receiver that speaks their protocols. With `--peers`, Fluent Bit runs the
//! same workload into the same receiver (and Vector, whose build here has no network sinks,
//! into a file), and the ratios are printed.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use super::receiver::Receiver;
use super::{
    BenchArgs, Figures, LINE_BYTES, file_lines, finish, measure, spawn_peer, spawn_tailor, wait_until,
};

/// The outputs measured, as (name, output YAML with `{addr}` for the receiver).
const OUTPUTS: [(&str, &str); 4] = [
    ("file", "{name: out, type: file, batch: {maxEvents: 10000, maxBytes: 4194304, timeoutMs: 200}}"),
    (
        "http",
        "{name: out, type: http, http: {uri: 'http://{addr}/ingest'}, batch: {maxEvents: 5000, maxBytes: 4194304, timeoutMs: 200}}",
    ),
    (
        "elasticsearch",
        "{name: out, type: elasticsearch, elasticsearch: {endpoints: ['http://{addr}'], index: 'logs-%Y.%m.%d'}, batch: {maxEvents: 5000, maxBytes: 4194304, timeoutMs: 200}}",
    ),
    (
        "loki",
        "{name: out, type: loki, loki: {endpoint: 'http://{addr}', labels: {namespace: namespace, container: container, level: level}}, batch: {maxEvents: 5000, maxBytes: 4194304, timeoutMs: 200}}",
    ),
];

pub fn run(args: &BenchArgs, exe: &Path, base: &Path) -> anyhow::Result<()> {
    let receiver = Receiver::start()?;
    let n = args.lines;
    println!(
        "{n} lines of {LINE_BYTES}-byte CRI lines holding JSON; JSON parse + timestamp + enrichment into each output"
    );
    let mut ours = Vec::new();
    for (sink, output) in OUTPUTS {
        let w = base.join(format!("sink-{sink}"));
        prepare(&w, &output.replace("{addr}", &receiver.addr.to_string()))?;
        write_json_lines(&w.join("host/var/log/pods/bench_web-1_uid/app/0.log"), n)?;
        receiver.reset();
        let mut child = spawn_tailor(exe, &args.agent_args, &w)?;
        let start = Instant::now();
        let res = if sink == "file" {
            wait_until(&mut child, n, &mut file_lines(w.join("out/bench/lcc/out")))
        } else {
            wait_until(&mut child, n, &mut || receiver.events())
        };
        let f = finish(&mut child, start, n, res)?;
        f.print(&format!("tailor: json+enrich -> {sink}"));
        ours.push((sink, f));
    }

    let Some(peers) = &args.peers else { return Ok(()) };
    let w = base.join("sink-peers");
    let _ = fs::remove_dir_all(&w);
    fs::create_dir_all(&w)?;
    let input = w.join("input.log");
    write_json_lines(&input, n)?;
    for (sink, f) in &ours {
        let peer = if *sink == "file" {
            run_vector(&peers.join("vector"), &w, &input, n).map(|v| ("vector", v))
        } else {
            run_fluent_bit(&peers.join("fluent-bit"), &w, &input, n, sink, &receiver)
                .map(|p| ("fluent-bit", p))
        };
        match peer {
            Ok((name, p)) => {
                p.print(&format!("{name}: json+enrich -> {sink}"));
                println!("  ratio tailor/{name} -> {sink}: {}", f.ratios(&p));
            }
            Err(e) => println!("peer -> {sink}: not run: {e:#}"),
        }
    }
    Ok(())
}

/// A host root with one pod, one container, one CRI log, and the agent's config.
fn prepare(w: &Path, output: &str) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(w);
    fs::create_dir_all(w.join("host/var/log/pods/bench_web-1_uid/app"))?;
    fs::create_dir_all(w.join("state"))?;
    fs::create_dir_all(w.join("out"))?;
    let config = format!(
        "formatVersion: 1
collections:
  - source: {{namespace: bench, name: lcc}}
    parse: {{format: json, timestamp: {{field: ts, format: rfc3339}}}}
    outputs: [{output}]
    targets:
    - pod: {{namespace: bench, name: web-1, uid: 0b6f3c1e-0000-4000-8000-000000000001, workload: {{kind: Deployment, name: web}}}}
      container: {{name: app, image: 'registry.example.com/web:1.2.3'}}
      fields: {{team: payments, tenant: t-42}}
      inputs:
      - kind: stdio
        root: {{kind: podLogs, hostDir: /var/log/pods/bench_web-1_uid/app}}
        path: '*.log'
"
    );
    fs::write(w.join("config.yaml"), config)?;
    Ok(())
}

/// Writes `n` CRI lines of exactly `LINE_BYTES` bytes, each holding a JSON object.
pub fn write_json_lines(path: &Path, n: u64) -> std::io::Result<()> {
    let mut f = BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    let mut line = Vec::with_capacity(LINE_BYTES);
    for i in 0..n {
        json_line(i, &mut line);
        f.write_all(&line)?;
    }
    f.flush()
}

fn json_line(i: u64, line: &mut Vec<u8>) {
    line.clear();
    let level = ["info", "warn", "error", "debug"][(i % 4) as usize];
    let _ = write!(
        line,
        r#"2024-05-01T12:00:00.000000000Z stdout F {{"ts":"2024-05-01T12:00:{:02}.{:03}Z","level":"{level}","logger":"http","msg":"GET /api/v1/items/{i:012} 200","user":{{"id":{},"roles":["reader"]}},"pad":""#,
        i % 60,
        i % 1000,
        i % 9973
    );
    // Pad inside the JSON string so that the line, with `"}` and the newline, is LINE_BYTES long.
    line.resize(LINE_BYTES - 3, b'x');
    line.extend_from_slice(b"\"}\n");
}

fn run_fluent_bit(
    bin: &Path,
    w: &Path,
    input: &Path,
    n: u64,
    sink: &str,
    receiver: &Receiver,
) -> anyhow::Result<Figures> {
    let dir = w.join(format!("fluent-bit-{sink}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let (host, port) = (receiver.addr.ip(), receiver.addr.port());
    let output = match sink {
        "http" => {
            format!("Name http\n    Host {host}\n    Port {port}\n    URI /ingest\n    Format json_lines")
        }
        "elasticsearch" => format!(
            "Name es\n    Host {host}\n    Port {port}\n    Index logs\n    Suppress_Type_Name On\n    Generate_ID On"
        ),
        "loki" => format!(
            "Name loki\n    Host {host}\n    Port {port}\n    Labels namespace=bench, container=app\n    Label_keys $level\n    Line_format json"
        ),
        other => anyhow::bail!("no Fluent Bit output for {other}"),
    };
    fs::write(
        dir.join("parsers.conf"),
        "[PARSER]\n    Name json_ts\n    Format json\n    Time_Key ts\n    Time_Format %Y-%m-%dT%H:%M:%S.%LZ\n    Time_Keep On\n",
    )?;
    let conf = format!(
        "[SERVICE]
    Flush 1
    Log_Level error
    Parsers_File {dir}/parsers.conf
[INPUT]
    Name tail
    Path {input}
    DB {dir}/fb.db
    Read_from_Head On
    multiline.parser cri
[FILTER]
    Name parser
    Match *
    Key_Name log
    Parser json_ts
    Reserve_Data On
[FILTER]
    Name record_modifier
    Match *
    Record namespace bench
    Record pod web-1
    Record pod_uid 0b6f3c1e-0000-4000-8000-000000000001
    Record container app
    Record image registry.example.com/web:1.2.3
    Record node bench
    Record team payments
    Record tenant t-42
[OUTPUT]
    Match *
    {output}
",
        dir = dir.display(),
        input = input.display()
    );
    fs::write(dir.join("fb.conf"), conf)?;
    receiver.reset();
    let mut child = spawn_peer(bin, &["-c"], &dir.join("fb.conf"))?;
    let start = Instant::now();
    let res = wait_until(&mut child, n, &mut || receiver.events());
    finish(&mut child, start, n, res)
}

fn run_vector(bin: &Path, w: &Path, input: &Path, n: u64) -> anyhow::Result<Figures> {
    let dir = w.join("vector");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("state"))?;
    fs::create_dir_all(dir.join("out"))?;
    let conf = format!(
        r#"data_dir = "{dir}/state"
[sources.in]
type = "file"
include = ["{input}"]
read_from = "beginning"
[transforms.parse]
type = "remap"
inputs = ["in"]
source = '''
cri = parse_regex!(.message, r'^(?P<time>\S+) (?P<stream>\S+) (?P<tag>\S) (?P<log>.*)$')
. = object!(parse_json!(cri.log))
.timestamp = parse_timestamp!(.ts, "%+")
.stream = cri.stream
.namespace = "bench"
.pod = "web-1"
.pod_uid = "0b6f3c1e-0000-4000-8000-000000000001"
.container = "app"
.image = "registry.example.com/web:1.2.3"
.node = "bench"
.team = "payments"
.tenant = "t-42"
'''
[sinks.out]
type = "file"
inputs = ["parse"]
path = "{dir}/out/out.log"
encoding.codec = "json"
"#,
        dir = dir.display(),
        input = input.display()
    );
    fs::write(dir.join("vector.toml"), conf)?;
    let mut child = spawn_peer(bin, &["--quiet", "-c"], &dir.join("vector.toml"))?;
    measure(&mut child, &dir.join("out"), n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_are_exactly_line_bytes_and_valid_json() {
        let mut line = Vec::new();
        for i in [0, 7, 123_456_789_012] {
            json_line(i, &mut line);
            assert_eq!(line.len(), LINE_BYTES);
            let json = &line[line.iter().position(|&b| b == b'{').unwrap()..line.len() - 1];
            let v: serde_json::Value = serde_json::from_slice(json).unwrap();
            assert!(v["msg"].as_str().unwrap().contains(&format!("{i:012}")));
        }
    }
}

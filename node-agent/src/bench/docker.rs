//! The json-file workload of `tailor-agent bench`: one container's `<id>-json.log`, as the
//! Docker engine's json-file driver writes it, read through a `dockerJson` input by a real
//! `tailor-agent run` process, next to the CRI workload. With `--peers`, Fluent Bit (tail with a
//! JSON parser) and Vector (file source, `parse_json`) read the same file.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use super::{BenchArgs, Figures, LINE_BYTES, PeerFormat, compare_with_peers, run_tailor};

const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

pub fn run(args: &BenchArgs, exe: &Path, base: &Path) -> anyhow::Result<Figures> {
    let w = base.join("docker-json");
    let _ = fs::remove_dir_all(&w);
    let dir = format!("/var/lib/docker/containers/{ID}");
    fs::create_dir_all(w.join(format!("host{dir}")))?;
    fs::create_dir_all(w.join("state"))?;
    fs::create_dir_all(w.join("out"))?;
    let log = w.join(format!("host{dir}/{ID}-json.log"));
    write_json_file(&log, args.lines)?;
    fs::write(
        w.join("config.yaml"),
        format!(
            "formatVersion: 1
collections:
  - source: {{namespace: bench, name: lcc}}
    outputs: [{{name: out, type: file, batch: {{maxEvents: 10000, maxBytes: 4194304, timeoutMs: 200}}}}]
    targets:
    - pod: {{namespace: docker, name: web-1, uid: {ID}}}
      container: {{name: web-1, containerId: {ID}, runtime: docker}}
      inputs:
      - kind: stdio
        root: {{kind: dockerJson, hostDir: {dir}}}
        path: '{ID}-json.log*'
"
        ),
    )?;
    let tailor = run_tailor(exe, &args.agent_args, &w, args.lines, None)?;
    tailor.print("tailor: docker json-file, full speed");
    if let Some(peers) = &args.peers {
        let workload = "docker json-file, full speed";
        compare_with_peers(peers, &w, &log, args.lines, PeerFormat::DockerJson, workload, &tailor);
    }
    Ok(tailor)
}

/// Writes `n` json-file lines of exactly `LINE_BYTES` bytes.
pub fn write_json_file(path: &Path, n: u64) -> std::io::Result<()> {
    let mut f = BufWriter::with_capacity(1 << 20, fs::File::create(path)?);
    let mut line = Vec::with_capacity(LINE_BYTES);
    for i in 0..n {
        json_file_line(i, &mut line);
        f.write_all(&line)?;
    }
    f.flush()
}

fn json_file_line(i: u64, line: &mut Vec<u8>) {
    const TAIL: &[u8] = br#"\n","stream":"stdout","time":"2024-05-01T12:00:00.000000000Z"}"#;
    line.clear();
    let _ = write!(line, r#"{{"log":"line {i:012} "#);
    line.resize(LINE_BYTES - 1 - TAIL.len(), b'x');
    line.extend_from_slice(TAIL);
    line.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_file_lines_are_line_bytes_and_what_the_engine_writes() {
        let mut line = Vec::new();
        for i in [0, 42, 999_999_999_999] {
            json_file_line(i, &mut line);
            assert_eq!(line.len(), LINE_BYTES);
            let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
            assert!(v["log"].as_str().unwrap().starts_with(&format!("line {i:012} ")));
            assert!(v["log"].as_str().unwrap().ends_with('\n'));
            assert_eq!(v["stream"], "stdout");
        }
    }
}

//! `tailor-agent bench`: runs workloads of 256-byte CRI lines through a real `tailor-agent run`
//! process (config file, `file` output) and prints lines/s, MB/s, CPU seconds per GB and peak
//! RSS of that process. With `--peers DIR` (holding `fluent-bit` and `vector`), the 1-file
//! workload also runs through them and the ratios are printed.
//!
//! A benchmark prints figures; it asserts nothing.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod receiver;
mod sinks;

/// Options of `tailor-agent bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Lines of the 1-file workload.
    #[arg(long, default_value_t = 1_000_000)]
    pub lines: u64,
    /// Total rate of the 100-file workload, lines per second.
    #[arg(long, default_value_t = 20_000)]
    pub rate: u64,
    /// Seconds of the rate-limited workloads.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Directory with `fluent-bit` and `vector` binaries, for side-by-side ratios.
    #[arg(long)]
    pub peers: Option<PathBuf>,
    /// Work directory (default: a temporary one).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Run the output workloads instead (JSON parse and enrichment into the file, HTTP,
    /// Elasticsearch and Loki outputs, the last three against a local receiver).
    #[arg(long)]
    pub sinks: bool,
    /// An extra argument for the measured `tailor-agent run` (repeat it), e.g.
    /// `--agent-arg=--sink-queue --agent-arg=4`.
    #[arg(long = "agent-arg", allow_hyphen_values = true)]
    pub agent_args: Vec<String>,
}

/// Line length, including the CRI prefix and the newline.
const LINE_BYTES: usize = 256;

/// Figures of one run of one process.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub lines: u64,
    pub bytes: u64,
    pub wall: f64,
    pub cpu: f64,
    pub peak_rss_kib: u64,
}

impl Figures {
    fn print(&self, name: &str) {
        let mb = self.bytes as f64 / 1e6;
        let gb = self.bytes as f64 / 1e9;
        println!(
            "{name:<40} {:>10.0} lines/s {:>8.1} MB/s {:>8.2} CPU-s/GB {:>7.1} MiB peak RSS ({} lines, {:.1}s, {:.2} CPU-s)",
            self.lines as f64 / self.wall,
            mb / self.wall,
            if gb > 0.0 { self.cpu / gb } else { 0.0 },
            self.peak_rss_kib as f64 / 1024.0,
            self.lines,
            self.wall,
            self.cpu
        );
    }

    /// How this process compares with a peer's run of the same workload.
    fn ratios(&self, peer: &Figures) -> String {
        let mb_per_cpu = |x: &Figures| x.bytes as f64 / 1e6 / x.cpu.max(1e-9);
        format!(
            "MB per CPU-second x{:.2}, peak RSS x{:.2}, wall time x{:.2}",
            mb_per_cpu(self) / mb_per_cpu(peer),
            self.peak_rss_kib as f64 / peer.peak_rss_kib.max(1) as f64,
            self.wall / peer.wall
        )
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("tailor-bench").tempdir()?;
    let base = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let exe = std::env::current_exe()?;
    if args.sinks {
        return sinks::run(&args, &exe, &base);
    }
    println!("workloads of {LINE_BYTES}-byte CRI lines; figures of the whole agent process");

    let w = base.join("one-file");
    let logs = prepare(&w, 1)?;
    write_lines(&logs[0], 0, args.lines)?;
    let tailor = run_tailor(&exe, &args.agent_args, &w, args.lines, None)?;
    tailor.print("tailor: 1 file, full speed");

    let w = base.join("hundred-files");
    let logs = prepare(&w, 100)?;
    let total = args.rate * args.seconds;
    let f = run_tailor(
        &exe,
        &args.agent_args,
        &w,
        total,
        Some(Box::new(move || paced_writer(&logs, args.rate, args.seconds))),
    )?;
    f.print(&format!("tailor: 100 files, {} lines/s total", args.rate));

    let w = base.join("thousand-idle");
    let logs = prepare(&w, 1000)?;
    let idle_rate = 200;
    let total = idle_rate * args.seconds;
    let f = run_tailor(
        &exe,
        &args.agent_args,
        &w,
        total,
        Some(Box::new(move || paced_writer(&logs, idle_rate, args.seconds))),
    )?;
    f.print(&format!("tailor: 1000 mostly idle files, {idle_rate} lines/s total"));

    // The pipeline alone, in this process: JSON parse + timestamp + enrichment + a filter.
    let p = crate::pipeline::bench_pipeline(args.lines, LINE_BYTES)?;
    println!(
        "{:<40} {:>10.0} lines/s {:>8.1} MB/s {:>8.2} CPU-s/GB ({} lines, {:.1}s, {:.2} CPU-s, {:.0} lines per CPU-s)",
        "pipeline: json parse + enrichment",
        p.events_per_sec,
        p.bytes as f64 / 1e6 / p.wall.as_secs_f64().max(1e-9),
        p.cpu_secs_per_gb,
        p.events,
        p.wall.as_secs_f64(),
        p.cpu.as_secs_f64(),
        p.events_per_cpu_sec
    );

    if let Some(peers) = &args.peers {
        let w = base.join("peers");
        fs::create_dir_all(&w)?;
        let input = w.join("input.log");
        write_lines(&input, 0, args.lines)?;
        for (name, figures) in [
            ("fluent-bit", run_fluent_bit(&peers.join("fluent-bit"), &w, &input, args.lines)),
            ("vector", run_vector(&peers.join("vector"), &w, &input, args.lines)),
        ] {
            match figures {
                Ok(f) => {
                    f.print(&format!("{name}: 1 file, full speed"));
                    println!("  ratio tailor/{name}: {}", tailor.ratios(&f));
                }
                Err(e) => println!("{name}: not run: {e:#}"),
            }
        }
    }
    Ok(())
}

/// Lays out a host root with a pod of `n` containers (one log each) and returns the log paths.
fn prepare(w: &Path, n: usize) -> anyhow::Result<Vec<PathBuf>> {
    let _ = fs::remove_dir_all(w);
    let mut logs = Vec::new();
    let mut targets = String::new();
    for i in 0..n {
        let dir = w.join(format!("host/var/log/pods/bench_p_uid/c{i}"));
        fs::create_dir_all(&dir)?;
        let log = dir.join("0.log");
        File::create(&log)?;
        logs.push(log);
        targets.push_str(&format!(
            "    - pod: {{namespace: bench, name: p, uid: uid}}\n      container: {{name: c{i}}}\n      inputs:\n      - kind: stdio\n        root: {{kind: podLogs, hostDir: /var/log/pods/bench_p_uid/c{i}}}\n        path: \"*.log\"\n"
        ));
    }
    let config = format!(
        "formatVersion: 1\ncollections:\n  - source: {{namespace: bench, name: lcc}}\n    outputs: [{{name: out, type: file, batch: {{maxEvents: 10000, maxBytes: 4194304, timeoutMs: 200}}}}]\n    targets:\n{targets}"
    );
    fs::write(w.join("config.yaml"), config)?;
    fs::create_dir_all(w.join("state"))?;
    fs::create_dir_all(w.join("out"))?;
    Ok(logs)
}

/// Appends lines `from..to` as 256-byte CRI lines.
pub fn write_lines(path: &Path, from: u64, to: u64) -> std::io::Result<()> {
    let mut f = BufWriter::with_capacity(1 << 20, OpenOptions::new().create(true).append(true).open(path)?);
    let mut line = Vec::with_capacity(LINE_BYTES);
    for i in from..to {
        cri_line(i, &mut line);
        f.write_all(&line)?;
    }
    f.flush()
}

fn cri_line(i: u64, line: &mut Vec<u8>) {
    line.clear();
    let _ = write!(line, "2024-05-01T12:00:00.000000000Z stdout F line {i:012} ");
    line.resize(LINE_BYTES - 1, b'x');
    line.push(b'\n');
}

/// Writes `rate` lines per second spread over `logs` for `seconds`.
fn paced_writer(logs: &[PathBuf], rate: u64, seconds: u64) {
    let mut files: Vec<File> =
        logs.iter().filter_map(|p| OpenOptions::new().append(true).open(p).ok()).collect();
    let start = Instant::now();
    let total = rate * seconds;
    let mut line = Vec::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        cri_line(i, &mut line);
        let n = files.len();
        let _ = files[(i as usize * 7919) % n].write_all(&line);
    }
}

type Writer = Box<dyn FnOnce() + Send>;

fn run_tailor(
    exe: &Path,
    extra: &[String],
    w: &Path,
    expect: u64,
    writer: Option<Writer>,
) -> anyhow::Result<Figures> {
    let mut child = spawn_tailor(exe, extra, w)?;
    let start = Instant::now();
    let writer = writer.map(std::thread::spawn);
    let res = wait_until(&mut child, expect, &mut file_lines(w.join("out/bench/lcc/out")));
    if let Some(h) = writer {
        let _ = h.join();
    }
    finish(&mut child, start, expect, res)
}

/// Starts `tailor-agent run` on the work directory laid out by `prepare`.
fn spawn_tailor(exe: &Path, extra: &[String], w: &Path) -> anyhow::Result<Child> {
    Ok(Command::new(exe)
        .args(["run", "--node-name", "bench", "--checkpoint-interval", "5s"])
        .args(extra)
        .arg("--host-root")
        .arg(w.join("host"))
        .arg("--state-dir")
        .arg(w.join("state"))
        .arg("--config")
        .arg(w.join("config.yaml"))
        .arg("--output-dir")
        .arg(w.join("out"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?)
}

/// Takes the figures of a process that was started at `start`, then stops it.
fn finish(
    child: &mut Child,
    start: Instant,
    expect: u64,
    waited: anyhow::Result<()>,
) -> anyhow::Result<Figures> {
    let wall = start.elapsed().as_secs_f64();
    let (cpu, rss) = proc_figures(child.id());
    stop(child);
    waited?;
    Ok(Figures { lines: expect, bytes: expect * LINE_BYTES as u64, wall, cpu, peak_rss_kib: rss })
}

/// Polls `count` until it reaches `expect`, the process exits, or five minutes pass.
fn wait_until(child: &mut Child, expect: u64, count: &mut dyn FnMut() -> u64) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let total = count();
        if total >= expect {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("process exited early ({status}) after {total} of {expect} lines");
        }
        if start.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("timed out with {total} of {expect} lines");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Counts the lines of the files under `dir`, reading only what was appended since last time.
fn file_lines(dir: PathBuf) -> impl FnMut() -> u64 {
    let mut counted: std::collections::HashMap<PathBuf, (u64, u64)> = Default::default();
    let mut buf = vec![0u8; 1 << 20];
    move || {
        let mut total = 0;
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let (off, lines) = counted.entry(e.path()).or_default();
            if let Ok(mut f) = File::open(e.path()) {
                use std::io::Seek;
                if f.seek(std::io::SeekFrom::Start(*off)).is_ok() {
                    while let Ok(n @ 1..) = f.read(&mut buf) {
                        *off += n as u64;
                        *lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
                    }
                }
            }
            total += *lines;
        }
        total
    }
}

/// CPU seconds (user + system) and peak RSS (KiB) of a live process.
fn proc_figures(pid: u32) -> (f64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let hz = rustix::param::clock_ticks_per_second() as f64;
    let cpu = (ticks(11) + ticks(12)) as f64 / hz;
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (cpu, rss)
}

fn stop(child: &mut Child) {
    let _ = rustix::process::kill_process(
        rustix::process::Pid::from_raw(child.id() as i32).expect("child pid is positive"),
        rustix::process::Signal::TERM,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn run_fluent_bit(bin: &Path, w: &Path, input: &Path, expect: u64) -> anyhow::Result<Figures> {
    let dir = w.join("fluent-bit");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("out"))?;
    let conf = format!(
        "[SERVICE]\n    Flush 1\n    Log_Level error\n[INPUT]\n    Name tail\n    Path {}\n    DB {}/fb.db\n    Read_from_Head On\n    multiline.parser cri\n[OUTPUT]\n    Name file\n    Match *\n    Path {}/out/\n    File out.log\n    Format plain\n",
        input.display(),
        dir.display(),
        dir.display()
    );
    fs::write(dir.join("fb.conf"), conf)?;
    let mut child = spawn_peer(bin, &["-c"], &dir.join("fb.conf"))?;
    measure(&mut child, &dir.join("out"), expect)
}

fn run_vector(bin: &Path, w: &Path, input: &Path, expect: u64) -> anyhow::Result<Figures> {
    let dir = w.join("vector");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("state"))?;
    fs::create_dir_all(dir.join("out"))?;
    let conf = format!(
        "data_dir = \"{}/state\"\n[sources.in]\ntype = \"file\"\ninclude = [\"{}\"]\nread_from = \"beginning\"\n[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}/out/out.log\"\nencoding.codec = \"json\"\n",
        dir.display(),
        input.display(),
        dir.display()
    );
    fs::write(dir.join("vector.toml"), conf)?;
    let mut child = spawn_peer(bin, &["--quiet", "-c"], &dir.join("vector.toml"))?;
    measure(&mut child, &dir.join("out"), expect)
}

/// Starts a peer agent on its configuration file, quiet.
fn spawn_peer(bin: &Path, args: &[&str], conf: &Path) -> std::io::Result<Child> {
    Command::new(bin).args(args).arg(conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn()
}

pub(crate) fn measure(child: &mut Child, out: &Path, expect: u64) -> anyhow::Result<Figures> {
    let start = Instant::now();
    let res = wait_until(child, expect, &mut file_lines(out.to_path_buf()));
    finish(child, start, expect, res)
}

//! `bench_backup`: copy throughput (MB/s) and CPU seconds per GB of the engine on real files,
//! with appends between passes as a live log would get them, then compression of closed files.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tailor_crds::backup::BackupCompression;

use super::engine::{Engine, EngineSettings, PassKind};
use super::fixture::{FakePod, node_backup};
use super::inputs::AgentResolver;

/// Figures of one run.
#[derive(Clone, Debug)]
pub struct BenchReport {
    pub files: usize,
    pub bytes: u64,
    pub copy_seconds: f64,
    pub copy_cpu_seconds: f64,
    pub compress_seconds: f64,
    pub compress_cpu_seconds: f64,
}

impl BenchReport {
    pub fn copy_mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.copy_seconds.max(1e-9)
    }
    pub fn copy_cpu_s_per_gb(&self) -> f64 {
        self.copy_cpu_seconds / (self.bytes as f64 / 1e9)
    }
    pub fn compress_mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.compress_seconds.max(1e-9)
    }
    pub fn compress_cpu_s_per_gb(&self) -> f64 {
        self.compress_cpu_seconds / (self.bytes as f64 / 1e9)
    }

    /// The figures, one per line.
    pub fn summary(&self) -> String {
        format!(
            "backup copy: {files} files, {mb:.0} MB in {rounds}: {cmbs:.0} MB/s, {ccpu:.2} CPU s/GB\n\
             backup close+compress: {zmbs:.0} MB/s, {zcpu:.2} CPU s/GB",
            files = self.files,
            mb = self.bytes as f64 / 1e6,
            rounds = format_args!("{:.2}s", self.copy_seconds),
            cmbs = self.copy_mb_per_s(),
            ccpu = self.copy_cpu_s_per_gb(),
            zmbs = self.compress_mb_per_s(),
            zcpu = self.compress_cpu_s_per_gb(),
        )
    }
}

/// CPU time of this process (user + system).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which may contain spaces): utime is the 12th, stime the 13th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Linux reports these in USER_HZ, 100 on every architecture we run on.
    let hz = 100.0;
    (ticks(11) + ticks(12)) / hz
}

/// Log-like text: lines of varying length with a counter, so it compresses like real logs.
fn fill(buf: &mut Vec<u8>, n: usize, seed: u64) {
    buf.clear();
    let mut i = seed;
    while buf.len() < n {
        let _ = writeln!(
            buf,
            "2026-11-25T13:00:00.{:09}Z stdout F level=info msg=\"request served\" path=/api/v1/items/{} status=200 bytes={} took={}us",
            i % 1_000_000_000,
            i.wrapping_mul(2654435761) % 100_000,
            i % 65536,
            i % 9973
        );
        i += 1;
    }
    buf.truncate(n);
}

/// Copies `files` files of `bytes_per_file` bytes each, written in `rounds` appends with a pass
/// after each, under `dir`; then closes them and measures their compression.
pub fn bench_backup(
    dir: &Path,
    files: usize,
    bytes_per_file: u64,
    rounds: u32,
    compression: BackupCompression,
) -> std::io::Result<BenchReport> {
    let host = dir.join("host");
    let mut settings = EngineSettings::new(dir.join("backup"), dir.join("state"), "bench-node");
    settings.close_after = Duration::ZERO;
    let mut engine =
        Engine::new(settings, Arc::new(AgentResolver::new(host.clone()))).map_err(std::io::Error::other)?;
    let pod = FakePod::new("bench", "app", "app");
    let pod_dir = pod.host_dir(&host);
    let mut nb = node_backup("bench", "policy", std::slice::from_ref(&pod));
    nb.retention.max_bytes = "1Ti".into();
    nb.compression = compression;
    engine.apply(Some(1), vec![nb.clone()]);
    let mut writers: Vec<std::fs::File> = (0..files)
        .map(|i| std::fs::File::create(pod_dir.join(format!("{i}.log"))))
        .collect::<Result<_, _>>()?;
    let per_round = (bytes_per_file / u64::from(rounds.max(1))) as usize;
    let mut buf = Vec::new();
    let (mut wall, mut cpu) = (0.0, 0.0);
    for r in 0..rounds {
        for (i, w) in writers.iter_mut().enumerate() {
            fill(&mut buf, per_round, (r as u64) << 32 | i as u64);
            w.write_all(&buf)?;
        }
        let (t, c) = (Instant::now(), cpu_seconds());
        engine.pass(PassKind::Event);
        wall += t.elapsed().as_secs_f64();
        cpu += cpu_seconds() - c;
    }
    let bytes = engine.counters.bytes_copied;
    // The container terminates: its files are closed and compressed.
    nb.targets[0].container.terminated = true;
    engine.apply(Some(2), vec![nb]);
    let (t, c) = (Instant::now(), cpu_seconds());
    engine.pass(PassKind::Sweep);
    let report = BenchReport {
        files,
        bytes,
        copy_seconds: wall,
        copy_cpu_seconds: cpu,
        compress_seconds: t.elapsed().as_secs_f64(),
        compress_cpu_seconds: cpu_seconds() - c,
    };
    Ok(report)
}

/// `tailor-agent bench backup` options.
#[derive(Debug, clap::Args)]
pub struct BenchBackupArgs {
    /// Where to write the source files and the backup (a real disk, not tmpfs, for real figures).
    #[arg(long, default_value = "/var/tmp")]
    pub dir: std::path::PathBuf,
    #[arg(long, default_value_t = 8)]
    pub files: usize,
    #[arg(long, default_value_t = 128)]
    pub mib_per_file: u64,
    /// Appends per file, with a copy pass after each.
    #[arg(long, default_value_t = 16)]
    pub rounds: u32,
    #[arg(long, value_enum, default_value = "zstd")]
    pub compression: BenchCompression,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum BenchCompression {
    Zstd,
    Gzip,
    None,
}

/// Runs the benchmark and returns its figures as text.
pub fn run_bench(args: &BenchBackupArgs) -> std::io::Result<String> {
    let dir = tempfile_dir(&args.dir)?;
    let compression = match args.compression {
        BenchCompression::Zstd => BackupCompression::Zstd,
        BenchCompression::Gzip => BackupCompression::Gzip,
        BenchCompression::None => BackupCompression::None,
    };
    let r = bench_backup(&dir, args.files, args.mib_per_file << 20, args.rounds, compression);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(r?.summary())
}

/// A fresh directory for one run.
fn tempfile_dir(base: &Path) -> std::io::Result<std::path::PathBuf> {
    let d = base.join(format!("tailor-bench-backup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

//! Figures, not a test: `cargo test --release -p tailor-agent --test backup_bench -- --ignored --nocapture`
//! prints MB/s copied and CPU seconds per GB (also `tailor-agent bench backup`).

use tailor_agent::backup::bench::bench_backup;
use tailor_crds::backup::BackupCompression;

#[test]
#[ignore = "a benchmark: prints figures"]
fn backup_figures() {
    let dir = tempfile::tempdir_in(std::env::var("TAILOR_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
        .unwrap();
    let r = bench_backup(dir.path(), 8, 128 << 20, 16, BackupCompression::Zstd).unwrap();
    println!("{}", r.summary());
}

//! `tailor-agent backups list|cat|grep|serve`: find and read backed-up logs on the node,
//! straight from the backup root.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::dest::DestRoot;
use super::error::BackupError;
use super::query::{self, Filter};

/// Default backup root on a node.
pub const DEFAULT_BACKUP_ROOT: &str = "/var/log/tailor-backup";

#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// List backup files.
    List {
        #[command(flatten)]
        select: Select,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the content of backup files (decompressed), oldest first.
    Cat {
        #[command(flatten)]
        select: Select,
    },
    /// Print lines of backup files that match a regex.
    Grep {
        regex: String,
        #[command(flatten)]
        select: Select,
        /// Stop after this many matches.
        #[arg(long, default_value_t = 100_000)]
        max: usize,
    },
    /// Measure the backup engine: MB/s copied and CPU seconds per GB.
    Bench(super::bench::BenchBackupArgs),
    /// Serve the backup API (also started by `tailor-agent run --backup-api-addr`).
    Serve {
        #[arg(long, default_value = DEFAULT_BACKUP_ROOT)]
        backup_root: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8471")]
        addr: SocketAddr,
        /// File with the bearer token (else $TAILOR_BACKUP_API_TOKEN).
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
}

/// Which files: the backup root and a filter.
#[derive(Debug, Args)]
pub struct Select {
    #[arg(long, default_value = DEFAULT_BACKUP_ROOT)]
    pub backup_root: PathBuf,
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[arg(long)]
    pub pod: Option<String>,
    #[arg(long, short = 'c')]
    pub container: Option<String>,
    /// `namespace/name` of the LogBackupPolicy.
    #[arg(long)]
    pub policy: Option<String>,
    /// One file name as listed.
    #[arg(long)]
    pub file: Option<String>,
    /// Files written at or after (RFC 3339, or a duration ago such as `2h`).
    #[arg(long)]
    pub since: Option<String>,
    /// Files started at or before (RFC 3339, or a duration ago).
    #[arg(long)]
    pub until: Option<String>,
}

impl Select {
    fn filter(&self) -> Filter {
        Filter {
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            container: self.container.clone(),
            policy: self.policy.clone(),
            file: self.file.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
        }
    }
}

/// Runs a `backups` subcommand, writing to `out`.
pub async fn run(cmd: BackupsCommand, out: &mut (dyn Write + Send)) -> Result<(), BackupError> {
    let w = |e| BackupError::io("write", "stdout", e);
    match cmd {
        BackupsCommand::List { select, json } => {
            let entries = query::list(&select.backup_root, &select.filter())?;
            if json {
                serde_json::to_writer_pretty(&mut *out, &entries)
                    .map_err(|e| BackupError::Api(e.to_string()))?;
                writeln!(out).map_err(w)?;
            } else {
                query::write_table(&entries, out).map_err(w)?;
            }
        }
        BackupsCommand::Cat { select } => {
            let entries = query::list(&select.backup_root, &select.filter())?;
            let root = DestRoot::open(&select.backup_root)
                .map_err(|e| BackupError::io("open", &select.backup_root, e))?;
            query::cat(&root, &entries, out)?;
        }
        BackupsCommand::Grep { regex, select, max } => {
            let re =
                regex::bytes::Regex::new(&regex).map_err(|e| BackupError::Api(format!("bad regex: {e}")))?;
            let entries = query::list(&select.backup_root, &select.filter())?;
            let root = DestRoot::open(&select.backup_root)
                .map_err(|e| BackupError::io("open", &select.backup_root, e))?;
            query::grep(&root, &entries, &re, max, out)?;
        }
        BackupsCommand::Bench(args) => {
            let figures = tokio::task::spawn_blocking(move || super::bench::run_bench(&args))
                .await
                .map_err(|e| BackupError::Api(e.to_string()))?
                .map_err(|e| BackupError::io("bench", "", e))?;
            writeln!(out, "{figures}").map_err(w)?;
        }
        BackupsCommand::Serve { backup_root, addr, token_file } => {
            let token = super::api::load_token(token_file.as_deref())?;
            super::api::serve(addr, backup_root, token, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        }
    }
    out.flush().map_err(w)
}

/// Options of `tailor-agent run` for backups (flattened into its arguments).
#[derive(Debug, Clone, Args)]
pub struct BackupRunArgs {
    /// Serve the backup API here (off by default; `127.0.0.1:8471` suits a port-forward).
    #[arg(long)]
    pub backup_api_addr: Option<SocketAddr>,
    /// File with the backup API's bearer token (else $TAILOR_BACKUP_API_TOKEN).
    #[arg(long)]
    pub backup_api_token_file: Option<PathBuf>,
}

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tailor_agent::docker::{DockerClient, DockerMode, DockerRootfs};
use tailor_agent::engine::{Applied, Engine, EngineConfig, EngineStatus, Shutdown};
use tailor_agent::metrics::Metrics;
use tailor_agent::resolve::{ContainerdLocator, Locators, RootfsLocator};
use tailor_agent::secrets::{DirSecrets, KubeMirrors, NoSecrets, SecretSource};
use tailor_agent::{bench, config, metrics, status};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "tailor-agent", about = "Tailor's node agent: tails, ships and backs up container logs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply this node's NodeLogConfig (from the API server, or `--config FILE`).
    Run(Box<RunArgs>),
    /// Measure the tailer: lines/s, MB/s, CPU seconds per GB, peak RSS.
    Bench(bench::BenchArgs),
    /// Find and read the backed-up original log files on this node.
    Backups {
        #[command(subcommand)]
        command: tailor_agent::backup::cli::BackupsCommand,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Where the host's filesystem is mounted (`/` outside a container).
    #[arg(long, default_value = "/")]
    host_root: PathBuf,
    /// Checkpoints (a hostPath in the cluster).
    #[arg(long)]
    state_dir: PathBuf,
    /// A YAML stream of NodeLogConfig objects; reloaded on change. Without it, the node's
    /// NodeLogConfig is watched through KUBECONFIG or the in-cluster config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Root of the `file` output.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Root of backups (used by the backup engine).
    #[arg(long)]
    backup_root: Option<PathBuf>,
    #[command(flatten)]
    backup: tailor_agent::backup::cli::BackupRunArgs,
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    #[arg(long, default_value = "5s", value_parser = duration)]
    checkpoint_interval: Duration,
    /// How long SIGTERM waits for in-flight events before the final checkpoint.
    #[arg(long, default_value = "20s", value_parser = duration)]
    shutdown_grace: Duration,
    #[arg(long, default_value = "1s", value_parser = duration)]
    rescan_interval: Duration,
    #[arg(long, default_value_t = 1024)]
    max_open_files: usize,
    /// Maximum size of one event; the rest of a longer line is cut and the event marked.
    #[arg(long, default_value = "256Ki", value_parser = bytes)]
    max_event_bytes: u64,
    /// Chunks (a read turn's events of one target, up to 1 MiB of lines) each output may queue
    /// before reading pauses for its collection: memory against smoothing of slow outputs.
    /// Parsed events take several times their line's size, so this bounds most of the RSS.
    #[arg(long, default_value_t = 4)]
    sink_queue: usize,
    /// Size at which the `file` output rotates a target's file.
    #[arg(long, default_value = "256Mi", value_parser = bytes)]
    file_max_bytes: u64,
    /// Discover containers from the Docker engine instead of the API server.
    #[arg(long)]
    docker: bool,
    #[arg(long, default_value = "unix:///var/run/docker.sock")]
    docker_host: String,
    /// Values of the Secrets outputs name, as files `DIR/<namespace>/<name>/<key>` (the layout
    /// of mounted Secrets). Without it, in a cluster, the operator's mirrors of them in
    /// `--secrets-namespace` are read.
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
    /// The agent's own namespace, where the operator mirrors the Secrets outputs name (default:
    /// the namespace of the in-cluster config or the kubeconfig's context).
    #[arg(long, env = "POD_NAMESPACE")]
    secrets_namespace: Option<String>,
}

fn duration(s: &str) -> Result<Duration, String> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().map(Duration::from_millis).map_err(|e| format!("{s}: {e}"));
    }
    tailor_crds::units::parse_duration(s).map_err(|e| e.to_string())
}

fn bytes(s: &str) -> Result<u64, String> {
    tailor_crds::units::parse_bytes(s).map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // One TLS provider for every client of the process (kube, sinks): when another crate of the
    // build also enables aws-lc-rs, rustls cannot pick a default by itself and kube's client
    // would panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cli.command {
        Command::Run(args) => rt.block_on(run(*args)),
        Command::Bench(args) => bench::run(args),
        Command::Backups { command } => rt.block_on(async {
            let mut out = std::io::stdout();
            tailor_agent::backup::cli::run(command, &mut out).await.map_err(anyhow::Error::from)
        }),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    // First of all: a SIGTERM that arrives while the agent starts must stop it gracefully (a
    // final checkpoint), not kill it with the default action.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating state dir {}", args.state_dir.display()))?;
    // Writable layers of Docker containers: docker mode, and Kubernetes nodes on cri-dockerd.
    let docker_socket = DockerClient::from_host(&args.docker_host).ok().map(|c| c.socket().to_path_buf());
    let mut docker_locator = DockerRootfs::new(&args.host_root, docker_socket);
    let metrics = Arc::new(Metrics::default());
    let (config_tx, config_rx) = watch::channel(None);
    let (status_tx, status_rx) = watch::channel(EngineStatus::default());

    let mut kube_client = None;
    match &args.config {
        Some(path) if args.docker => {
            let tx = config_tx;
            let mode = DockerMode::new(
                &args.docker_host,
                path,
                &args.node_name,
                &args.host_root,
                Box::new(move |generation, spec| {
                    tx.send_replace(Some(Applied { generation, spec }));
                }),
            )?;
            docker_locator = mode.locator;
            tokio::spawn(mode.discovery.run(std::future::pending()));
        }
        None if args.docker => anyhow::bail!("--docker needs --config FILE (the docker-mode configuration)"),
        Some(path) => {
            tokio::spawn(config::watch_file(
                path.clone(),
                args.node_name.clone(),
                config_tx,
                Duration::from_secs(1),
            ));
        }
        None => {
            let client = kube::Client::try_default().await.context("connecting to the API server")?;
            tokio::spawn(config::watch_kube(client.clone(), args.node_name.clone(), config_tx));
            kube_client = Some(client);
        }
    }
    let secrets: Arc<dyn SecretSource> = match (&args.secrets_dir, &kube_client) {
        (Some(dir), _) => Arc::new(DirSecrets { root: dir.clone() }),
        (None, Some(client)) => {
            let ns = args.secrets_namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
            tracing::info!(namespace = %ns, "reading output secrets from the operator's mirrors");
            Arc::new(KubeMirrors::start(client.clone(), &ns))
        }
        (None, None) => Arc::new(NoSecrets),
    };
    // The backup engine follows the same configuration channel (and serves the backup API
    // when `--backup-api-addr` is given).
    let locator: Arc<dyn RootfsLocator> = Arc::new(Locators(vec![
        Arc::new(ContainerdLocator { host_root: args.host_root.clone() }),
        Arc::new(docker_locator),
    ]));
    let (backup_stop_tx, mut backup_stop_rx) = watch::channel(false);
    let backup_task = match &args.backup_root {
        Some(root) => Some(tailor_agent::backup::start_in_agent(
            root.clone(),
            args.backup.clone(),
            &args.node_name,
            args.host_root.clone(),
            args.state_dir.clone(),
            locator.clone(),
            kube_client.clone(),
            config_rx.clone(),
            async move {
                let _ = backup_stop_rx.wait_for(|s| *s).await;
            },
        )?),
        None => None,
    };
    if let Some(client) = kube_client {
        tokio::spawn(status::write_status(
            client,
            args.node_name.clone(),
            status_rx,
            args.checkpoint_interval.as_secs(),
        ));
    } else {
        tokio::spawn(log_status(status_rx));
    }
    if let Some(addr) = args.metrics_addr {
        let m = metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, m).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }

    let mut cfg = EngineConfig::new(&args.node_name, &args.host_root, &args.state_dir);
    cfg.output_dir = args.output_dir.clone();
    cfg.checkpoint_interval = args.checkpoint_interval;
    cfg.shutdown_grace = args.shutdown_grace;
    cfg.rescan_interval = args.rescan_interval;
    cfg.max_open_files = args.max_open_files;
    cfg.max_event_bytes = args.max_event_bytes as usize;
    cfg.file_max_bytes = args.file_max_bytes;
    cfg.sink_queue = args.sink_queue.max(1);
    let shutdown = Shutdown::default();
    let engine = Engine::new(cfg, locator, tokio::runtime::Handle::current(), metrics).with_secrets(secrets);
    let engine_shutdown = shutdown.clone();
    let engine_thread = std::thread::Builder::new()
        .name("collection".into())
        .spawn(move || engine.run(config_rx, status_tx, engine_shutdown))?;

    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = engine_thread.join();
        let _ = done_tx.send(r.is_ok());
    });
    loop {
        tokio::select! {
            _ = term.recv() => on_signal(&shutdown, &backup_stop_tx),
            _ = int.recv() => on_signal(&shutdown, &backup_stop_tx),
            ok = &mut done_rx => {
                if let Some(task) = backup_task {
                    let _ = backup_stop_tx.send(true);
                    match tokio::time::timeout(args.shutdown_grace, task).await {
                        Ok(Ok(Err(e))) => tracing::error!(error = %e, "backup engine failed"),
                        Err(_) => tracing::warn!("backup engine did not finish within the grace period"),
                        _ => {}
                    }
                }
                tracing::info!("stopped");
                return if ok.unwrap_or(false) { Ok(()) } else { anyhow::bail!("collection engine panicked") };
            }
        }
    }
}

fn on_signal(shutdown: &Shutdown, backup_stop: &watch::Sender<bool>) {
    let _ = backup_stop.send(true);
    match shutdown.request() {
        1 => tracing::info!("signal: stopping gracefully (a second signal forces)"),
        _ => tracing::warn!("second signal: stopping now"),
    }
}

async fn log_status(mut rx: watch::Receiver<EngineStatus>) {
    while rx.changed().await.is_ok() {
        let s = rx.borrow_and_update().clone();
        tracing::info!(
            generation = ?s.observed_generation,
            targets = s.active_targets,
            files = s.active_files,
            errors = s.errors.len(),
            "status"
        );
        for e in &s.errors {
            tracing::warn!(target = %e.target, error = %e.message, "target error");
        }
    }
}

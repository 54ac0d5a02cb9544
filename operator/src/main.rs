use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tailor_operator::bench::{self, BenchSize};
use tailor_operator::controller::{self, Context, Settings};
use tailor_operator::leader::{self, LeaseSettings};
use tailor_operator::metrics::{self, Metrics};
use tailor_operator::{files, plan, render};
use tokio::sync::watch;

/// Tailor's operator.
#[derive(Parser)]
#[command(name = "tailor-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every CRD as YAML.
    Crds,
    /// Run the controller (in-cluster, or with KUBECONFIG).
    Run {
        /// Address of /metrics, /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_addr: SocketAddr,
        /// Namespace of the leader-election Lease (default: the client's namespace).
        #[arg(long, env = "POD_NAMESPACE")]
        lease_namespace: Option<String>,
        /// Name of the leader-election Lease.
        #[arg(long, default_value = "tailor-operator")]
        lease_name: String,
        /// This replica's identity in the Lease (default: the pod name or host name).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Changes arriving within this many milliseconds are rendered together.
        #[arg(long, default_value_t = 300)]
        debounce_ms: u64,
        /// Seconds between full passes.
        #[arg(long, default_value_t = 300)]
        resync_secs: u64,
        /// Seconds after which a Secret an output names is read again (rotation reaches its
        /// mirror within this time; Secrets are read one by one, never watched).
        #[arg(long, default_value_t = 60)]
        secret_refresh_secs: u64,
    },
    /// Render NodeLogConfigs and LogBackups from YAML files or folders of LogCollectionConfig,
    /// LogBackupPolicy, Pod and Node objects, offline; prints a multi-document YAML stream.
    Render {
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        paths: Vec<PathBuf>,
    },
    /// Render a synthetic cluster and print render time and peak memory.
    Bench {
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        #[arg(long, default_value_t = 30_000)]
        pods: usize,
        /// LogCollectionConfigs.
        #[arg(long, default_value_t = 300)]
        configs: usize,
        /// LogBackupPolicies.
        #[arg(long, default_value_t = 100)]
        policies: usize,
        #[arg(long, default_value_t = 100)]
        namespaces: usize,
        #[arg(long, default_value_t = 5)]
        iterations: usize,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds => print!("{}", tailor_crds::generate::crds_yaml()),
        Command::Render { paths } => render_files(&paths)?,
        Command::Bench { nodes, pods, configs, policies, namespaces, iterations } => {
            print_bench(BenchSize { nodes, pods, collections: configs, policies, namespaces }, iterations)
        }
        Command::Run {
            metrics_addr,
            lease_namespace,
            lease_name,
            identity,
            debounce_ms,
            resync_secs,
            secret_refresh_secs,
        } => {
            init_tracing();
            let secret_refresh = Duration::from_secs(secret_refresh_secs.max(1));
            let settings = Settings {
                debounce: Duration::from_millis(debounce_ms),
                resync: Duration::from_secs(resync_secs.max(1)),
                secret_refresh,
                secret_retry: secret_refresh.min(Duration::from_secs(10)),
                ..Settings::default()
            };
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(
                metrics_addr,
                lease_namespace,
                lease_name,
                identity,
                settings,
            ))?;
        }
    }
    Ok(())
}

fn render_files(paths: &[PathBuf]) -> anyhow::Result<()> {
    let input = files::load_paths(paths)?;
    let rendered = render::render(&input);
    let (nlcs, lbs) = plan::desired_objects(&rendered);
    let mut out = String::new();
    for nlc in &nlcs {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(nlc)?);
    }
    for lb in &lbs {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(lb)?);
    }
    print!("{out}");
    let scheduled_nodes: std::collections::BTreeSet<&str> =
        input.pods.iter().filter_map(|p| p.spec.as_ref()?.node_name.as_deref()).collect();
    for node in scheduled_nodes {
        if !input.nodes.iter().any(|n| n.name == node) {
            eprintln!("note: pods on node {node:?} are not rendered: no Node object named so in the input");
        }
    }
    for (key, summary) in &rendered.resources {
        if let Some(invalid) = &summary.invalid {
            eprintln!("{key}: invalid ({}): {}", invalid.reason, invalid.message);
        } else {
            eprintln!("{key}: {} pods on {} nodes", summary.pods, summary.nodes.len());
            for p in &summary.problems {
                eprintln!("  unmapped: {p}");
            }
        }
    }
    Ok(())
}

fn print_bench(size: BenchSize, iterations: usize) {
    println!(
        "synthetic cluster: {} nodes, {} pods, {} LogCollectionConfigs, {} LogBackupPolicies, {} namespaces",
        size.nodes, size.pods, size.collections, size.policies, size.namespaces
    );
    let r = bench::run(size, iterations);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("build input:      {:.1} ms", ms(r.build));
    println!(
        "render:           min {:.1} ms, median {:.1} ms, max {:.1} ms ({} runs)",
        ms(r.renders[0]),
        ms(r.renders[r.renders.len() / 2]),
        ms(r.renders[r.renders.len() - 1]),
        r.renders.len()
    );
    println!("diff (unchanged): {:.1} ms", ms(r.diff_unchanged));
    println!(
        "output:           {} NodeLogConfigs, {} LogBackups, {} collection + {} backup targets, {:.1} MiB YAML",
        r.node_configs,
        r.log_backups,
        r.collection_targets,
        r.backup_targets,
        r.yaml_bytes as f64 / (1024.0 * 1024.0)
    );
    match r.peak_rss_kib {
        Some(kib) => println!("peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS (VmHWM): unavailable"),
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).json().init();
}

async fn run(
    metrics_addr: SocketAddr,
    lease_namespace: Option<String>,
    lease_name: String,
    identity: Option<String>,
    settings: Settings,
) -> anyhow::Result<()> {
    // One TLS provider, chosen here: when another crate of the build also enables aws-lc-rs,
    // rustls cannot pick a default by itself and kube's client would panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default().await.context("connecting to the API server")?;
    let metrics = Arc::new(Metrics::new());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(signals(shutdown_tx));

    let mut http_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(metrics::serve(metrics_addr, metrics.clone(), async move {
        let _ = http_shutdown.wait_for(|s| *s).await;
    }));

    let identity = identity.unwrap_or_else(default_identity);
    let mut ctx = Context::new(client.clone(), metrics.clone(), &identity);
    let namespace = lease_namespace.unwrap_or_else(|| client.default_namespace().to_string());
    // Mirrors of output Secrets live next to the Lease, in the operator's own namespace.
    ctx.namespace = namespace.clone();
    let lease = LeaseSettings {
        namespace,
        name: lease_name,
        identity,
        duration: Duration::from_secs(15),
        renew_every: Duration::from_secs(5),
    };
    tracing::info!(identity = %lease.identity, namespace = %lease.namespace, "starting");
    let (leader_tx, leader_rx) = watch::channel(false);
    let mut leader_seen = leader_rx.clone();
    let leader_metrics = metrics.clone();
    tokio::spawn(async move {
        while leader_seen.changed().await.is_ok() {
            leader_metrics.leader.set(i64::from(*leader_seen.borrow_and_update()));
        }
    });
    let election = tokio::spawn(leader::run(client.clone(), lease, leader_tx, shutdown_rx.clone()));

    controller::run(ctx, settings, leader_rx, shutdown_rx).await;
    // Give the lease back so that another replica takes over at once.
    let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), server).await {
        return Err(e).context("metrics server");
    }
    tracing::info!("stopped");
    Ok(())
}

/// First SIGTERM/SIGINT: graceful shutdown; a second one: exit at once.
async fn signals(shutdown: watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for round in 0..2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if round == 0 {
            tracing::info!("shutting down");
            shutdown.send_replace(true);
        } else {
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        }
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

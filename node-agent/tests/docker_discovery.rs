//! Docker-mode discovery against the real engine: the published spec follows containers that
//! start, write, get renamed, stop and are removed, also across an engine outage (a socket proxy
//! that is cut and brought back), and the rootfs locator points at `MergedDir` while a container
//! runs and `UpperDir` once it stopped.

mod docker_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docker_support::{Engine, SOCKET, docker, wait_for};
use tailor_agent::docker::discovery::Discovery;
use tailor_agent::docker::{DockerClient, DockerConfig, DockerRootfs};
use tailor_agent::resolve::RootfsLocator;
use tailor_crds::node::{CollectionTarget, HostRootKind, InputKind, NodeLogConfigSpec};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

const LIMIT: Duration = Duration::from_secs(20);

type Latest = Arc<Mutex<Option<(i64, NodeLogConfigSpec)>>>;

/// Forwards a socket of ours to the engine's, and can be cut (every connection with it) to
/// play an engine restart.
struct Proxy {
    runtime: tokio::runtime::Runtime,
    path: PathBuf,
    tasks: Option<JoinSet<()>>,
}

impl Proxy {
    fn new(path: &Path) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        Proxy { runtime, path: path.to_path_buf(), tasks: None }
    }

    fn up(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _guard = self.runtime.enter();
        let listener = UnixListener::bind(&self.path).unwrap();
        let mut tasks = JoinSet::new();
        let conns = Arc::new(Mutex::new(JoinSet::new()));
        let conns2 = conns.clone();
        tasks.spawn(async move {
            let _keep = conns2.clone();
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                conns2.lock().unwrap().spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect(SOCKET).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
            }
        });
        // Connections die with the accept task: aborting it drops `conns` and so aborts them.
        tasks.spawn(async move {
            let _conns = conns;
            std::future::pending::<()>().await
        });
        self.tasks = Some(tasks);
    }

    fn down(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.abort_all();
            self.runtime.block_on(async { while tasks.join_next().await.is_some() {} });
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn target<'a>(spec: &'a NodeLogConfigSpec, id: &str) -> Option<&'a CollectionTarget> {
    spec.collections[0].targets.iter().find(|t| t.container.container_id.as_deref() == Some(id))
}

fn latest_spec(latest: &Latest) -> Option<NodeLogConfigSpec> {
    latest.lock().unwrap().as_ref().map(|(_, s)| s.clone())
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

#[test]
fn discovery_follows_containers_across_an_engine_outage() {
    let engine = Engine::new("disc");
    let vol = engine.volume("vol");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let mut proxy = Proxy::new(&socket);

    let config = DockerConfig::parse(&format!(
        r#"
resyncInterval: 5s
collections:
  - name: all
    selector: {{includeLabels: {{tailor.test: "{run}"}}}}
    sources: {{stdout: true, stderr: true, files: [{{path: /opt/logs/*.log}}, {{path: /data/*.log}}]}}
    metadata: {{labels: [svc]}}
    outputs: [{{name: local, type: file}}]
backups:
  - name: files
    selector: {{includeLabels: {{tailor.test: "{run}"}}}}
    sources: {{stdout: false, stderr: false, files: [{{path: /opt/logs/*.log}}]}}
    service: {{label: svc}}
"#,
        run = engine.run
    ))
    .unwrap();

    // Discovery starts while the engine is unreachable: it must wait, not fail.
    let latest: Latest = Arc::default();
    let sink = latest.clone();
    let locator = DockerRootfs::new("/", None);
    let client = DockerClient::from_host(&format!("unix://{}", socket.display())).unwrap();
    let discovery = Discovery::new(
        client,
        config,
        "test-node",
        locator.clone(),
        Box::new(move |generation, spec| *sink.lock().unwrap() = Some((generation, spec))),
    )
    .removed_linger(Duration::from_secs(1));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(discovery.run(async {
            let _ = stopped.await;
        }));
    });
    std::thread::sleep(Duration::from_millis(600));
    assert!(latest_spec(&latest).is_none(), "nothing to publish while the engine is unreachable");
    proxy.up();

    let script = "mkdir -p /opt/logs; for i in $(seq 1 20); do echo \"out $i\"; echo \"file $i\" >> /opt/logs/a.log; \
                  echo \"vol $i\" >> /data/v.log; done; sleep 300";
    let a = engine.start("a", &["-v", &format!("{vol}:/data"), "--label", "svc=shop"], script);
    // Started, not just created: the json-file log path only exists from the start on.
    let spec = wait_for("container a started in the spec", LIMIT, || {
        latest_spec(&latest)
            .filter(|s| target(s, &a).is_some_and(|t| !t.container.terminated && t.inputs.len() == 3))
    });
    let t = target(&spec, &a).unwrap();
    assert_eq!(t.key(), format!("docker/{0}/{0}", engine.name("a")));
    assert_eq!(t.container.runtime.as_deref(), Some("docker"));
    assert_eq!(t.fields.get("svc").map(String::as_str), Some("shop"));
    let kinds: Vec<(InputKind, HostRootKind)> = t.inputs.iter().map(|i| (i.kind, i.root.kind)).collect();
    assert_eq!(
        kinds,
        [
            (InputKind::Stdio, HostRootKind::DockerJson),
            (InputKind::File, HostRootKind::ContainerRootfs),
            (InputKind::File, HostRootKind::HostPath),
        ]
    );
    // Each input's root holds what the container wrote.
    let json_dir = PathBuf::from(t.inputs[0].root.host_dir.as_deref().unwrap());
    wait_for("20 lines in the json-file log", LIMIT, || {
        (lines(&json_dir.join(format!("{a}-json.log"))) == 20).then_some(())
    });
    let merged = locator.rootfs("docker", &a).expect("a running container has a rootfs");
    assert!(merged.ends_with("merged"), "{merged:?}");
    wait_for("20 lines in the writable layer", LIMIT, || {
        (lines(&merged.join("opt/logs/a.log")) == 20).then_some(())
    });
    let volume_dir = PathBuf::from(t.inputs[2].root.host_dir.as_deref().unwrap());
    assert_eq!(t.inputs[2].path, "*.log");
    wait_for("20 lines in the volume", LIMIT, || (lines(&volume_dir.join("v.log")) == 20).then_some(()));
    let backup = &spec.backups[0];
    assert_eq!(backup.targets.len(), 1);
    assert_eq!(backup.targets[0].destination, format!("shop/{}", engine.name("a")));

    // Renamed: the target follows the new name.
    docker(&["rename", &engine.name("a"), &engine.name("a2")]);
    wait_for("the rename", LIMIT, || {
        latest_spec(&latest).filter(|s| target(s, &a).is_some_and(|t| t.pod.name == engine.name("a2")))
    });

    // The engine goes away; meanwhile a stops and b starts. Both show up once it is back.
    proxy.down();
    docker(&["stop", "-t", "0", &engine.name("a2")]);
    let b = engine.start("b", &[], "echo hello; sleep 300");
    std::thread::sleep(Duration::from_millis(500));
    proxy.up();
    let spec = wait_for("a stopped and b started after the outage", LIMIT, || {
        latest_spec(&latest).filter(|s| {
            target(s, &a).is_some_and(|t| t.container.terminated)
                && target(s, &b).is_some_and(|t| !t.container.terminated)
        })
    });
    assert_eq!(spec.collections[0].targets.len(), 2);
    let upper = locator.rootfs("docker", &a).expect("a stopped container keeps its upper dir");
    assert!(upper.ends_with("diff"), "{upper:?}");
    assert_eq!(lines(&upper.join("opt/logs/a.log")), 20);

    // Removed: at once out of the locator, and out of the spec once it had time to be drained.
    docker(&["rm", "-f", &engine.name("a2")]);
    wait_for("a out of the locator", LIMIT, || locator.rootfs("docker", &a).is_none().then_some(()));
    assert!(target(&latest_spec(&latest).unwrap(), &a).is_some_and(|t| t.container.terminated));
    wait_for("a out of the spec", LIMIT, || latest_spec(&latest).filter(|s| target(s, &a).is_none()));
    let generation = latest.lock().unwrap().as_ref().unwrap().0;
    assert!(generation >= 4, "every change is a new generation, got {generation}");

    stop.send(()).unwrap();
    runner.join().unwrap();
    proxy.down();
}

//! A container whose writable layer holds symlinks at host files (`/opt/logs/x.log ->
//! /etc/shadow`, a relative climb, a directory link to `/etc`) yields nothing from the host:
//! its `containerRootfs` input, located by the docker locator, resolves inside the container's
//! layer, both while it runs (`MergedDir`) and once it stopped (`UpperDir`).

mod docker_support;

use std::path::Path;
use std::time::Duration;

use docker_support::{Engine, SOCKET, docker, wait_for};
use tailor_agent::docker::model::Container;
use tailor_agent::docker::translate::container_inputs;
use tailor_agent::docker::{DockerClient, DockerRootfs};
use tailor_agent::resolve::{RootfsLocator, expand_input};
use tailor_crds::common::LogSources;
use tailor_crds::node::HostRootKind;

const LIMIT: Duration = Duration::from_secs(20);

fn inspect(id: &str) -> Container {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = DockerClient::from_host(SOCKET).unwrap();
    Container::from_inspect(rt.block_on(client.inspect(id)).unwrap())
}

/// Every file the rootfs inputs match, with its content.
fn collected(locator: &DockerRootfs, c: &Container) -> Vec<(String, Vec<u8>)> {
    let sources: LogSources = serde_yaml_ng::from_str(
        "{stdout: false, stderr: false, files: [{path: /opt/logs/*.log}, {path: /opt/logs/*/shadow}, {path: /opt/logs/**}]}",
    )
    .unwrap();
    let root = locator.rootfs("docker", &c.id).expect("the container has a rootfs");
    let mut out = Vec::new();
    for input in container_inputs(&sources, c) {
        assert_eq!(input.root.kind, HostRootKind::ContainerRootfs);
        let (_, expansion) = expand_input(&input, Path::new("/"), locator).unwrap();
        for f in expansion.files {
            assert!(f.path.starts_with(&root), "{:?} resolved outside {root:?}", f.path);
            out.push((f.rel.display().to_string(), std::fs::read(&f.path).unwrap()));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn hostile_symlinks_in_a_layer_yield_nothing_from_the_host() {
    let shadow = std::fs::read("/etc/shadow").expect("the test compares against the host's /etc/shadow");
    assert!(!shadow.is_empty());
    let engine = Engine::new("hostile");
    let id = engine.start(
        "evil",
        &[],
        "mkdir -p /opt/logs; ln -s /etc/shadow /opt/logs/x.log; ln -s ../../../../../../etc/shadow /opt/logs/y.log; \
         ln -s /etc /opt/logs/etc; echo fine > /opt/logs/good.log; touch /tmp/ready; sleep 300",
    );
    let locator = DockerRootfs::new("/", None);
    let c = wait_for("the container's layer", LIMIT, || {
        let c = inspect(&id);
        locator.update(&c);
        let root = locator.rootfs("docker", &id)?;
        root.join("tmp/ready").exists().then_some(c)
    });
    let expected = vec![("opt/logs/good.log".to_string(), b"fine\n".to_vec())];
    assert_eq!(collected(&locator, &c), expected, "while running");
    // On a Kubernetes node (no discovery) the locator asks the engine itself.
    let on_demand = DockerRootfs::new("/", Some(SOCKET.into()));
    assert_eq!(on_demand.rootfs("docker", &id), locator.rootfs("docker", &id));
    assert_eq!(on_demand.rootfs("docker", &"0".repeat(64)), None);

    docker(&["stop", "-t", "0", &engine.name("evil")]);
    let c = inspect(&id);
    assert!(c.terminated());
    locator.update(&c);
    assert!(locator.rootfs("docker", &id).unwrap().ends_with("diff"));
    assert_eq!(collected(&locator, &c), expected, "once stopped");
    assert!(DockerRootfs::new("/", Some(SOCKET.into())).rootfs("docker", &id).unwrap().ends_with("diff"));
}

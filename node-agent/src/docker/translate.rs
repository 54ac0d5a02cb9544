//! Discovered containers + the docker config file → `NodeLogConfigSpec`: the same per-node
//! format the operator renders, so that the collection and backup engines apply docker mode
//! unchanged. Pure: no engine, no filesystem.

use std::collections::{BTreeMap, BTreeSet};

use tailor_crds::common::{FileSource, LogSources};
use tailor_crds::node::{
    BackupTarget, CollectionTarget, ContainerInfo, FORMAT_VERSION, HostRoot, HostRootKind, Input, InputKind,
    NodeBackup, NodeCollection, NodeLogConfigSpec, PodInfo, SourceRef, StdStream,
};

use super::config::{
    ContainerSelector, DEFAULT_SERVICE_LABELS, DockerBackup, DockerCollection, DockerConfig,
};
use super::model::{Container, Mount, PLAIN_NAMESPACE};

/// The runtime name on docker-mode targets and `containerRootfs` roots.
pub const RUNTIME: &str = "docker";

/// Renders the spec for the containers the engine has now.
pub fn render_spec(config: &DockerConfig, containers: &[Container], node: &str) -> NodeLogConfigSpec {
    let mut sorted: Vec<&Container> = containers.iter().collect();
    sorted.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    let names = container_names(&sorted);

    let mut collections: Vec<NodeCollection> =
        config.collections.iter().map(|c| render_collection(c, &sorted, &names)).collect();
    collections.sort_by(|a, b| a.source.cmp(&b.source));
    let mut backups: Vec<NodeBackup> =
        config.backups.iter().map(|b| render_backup(b, &sorted, &names, node)).collect();
    backups.sort_by(|a, b| a.source.cmp(&b.source));

    let target_count = collections.iter().map(|c| c.targets.len()).sum::<usize>()
        + backups.iter().map(|b| b.targets.len()).sum::<usize>();
    NodeLogConfigSpec {
        format_version: FORMAT_VERSION,
        target_count: u32::try_from(target_count).unwrap_or(u32::MAX),
        collections,
        backups,
    }
}

/// Whether a selector picks a container: labels with the custom resources' semantics, then
/// container name, image and environment.
pub fn selects(selector: &ContainerSelector, c: &Container) -> bool {
    let pod = selector.pod_selector();
    pod.matches_labels(&c.labels)
        && pod.containers.allows(c.container_name())
        && (selector.images.is_empty() || selector.images.iter().any(|p| wildcard_match(p, &c.image)))
        && selector.include_env.iter().all(|(k, v)| c.env.get(k) == Some(v))
        && !selector.exclude_env.iter().any(|(k, v)| c.env.get(k).is_some_and(|have| v == "*" || have == v))
}

fn sort_key(c: &Container) -> (&str, &str, &str, bool, &str) {
    // The running container of a name comes first, so that it keeps the plain name.
    (c.namespace(), c.pod_name(), c.container_name(), !c.running, &c.id)
}

/// Target container names, unique per pod: on cri-dockerd nodes the exited attempt of a
/// container lingers next to its restart under the same labels; both must be drained, so the
/// older ones get their short ID appended.
fn container_names(sorted: &[&Container]) -> BTreeMap<String, String> {
    let mut taken = BTreeSet::new();
    let mut names = BTreeMap::new();
    for c in sorted {
        let key = (c.namespace().to_string(), c.pod_name().to_string(), c.container_name().to_string());
        let name = if taken.insert(key) {
            c.container_name().to_string()
        } else {
            format!("{}-{}", c.container_name(), short_id(&c.id))
        };
        names.insert(c.id.clone(), name);
    }
    names
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn source_ref(name: &str) -> SourceRef {
    SourceRef { namespace: PLAIN_NAMESPACE.into(), name: name.into(), generation: 0 }
}

fn pod_info(c: &Container) -> PodInfo {
    PodInfo {
        namespace: c.namespace().into(),
        name: c.pod_name().into(),
        uid: c.pod_uid().into(),
        workload: None,
    }
}

fn container_info(c: &Container, names: &BTreeMap<String, String>) -> ContainerInfo {
    ContainerInfo {
        name: names.get(&c.id).cloned().unwrap_or_else(|| c.container_name().into()),
        image: c.image.clone(),
        container_id: Some(c.id.clone()),
        runtime: Some(RUNTIME.into()),
        restart_count: c.restart_count,
        terminated: c.terminated(),
    }
}

fn render_collection(
    spec: &DockerCollection,
    sorted: &[&Container],
    names: &BTreeMap<String, String>,
) -> NodeCollection {
    let targets = sorted
        .iter()
        .filter(|c| selects(&spec.selector, c))
        .map(|c| {
            let mut fields = BTreeMap::new();
            fields.insert("container_id".to_string(), c.id.clone());
            fields.insert("container_name".to_string(), c.name.clone());
            for key in &spec.metadata.labels {
                if let Some(v) = c.labels.get(key) {
                    fields.insert(key.clone(), v.clone());
                }
            }
            for key in &spec.metadata.env {
                if let Some(v) = c.env.get(key) {
                    fields.insert(key.clone(), v.clone());
                }
            }
            fields.extend(spec.metadata.fields.iter().map(|(k, v)| (k.clone(), v.clone())));
            CollectionTarget {
                pod: pod_info(c),
                container: container_info(c, names),
                inputs: container_inputs(&spec.sources, c),
                fields,
            }
        })
        .collect();
    NodeCollection {
        source: source_ref(&spec.name),
        start: spec.start,
        multiline: spec.multiline.clone(),
        parse: spec.parse.clone(),
        filters: spec.filters.clone(),
        outputs: spec.outputs.clone(),
        targets,
    }
}

fn render_backup(
    spec: &DockerBackup,
    sorted: &[&Container],
    names: &BTreeMap<String, String>,
    node: &str,
) -> NodeBackup {
    let mut targets: Vec<BackupTarget> = sorted
        .iter()
        .filter(|c| selects(&spec.selector, c) && (spec.keep_terminated || !c.terminated()))
        .map(|c| BackupTarget {
            pod: pod_info(c),
            container: container_info(c, names),
            inputs: container_inputs(&spec.sources, c),
            destination: render_layout(&spec.layout, &placeholders(spec, c, node)),
        })
        .collect();
    make_destinations_unique(&mut targets);
    NodeBackup {
        source: source_ref(&spec.name),
        log_backup: spec.name.clone(),
        interval: spec.interval.clone(),
        retention: spec.retention.clone(),
        keep_terminated: spec.keep_terminated,
        compression: spec.compression,
        targets,
    }
}

/// The service of a container for `{service}`.
pub fn service_of(spec: &DockerBackup, c: &Container) -> String {
    let from_label = spec.service.label.as_ref().and_then(|k| c.labels.get(k));
    let from_env = spec.service.env.as_ref().and_then(|k| c.env.get(k));
    from_label
        .or(from_env)
        .or_else(|| DEFAULT_SERVICE_LABELS.iter().find_map(|k| c.labels.get(*k)))
        .cloned()
        .unwrap_or_else(|| c.name.clone())
}

fn placeholders(spec: &DockerBackup, c: &Container, node: &str) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("service", service_of(spec, c)),
        ("pod-or-container-name", if c.in_pod() { c.pod_name().to_string() } else { c.name.clone() }),
        ("namespace", c.namespace().to_string()),
        ("pod", c.pod_name().to_string()),
        ("container", c.container_name().to_string()),
        ("container-name", c.name.clone()),
        ("container-id", short_id(&c.id).to_string()),
        ("image", c.image.clone()),
        ("node", node.to_string()),
    ])
}

/// Fills a layout; every value becomes exactly one safe path component, so no container label
/// or name can move a backup outside its policy's tree.
pub fn render_layout(layout: &str, values: &BTreeMap<&'static str, String>) -> String {
    let mut out = String::with_capacity(layout.len() + 32);
    let mut rest = layout;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                let key = &rest[open + 1..open + close];
                match values.get(key) {
                    Some(v) => out.push_str(&path_component(v)),
                    None => out.push_str(&rest[open..=open + close]),
                }
                rest = &rest[open + close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(|p| if p == ".." { "_" } else { p })
        .collect::<Vec<_>>()
        .join("/")
}

fn path_component(value: &str) -> String {
    let cleaned: String =
        value.chars().map(|ch| if ch == '/' || ch == '\\' || ch.is_control() { '_' } else { ch }).collect();
    match cleaned.as_str() {
        "" | "." | ".." => "_".into(),
        _ => cleaned,
    }
}

/// Replicas never write into one directory: when a layout renders the same destination for
/// several containers (two containers of one pod, a layout without a per-replica part), the
/// container name, then its short ID, is appended.
fn make_destinations_unique(targets: &mut [BackupTarget]) {
    for pass in 0..2 {
        let mut count: BTreeMap<String, usize> = BTreeMap::new();
        for t in targets.iter() {
            *count.entry(t.destination.clone()).or_default() += 1;
        }
        for t in targets.iter_mut() {
            if count.get(&t.destination).copied().unwrap_or(0) > 1 {
                let suffix = match pass {
                    0 => path_component(&t.container.name),
                    _ => short_id(t.container.container_id.as_deref().unwrap_or_default()).to_string(),
                };
                t.destination = format!("{}/{}", t.destination, suffix);
            }
        }
    }
}

/// Where a container's selected logs are on the host.
pub fn container_inputs(sources: &LogSources, c: &Container) -> Vec<Input> {
    let mut inputs = Vec::new();
    let streams: Vec<StdStream> = [(sources.stdout, StdStream::Stdout), (sources.stderr, StdStream::Stderr)]
        .into_iter()
        .filter_map(|(on, s)| on.then_some(s))
        .collect();
    if let Some(log_path) = c.log_path.as_deref().filter(|_| !streams.is_empty())
        && let Some((dir, file)) = log_path.rsplit_once('/')
    {
        inputs.push(Input {
            kind: InputKind::Stdio,
            streams,
            container_path: None,
            root: HostRoot {
                kind: HostRootKind::DockerJson,
                host_dir: Some(if dir.is_empty() { "/".into() } else { dir.into() }),
                container_id: Some(c.id.clone()),
                runtime: None,
            },
            // `<id>-json.log` and the engine's rotations `<id>-json.log.1`, `.2`, ...
            path: format!("{file}*"),
        });
    }
    for file in &sources.files {
        for input in file_inputs(file, c) {
            if !inputs.contains(&input) {
                inputs.push(input);
            }
        }
    }
    inputs
}

/// A file source maps to the longest mount that covers its literal prefix (else the writable
/// layer), plus every deeper mount the pattern can reach: a volume at `/opt/logs` is not part
/// of the writable layer, so `/opt/**/*.log` must also look there.
fn file_inputs(file: &FileSource, c: &Container) -> Vec<Input> {
    let pattern = components(&file.path);
    let literal = pattern.iter().take_while(|p| !is_glob(p)).count();
    let covering = c
        .mounts
        .iter()
        .filter(|m| {
            let dest = components(&m.destination);
            dest.len() <= literal && dest[..] == pattern[..dest.len()]
        })
        .max_by_key(|m| components(&m.destination).len());
    let covered_depth = covering.map_or(0, |m| components(&m.destination).len());
    let mut inputs = vec![match covering {
        Some(m) => mount_input(file, m, &pattern[covered_depth..]),
        None => Input {
            kind: InputKind::File,
            container_path: Some(file.path.clone()),
            streams: Vec::new(),
            root: HostRoot {
                kind: HostRootKind::ContainerRootfs,
                host_dir: None,
                container_id: Some(c.id.clone()),
                runtime: Some(RUNTIME.into()),
            },
            path: pattern.join("/"),
        },
    }];
    let mut deeper: Vec<&Mount> =
        c.mounts.iter().filter(|m| components(&m.destination).len() > covered_depth).collect();
    deeper.sort_by(|a, b| a.destination.cmp(&b.destination));
    for m in deeper {
        if let Some(rest) = pattern_below(&pattern, &components(&m.destination)) {
            inputs.push(mount_input(file, m, &rest));
        }
    }
    inputs
}

fn mount_input(file: &FileSource, m: &Mount, rest: &[&str]) -> Input {
    Input {
        kind: InputKind::File,
        container_path: Some(file.path.clone()),
        streams: Vec::new(),
        root: HostRoot {
            kind: HostRootKind::HostPath,
            host_dir: Some(m.source.clone()),
            container_id: None,
            runtime: None,
        },
        path: rest.join("/"),
    }
}

/// The part of `pattern` that applies inside directory `dir`, when the pattern can reach below
/// it: components must match one by one until a `**`, which carries on inside.
fn pattern_below<'a>(pattern: &[&'a str], dir: &[&str]) -> Option<Vec<&'a str>> {
    for (i, d) in dir.iter().enumerate() {
        let p = pattern.get(i)?;
        if *p == "**" {
            return Some(pattern[i..].to_vec());
        }
        if !wildcard_match(p, d) {
            return None;
        }
    }
    (pattern.len() > dir.len()).then(|| pattern[dir.len()..].to_vec())
}

fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|p| !p.is_empty() && *p != ".").collect()
}

fn is_glob(component: &str) -> bool {
    component.contains(['*', '?', '['])
}

/// `*` (any run, including empty) and `?` (one character); `[..]` classes are matched
/// literally here, which only costs a deeper mount being missed, never a wrong one included.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((bp, bt)) = backtrack {
            pi = bp + 1;
            ti = bt + 1;
            backtrack = Some((bp, bt + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&ch| ch == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::model::k8s_label;

    fn container(id: &str, name: &str) -> Container {
        Container {
            id: format!("{id:0<64}"),
            name: name.into(),
            image: "busybox:1".into(),
            status: "running".into(),
            running: true,
            log_path: Some(format!("/var/lib/docker/containers/{id:0<64}/{id:0<64}-json.log")),
            merged_dir: Some("/var/lib/docker/overlay2/l/merged".into()),
            upper_dir: Some("/var/lib/docker/overlay2/l/diff".into()),
            ..Default::default()
        }
    }

    fn with_labels(mut c: Container, labels: &[(&str, &str)]) -> Container {
        c.labels.extend(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        c
    }

    fn config(yaml: &str) -> DockerConfig {
        DockerConfig::parse(yaml).unwrap()
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("busybox:*", "busybox:1"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "aXXbYYc"));
        assert!(wildcard_match("a?c", "abc"));
        assert!(!wildcard_match("a?c", "ac"));
        assert!(!wildcard_match("busybox:*", "alpine:3"));
        assert!(wildcard_match("*.log", "x.log"));
        assert!(!wildcard_match("*.log", "x.log.1"));
    }

    #[test]
    fn selection_uses_labels_names_images_and_env() {
        let cfg = config(
            r#"
collections:
  - name: shop
    selector:
      includeLabels: {io.kubernetes.pod.namespace: shop}
      containers: {exclude: [istio-proxy]}
      images: ["registry/*"]
      includeEnv: {TENANT: acme}
      excludeEnv: {LOGS: "*"}
    outputs: [{name: o, type: stdout}]
"#,
        );
        let sel = &cfg.collections[0].selector;
        let mut c = with_labels(
            container("a", "k8s_app_web-0_shop_uid_0"),
            &[
                (k8s_label::POD_NAMESPACE, "shop"),
                (k8s_label::POD_NAME, "web-0"),
                (k8s_label::CONTAINER_NAME, "app"),
            ],
        );
        c.image = "registry/web:2".into();
        c.env.insert("TENANT".into(), "acme".into());
        assert!(selects(sel, &c));

        let mut other_ns = c.clone();
        other_ns.labels.insert(k8s_label::POD_NAMESPACE.into(), "dev".into());
        assert!(!selects(sel, &other_ns));
        let mut sidecar = c.clone();
        sidecar.labels.insert(k8s_label::CONTAINER_NAME.into(), "istio-proxy".into());
        assert!(!selects(sel, &sidecar));
        let mut image = c.clone();
        image.image = "busybox:1".into();
        assert!(!selects(sel, &image));
        let mut tenant = c.clone();
        tenant.env.insert("TENANT".into(), "other".into());
        assert!(!selects(sel, &tenant));
        let mut muted = c.clone();
        muted.env.insert("LOGS".into(), "".into());
        assert!(!selects(sel, &muted));
    }

    #[test]
    fn json_file_stdout_and_writable_layer_and_volume_inputs() {
        let mut c = container("abc", "web");
        c.mounts = vec![Mount {
            kind: "volume".into(),
            source: "/var/lib/docker/volumes/data/_data".into(),
            destination: "/data".into(),
        }];
        let sources: LogSources = serde_yaml_ng::from_str(
            "{stdout: true, stderr: false, files: [{path: /opt/logs/*.log}, {path: /data/app/*.log}]}",
        )
        .unwrap();
        let inputs = container_inputs(&sources, &c);
        assert_eq!(inputs.len(), 3);
        assert_eq!(inputs[0].kind, InputKind::Stdio);
        assert_eq!(inputs[0].streams, [StdStream::Stdout]);
        assert_eq!(inputs[0].root.kind, HostRootKind::DockerJson);
        assert_eq!(
            inputs[0].root.host_dir.as_deref(),
            Some(format!("/var/lib/docker/containers/{}", c.id).as_str())
        );
        assert_eq!(inputs[0].path, format!("{}-json.log*", c.id));
        assert_eq!(inputs[1].root.kind, HostRootKind::ContainerRootfs);
        assert_eq!(inputs[1].root.runtime.as_deref(), Some(RUNTIME));
        assert_eq!(inputs[1].root.container_id.as_deref(), Some(c.id.as_str()));
        assert_eq!(inputs[1].path, "opt/logs/*.log");
        assert_eq!(inputs[1].container_path.as_deref(), Some("/opt/logs/*.log"));
        assert_eq!(inputs[2].root.kind, HostRootKind::HostPath);
        assert_eq!(inputs[2].root.host_dir.as_deref(), Some("/var/lib/docker/volumes/data/_data"));
        assert_eq!(inputs[2].path, "app/*.log");
    }

    #[test]
    fn a_glob_reaches_into_deeper_mounts_and_the_longest_mount_wins() {
        let mut c = container("abc", "web");
        c.mounts = vec![
            Mount { kind: "bind".into(), source: "/srv/opt".into(), destination: "/opt".into() },
            Mount { kind: "volume".into(), source: "/v/logs".into(), destination: "/opt/app/logs".into() },
            Mount { kind: "volume".into(), source: "/v/other".into(), destination: "/srv".into() },
        ];
        let file = FileSource { path: "/opt/**/*.log".into() };
        let inputs = file_inputs(&file, &c);
        let roots: Vec<(&str, &str)> =
            inputs.iter().map(|i| (i.root.host_dir.as_deref().unwrap(), i.path.as_str())).collect();
        assert_eq!(roots, [("/srv/opt", "**/*.log"), ("/v/logs", "**/*.log")]);

        let file = FileSource { path: "/opt/app/logs/a.log".into() };
        let inputs = file_inputs(&file, &c);
        assert_eq!(inputs.len(), 1);
        assert_eq!((inputs[0].root.host_dir.as_deref(), inputs[0].path.as_str()), (Some("/v/logs"), "a.log"));

        let file = FileSource { path: "/opt/*/logs/*.log".into() };
        let inputs = file_inputs(&file, &c);
        assert_eq!(inputs[1].path, "*.log");
    }

    #[test]
    fn stdio_needs_the_json_file_driver() {
        let mut c = container("abc", "web");
        c.log_path = None;
        assert!(container_inputs(&LogSources::default(), &c).is_empty());
    }

    #[test]
    fn renders_collections_with_metadata_and_terminated_containers() {
        let cfg = config(
            r#"
collections:
  - name: all
    metadata: {labels: [team], env: [TENANT], fields: {site: lab}}
    outputs: [{name: o, type: file}]
"#,
        );
        let mut a = with_labels(container("a", "web-1"), &[("team", "blue")]);
        a.env.insert("TENANT".into(), "acme".into());
        let mut b = container("b", "batch");
        b.status = "exited".into();
        b.running = false;
        let spec = render_spec(&cfg, &[a.clone(), b.clone()], "host-1");
        assert_eq!(spec.format_version, FORMAT_VERSION);
        assert_eq!(spec.target_count, 2);
        let targets = &spec.collections[0].targets;
        assert_eq!(
            targets.iter().map(|t| t.key()).collect::<Vec<_>>(),
            ["docker/batch/batch", "docker/web-1/web-1"]
        );
        assert!(targets[0].container.terminated);
        assert_eq!(targets[0].container.runtime.as_deref(), Some("docker"));
        let f = &targets[1].fields;
        assert_eq!(f.get("team").map(String::as_str), Some("blue"));
        assert_eq!(f.get("TENANT").map(String::as_str), Some("acme"));
        assert_eq!(f.get("site").map(String::as_str), Some("lab"));
        assert_eq!(f.get("container_id"), Some(&a.id));
        assert_eq!(targets[1].pod.uid, a.id);
        // Deterministic whatever the discovery order.
        assert_eq!(render_spec(&cfg, &[b, a], "host-1"), spec);
    }

    #[test]
    fn cri_dockerd_containers_use_the_pod_labels_and_stay_unique() {
        let cfg = config("collections: [{name: all, outputs: [{name: o, type: file}]}]");
        let labels = [
            (k8s_label::POD_NAMESPACE, "shop"),
            (k8s_label::POD_NAME, "web-0"),
            (k8s_label::POD_UID, "uid-1"),
            (k8s_label::CONTAINER_NAME, "app"),
        ];
        let running = with_labels(container("bbb", "k8s_app_web-0_shop_uid-1_1"), &labels);
        let mut exited = with_labels(container("aaa", "k8s_app_web-0_shop_uid-1_0"), &labels);
        exited.status = "exited".into();
        exited.running = false;
        let spec = render_spec(&cfg, &[exited.clone(), running], "n");
        let t = &spec.collections[0].targets;
        assert_eq!(t[0].key(), "shop/web-0/app");
        assert!(!t[0].container.terminated);
        assert_eq!(t[1].key(), format!("shop/web-0/app-{}", &exited.id[..12]));
        assert!(t[1].container.terminated);
        assert_eq!(t[0].pod.uid, "uid-1");
    }

    #[test]
    fn backup_layout_service_and_replicas() {
        let cfg = config(
            r#"
backups:
  - name: opt
    sources: {stdout: false, stderr: false, files: [{path: /opt/logs/*.log}]}
    service: {label: svc, env: SERVICE}
  - name: flat
    layout: "{service}"
    keepTerminated: false
"#,
        );
        let r1 = with_labels(container("a1", "web-1"), &[("svc", "shop/web")]);
        let mut r2 = container("a2", "web-2");
        r2.env.insert("SERVICE".into(), "..".into());
        let mut r3 = with_labels(container("a3", "web-3"), &[("com.docker.compose.service", "web")]);
        r3.status = "exited".into();
        let spec = render_spec(&cfg, &[r1, r2, r3], "n");
        let flat = &spec.backups[0];
        let opt = &spec.backups[1];
        let dest: Vec<&str> = opt.targets.iter().map(|t| t.destination.as_str()).collect();
        assert_eq!(dest, ["shop_web/web-1", "_/web-2", "web/web-3"]);
        assert_eq!(opt.targets[0].inputs.len(), 1);
        assert_eq!(opt.log_backup, "opt");
        // keepTerminated: false leaves the exited one out; no service source: the container name.
        let dest: Vec<&str> = flat.targets.iter().map(|t| t.destination.as_str()).collect();
        assert_eq!(dest, ["web-1", "web-2"]);
    }

    #[test]
    fn same_destination_gets_the_container_name_appended() {
        let cfg = config("backups: [{name: b, layout: 'all'}]");
        let spec = render_spec(&cfg, &[container("a", "x"), container("b", "y")], "n");
        let dest: Vec<&str> = spec.backups[0].targets.iter().map(|t| t.destination.as_str()).collect();
        assert_eq!(dest, ["all/x", "all/y"]);
    }

    #[test]
    fn layouts_never_escape() {
        let values = BTreeMap::from([("a", "../../etc".to_string()), ("b", "..".to_string())]);
        assert_eq!(render_layout("{a}/{b}/{unknown}/./x/../", &values), ".._.._etc/_/{unknown}/x/_");
        assert_eq!(render_layout("/{a}", &values), ".._.._etc");
    }
}

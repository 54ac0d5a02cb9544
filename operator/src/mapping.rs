//! Where a container's logs are on the host: the mapping table of DESIGN.md, as pure functions.
//!
//! | source | root | path |
//! |---|---|---|
//! | stdout/stderr | `podLogs` `/var/log/pods/<ns>_<pod>_<uid>/<container>` | `*.log` |
//! | file in an emptyDir volume | `emptyDir` `/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>` | `<subPath>/<rest>` |
//! | file in a hostPath volume | `hostPath` `<hostPath.path>` | `<subPath>/<rest>` |
//! | any other file | `containerRootfs` (container ID + runtime) | the container path without its leading `/` |
//!
//! The subPath stays in `path`, not in the root: resolution is confined to the volume the
//! kubelet created, so a subPath that is a symlink cannot lead the agent out of the volume.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, Volume, VolumeMount};
use tailor_crds::LogSources;
use tailor_crds::node::{HostRoot, HostRootKind, Input, InputKind, StdStream};

/// Where the kubelet keeps CRI log files.
pub const POD_LOGS_DIR: &str = "/var/log/pods";
/// Where the kubelet keeps pods' volumes.
pub const KUBELET_PODS_DIR: &str = "/var/lib/kubelet/pods";

/// A container path or pod field that cannot be mapped safely.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("container path {path:?} is not absolute")]
    NotAbsolute { path: String },
    #[error("container path {path:?} names no file")]
    NoFile { path: String },
    #[error("{what} {path:?} contains '..'")]
    ParentDir { what: &'static str, path: String },
    #[error("{what} {value:?} is not a safe path segment")]
    UnsafeName { what: &'static str, value: String },
    #[error("{path:?} is on volume {volume:?} which is not declared in the pod")]
    MissingVolume { path: String, volume: String },
    #[error("{path:?} is on volume {volume:?}, a kind Tailor cannot map (only emptyDir and hostPath)")]
    UnsupportedVolume { path: String, volume: String },
    #[error("{path:?} names the mount point of volume {volume:?} itself, not files in it")]
    MountPoint { path: String, volume: String },
    #[error("subPathExpr {expr:?} of volume {volume:?} uses a variable without a literal value")]
    SubPathExpr { expr: String, volume: String },
}

/// A pod's identity as it appears in host paths.
#[derive(Clone, Copy, Debug)]
pub struct PodIds<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

/// The stdio input of a container, if the sources ask for stdout or stderr.
pub fn stdio_input(
    pod: PodIds<'_>,
    container: &str,
    sources: &LogSources,
) -> Result<Option<Input>, MappingError> {
    let streams: Vec<StdStream> = [(sources.stdout, StdStream::Stdout), (sources.stderr, StdStream::Stderr)]
        .into_iter()
        .filter_map(|(on, s)| on.then_some(s))
        .collect();
    if streams.is_empty() {
        return Ok(None);
    }
    let dir = format!(
        "{POD_LOGS_DIR}/{}_{}_{}/{}",
        segment("namespace", pod.namespace)?,
        segment("pod name", pod.name)?,
        segment("pod uid", pod.uid)?,
        segment("container name", container)?
    );
    Ok(Some(Input {
        kind: InputKind::Stdio,
        streams,
        container_path: None,
        root: HostRoot {
            kind: HostRootKind::PodLogs,
            host_dir: Some(dir),
            container_id: None,
            runtime: None,
        },
        path: "*.log".into(),
    }))
}

/// The input of a file source: the volume with the longest mount path that covers the path
/// (as the kubelet mounts them), else the container's writable layer.
pub fn file_input(
    pod: &Pod,
    uid: &str,
    container: &Container,
    status: Option<&ContainerStatus>,
    container_path: &str,
) -> Result<Input, MappingError> {
    let parts = clean_components("container path", container_path)?;
    if parts.is_empty() {
        return Err(MappingError::NoFile { path: container_path.to_string() });
    }
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    let mut best: Option<(&VolumeMount, Vec<&str>)> = None;
    for m in mounts {
        let Ok(mount_parts) = clean_components("mountPath", &m.mount_path) else { continue };
        let covers = mount_parts.len() <= parts.len() && mount_parts.iter().zip(&parts).all(|(a, b)| a == b);
        if covers && best.as_ref().is_none_or(|(_, b)| mount_parts.len() > b.len()) {
            best = Some((m, mount_parts));
        }
    }
    let file = |root: HostRoot, path: String| Input {
        kind: InputKind::File,
        streams: Vec::new(),
        container_path: Some(container_path.to_string()),
        root,
        path,
    };
    let Some((mount, mount_parts)) = best else {
        let (runtime, id) =
            status.and_then(|s| s.container_id.as_deref()).map(parse_container_id).unwrap_or_default();
        let root =
            HostRoot { kind: HostRootKind::ContainerRootfs, host_dir: None, container_id: id, runtime };
        return Ok(file(root, parts.join("/")));
    };
    let rest = &parts[mount_parts.len()..];
    let volume = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|vs| vs.iter().find(|v| v.name == mount.name))
        .ok_or_else(|| MappingError::MissingVolume {
            path: container_path.into(),
            volume: mount.name.clone(),
        })?;
    let sub_path = sub_path(mount, container)?;
    let sub_parts = clean_components("subPath", &sub_path)?;
    let rel: Vec<&str> = sub_parts.iter().chain(rest).copied().collect();
    map_volume(volume, uid, container_path, rel).map(|(root, path)| file(root, path))
}

fn map_volume(
    volume: &Volume,
    uid: &str,
    container_path: &str,
    rel: Vec<&str>,
) -> Result<(HostRoot, String), MappingError> {
    let root = |kind, dir: String| HostRoot { kind, host_dir: Some(dir), container_id: None, runtime: None };
    if volume.empty_dir.is_some() {
        if rel.is_empty() {
            return Err(MappingError::MountPoint {
                path: container_path.into(),
                volume: volume.name.clone(),
            });
        }
        let dir = format!(
            "{KUBELET_PODS_DIR}/{}/volumes/kubernetes.io~empty-dir/{}",
            segment("pod uid", uid)?,
            segment("volume name", &volume.name)?
        );
        return Ok((root(HostRootKind::EmptyDir, dir), rel.join("/")));
    }
    if let Some(host) = &volume.host_path {
        let mut host_parts = clean_components("hostPath", &host.path)?;
        if rel.is_empty() {
            // The mount is a single file: confine to its directory and read just that file.
            let Some(file) = host_parts.pop() else {
                return Err(MappingError::MountPoint {
                    path: container_path.into(),
                    volume: volume.name.clone(),
                });
            };
            return Ok((
                root(HostRootKind::HostPath, format!("/{}", host_parts.join("/"))),
                file.to_string(),
            ));
        }
        return Ok((root(HostRootKind::HostPath, format!("/{}", host_parts.join("/"))), rel.join("/")));
    }
    Err(MappingError::UnsupportedVolume { path: container_path.into(), volume: volume.name.clone() })
}

/// The mount's subPath, with a `subPathExpr` expanded from the container's literal env values.
fn sub_path(mount: &VolumeMount, container: &Container) -> Result<String, MappingError> {
    if let Some(p) = mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
        return Ok(p.to_string());
    }
    let Some(expr) = mount.sub_path_expr.as_deref().filter(|p| !p.is_empty()) else {
        return Ok(String::new());
    };
    let err = || MappingError::SubPathExpr { expr: expr.to_string(), volume: mount.name.clone() };
    let mut out = String::new();
    let mut rest = expr;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find(')').ok_or_else(err)? + start;
        let name = &rest[start + 2..end];
        let value = container
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name && e.value_from.is_none())
            .and_then(|e| e.value.as_deref())
            .ok_or_else(err)?;
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Splits a path into its components, dropping empty and `.` ones; `..` is refused.
/// A path that does not start with `/` is refused for container paths and hostPaths.
pub fn clean_components<'a>(what: &'static str, path: &'a str) -> Result<Vec<&'a str>, MappingError> {
    let absolute_required = matches!(what, "container path" | "hostPath" | "mountPath");
    if absolute_required && !path.starts_with('/') {
        return Err(MappingError::NotAbsolute { path: path.to_string() });
    }
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(MappingError::ParentDir { what, path: path.to_string() }),
            p => out.push(p),
        }
    }
    Ok(out)
}

/// `containerd://abc` → (`containerd`, `abc`); `cri-o` is reported as `cri-o`.
pub fn parse_container_id(id: &str) -> (Option<String>, Option<String>) {
    match id.split_once("://") {
        Some((runtime, id)) if !id.is_empty() => {
            let runtime = if runtime == "crio" { "cri-o" } else { runtime };
            (Some(runtime.to_string()), Some(id.to_string()))
        }
        Some(_) => (None, None),
        None if id.is_empty() => (None, None),
        None => (None, Some(id.to_string())),
    }
}

/// A name that becomes one host path segment: no `/`, not `.` or `..`, not empty.
fn segment<'a>(what: &'static str, value: &'a str) -> Result<&'a str, MappingError> {
    if value.is_empty() || value == "." || value == ".." || value.contains(['/', '\0']) {
        return Err(MappingError::UnsafeName { what, value: value.to_string() });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, EnvVar, HostPathVolumeSource, PodSpec};
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Volume};

    fn mount(name: &str, path: &str, sub: Option<&str>) -> VolumeMount {
        VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            sub_path: sub.map(Into::into),
            ..Default::default()
        }
    }

    fn empty_dir(name: &str) -> Volume {
        Volume { name: name.into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() }
    }

    fn host_path(name: &str, path: &str) -> Volume {
        Volume {
            name: name.into(),
            host_path: Some(HostPathVolumeSource { path: path.into(), type_: None }),
            ..Default::default()
        }
    }

    fn setup(volumes: Vec<Volume>, mounts: Vec<VolumeMount>) -> (Pod, Container) {
        let c = Container { name: "app".into(), volume_mounts: Some(mounts), ..Default::default() };
        let pod = Pod {
            spec: Some(PodSpec { containers: vec![c.clone()], volumes: Some(volumes), ..Default::default() }),
            ..Default::default()
        };
        (pod, c)
    }

    fn status(id: &str) -> ContainerStatus {
        ContainerStatus { name: "app".into(), container_id: Some(id.into()), ..Default::default() }
    }

    fn map(
        pod: &Pod,
        c: &Container,
        path: &str,
    ) -> Result<(HostRootKind, Option<String>, String), MappingError> {
        file_input(pod, "uid-1", c, Some(&status("containerd://abc123")), path)
            .map(|i| (i.root.kind, i.root.host_dir, i.path))
    }

    #[test]
    fn stdio_row() {
        let ids = PodIds { namespace: "shop", name: "web-1", uid: "u-1" };
        let input = stdio_input(ids, "app", &LogSources::default()).unwrap().unwrap();
        assert_eq!(input.kind, InputKind::Stdio);
        assert_eq!(input.root.kind, HostRootKind::PodLogs);
        assert_eq!(input.root.host_dir.as_deref(), Some("/var/log/pods/shop_web-1_u-1/app"));
        assert_eq!(input.path, "*.log");
        assert_eq!(input.streams, [StdStream::Stdout, StdStream::Stderr]);
        let only_err = LogSources { stdout: false, ..Default::default() };
        assert_eq!(stdio_input(ids, "app", &only_err).unwrap().unwrap().streams, [StdStream::Stderr]);
        let none = LogSources { stdout: false, stderr: false, files: vec![] };
        assert_eq!(stdio_input(ids, "app", &none).unwrap(), None);
        let bad = PodIds { name: "..", ..ids };
        assert!(matches!(stdio_input(bad, "app", &none), Ok(None)));
        assert!(matches!(
            stdio_input(bad, "app", &LogSources::default()),
            Err(MappingError::UnsafeName { .. })
        ));
    }

    #[test]
    fn empty_dir_row_with_globs() {
        let (pod, c) = setup(vec![empty_dir("logs")], vec![mount("logs", "/opt/logs", None)]);
        let (kind, dir, path) = map(&pod, &c, "/opt/logs/**/*.log").unwrap();
        assert_eq!(kind, HostRootKind::EmptyDir);
        assert_eq!(dir.as_deref(), Some("/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~empty-dir/logs"));
        assert_eq!(path, "**/*.log");
    }

    #[test]
    fn host_path_row_and_single_file_mount() {
        let (pod, c) = setup(
            vec![host_path("h", "/data/app/"), host_path("f", "/srv/app.log")],
            vec![mount("h", "/var/log/app", None), mount("f", "/app.log", None)],
        );
        assert_eq!(
            map(&pod, &c, "/var/log/app/x/*.log").unwrap(),
            (HostRootKind::HostPath, Some("/data/app".into()), "x/*.log".into())
        );
        assert_eq!(
            map(&pod, &c, "/app.log").unwrap(),
            (HostRootKind::HostPath, Some("/srv".into()), "app.log".into())
        );
    }

    #[test]
    fn writable_layer_row() {
        let (pod, c) = setup(vec![empty_dir("logs")], vec![mount("logs", "/opt/logs", None)]);
        let input =
            file_input(&pod, "uid-1", &c, Some(&status("containerd://abc123")), "/opt/logsx/a.log").unwrap();
        assert_eq!(input.root.kind, HostRootKind::ContainerRootfs);
        assert_eq!(input.root.container_id.as_deref(), Some("abc123"));
        assert_eq!(input.root.runtime.as_deref(), Some("containerd"));
        assert_eq!(input.root.host_dir, None);
        assert_eq!(input.path, "opt/logsx/a.log");
        assert_eq!(input.container_path.as_deref(), Some("/opt/logsx/a.log"));
        // Before the runtime reported an ID the target is still rendered; the agent waits for it.
        let input = file_input(&pod, "uid-1", &c, None, "/var/log/*.log").unwrap();
        assert_eq!((input.root.container_id, input.root.runtime), (None, None));
    }

    #[test]
    fn sub_path_is_honoured_and_kept_inside_the_volume() {
        let (pod, c) =
            setup(vec![empty_dir("shared")], vec![mount("shared", "/logs", Some("app-a/current"))]);
        let (kind, dir, path) = map(&pod, &c, "/logs/*.log").unwrap();
        assert_eq!(kind, HostRootKind::EmptyDir);
        assert!(dir.unwrap().ends_with("/kubernetes.io~empty-dir/shared"));
        assert_eq!(path, "app-a/current/*.log");
        let (pod, c) = setup(vec![empty_dir("shared")], vec![mount("shared", "/logs", Some("../escape"))]);
        assert!(matches!(map(&pod, &c, "/logs/a.log"), Err(MappingError::ParentDir { .. })));
    }

    #[test]
    fn sub_path_expr_expands_literal_env() {
        let (pod, mut c) = setup(vec![empty_dir("v")], vec![]);
        c.volume_mounts =
            Some(vec![VolumeMount { sub_path_expr: Some("pods/$(POD)".into()), ..mount("v", "/l", None) }]);
        c.env = Some(vec![EnvVar { name: "POD".into(), value: Some("web-1".into()), value_from: None }]);
        assert_eq!(map(&pod, &c, "/l/a.log").unwrap().2, "pods/web-1/a.log");
        c.env = None;
        assert!(matches!(map(&pod, &c, "/l/a.log"), Err(MappingError::SubPathExpr { .. })));
    }

    #[test]
    fn longest_covering_mount_wins() {
        let (pod, c) = setup(
            vec![empty_dir("outer"), host_path("inner", "/host/inner")],
            vec![
                mount("outer", "/var", None),
                mount("inner", "/var/log/app", None),
                mount("outer", "/", None),
            ],
        );
        assert_eq!(map(&pod, &c, "/var/log/app/a.log").unwrap().0, HostRootKind::HostPath);
        assert_eq!(map(&pod, &c, "/var/log/other.log").unwrap().2, "log/other.log");
        assert_eq!(map(&pod, &c, "/etc/x.log").unwrap().2, "etc/x.log");
        // Mount order does not matter.
        let (pod, c) = setup(
            vec![empty_dir("outer"), host_path("inner", "/host/inner")],
            vec![mount("inner", "/var/log/app/", None), mount("outer", "/var", None)],
        );
        assert_eq!(map(&pod, &c, "/var/log/app/a.log").unwrap().0, HostRootKind::HostPath);
        // A glob component is not covered by a literal mount path: only `/var` covers this one.
        assert_eq!(map(&pod, &c, "/var/log/*/a.log").unwrap().0, HostRootKind::EmptyDir);
    }

    #[test]
    fn parent_dirs_and_relative_paths_are_refused() {
        let (pod, c) = setup(vec![empty_dir("logs")], vec![mount("logs", "/opt/logs", None)]);
        assert!(matches!(map(&pod, &c, "/opt/logs/../../etc/shadow"), Err(MappingError::ParentDir { .. })));
        assert!(matches!(map(&pod, &c, "opt/logs/a.log"), Err(MappingError::NotAbsolute { .. })));
        assert_eq!(map(&pod, &c, "/opt//logs/./a.log").unwrap().2, "a.log");
        assert!(matches!(map(&pod, &c, "/opt/logs"), Err(MappingError::MountPoint { .. })));
        assert!(matches!(map(&pod, &c, "/./"), Err(MappingError::NoFile { .. })));
        let (pod, c) = setup(vec![host_path("h", "/data/../etc")], vec![mount("h", "/h", None)]);
        assert!(matches!(map(&pod, &c, "/h/a"), Err(MappingError::ParentDir { .. })));
    }

    #[test]
    fn other_volumes_are_reported_not_guessed() {
        let pvc = Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: "c".into(),
                read_only: None,
            }),
            ..Default::default()
        };
        let (pod, c) = setup(vec![pvc], vec![mount("data", "/data", None), mount("gone", "/gone", None)]);
        assert!(matches!(map(&pod, &c, "/data/a.log"), Err(MappingError::UnsupportedVolume { .. })));
        assert!(matches!(map(&pod, &c, "/gone/a.log"), Err(MappingError::MissingVolume { .. })));
    }

    #[test]
    fn container_ids() {
        assert_eq!(parse_container_id("containerd://abc"), (Some("containerd".into()), Some("abc".into())));
        assert_eq!(parse_container_id("docker://d1"), (Some("docker".into()), Some("d1".into())));
        assert_eq!(parse_container_id("cri-o://x"), (Some("cri-o".into()), Some("x".into())));
        assert_eq!(parse_container_id("containerd://"), (None, None));
        assert_eq!(parse_container_id(""), (None, None));
    }

    proptest::proptest! {
        /// Whatever the path, a mapped file input never holds a `..` or an absolute part.
        #[test]
        fn mapped_paths_never_escape(path in "(/(\\.\\.|\\.|[a-z*]{0,3})){1,6}") {
            let (pod, c) = setup(
                vec![empty_dir("logs"), host_path("h", "/h")],
                vec![mount("logs", "/a", None), mount("h", "/b", Some("s"))],
            );
            if let Ok(input) = file_input(&pod, "u", &c, None, &path) {
                proptest::prop_assert!(!input.path.starts_with('/'));
                proptest::prop_assert!(input.path.split('/').all(|p| p != ".." && p != "." && !p.is_empty()));
            }
        }
    }
}

//! The agent process against a real host tree: hot-applied configuration changes (targets
//! added, removed, `start: end`), confinement of container paths (a hostile symlink in a
//! container's writable layer), and terminated containers' files drained.

mod agent_support;

use agent_support::agent_command;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

struct Agent {
    child: Child,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let out = dir.join("out");
        let extra = ["--checkpoint-interval", "1s", "--rescan-interval", "200ms", "--output-dir"];
        let child = agent_command(dir, "n1", &extra).arg(out).spawn().unwrap();
        Agent { child }
    }

    fn stop(mut self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A collection with one target per `(pod, input yaml)`.
fn config(generation: i64, start: &str, targets: &[(&str, String)]) -> String {
    let mut t = String::new();
    for (pod, inputs) in targets {
        t.push_str(&format!(
            "    - pod: {{namespace: ns, name: {pod}, uid: u-{pod}}}\n      container: {{name: app, containerId: c-{pod}, runtime: containerd}}\n      inputs:\n{inputs}"
        ));
    }
    format!(
        "apiVersion: logging.tailor.dev/v1alpha1\nkind: NodeLogConfig\nmetadata: {{name: n1, generation: {generation}}}\nspec:\n  formatVersion: 1\n  collections:\n  - source: {{namespace: ns, name: lcc}}\n    start: {start}\n    outputs: [{{name: out, type: file, batch: {{timeoutMs: 20}}}}]\n    targets:\n{t}"
    )
}

fn stdio_input(pod: &str) -> String {
    format!(
        "      - kind: stdio\n        root: {{kind: podLogs, hostDir: /var/log/pods/ns_{pod}_u-{pod}/app}}\n        path: \"*.log\"\n"
    )
}

fn rootfs_input(pod: &str, path: &str) -> String {
    format!(
        "      - kind: file\n        containerPath: {path}\n        root: {{kind: containerRootfs, containerId: c-{pod}, runtime: containerd}}\n        path: \"{path}\"\n"
    )
}

fn pod_log(dir: &Path, pod: &str) -> std::path::PathBuf {
    let d = dir.join(format!("host/var/log/pods/ns_{pod}_u-{pod}/app"));
    fs::create_dir_all(&d).unwrap();
    d.join("0.log")
}

fn append(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
    }
}

fn cri(msgs: impl IntoIterator<Item = String>) -> Vec<String> {
    msgs.into_iter().map(|m| format!("2024-05-01T12:00:00Z stdout F {m}\n")).collect()
}

/// Messages written for `pod` so far, in order.
fn messages(dir: &Path, pod: &str) -> Vec<String> {
    let p = dir.join(format!("out/ns/lcc/out/ns_{pod}_app.ndjson"));
    let Ok(text) = fs::read_to_string(p) else { return Vec::new() };
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].as_str().unwrap().to_string()
        })
        .collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hot_applies_targets_without_rereading_and_honours_start_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = pod_log(dir, "a");
    let b = pod_log(dir, "b");
    append(&a, &cri((0..5).map(|i| format!("a{i}"))));
    append(&b, &cri((0..5).map(|i| format!("old-b{i}"))));
    fs::write(dir.join("config.yaml"), config(1, "beginning", &[("a", stdio_input("a"))])).unwrap();
    let agent = Agent::start(dir);
    wait_for("a's first lines", || messages(dir, "a").len() == 5);

    // Add b with `start: end`: its existing lines are skipped, new ones read; a goes on.
    fs::write(dir.join("config.yaml"), config(2, "end", &[("a", stdio_input("a")), ("b", stdio_input("b"))]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    append(&b, &cri((0..3).map(|i| format!("new-b{i}"))));
    append(&a, &cri((5..8).map(|i| format!("a{i}"))));
    wait_for("b's new lines", || messages(dir, "b").len() == 3);
    wait_for("a's later lines", || messages(dir, "a").len() == 8);
    assert_eq!(messages(dir, "b"), ["new-b0", "new-b1", "new-b2"]);
    assert_eq!(messages(dir, "a"), (0..8).map(|i| format!("a{i}")).collect::<Vec<_>>());

    // Remove a: what is written to it afterwards is not collected; b goes on.
    fs::write(dir.join("config.yaml"), config(3, "end", &[("b", stdio_input("b"))])).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    append(&a, &cri(["a-after-removal".to_string()]));
    append(&b, &cri(["new-b3".to_string()]));
    wait_for("b's last line", || messages(dir, "b").len() == 4);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(messages(dir, "a").len(), 8);
    agent.stop();

    // A restart re-reads nothing, and b (already applied once) reads lines written meanwhile.
    append(&b, &cri(["while-down".to_string()]));
    let agent = Agent::start(dir);
    wait_for("the line written while down", || messages(dir, "b").len() == 5);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(messages(dir, "b"), ["new-b0", "new-b1", "new-b2", "new-b3", "while-down"]);
    agent.stop();
}

#[test]
fn a_hostile_symlink_in_a_container_never_reads_host_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let host = dir.join("host");
    fs::create_dir_all(host.join("etc")).unwrap();
    fs::write(host.join("etc/shadow"), "root:HOST-SECRET\n").unwrap();
    let rootfs = host.join("run/containerd/io.containerd.runtime.v2.task/k8s.io/c-evil/rootfs");
    fs::create_dir_all(rootfs.join("opt/logs")).unwrap();
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/shadow"), "container-own-file\n").unwrap();
    symlink("/etc/shadow", rootfs.join("opt/logs/x.log")).unwrap();
    symlink("../../../../../../../../etc/shadow", rootfs.join("opt/logs/y.log")).unwrap();
    symlink("../../..", rootfs.join("opt/logs/up")).unwrap();
    fs::write(rootfs.join("opt/logs/app.log"), "app line\n").unwrap();
    fs::write(
        dir.join("config.yaml"),
        config(
            1,
            "beginning",
            &[(
                "evil",
                rootfs_input("evil", "/opt/logs/**/*.log") + &rootfs_input("evil", "/opt/logs/up/etc/shadow"),
            )],
        ),
    )
    .unwrap();
    let agent = Agent::start(dir);
    wait_for("the container's own lines", || messages(dir, "evil").len() >= 2);
    std::thread::sleep(Duration::from_millis(800));
    agent.stop();
    let msgs = messages(dir, "evil");
    assert!(msgs.iter().all(|m| !m.contains("HOST-SECRET")), "{msgs:?}");
    assert!(msgs.contains(&"app line".to_string()));
    // Every route to `shadow` led to the container's own file, read once as one file.
    assert_eq!(msgs.iter().filter(|m| *m == "container-own-file").count(), 1, "{msgs:?}");
}

#[test]
fn a_terminated_containers_file_is_drained_after_its_rootfs_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rootfs = dir.join("host/run/containerd/io.containerd.runtime.v2.task/k8s.io/c-t/rootfs");
    fs::create_dir_all(rootfs.join("var/log")).unwrap();
    let log = rootfs.join("var/log/app.log");
    append(&log, &(0..100).map(|i| format!("t{i}\n")).collect::<Vec<_>>());
    fs::write(dir.join("config.yaml"), config(1, "beginning", &[("t", rootfs_input("t", "/var/log/*.log"))]))
        .unwrap();
    let agent = Agent::start(dir);
    wait_for("the first lines", || messages(dir, "t").len() == 100);
    // The container writes its last lines and exits; its task directory goes away while the agent
    // still holds the file open: the last lines are read, then the file is let go.
    let keep = fs::File::open(&log).unwrap();
    append(&log, &(100..150).map(|i| format!("t{i}\n")).collect::<Vec<_>>());
    fs::remove_dir_all(dir.join("host/run")).unwrap();
    drop(keep);
    fs::write(
        dir.join("config.yaml"),
        config(2, "beginning", &[("t", rootfs_input("t", "/var/log/*.log"))]).replace(
            "containerId: c-t, runtime: containerd}\n      inputs",
            "containerId: c-t, runtime: containerd, terminated: true}\n      inputs",
        ),
    )
    .unwrap();
    wait_for("the last lines", || messages(dir, "t").len() == 150);
    agent.stop();
    assert_eq!(messages(dir, "t"), (0..150).map(|i| format!("t{i}")).collect::<Vec<_>>());
}

#[test]
fn a_rotated_file_compressed_before_it_was_fully_read_is_read_from_the_gz() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = pod_log(dir, "z");
    let input = stdio_input("z").replace("\"*.log\"", "\"0.log*\"");
    fs::write(dir.join("config.yaml"), config(1, "beginning", &[("z", input)])).unwrap();
    append(&log, &cri((0..100).map(|i| format!("z{i}"))));
    let agent = Agent::start(dir);
    wait_for("the first lines", || messages(dir, "z").len() == 100);
    agent.stop();
    // While the agent is down: more lines, then kubelet-style rotation and compression.
    append(&log, &cri((100..200).map(|i| format!("z{i}"))));
    let rotated = log.with_file_name("0.log.20240501-120000");
    fs::rename(&log, &rotated).unwrap();
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(rotated.with_file_name("0.log.20240501-120000.gz")).unwrap(),
        flate2::Compression::default(),
    );
    gz.write_all(&fs::read(&rotated).unwrap()).unwrap();
    gz.finish().unwrap();
    fs::remove_file(&rotated).unwrap();
    append(&log, &cri((200..210).map(|i| format!("z{i}"))));
    let agent = Agent::start(dir);
    wait_for("every line", || messages(dir, "z").len() >= 210);
    std::thread::sleep(Duration::from_millis(700));
    agent.stop();
    let mut got = messages(dir, "z");
    got.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
    assert_eq!(got, (0..210).map(|i| format!("z{i}")).collect::<Vec<_>>());
}

#[test]
fn a_file_deleted_while_open_is_drained_then_released() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let log = pod_log(dir, "d");
    fs::write(dir.join("config.yaml"), config(1, "beginning", &[("d", stdio_input("d"))])).unwrap();
    append(&log, &cri((0..10).map(|i| format!("d{i}"))));
    let agent = Agent::start(dir);
    wait_for("the first lines", || messages(dir, "d").len() == 10);
    // The writer appends a burst and the file is deleted at once: the agent still holds it open.
    append(&log, &cri((10..5000).map(|i| format!("d{i}"))));
    fs::remove_file(&log).unwrap();
    append(&log, &cri((5000..5010).map(|i| format!("d{i}")))); // a new file at the same path
    wait_for("every line", || messages(dir, "d").len() >= 5010);
    std::thread::sleep(Duration::from_millis(500));
    agent.stop();
    let mut got = messages(dir, "d");
    got.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
    assert_eq!(got, (0..5010).map(|i| format!("d{i}")).collect::<Vec<_>>());
}

#[test]
fn multiline_events_held_across_a_config_change_and_a_removed_target_are_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Multiline events are only let out by the next line or a timeout far beyond the test.
    let with_multiline = |generation: i64, timeout: u32, pods: &[&str]| {
        let targets: Vec<(&str, String)> = pods.iter().map(|p| (*p, stdio_input(p))).collect();
        config(generation, "beginning", &targets).replace(
            "    start:",
            &format!("    multiline: {{mode: java, flushTimeoutMs: {timeout}}}\n    start:"),
        )
    };
    let trace = |tag: &str| {
        cri([
            format!("{tag} ERROR request failed"),
            "java.lang.IllegalStateException: boom".to_string(),
            "\tat com.example.App.handle(App.java:42)".to_string(),
        ])
    };
    let (a, b) = (pod_log(dir, "a"), pod_log(dir, "b"));
    append(&a, &cri(["a-first".to_string()]));
    append(&a, &trace("a"));
    append(&b, &cri(["b-first".to_string()]));
    fs::write(dir.join("config.yaml"), with_multiline(1, 600_000, &["a", "b"])).unwrap();
    let agent = Agent::start(dir);
    wait_for("the first lines", || messages(dir, "a") == ["a-first"] && messages(dir, "b").is_empty());

    // A new pipeline replaces the one holding a's trace: the trace is sent, not dropped.
    fs::write(dir.join("config.yaml"), with_multiline(2, 500_000, &["a", "b"])).unwrap();
    wait_for("a's held trace", || messages(dir, "a").len() == 2);
    let joined = &messages(dir, "a")[1];
    assert!(joined.starts_with("a ERROR request failed\njava.lang.IllegalStateException"), "{joined}");
    assert!(joined.ends_with("(App.java:42)"), "{joined}");

    // b's first line is held by the new pipeline, then b leaves the configuration: its
    // pipeline is flushed before the target is let go of.
    std::thread::sleep(Duration::from_millis(500));
    append(&b, &trace("b"));
    std::thread::sleep(Duration::from_millis(500));
    fs::write(dir.join("config.yaml"), with_multiline(3, 500_000, &["a"])).unwrap();
    wait_for("b's lines", || messages(dir, "b").len() == 2);
    assert_eq!(messages(dir, "b")[0], "b-first");
    assert!(
        messages(dir, "b")[1].starts_with("b ERROR request failed\njava.lang"),
        "{:?}",
        messages(dir, "b")
    );
    agent.stop();
}

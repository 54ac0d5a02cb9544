//! deploy/docker: the agent's image, built from local files by `build-image.sh`, runs under
//! `docker-compose` with the engine's socket and /var/lib/docker mounted read-only, and collects
//! and backs up a container started after it (its merged mount must show up inside the agent).

mod docker_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use docker_support::{Engine, docker, wait_or_explain};

struct Compose {
    project: String,
    file: PathBuf,
    envs: Vec<(String, String)>,
    image: String,
}

impl Compose {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("docker-compose")
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.file)
            .args(args)
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("docker-compose is needed by this test: apt-get install docker-compose");
        assert!(out.status.success(), "docker-compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The agent's log and every file in the output and backup volumes, for a failure message.
    fn explain(&self) -> String {
        let logs = Command::new("docker-compose")
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.file)
            .args(["logs", "--no-color", "--tail", "60"])
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut files = String::new();
        for vol in ["output", "backup", "state"] {
            for p in find(&self.volume(vol), "") {
                let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                files.push_str(&format!("{len:>8} {}\n", p.display()));
            }
        }
        format!("agent log:\n{logs}\nfiles:\n{files}")
    }

    fn volume(&self, name: &str) -> PathBuf {
        PathBuf::from(docker(&[
            "volume",
            "inspect",
            "-f",
            "{{.Mountpoint}}",
            &format!("{}_{name}", self.project),
        ]))
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.file)
            .args(["down", "-v", "-t", "2"])
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output();
        let _ = Command::new("docker").args(["rmi", "-f", &self.image]).output();
    }
}

fn messages(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(".ndjson") {
                for line in std::fs::read_to_string(&p).unwrap_or_default().lines() {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
                        && let Some(m) = v.get("message").and_then(|m| m.as_str())
                    {
                        out.push(m.to_string());
                    }
                }
            }
        }
    }
    out
}

fn find(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if name.is_empty() || p.file_name().is_some_and(|n| n == name) {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn compose_runs_the_agent_as_a_container() {
    let engine = Engine::new("compose");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let image = format!("tailor-test-agent:{}", engine.run);
    let out = Command::new(workspace.join("deploy/docker/build-image.sh"))
        .arg(env!("CARGO_BIN_EXE_tailor-agent"))
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "build-image.sh: {}", String::from_utf8_lossy(&out.stderr));

    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("docker.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
collections:
  - name: all
    selector: {{includeLabels: {{tailor.test: "{run}"}}}}
    sources: {{files: [{{path: /opt/logs/*.log}}]}}
    outputs: [{{name: local, type: file}}]
backups:
  - name: logs
    selector: {{includeLabels: {{tailor.test: "{run}"}}}}
    sources: {{stdout: false, stderr: false, files: [{{path: /opt/logs/*.log}}]}}
    compression: none
    interval: 1s
"#,
            run = engine.run
        ),
    )
    .unwrap();
    let project: String = format!("tt{}", engine.run).chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let compose = Compose {
        project: project.to_lowercase(),
        file: workspace.join("deploy/docker/compose.yaml"),
        envs: vec![
            ("TAILOR_AGENT_IMAGE".into(), image.clone()),
            ("TAILOR_DOCKER_CONFIG".into(), config.display().to_string()),
            ("TAILOR_NODE_NAME".into(), "compose-test".into()),
        ],
        image,
    };
    compose.run(&["up", "-d"]);
    std::thread::sleep(Duration::from_millis(500));

    engine.start(
        "w",
        &[],
        "mkdir -p /opt/logs; for i in $(seq 1 50); do echo \"c out $i\"; echo \"c file $i\" >> /opt/logs/app.log; \
         sleep 0.02; done; sleep 300",
    );
    let output = compose.volume("output");
    let want: Vec<String> = (1..=50).flat_map(|i| [format!("c out {i}"), format!("c file {i}")]).collect();
    wait_or_explain(
        "the agent in compose collecting every line",
        Duration::from_secs(40),
        || {
            let got = messages(&output);
            want.iter().all(|l| got.contains(l)).then_some(())
        },
        || compose.explain(),
    );
    let source: String = (1..=50).map(|i| format!("c file {i}\n")).collect();
    let backup = compose.volume("backup");
    wait_or_explain(
        "the backup copy",
        Duration::from_secs(30),
        || {
            find(&backup, "app.log")
                .iter()
                .any(|p| std::fs::read(p).ok().as_deref() == Some(source.as_bytes()))
                .then_some(())
        },
        || compose.explain(),
    );
}

//! Where things are: the repository, the shared control-plane scripts, and the binaries under
//! test (built once per process with the same profile as the test binary itself).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

/// The repository root (the workspace this crate belongs to).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// The folder holding `up` and `down`: `$TAILOR_K8S_DIR`, else `<repo>/../shared/k8s` (the
/// repository is checked out next to `shared/`), else `/work/shared/k8s`.
pub fn k8s_dir() -> Result<PathBuf> {
    let mut tried = Vec::new();
    let candidates = std::env::var_os("TAILOR_K8S_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([repo_root().join("../shared/k8s"), PathBuf::from("/work/shared/k8s")]);
    for dir in candidates {
        if dir.join("up").is_file() && dir.join("down").is_file() {
            return Ok(dir.canonicalize().unwrap_or(dir));
        }
        tried.push(dir.display().to_string());
    }
    bail!("no control-plane scripts (up/down) found; set TAILOR_K8S_DIR (tried: {})", tried.join(", "))
}

/// The built binaries of the operator and the agent.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub operator: PathBuf,
    pub agent: PathBuf,
}

/// Builds `tailor-operator` and `tailor-agent` once per process (a no-op when they are fresh) with
/// the profile of the running test binary, and returns their paths. `TAILOR_OPERATOR_BIN` and
/// `TAILOR_AGENT_BIN` override the paths (and, when both are set, the build).
pub fn binaries() -> Result<Binaries> {
    static BUILT: OnceLock<Result<Binaries, String>> = OnceLock::new();
    BUILT.get_or_init(|| build().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
}

fn build() -> Result<Binaries> {
    let operator = std::env::var_os("TAILOR_OPERATOR_BIN").map(PathBuf::from);
    let agent = std::env::var_os("TAILOR_AGENT_BIN").map(PathBuf::from);
    if let (Some(operator), Some(agent)) = (&operator, &agent) {
        return Ok(Binaries { operator: operator.clone(), agent: agent.clone() });
    }
    let built = cargo_build()?;
    Ok(Binaries { operator: operator.unwrap_or(built.operator), agent: agent.unwrap_or(built.agent) })
}

fn cargo_build() -> Result<Binaries> {
    let (target_dir, profile) = target_and_profile()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .args(["build", "--quiet", "-p", "tailor-operator", "-p", "tailor-agent", "--bins"])
        .arg("--target-dir")
        .arg(&target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd.output().context("running cargo build for the operator and the agent")?;
    if !out.status.success() {
        bail!(
            "cargo build -p tailor-operator -p tailor-agent failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let dir = target_dir.join(&profile);
    Ok(Binaries { operator: dir.join("tailor-operator"), agent: dir.join("tailor-agent") })
}

/// `<target>/<profile>` from the running executable (`<target>/<profile>/deps/<test>` for tests,
/// `<target>/<profile>/<bin>` for binaries).
fn target_and_profile() -> Result<(PathBuf, String)> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let mut dir = exe.parent().context("executable without a folder")?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().context("deps without a parent")?;
    }
    let profile = dir.file_name().and_then(|n| n.to_str()).context("profile folder")?.to_string();
    let target = dir.parent().context("profile folder without a parent")?.to_path_buf();
    Ok((target, profile))
}

/// `true` when `bin --help` lists `subcommand` (used to tell which features of the binaries
/// under test have landed).
pub fn has_subcommand(bin: &Path, subcommand: &str) -> bool {
    Command::new(bin).arg("--help").output().is_ok_and(|o| {
        String::from_utf8_lossy(&o.stdout).lines().any(|l| l.split_whitespace().next() == Some(subcommand))
    })
}

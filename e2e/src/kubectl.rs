//! `kubectl`, as a person would use it: applies, `get`, `auth can-i`, `kustomize`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, Result, bail};

/// `kubectl` bound to one kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path) -> Self {
        Self { kubeconfig: kubeconfig.to_path_buf() }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs kubectl; returns its output whatever the exit status.
    pub fn output(&self, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl (is it installed? apt-get install kubectl)")?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).context("writing kubectl's stdin")?;
        }
        child.wait_with_output().context("waiting for kubectl")
    }

    /// Runs kubectl and returns its stdout; fails with its stderr when it fails.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.run_with_stdin(args, None)
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.output(args, stdin)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply --server-side` of a YAML stream, as Argo CD or a person applies manifests.
    pub fn apply_server_side(&self, yaml: &str, field_manager: &str) -> Result<String> {
        let manager = format!("--field-manager={field_manager}");
        self.run_with_stdin(&["apply", "--server-side", "--force-conflicts", &manager, "-f", "-"], Some(yaml))
    }

    /// `kubectl auth can-i VERB RESOURCE[/NAME] [--subresource S] --as USER`: `true` for "yes".
    /// `namespace` `None` asks about every namespace (and cluster-scoped resources).
    pub fn can_i(
        &self,
        user: &str,
        verb: &str,
        resource: &str,
        subresource: Option<&str>,
        namespace: Option<&str>,
    ) -> Result<bool> {
        let mut args =
            vec!["auth".to_string(), "can-i".into(), verb.into(), resource.into(), format!("--as={user}")];
        if let Some(sub) = subresource {
            args.push(format!("--subresource={sub}"));
        }
        match namespace {
            Some(ns) => args.push(format!("--namespace={ns}")),
            None => args.push("--all-namespaces".into()),
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.output(&refs, None)?;
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match answer.as_str() {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => bail!(
                "kubectl {} answered {answer:?}: {}",
                refs.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    }
}

/// `kubectl kustomize DIR` (no cluster needed).
pub fn kustomize(dir: &Path) -> Result<String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .context("running kubectl kustomize (is kubectl installed?)")?;
    if !out.status.success() {
        bail!("kubectl kustomize {} failed: {}", dir.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

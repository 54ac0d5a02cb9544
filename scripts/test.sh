#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit/integration tests, and the e2e suite against a
# real control plane (started by the e2e harness itself when KUBECONFIG is not set).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# Install: Helm chart (rendered by Helm's engine), kustomize base, RBAC and admission policy on a
# real control plane, Argo CD health checks (Lua), samples.
python3 -m pytest -q charts/tests config/tests

#!/bin/sh
# Builds the tailor-agent image from local files only: the agent binary, the shared libraries
# it links (as ldd lists them) and a CA bundle for TLS outputs, on top of `scratch`.
#
#   deploy/docker/build-image.sh [BINARY] [TAG]
#
# BINARY defaults to target/release/tailor-agent (cargo build --release -p tailor-agent),
# TAG to tailor-agent:local.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-target/release/tailor-agent}
tag=${2:-tailor-agent:local}
[ -x "$bin" ] || { echo "no agent binary at $bin (cargo build --release -p tailor-agent)" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/usr/local/bin" "$root/tmp" "$root/etc/tailor"
if command -v strip >/dev/null; then
    strip -o "$root/usr/local/bin/tailor-agent" "$bin"
else
    cp "$bin" "$root/usr/local/bin/tailor-agent"
fi
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
echo 'root:x:0:0:root:/:/nonexistent' > "$root/etc/passwd"
chmod 1777 "$root/tmp"
cp "$here/Dockerfile" "$ctx/"
# `FROM scratch` needs no registry with either builder; use the classic one when buildx is absent.
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0
docker build -q -t "$tag" "$ctx"

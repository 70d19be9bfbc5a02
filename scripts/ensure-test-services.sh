#!/usr/bin/env bash
# What `make test` needs beyond Python packages: RabbitMQ (for its private test
# node), PostgreSQL on 127.0.0.1:5432 with a database `test`, promtool,
# helm (scripts/ensure-helm.sh), and for the console's browser tests Debian's
# chromium and axe-core (the npm package, unpacked into the tools directory).
set -euo pipefail
here="$(dirname "$0")"

bash "$here/ensure-rabbitmq.sh"

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${_apt_updated:-}" ]; then apt-get update -qq; _apt_updated=1; fi
    apt-get install -y -qq "$@" >/dev/null
}

if ! command -v promtool >/dev/null 2>&1; then
    echo "ensure-test-services: installing the Debian package prometheus (for promtool)" >&2
    apt_install prometheus
fi

bash "$here/ensure-helm.sh"

if [ ! -x /usr/bin/chromium ]; then
    echo "ensure-test-services: installing the Debian package chromium (console browser tests)" >&2
    apt_install chromium
fi
tools_dir="${TEST_TOOLS_DIR:-/opt/provider-jobs-tools}"
axe_version="4.14.1"
if ! grep -qs "axe v$axe_version" "$tools_dir/axe-core/axe.min.js"; then
    echo "ensure-test-services: installing axe-core $axe_version from npm into $tools_dir/axe-core" >&2
    command -v npm >/dev/null 2>&1 || apt_install npm
    axe_work="$(mktemp -d)"
    (cd "$axe_work" && npm pack --silent "axe-core@$axe_version" >/dev/null)
    tar -xzf "$axe_work"/axe-core-*.tgz -C "$axe_work" package/axe.min.js
    mkdir -p "$tools_dir/axe-core"
    install -m 0644 "$axe_work/package/axe.min.js" "$tools_dir/axe-core/axe.min.js"
    rm -rf "$axe_work"
fi

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "ensure-test-services: installing the Debian package postgresql" >&2
    apt_install postgresql
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "ensure-test-services: starting PostgreSQL" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
    for _ in $(seq 1 30); do
        pg_isready -q -h 127.0.0.1 -p 5432 && break
        sleep 1
    done
fi
if pg_isready -q -h 127.0.0.1 -p 5432; then
    # Trust auth is what the tests use; create the database if this machine lacks it.
    if ! psql -h 127.0.0.1 -U postgres -d test -c "select 1" >/dev/null 2>&1; then
        su postgres -c "createdb test" 2>/dev/null || psql -h 127.0.0.1 -U postgres -c "create database test" >/dev/null 2>&1 || true
    fi
else
    echo "ensure-test-services: PostgreSQL is not answering on 127.0.0.1:5432; its tests will fail in CI" >&2
fi

#!/usr/bin/env bash
# Make sure a RabbitMQ server is installed and answering on 127.0.0.1:5672.
# The tests start their own private node from the same installation.
set -euo pipefail

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    echo "ensure-rabbitmq: installing the Debian package rabbitmq-server" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq rabbitmq-server >/dev/null
fi

if ! port_open; then
    echo "ensure-rabbitmq: starting rabbitmq-server -detached" >&2
    rabbitmq-server -detached
    for _ in $(seq 1 60); do
        port_open && break
        sleep 1
    done
fi

if ! port_open; then
    echo "ensure-rabbitmq: RabbitMQ is not answering on 127.0.0.1:5672 after 60 s" >&2
    exit 1
fi

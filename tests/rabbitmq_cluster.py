"""Three private RabbitMQ nodes on this machine, joined into one cluster, for the cluster tests.

Each node has its own name (``pj_cluster_<n>@localhost``), AMQP port
(5681-5683), distribution port (25681-25683), data and log directories and
config file, as pytest-rabbitmq's node does; all share this user's Erlang
cookie, so ``rabbitmqctl join_cluster`` works between them. ``python
tests/rabbitmq_cluster.py`` starts one and leaves it running (Ctrl-C stops it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: Where Debian keeps the scripts that run as the calling user (``/usr/sbin``'s switch to rabbitmq).
_BIN = "/usr/lib/rabbitmq/bin"
#: AMQP ports of the three nodes; distribution ports are these plus 20 000.
PORTS = (5681, 5682, 5683)


def _port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@dataclass
class Node:
    """One private node: ``start()`` runs ``rabbitmq-server`` detached, ``ctl()`` runs ``rabbitmqctl``."""

    index: int
    base: Path
    port: int = 0
    name: str = ""
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.port = PORTS[self.index - 1]
        self.name = f"pj_cluster_{self.index}@localhost"
        home = self.base / f"node{self.index}"
        (home / "log").mkdir(parents=True, exist_ok=True)
        conf = home / "rabbitmq.conf"
        # Its own listener: a machine-wide rabbitmq.conf may pin 5672. Short intervals so a stopped
        # node is noticed quickly; no pause on partitions (three nodes on one machine never split).
        conf.write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            "cluster_partition_handling = ignore\n"
        )
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.port + 20_000),
            "RABBITMQ_MNESIA_BASE": str(home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(home / "log"),
            "RABBITMQ_CONFIG_FILE": str(conf),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(home / "enabled_plugins"),
        }
        (home / "enabled_plugins").write_text("[].\n")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def ctl(self, *args: str, timeout_s: float = 60) -> str:
        result = subprocess.run(
            [f"{_BIN}/rabbitmqctl", "-n", self.name, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if result.returncode:
            raise RuntimeError(f"rabbitmqctl -n {self.name} {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def start(self) -> None:
        """Start the node's Erlang VM and RabbitMQ (returns once it is booting)."""
        if _port_open(self.port):
            raise RuntimeError(
                f"port {self.port} is taken: another cluster test, or a node left behind "
                f"(`{_BIN}/rabbitmqctl -n {self.name} shutdown` stops it)"
            )
        self.process = subprocess.Popen(
            [f"{_BIN}/rabbitmq-server"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def await_started(self, timeout_s: float = 90) -> None:
        """Wait until the node accepts AMQP connections (its VM registers with epmd only late)."""
        deadline = time.monotonic() + timeout_s
        while not _port_open(self.port):
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.base}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not open port {self.port} within {timeout_s} s")
            time.sleep(0.1)

    def stop_app(self) -> None:
        """Stop RabbitMQ on the node (its connections close, its queue replicas go down)."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.await_started()

    def shutdown(self) -> None:
        """Stop the node's VM; wait for its process."""
        if self.process is None:
            return
        try:
            self.ctl("shutdown", timeout_s=30)
        except (RuntimeError, subprocess.TimeoutExpired):
            self.process.kill()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


class Cluster:
    """Three nodes joined into one cluster; :meth:`close` stops them and removes their files."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="provider-jobs-cluster-"))
        self.nodes = [Node(i, self.base) for i in (1, 2, 3)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def broker_url(self) -> str:
        """``PROVIDER_JOBS_BROKER_URL`` for the cluster: every node's URL, comma-separated."""
        return ",".join(self.urls)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.await_started()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            node.stop_app()
            node.ctl("join_cluster", first.name)
            node.start_app()
        status = first.ctl("cluster_status", "--formatter", "json")
        missing = [node.name for node in self.nodes if node.name not in status]
        if missing:
            raise RuntimeError(f"nodes {missing} did not join the cluster: {status}")

    def close(self) -> None:
        for node in self.nodes:
            node.shutdown()
        shutil.rmtree(self.base, ignore_errors=True)

    def queues(self) -> str:
        """Every queue with its messages (ready, unacked) and leader, as one node lists them."""
        for node in self.nodes:
            try:
                return node.ctl(
                    "list_queues",
                    "-q",
                    "--no-table-headers",
                    "name",
                    "messages_ready",
                    "messages_unacknowledged",
                    "leader",
                    "online",
                    timeout_s=20,
                )
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                error = str(exc)
        return error

    def leader_of(self, queue: str) -> str:
        """The node that leads quorum queue ``queue`` now (``rabbitmqctl list_queues leader``)."""
        for node in self.nodes:
            try:
                out = node.ctl("list_queues", "-q", "--no-table-headers", "name", "leader", timeout_s=20)
            except (RuntimeError, subprocess.TimeoutExpired):
                continue
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == queue:
                    return parts[1]
        raise RuntimeError(f"no node knows the leader of {queue!r}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `timeout` and kill clean up too
    started = time.monotonic()
    cluster = Cluster()
    try:
        cluster.start()
        print(f"cluster up in {time.monotonic() - started:.1f} s: {cluster.broker_url}", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.close()

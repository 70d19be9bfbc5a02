from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SET_GAUGES = """
from provider_jobs.dlq.archiver import metrics
metrics.ARCHIVE_UP.set(1)
metrics.ARCHIVE_RECORDS.set(7)
metrics.ARCHIVE_OVER_CAP.set(2)
"""

_SCRAPE = """
import sys
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
multiprocess.mark_process_dead(int(sys.argv[1]))
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
sys.stdout.write(generate_latest(registry).decode())
"""


def test_gauges_of_an_archiver_that_exited_are_not_exported_in_multiprocess_mode(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", _SET_GAUGES], env=env, check=True)
    pid = next(p.stem.rpartition("_")[2] for p in tmp_path.glob("gauge_*.db"))
    scrape = subprocess.run(
        [sys.executable, "-c", _SCRAPE, pid], env=env, check=True, capture_output=True, text=True
    )
    assert "provider_jobs_dlq_archive" not in scrape.stdout

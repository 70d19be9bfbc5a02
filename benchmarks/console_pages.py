"""Console pages on workload 7's million-record archive: server time per page, p95, per database.

Run: ``python -m benchmarks.console_pages [--n 1000000] [--repeats 30]``. The archive is
loaded as workload 7 loads it (:mod:`benchmarks.dlq_queries`); the console is the API's
(``create_app``) behind FastAPI's test client, logged in with a token, so the time is the
server's work (routing, queries, rendering), with no browser and no network. The overview
reads queue depths from the RabbitMQ of ``PROVIDER_JOBS_BROKER_URL`` (default the local one).
The chart's query (dead letters per hour by category) is timed alone as well, and, in
the same run, the insert rate with the search index against without it
(:mod:`benchmarks.search_inserts`).
"""

from __future__ import annotations

import argparse
import logging
import re
import time
from collections.abc import Callable

from fastapi.testclient import TestClient

from provider_jobs.api import create_app
from provider_jobs.dlq import RecordFilter
from provider_jobs.settings import Settings

from . import search_inserts
from .dlq_queries import CATEGORIES, PROVIDERS, LoadedArchive, p95_ms

#: The token the benchmark logs in with.
_TOKEN = "bench-token"


def _client(loaded: LoadedArchive) -> TestClient:
    settings = Settings.from_env().replace(api_token=_TOKEN, archive_url="sqlite:///unused")
    client = TestClient(create_app(settings, archive=loaded.archive))
    login = client.get("/ui/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', login.text)
    assert nonce is not None
    answer = client.post(
        "/ui/login",
        data={"csrf": nonce.group(1), "name": "bench", "token": _TOKEN, "next": "/ui/"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    return client


def pages(loaded: LoadedArchive, client: TestClient) -> dict[str, str]:
    """The pages timed: name to path."""
    archive = loaded.archive
    [largest] = archive.groups(RecordFilter(statuses=["dead"]), limit=1)
    [newest] = archive.find(limit=1)
    tenth = archive.find(limit=1, offset=500)[0]
    namespace, resource_type = PROVIDERS[3]
    return {
        "overview (24 h chart)": "/ui/?window=24h",
        "overview (7 d chart)": "/ui/?window=7d",
        "overview refresh (24 h)": "/ui/overview/live?window=24h",
        "groups (all sorted, 200 shown)": "/ui/groups?sort=last_seen",
        "group (the largest)": f"/ui/groups/{largest.fingerprint}",
        "group replay dry run (the largest)": f"/ui/groups/{largest.fingerprint}/replay",
        "records, first page": "/ui/records",
        "records, filtered": f"/ui/records?status=dead&category={CATEGORIES[2]}"
        f"&provider={namespace}/{resource_type}",
        "records, 11th page (keyset)": f"/ui/records?before={tenth.dead_lettered_ms}.{tenth.id}",
        "records, a week's range": "/ui/records?since=2000-01-01T00:00&until=2100-01-01T00:00&status=dead",
        "record": f"/ui/records/{newest.id}",
        "audit": "/ui/audit",
        "records, text search (a job id)": "/ui/records?search=job-123456",
        "records, text search (two words, one record)": "/ui/records?search=rg-123456+ITL.P",
        "records, text search (a quarter of the records)": "/ui/records?search=quota",
    }


def measure(database: str, n: int, repeats: int) -> list[tuple[str, float]]:
    """p95 server time of every page, and of the chart's query, on one database."""
    loaded = LoadedArchive(database, n)
    try:
        client = _client(loaded)
        results = []
        for name, path in pages(loaded, client).items():

            def get(path: str = path) -> object:
                response = client.get(path)
                if response.status_code != 200:
                    raise AssertionError(f"{path}: {response.status_code} {response.text[:300]}")
                return response

            results.append((name, p95_ms(get, repeats)))
        now_ms = int(time.time() * 1000)
        for label, hours in (("24 h", 24), ("7 d", 168)):
            chart: Callable[[], object] = lambda hours=hours: loaded.archive.counts_by_hour(  # noqa: E731
                since_ms=now_ms - hours * 3_600_000
            )
            results.append((f"chart query alone ({label})", p95_ms(chart, repeats)))
        return results
    finally:
        loaded.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.console_pages", description=__doc__)
    parser.add_argument("--n", type=int, default=1_000_000, help="records in the archive")
    parser.add_argument("--repeats", type=int, default=30, help="timed requests per page")
    parser.add_argument("--databases", nargs="*", default=["sqlite", "postgresql"])
    parser.add_argument("--insert-n", type=int, default=20_000, help="records per insert round (0: skip)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    rows: dict[str, dict[str, float]] = {}
    for database in args.databases:
        for name, p95 in measure(database, args.n, args.repeats):
            rows.setdefault(name, {})[database] = p95
            print(f"  {database:10} {name:45} {p95:8.1f} ms p95", flush=True)
    print(f"\n| page ({args.n:,} records) | " + " | ".join(f"{d} p95 ms" for d in args.databases) + " |")
    print("| --- | " + " | ".join("---:" for _ in args.databases) + " |")
    for name, by_database in rows.items():
        print(
            f"| {name} | "
            + " | ".join(f"{by_database.get(d, float('nan')):.1f}" for d in args.databases)
            + " |"
        )
    if args.insert_n:
        print("\n| measure | variant | median | min | max | unit | ratio |")
        print("| --- | --- | ---: | ---: | ---: | --- | ---: |")
        for database in args.databases:
            for line in search_inserts.report(database, args.insert_n, rounds=3):
                print(line, flush=True)


if __name__ == "__main__":
    main()

"""Runs an archiver that freezes after its first commit, before its ack, so the test can SIGKILL it there.

Usage: python archiver_child.py BROKER_URL QUEUE ARCHIVE_URL MARKER_FILE BATCH_SIZE
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from provider_jobs.dlq import DeadLetterArchive, DeadLetterArchiver


def main() -> None:
    broker_url, queue, archive_url, marker, batch_size = sys.argv[1:6]

    def freeze_after_commit(records: list[object]) -> None:
        Path(marker + ".tmp").write_text(str(len(records)))
        Path(marker + ".tmp").rename(marker)
        threading.Event().wait()

    DeadLetterArchiver(
        archive=DeadLetterArchive(archive_url),
        broker_url=broker_url,
        queues=[queue],
        batch_size=int(batch_size),
        flush_ms=5000,
        after_commit=freeze_after_commit,
    ).run()


if __name__ == "__main__":
    main()

"""The module Dramatiq's CLI runs workers from: ``dramatiq provider_jobs.worker -p 4 -t 8``.

Made to be an entry point, and so the one module whose import has effects:
it reads the settings from the environment, builds the broker (no
connection is opened until a worker starts), declares the provider actors
on it and makes it Dramatiq's global broker. Each worker process then
configures logging and loads its providers when it boots. Nothing imports
this module.
"""

from __future__ import annotations

import dramatiq

from .actors.boot import worker_broker

__all__ = ["broker"]

#: Dramatiq's global broker in a worker process of Dramatiq's CLI.
broker = worker_broker()
dramatiq.set_broker(broker)

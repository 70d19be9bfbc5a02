# The README's two commands: `make run` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install run test test-fast test-quorum check format bench clean screenshots settings-table

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip
	$(BIN)/python -m pip install -q -e '.[all]' --group dev
	touch $@

install: $(BIN)/.installed

## Run the system: RabbitMQ, then in one process a worker with the demo providers,
## the archiver (SQLite under var/), the API on 127.0.0.1:8001 and a demo producer.
run: install
	bash scripts/ensure-rabbitmq.sh
	rm -rf var/metrics && mkdir -p var/metrics
	PROMETHEUS_MULTIPROC_DIR=var/metrics $(BIN)/provider-jobs demo

## Run the tests against a private RabbitMQ node, SQLite and PostgreSQL (what CI runs).
test: install
	bash scripts/ensure-test-services.sh
	$(BIN)/pytest

## The development loop: every test but those that stop or kill processes (fault), start a
## RabbitMQ cluster (cluster), drive a browser (browser) or build and install the wheel (packaging).
test-fast: install
	bash scripts/ensure-test-services.sh
	$(BIN)/pytest -m "not fault and not cluster and not browser and not packaging"

## The console's screenshots in the README (docs/console/*.png), taken by its browser tests.
screenshots: install
	bash scripts/ensure-test-services.sh
	PROVIDER_JOBS_CONSOLE_SCREENSHOTS=docs/console $(BIN)/pytest tests/console -k screenshots

## The end-to-end flows again with PROVIDER_JOBS_QUEUE_TYPE=quorum on the private node
## (the three-node cluster test, tests/faults/test_quorum_cluster.py, runs in `make test`).
test-quorum: install
	bash scripts/ensure-test-services.sh
	$(BIN)/pytest --queue-type=quorum tests/test_compat.py tests/test_smoke.py tests/dlq/test_dlq_replay.py \
		tests/dlq/test_dlq_archiver.py tests/actors/test_provider_ops.py tests/actors/test_dramatiq_cli.py \
		tests/api/test_server.py tests/api/test_metrics_endpoint.py tests/api/test_queue_stats.py tests/rabbitmq

check: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix src tests benchmarks scripts
	$(BIN)/ruff format src tests benchmarks scripts

## The README's settings table, generated from the settings model (a test fails when it is stale).
settings-table: install
	$(BIN)/python scripts/settings_table.py --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

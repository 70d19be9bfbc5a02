from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from provider_jobs import ConfigurationError, ProviderNotFound
from provider_jobs.jobs import ProviderJob
from provider_jobs.providers import (
    FunctionProvider,
    HttpProvider,
    InProcessProvider,
    ProviderRegistry,
    load_providers,
)


class Echo(InProcessProvider):
    actions = ("restart",)

    def create(self, job: ProviderJob) -> str:
        return "created"

    def restart(self, job: ProviderJob) -> str:
        return "restarted"


def job(operation: str) -> ProviderJob:
    return ProviderJob(provider_namespace="ITL.Core", resource_type="ResourceGroup", operation=operation)


def test_a_lookup_miss_names_the_provider() -> None:
    with pytest.raises(ProviderNotFound, match=r"^No provider found for ITL.Core/ResourceGroup$"):
        ProviderRegistry().get("ITL.Core", "ResourceGroup")


def test_providers_can_come_and_go_while_lookups_run() -> None:
    registry = ProviderRegistry()
    stop = threading.Event()
    seen: set[str] = set()

    def lookups() -> None:
        while not stop.is_set():
            try:
                seen.add(type(registry.get("ITL.Core", "ResourceGroup")).__name__)
            except ProviderNotFound:
                seen.add("missing")

    thread = threading.Thread(target=lookups)
    thread.start()
    for _ in range(2000):
        registry.register("ITL.Core", "ResourceGroup", Echo())
        registry.unregister("ITL.Core", "ResourceGroup")
    stop.set()
    thread.join()
    assert seen <= {"Echo", "missing"}
    assert "ITL.Core/ResourceGroup" not in registry


def test_in_process_providers_dispatch_operations_and_actions() -> None:
    assert Echo().execute(job("create")) == "created"
    assert Echo().execute(job("restart")) == "restarted"
    with pytest.raises(Exception, match="Unknown operation 'delete'"):
        Echo().execute(job("delete"))
    with pytest.raises(Exception, match="Unknown operation 'scale'"):
        FunctionProvider({"create": lambda j: 1}).execute(job("scale"))


def test_a_non_provider_is_refused_at_registration() -> None:
    with pytest.raises(TypeError, match="has no execute"):
        ProviderRegistry().register("A", "B", object())  # type: ignore[arg-type]


def test_providers_load_from_the_environment_spec_and_a_file(tmp_path: Path) -> None:
    providers_file = tmp_path / "providers.toml"
    providers_file.write_text(
        '[[providers]]\nnamespace = "ITL.Net"\nresource_type = "VNet"\nkind = "python"\n'
        'target = "tests_provider_target:Target"\n'
    )
    json_file = tmp_path / "providers.json"
    json_file.write_text(
        json.dumps(
            {
                "providers": [
                    {"namespace": "ITL.Dns", "resource_type": "Zone", "url": "http://dns:80", "timeout_s": 2}
                ]
            }
        )
    )
    registry = ProviderRegistry()
    keys = load_providers(registry, spec="ITL.Core/ResourceGroup=http://rg:8080; ITL.Core/Disk=http://disk")
    keys += load_providers(registry, path=str(json_file))
    assert keys == ["ITL.Core/ResourceGroup", "ITL.Core/Disk", "ITL.Dns/Zone"]
    rg = registry.get("ITL.Core", "ResourceGroup")
    assert isinstance(rg, HttpProvider) and rg.base_url == "http://rg:8080"
    with pytest.raises(ConfigurationError, match="expected an importable module:attribute"):
        load_providers(registry, path=str(providers_file))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("ITL.Core=http://x", "expected Namespace/Type=http://base-url"),
        ("ITL.Core/RG", "expected Namespace/Type=http://base-url"),
    ],
)
def test_a_malformed_spec_is_refused_with_one_clear_line(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_providers(ProviderRegistry(), spec=spec)


def test_a_missing_or_malformed_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_providers(ProviderRegistry(), path=str(tmp_path / "nope.toml"))
    bad = tmp_path / "bad.json"
    bad.write_text('{"providers": 3}')
    with pytest.raises(ConfigurationError, match="top-level 'providers' list"):
        load_providers(ProviderRegistry(), path=str(bad))


def test_a_provider_entry_with_a_bad_timeout_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "providers.toml"
    bad.write_text(
        '[[providers]]\nnamespace = "ITL.Core"\nresource_type = "Disk"\n'
        'url = "http://d"\ntimeout_s = "fast"\n'
    )
    with pytest.raises(
        ConfigurationError,
        match=r"ITL\.Core/Disk is not allowed: timeout_s and connect_timeout_s must be numbers",
    ):
        load_providers(ProviderRegistry(), path=str(bad))


def test_a_provider_entry_names_its_idempotency_header_or_turns_it_off(tmp_path: Path) -> None:
    providers_file = tmp_path / "providers.toml"
    providers_file.write_text(
        '[[providers]]\nnamespace = "ITL.Core"\nresource_type = "Disk"\nurl = "http://d"\n'
        'idempotency_header = "X-Request-Key"\n'
        '[[providers]]\nnamespace = "ITL.Core"\nresource_type = "Nic"\nurl = "http://n"\n'
        "idempotency_header = false\n"
        '[[providers]]\nnamespace = "ITL.Core"\nresource_type = "Vm"\nurl = "http://v"\n'
    )
    json_file = tmp_path / "providers.json"
    json_file.write_text(
        json.dumps(
            {
                "providers": [
                    {
                        "namespace": "ITL.Dns",
                        "resource_type": "Zone",
                        "url": "http://z",
                        "idempotency_header": None,
                    }
                ]
            }
        )
    )
    registry = ProviderRegistry()
    load_providers(registry, path=str(providers_file))
    load_providers(registry, path=str(json_file))
    headers = {
        key: registry.get(*key.split("/")).idempotency_header  # type: ignore[attr-defined]
        for key in ("ITL.Core/Disk", "ITL.Core/Nic", "ITL.Core/Vm", "ITL.Dns/Zone")
    }
    assert headers == {
        "ITL.Core/Disk": "X-Request-Key",
        "ITL.Core/Nic": None,
        "ITL.Core/Vm": "Idempotency-Key",
        "ITL.Dns/Zone": None,
    }


@pytest.mark.parametrize("value", ['"Idempotency Key"', "true", "3", '""'])
def test_a_bad_idempotency_header_is_one_clear_line_naming_the_entry(tmp_path: Path, value: str) -> None:
    bad = tmp_path / "providers.toml"
    bad.write_text(
        '[[providers]]\nnamespace = "ITL.Core"\nresource_type = "Disk"\n'
        f'url = "http://d"\nidempotency_header = {value}\n'
    )
    with pytest.raises(ConfigurationError) as caught:
        load_providers(ProviderRegistry(), path=str(bad))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("provider entry ITL.Core/Disk: idempotency_header=")
    assert "is not allowed: expected an HTTP header name such as 'Idempotency-Key'" in message

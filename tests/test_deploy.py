"""The Dockerfile and compose file: what can be checked without a Docker engine."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_executable

tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")

ROOT = Path(__file__).resolve().parents[1]


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_the_image_copies_every_package_the_project_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", _dockerfile(), flags=re.M))
    assert packages == copied


def test_the_image_pins_torch_as_the_project_does() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name in ("torch", "torchvision"):
        (pin,) = [d for d in deps if re.fullmatch(rf"{name}[<>=].*", d)]
        assert f'"{pin}"' in _dockerfile(), f"the Dockerfile installs {name} unlike pyproject"


def test_the_runtime_stage_runs_as_a_user_with_a_healthcheck() -> None:
    runtime = _dockerfile().split("AS runtime", 1)[1]
    assert re.search(r"^USER hanet$", runtime, flags=re.M)
    assert "HEALTHCHECK" in runtime and "/health" in runtime
    assert re.search(r'^CMD \["hanet", "serve"', runtime, flags=re.M)


@pytest.fixture(scope="module")
def compose() -> dict:
    exe = require_executable("docker-compose", "Debian: apt-get install docker-compose")
    out = subprocess.run(
        [exe, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_is_valid_and_wires_the_services(compose) -> None:
    services = {
        name: s for name, s in compose["services"].items() if "milvus" not in s.get("profiles", [])
    }
    assert set(services) == {"db", "migrate", "api", "indexer"}
    assert services["migrate"]["command"] == ["hanet", "db", "upgrade"]
    assert services["indexer"]["command"] == ["hanet", "index", "run", "--watch"]
    assert "--api-only" in services["api"]["command"]
    for name in ("api", "indexer"):
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        env = service["environment"]
        assert env["HANET_DATA_DIR"] == "/data"
        assert "hanet-data:/data:rw" in service["volumes"]  # uploads and builds are shared
        assert env["HANET_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert "@db:5432/" in env["HANET_DATABASE_URL"]
        assert env["HANET_AUTO_MIGRATE"] == "false"  # the migrate service's job, once
    assert "/ready" in json.dumps(services["api"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert {"pgdata", "hanet-data"} <= set(compose["volumes"])


MILVUS_PROFILE = {"milvus-etcd", "milvus-minio", "milvus", "api-milvus", "indexer-milvus"}


def test_the_milvus_profile_shares_no_index_directory(compose) -> None:
    """Milvus standalone (etcd + MinIO), two API replicas and three workers, every one with a
    healthcheck, none with a volume for the index: each has its own /data."""
    services = compose["services"]
    profiled = {name for name, s in services.items() if s.get("profiles") == ["milvus"]}
    assert profiled == MILVUS_PROFILE
    assert services["api-milvus"]["deploy"]["replicas"] == 2
    assert services["indexer-milvus"]["deploy"]["replicas"] == 3
    for name in MILVUS_PROFILE:
        check = services[name]["healthcheck"]
        assert not check.get("disable") and check["test"][0] == "CMD", name
    milvus = services["milvus"]
    assert milvus["command"] == ["milvus", "run", "standalone"]
    assert milvus["environment"]["ETCD_ENDPOINTS"] == "milvus-etcd:2379"
    assert milvus["environment"]["MINIO_ADDRESS"] == "milvus-minio:9000"
    for dep in ("milvus-etcd", "milvus-minio"):
        assert milvus["depends_on"][dep]["condition"] == "service_healthy"
    for name in ("api-milvus", "indexer-milvus"):
        service = services[name]
        env = service["environment"]
        assert env["HANET_VECTOR_STORE"] == "milvus"
        assert env["HANET_MILVUS_URI"] == "http://milvus:19530"
        assert env["HANET_MEDIA_STORE"] == "database"  # no folder shared between hosts
        assert service["depends_on"]["milvus"]["condition"] == "service_healthy"
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        mounts = [v.split(":")[1] for v in service.get("volumes", [])]
        assert "/data" not in mounts and mounts == ["/media"]  # media read-only, nothing else
        assert service["volumes"][0].endswith(":ro")


def test_compose_environment_is_valid_settings(compose, monkeypatch) -> None:
    """What compose passes must be accepted by the service's settings."""
    from service.settings import HanetSettings

    for key, value in compose["services"]["indexer"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = HanetSettings()
    assert settings.api_key is None and str(settings.data_dir) == "/data"
    assert settings.auto_migrate is False
    for key, value in compose["services"]["indexer-milvus"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = HanetSettings()
    assert settings.vector_store == "milvus" and settings.milvus_token is None
    assert settings.resolved_milvus_uri == "http://milvus:19530"

"""Fixtures shared by the deployment tests: the compose file as Compose resolves it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import SECRETS, compose


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "test.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    return path


@pytest.fixture(scope="module")
def model(env_file: Path) -> dict[str, Any]:
    """The compose file as Compose resolves it (anchors merged, variables set), all profiles."""
    return json.loads(compose(env_file, "config", "--format", "json").stdout)

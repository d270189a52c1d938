"""The shell scripts and the image workflow.

The Redis entrypoint, cluster-init and the image build script parse and pass shellcheck
(Debian `shellcheck`); the build script tags each role's image by version and commit, loading
locally and pushing multi-arch to a registry (its dry run); the CI workflow pushes multi-arch
images to GHCR on version tags. The scripts running for real: test_redis_scripts.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from helpers import REDIS_DIR, ROLES, ROOT, clean_env
from helpers import require_tool as tool
from helpers import run_command as run

# ---- scripts and CI ----------------------------------------------------------------------------


SCRIPTS = {REDIS_DIR / "entrypoint.sh": "sh", REDIS_DIR / "cluster-init.sh": "sh",
           ROOT / "scripts" / "build-images.sh": "bash"}


@pytest.mark.parametrize("script", list(SCRIPTS), ids=lambda p: p.name)
def test_shell_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    run(SCRIPTS[script], "-n", str(script))
    run(tool("shellcheck"), "--shell", SCRIPTS[script], str(script))


def test_build_script_tags_by_version_and_commit() -> None:
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(),
                        flags=re.M).group(1)  # type: ignore[union-attr]
    env = {**clean_env(), "DRY_RUN": "1"}
    env.pop("REGISTRY", None)
    local = run("bash", "scripts/build-images.sh", env=env).stdout.splitlines()
    assert len(local) == len(ROLES)
    for role, line in zip(ROLES, local, strict=True):
        assert f"--target {role}" in line and "--load" in line
        assert f"watchlog-{role}:{version}" in line and f"watchlog-{role}:sha-" in line
    pushed = run("bash", "scripts/build-images.sh",
                 env={**env, "REGISTRY": "ghcr.io/example"}).stdout.splitlines()
    for role, line in zip(ROLES, pushed, strict=True):
        assert f"ghcr.io/example/watchlog-{role}:{version}" in line
        assert "--push" in line and "linux/arm64" in line


def test_images_workflow_pushes_multi_arch_to_ghcr_on_tags() -> None:
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "images.yml").read_text())
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["push"]["tags"] == ["v*"]
    assert wf["permissions"]["packages"] == "write"
    job = wf["jobs"]["image"]
    assert set(job["strategy"]["matrix"]["role"]) == set(ROLES)
    build = next(s for s in job["steps"] if "build-push-action" in s.get("uses", ""))
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["file"] == "docker/Dockerfile"
    assert build["with"]["target"] == "${{ matrix.role }}"
    meta = next(s for s in job["steps"] if "metadata-action" in s.get("uses", ""))
    assert meta["with"]["images"].startswith("ghcr.io/")

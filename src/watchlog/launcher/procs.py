"""Ports and processes: check a port is free, spawn, find alive, stop a process group."""

from __future__ import annotations

import errno
import os
import random
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from watchlog.core.errors import LauncherError
from watchlog.core.process import UMASK, alive, umask

BUS_OFFSET = 10000  # Redis Cluster's bus listens on port + 10000
LOWEST_PORT = 10000


def make_private(root: Path, mask: int = UMASK) -> None:
    """Clear the ``mask`` bits of ``root`` and of everything under it (symlinks skipped).

    Applies the umask to what an older version (or a process started without it) left.
    """
    if not root.is_dir():
        return
    for path in [root, *root.rglob("*")]:
        try:
            st = path.lstat()
            if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) & mask:
                path.chmod(stat.S_IMODE(st.st_mode) & ~mask)
        except FileNotFoundError:
            continue  # a temporary file (an AOF rewrite's) gone meanwhile


def ephemeral_low() -> int:
    """Return the first port the kernel hands to outgoing connections (Linux: 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_free(host: str, port: int) -> bool:
    """Return True when ``host:port`` can be bound (nothing listens there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as the servers set it: a TIME_WAIT leftover does not count as taken.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def require_free(host: str, port: int, what: str) -> None:
    """Raise ``LauncherError`` naming ``what`` when ``host:port`` is taken."""
    if not port_free(host, port):
        raise LauncherError(f"port {port} on {host} is already in use (wanted by {what})")


def free_redis_ports(host: str, count: int, avoid: Sequence[int] = ()) -> list[int]:
    """Pick ``count`` ports whose cluster-bus ports (+10000) are free as well.

    Both stay below the kernel's ephemeral range: a port picked there can be taken by any
    outgoing connection (a Redis client's, a test's) between the check and the bind.
    """
    chosen: list[int] = []
    taken = set(avoid)
    highest = max(ephemeral_low() - 1 - BUS_OFFSET, LOWEST_PORT + 1000)
    for _ in range(2000):
        port = random.randint(LOWEST_PORT, highest)
        if port in taken or port + BUS_OFFSET in taken:
            continue
        if port_free(host, port) and port_free(host, port + BUS_OFFSET):
            chosen.append(port)
            taken.update((port, port + BUS_OFFSET))
            if len(chosen) == count:
                return chosen
    raise LauncherError(f"could not find {count} free port pairs on {host}")


def tcp_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Return True when something accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def spawn(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None, mask: int = UMASK) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session (its own process group), output to ``log_path``.

    The process runs with the umask ``mask``, and so does the creation of its log.
    """
    with umask(mask):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - closed below, once the child holds it
    with log:
        return subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
            umask=mask,
        )


def read_pid(path: Path) -> int | None:
    """Return the pid in a pidfile when that process is alive."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) else None


def wait_dead(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``pid`` to exit (reaping it if it is our child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (or to ``pid`` alone)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def terminate(pid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group of ``pid``, then SIGKILL it after ``grace`` seconds."""
    if not alive(pid):
        return
    signal_group(pid, signal.SIGTERM)
    if not wait_dead(pid, grace):
        signal_group(pid, signal.SIGKILL)
        wait_dead(pid, 5.0)

"""Render a cluster node's ``redis.conf`` and ``users.acl``; find a ``redis-server``.

Every choice below is made for a local cluster of small nodes on a small machine.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from watchlog.core.credentials import APP_USER, Credentials
from watchlog.core.errors import LauncherError

ADMIN_USER = "admin"
EXPORTER_USER = "exporter"

# The apps get exactly the commands the store runs, on their own keys: reads (minus
# KEYS/SCAN), the few writes the store's functions and the extraction make, FCALL of the
# functions an admin loaded, WAIT, and the introspection redis-py's cluster client runs
# (slot map, COMMAND, SETINFO). No EVAL or SCRIPT (no code of their own: a busy loop
# cannot be sent), no FUNCTION (no loading), no DEL/UNLINK/RENAME/FLUSH*/CONFIG, and of
# CLIENT only what a connection says of itself (no PAUSE, KILL or LIST of the others). Functions
# run their commands with the caller's permissions, so the writes they make stay allowed:
# docs/security.md says what the app password still permits. Verified by
# tests/launcher/test_launcher.py.
APP_RULES = (
    "resetchannels ~wl:* -@all "
    "+@read -keys -scan -randomkey "
    "+auth +hello +asking +reset +command +echo +quit +select "
    "+fcall +fcall_ro +wait +info +ping +readonly +readwrite "
    "+set +expire +expireat +zadd +hset +hincrby +sadd +xadd "
    "+xgroup|create +xgroup|destroy +xreadgroup +xautoclaim +xack "
    "+cluster|slots +cluster|shards +cluster|info +cluster|nodes +cluster|myid "
    "+cluster|keyslot +client|setinfo +client|setname +client|getname +client|id "
    "+command|docs"
)

# redis_exporter (1.45, measured with INFO commandstats and ACL LOG) calls INFO, CLUSTER
# INFO, SLOWLOG GET/LEN, LATENCY LATEST and CLIENT SETNAME; newer ones add CLUSTER NODES and
# LATENCY HISTOGRAM. No CONFIG GET: it would hand out `masterauth`, the admin password, so
# the exporter runs with `--config-command=-` (maxmemory still comes from INFO). No keys,
# no channels, no write command.
EXPORTER_RULES = (
    "resetchannels resetkeys -@all "
    "+info +ping +hello +cluster|info +cluster|nodes +slowlog|get +slowlog|len "
    "+latency|latest +latency|histogram +client|setname +client|setinfo -config"
)


@dataclass(frozen=True)
class NodeConfig:
    """What one node's ``redis.conf`` needs to know."""

    host: str
    port: int
    directory: Path
    node_timeout_ms: int = 3000
    maxmemory: str = "0"
    min_replicas: int = 0  # min-replicas-to-write: set when the cluster has replicas


def find_redis_server(explicit: str | None = None) -> str:
    """Return a redis-server binary: explicit, or on PATH (Redis 7 or later)."""
    found = explicit or shutil.which("redis-server")
    if not found:
        raise LauncherError("no redis-server found: `apt-get install redis-server` (Redis 7+)")
    return found


def server_version(binary: str) -> tuple[int, int]:
    """Return the (major, minor) version of a redis-server binary."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    match = re.search(r"v=(\d+)\.(\d+)", out.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else (7, 0)


# Commands younger than some servers we run on (7.0 in Debian 12, 7.4 in compose):
# naming an unknown command in an ACL file aborts the server's start.
_SINCE = {
    "client|setinfo": (7, 2), "cluster|shards": (7, 0), "command|docs": (7, 0),
    "fcall_ro": (7, 0), "latency|histogram": (7, 0), "function": (7, 0), "fcall": (7, 0),
}


def rules_for(rules: str, version: tuple[int, int]) -> str:
    """Drop the rules naming commands the server ``version`` does not know."""
    return " ".join(r for r in rules.split() if _SINCE.get(r.lstrip("+-"), (0, 0)) <= version)


def _hashed(password: str) -> str:
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def render_acl(creds: Credentials, version: tuple[int, int] = (7, 0)) -> str:
    """Return ``users.acl``: default off, admin, the app user and the exporter."""
    app, exporter = rules_for(APP_RULES, version), rules_for(EXPORTER_RULES, version)
    return "\n".join([
        # `off` with no password: nobody can log in as default, and unauthenticated
        # connections get NOAUTH. Its permissions stay full because Redis 7.0 replays the
        # AOF as the default user: with `-@all` every MULTI/EXEC (each Lua write is one)
        # fails with NOPERM on restart and its writes are silently lost (seen on 7.0.15).
        "user default off resetpass ~* &* +@all",
        f"user {ADMIN_USER} on {_hashed(creds.redis_admin_password)} ~* &* +@all",
        f"user {APP_USER} on {_hashed(creds.redis_app_password)} {app}",
        f"user {EXPORTER_USER} on {_hashed(creds.redis_exporter_password)} {exporter}",
    ]) + "\n"


def render_conf(node: NodeConfig, creds: Credentials, version: tuple[int, int]) -> str:
    """Return a node's ``redis.conf``."""
    small = "listpack"
    d = node.directory
    lines = [
        f"port {node.port}",
        f"bind {node.host}",
        "protected-mode yes",
        "daemonize no",
        f"dir {d}",
        f"logfile {d / 'redis.log'}",
        f"pidfile {d / 'redis.pid'}",
        f"aclfile {d / 'users.acl'}",
        "cluster-enabled yes",
        "cluster-config-file nodes.conf",
        # 3 s: a dead master is failed over in ~3-6 s (tests, demos) instead of 15-30 s;
        # loopback links never see the latency spikes a longer timeout guards against.
        f"cluster-node-timeout {node.node_timeout_ms}",
        # Full coverage required: with a master down and no replica, every call answers
        # CLUSTERDOWN (the apps say 503) rather than fleet reports silently missing the
        # partitions of the dead node and looking complete.
        "cluster-require-full-coverage yes",
        "cluster-allow-reads-when-down no",
        # Replicas authenticate to their master as the admin user (the default user is off).
        f"masteruser {ADMIN_USER}",
        f"masterauth {creds.redis_admin_password}",
        # A fresh replica syncs at once (the default waits 5 s for more replicas to batch).
        "repl-diskless-sync-delay 0",
        # Durability comes from the AOF (one second of writes at most is lost); RDB snapshots
        # would only add forks on a 2-core machine.
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        # Aggregate hashes (<= 77 fields), user indexes (a day's events of one user) and the
        # bodies of a quiet partition-day stay in the compact encoding; a busy day's bodies
        # (> 128) become a hash table, where a page's HMGET is O(1) per body, not a scan.
        f"hash-max-{small}-entries 128",
        f"hash-max-{small}-value 256",
        f"zset-max-{small}-entries 256",
        f"zset-max-{small}-value 128",
        "stream-node-max-entries 200",
        f"maxmemory {node.maxmemory}",
        # Activity logs are data, not cache: refuse writes when full, never evict.
        "maxmemory-policy noeviction",
        # A function running longer than 1 s makes the node answer BUSY and accept the admin
        # user's FUNCTION KILL (the readers; a writer is bounded by its batch instead).
        "busy-reply-threshold 1000",
    ]
    if node.min_replicas:
        lines += [
            # The server-side guard behind the apps' WAIT (docs/chaos.md): a master none of
            # whose replicas has acknowledged the stream for 10 s refuses writes (NOREPLICAS,
            # the apps answer 503) instead of taking writes that only it holds.
            f"min-replicas-to-write {node.min_replicas}",
            "min-replicas-max-lag 10",
        ]
    return "\n".join(lines) + "\n"


def write_node_files(node: NodeConfig, creds: Credentials, version: tuple[int, int]) -> Path:
    """Write ``redis.conf`` and ``users.acl`` (0600, they hold secrets); return the conf."""
    node.directory.mkdir(parents=True, exist_ok=True)
    conf = node.directory / "redis.conf"
    for path, text in ((conf, render_conf(node, creds, version)),
                       (node.directory / "users.acl", render_acl(creds, version))):
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(text)
    return conf

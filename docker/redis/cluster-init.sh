#!/bin/sh
# Form the watchlog Redis Cluster once, then only check it (compose service redis-cluster-init).
#
# Idempotent across `up` / `down` / `up` (the nodes keep nodes.conf on their volumes):
#   - no node belongs to a cluster yet  -> redis-cli --cluster create (masters, then replicas);
#   - a cluster exists                  -> re-introduce its members at their current addresses
#     (containers may come back with new IPs), add fresh nodes (replicas of the least
#     replicated masters, or empty masters), assign any slot a half-finished create left out;
#   - in every case, exit 0 only once every listed node sees all 16384 slots served
#     (cluster_state:ok), and 1 with a diagnosis after REDIS_INIT_TIMEOUT seconds.
# It polls (once a second) instead of sleeping a fixed time: depends_on already waits
# for healthy nodes, this only covers the gossip that follows.
#
# Environment: REDIS_MASTERS and REDIS_REPLICAS (space-separated host[:port]; replicas
# that do not resolve are skipped, so one service serves the compose `replicas` profile
# and the default), REDISCLI_AUTH (the admin password), REDIS_INIT_USER (admin),
# REDIS_FUNCTIONS (the store's function library file, loaded on every master).
set -eu

masters=${REDIS_MASTERS:?list the master nodes, host[:port] separated by spaces}
replicas=${REDIS_REPLICAS:-}
user=${REDIS_INIT_USER:-admin}
timeout=${REDIS_INIT_TIMEOUT:-120}
: "${REDISCLI_AUTH:?set REDISCLI_AUTH to the admin password}"
export REDISCLI_AUTH  # redis-cli reads it, so the password never shows in `ps`
deadline=$(( $(date +%s) + timeout ))

log() { echo "cluster-init: $*" >&2; }
host_of() { case $1 in *:*) echo "${1%:*}" ;; *) echo "$1" ;; esac; }
port_of() { case $1 in *:*) echo "${1##*:}" ;; *) echo 6379 ;; esac; }
# CLUSTER MEET takes addresses only, and containers change address across `down`/`up`.
ip_of() { getent ahostsv4 "$(host_of "$1")" | awk 'NR == 1 { print $1 }'; }
addr_of() { echo "$(ip_of "$1"):$(port_of "$1")"; }
cli() { node=$1; shift; redis-cli --user "$user" -h "$(host_of "$node")" -p "$(port_of "$node")" "$@"; }
field() { cli "$1" CLUSTER INFO | tr -d '\r' | sed -n "s/^$2://p"; }
expired() { [ "$(date +%s)" -ge "$deadline" ]; }

wait_for_ping() {
    until [ "$(cli "$1" PING 2>/dev/null)" = PONG ]; do
        if expired; then log "$1 does not answer PING"; exit 1; fi
        sleep 1
    done
}

# Replicas are optional: a node whose name does not resolve is not running (profile off).
present=""
for n in $replicas; do
    if [ -n "$(ip_of "$n")" ]; then present="$present $n"; else log "skipping $n (not running)"; fi
done
replicas=$present
# Nodes added to grow the cluster (compose profile `scale`: redis-node-7 and -8), skipped
# when not running. With replicas, they come in pairs: a master, then its replica (joined
# with --cluster-slave, it follows the master with fewest replicas: the new one).
extra=""
for n in ${REDIS_EXTRA_MASTERS:-}; do
    if [ -n "$(ip_of "$n")" ]; then extra="$extra $n"; else log "skipping $n (not running)"; fi
done
if [ -n "$replicas" ]; then
    i=0
    for n in $extra; do
        if [ $((i % 2)) -eq 0 ]; then masters="$masters $n"; else replicas="$replicas $n"; fi
        i=$((i + 1))
    done
else
    masters="$masters $extra"
fi
nodes="$masters $replicas"
for n in $nodes; do wait_for_ping "$n"; done

# A node is a member once it knows another node or serves a slot; else it is fresh.
is_member() { [ "$(field "$1" cluster_known_nodes)" -gt 1 ] || [ "$(field "$1" cluster_slots_assigned)" -gt 0 ]; }
seed=""
for n in $nodes; do
    if is_member "$n"; then seed=$n; break; fi
done

if [ -z "$seed" ]; then
    n_masters=$(echo "$masters" | wc -w)
    n_replicas=$(echo "$replicas" | wc -w)
    if [ $((n_replicas % n_masters)) -ne 0 ]; then
        log "$n_replicas replicas do not divide evenly among $n_masters masters"; exit 1
    fi
    addrs=""
    for n in $nodes; do addrs="$addrs $(addr_of "$n")"; done
    log "creating a cluster of $n_masters masters and $n_replicas replicas"
    # redis-cli takes the first $n_masters addresses as masters (one address per host here).
    # shellcheck disable=SC2086  # one argument per address
    redis-cli --user "$user" --cluster create $addrs \
        --cluster-replicas $((n_replicas / n_masters)) --cluster-yes
else
    log "cluster exists (seen from $seed): checking members and addresses"
    # Gossip does not carry new addresses of known nodes: every member must meet every
    # other member it knows only under an old address (after `down`/`up`, all of them).
    for a in $nodes; do
        is_member "$a" || continue
        known=$(cli "$a" CLUSTER NODES | awk '{ print $2 }' | cut -d@ -f1)
        for b in $nodes; do
            if [ "$a" != "$b" ] && is_member "$b" && ! echo "$known" | grep -qx "$(addr_of "$b")"; then
                log "re-introducing $b to $a at $(addr_of "$b")"
                cli "$a" CLUSTER MEET "$(ip_of "$b")" "$(port_of "$b")" >/dev/null
            fi
        done
    done
    for n in $nodes; do
        is_member "$n" && continue
        case " $replicas " in
            *" $n "*) log "adding $n as a replica"; role=--cluster-slave ;;
            *) log "adding $n as an empty master (move its share of partitions with REDIS_REBALANCE=yes)"; role="" ;;
        esac
        # redis-cli refuses to add while the nodes' views differ (gossip of the node added
        # just before has not spread yet): try again until it has.
        # shellcheck disable=SC2086  # $role is empty or one flag
        until is_member "$n" || redis-cli --user "$user" --cluster add-node "$(addr_of "$n")" "$(addr_of "$seed")" $role >/dev/null; do
            if expired; then log "could not add $n"; exit 1; fi
            sleep 1
        done
    done
fi

# True when node $1 lists every node at its current address, linked and not failing.
sees_all() {
    table=$(cli "$1" CLUSTER NODES)
    for m in $nodes; do
        echo "$table" | awk -v a="$(addr_of "$m")" '
            index($2, a "@") == 1 && $3 !~ /fail|handshake|noaddr/ && ($3 ~ /myself/ || $8 == "connected") { ok = 1 }
            END { exit !ok }' || return 1
    done
}

# Wait for gossip to converge; fill slots a create interrupted half-way left unassigned.
fixed=""
for n in $nodes; do
    until [ "$(field "$n" cluster_state)" = ok ] && [ "$(field "$n" cluster_slots_ok)" = 16384 ] \
        && sees_all "$n"; do
        if [ -z "$fixed" ] && [ "$(field "$n" cluster_slots_assigned)" -lt 16384 ] && [ -n "$seed" ]; then
            log "assigning uncovered slots"
            redis-cli --user "$user" --cluster fix "$(addr_of "$seed")" --cluster-yes >/dev/null || true
            fixed=1
        fi
        if expired; then
            log "cluster not ok after ${timeout}s as seen from $n:"
            cli "$n" CLUSTER INFO >&2 || true
            cli "$n" CLUSTER NODES >&2 || true
            exit 1
        fi
        sleep 1
    done
done
first=$(echo "$masters" | awk '{ print $1 }')
log "cluster ok: $(field "$first" cluster_known_nodes) nodes known, 16384 slots served"

# The store's Redis functions (src/watchlog/store/lua/library.lua), loaded by the admin
# user on every master: the apps' user may call them but cannot load code. Kept in the AOF
# and replicated; REPLACE makes a new release's library take over on the next `up`.
if [ -n "${REDIS_FUNCTIONS:-}" ]; then
    for n in $nodes; do
        if cli "$n" ROLE | head -n 1 | grep -qx master; then
            cli "$n" -x FUNCTION LOAD REPLACE < "$REDIS_FUNCTIONS" >/dev/null
        fi
    done
    log "functions loaded on every master"
fi

# With replicas, every node refuses writes when no replica has been in sync for 10 s
# (docs/chaos.md, "Durability"): the server-side guard behind the apps' WAIT. Set on each
# run of this service, so a node restarted from its old redis.conf gets it back.
guard=0
[ -n "$replicas" ] && guard=1
for n in $nodes; do
    cli "$n" CONFIG SET min-replicas-to-write "$guard" min-replicas-max-lag 10 >/dev/null
done
log "min-replicas-to-write $guard on every node"

# REDIS_REBALANCE=yes: give every master an equal share of the 64 partitions, live, as
# `watchlog cluster rebalance` does (docker/redis/rebalance.sh; docs/scaling.md). Run after
# nodes were added (profile `scale`), or to resume a rebalance that was interrupted.
if [ "${REDIS_REBALANCE:-no}" = yes ]; then
    sh "${REDIS_REBALANCE_SCRIPT:-/usr/local/bin/watchlog-rebalance.sh}" "$first"
fi

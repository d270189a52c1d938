#!/bin/sh
# Give every master of the cluster an equal share of watchlog's 64 partitions (±1), live:
# the rebalance of `watchlog cluster rebalance` (src/watchlog/launcher/redis/scale.py) for
# containers that have redis-cli but no Python (compose's redis-cluster-init runs it when
# REDIS_REBALANCE=yes; docs/scaling.md).
#
# A partition is 256 slots (p*256 .. p*256+255); its keys all live in slot p*256. The plan:
# the masters holding most keep the extra partition; a master over its share gives its
# highest partitions, one by one, to the master furthest under its share (ties: the order
# of CLUSTER NODES' addresses); a partition's slots held elsewhere ("stray" slots) join it.
# Each partition moves as redis-cli --cluster would move a slot: IMPORTING on the target,
# MIGRATING on the source, MIGRATE of the keys (batches of 100), WAIT for the target's
# replicas, SETSLOT NODE on the target, the source, then every other master; the next one
# starts once every node names the new owner (Redis 7.0 can lose a slot moved again before
# the cluster agreed: docs/chaos.md). Slots a run left MIGRATING/IMPORTING are finished first,
# so an interrupted run is resumed by running it again.
#
# Usage: rebalance.sh SEED_HOST[:PORT]   (REDISCLI_AUTH: the admin password; REDIS_INIT_USER)
#        REDIS_REBALANCE_DRY_RUN=yes prints the plan only.
set -eu

seed=${1:?name a node of the cluster, host[:port]}
user=${REDIS_INIT_USER:-admin}
: "${REDISCLI_AUTH:?set REDISCLI_AUTH to the admin password}"
export REDISCLI_AUTH
settle_timeout=${REDIS_SETTLE_TIMEOUT:-30}

log() { echo "rebalance: $*" >&2; }
host_of() { case $1 in *:*) echo "${1%:*}" ;; *) echo "$1" ;; esac; }
port_of() { case $1 in *:*) echo "${1##*:}" ;; *) echo 6379 ;; esac; }
cli() { node=$1; shift; redis-cli --user "$user" -h "$(host_of "$node")" -p "$(port_of "$node")" "$@"; }
# Commands read from stdin, one a line (no password on any command line).
cli_batch() { node=$1; redis-cli --user "$user" -h "$(host_of "$node")" -p "$(port_of "$node")"; }
nodes_of() { cli "$1" CLUSTER NODES | tr -d '\r'; }

# "id ip:port" of every live master, in CLUSTER NODES order.
masters() {
    nodes_of "$seed" | awk '$3 ~ /master/ && $3 !~ /fail|noaddr|handshake/ {
        split($2, a, "@"); print $1, a[1] }'
}
addr_of_id() { masters | awk -v id="$1" '$1 == id { print $2 }'; }

# Lines "slot source-id target-id" for every slot some master has MIGRATING or IMPORTING.
half_moved() {
    for m in $(masters | awk '{ print $2 }'); do
        nodes_of "$m" | awk '$3 ~ /myself/ {
            for (i = 9; i <= NF; i++) if ($i ~ /^\[/) {
                s = substr($i, 2, length($i) - 2)
                if (index(s, "->-")) { split(s, a, "->-"); print a[1], $1, a[2] }
                else { split(s, a, "-<-"); print a[1], a[2], $1 }
            } }'
    done | sort -u -n
}

# The plan: lines "partition target-id source-id slot,slot,..." (one per source of a move).
plan() {
    nodes_of "$seed" | awk '
        $3 ~ /master/ && $3 !~ /fail|noaddr|handshake/ { live[$1] = 1; order[++n] = $1 }
        $3 ~ /master/ {
            for (i = 9; i <= NF; i++) {
                if ($i ~ /^\[/) continue
                k = split($i, r, "-"); lo = r[1]; hi = (k > 1) ? r[2] : r[1]
                for (s = lo; s <= hi; s++) owner[s] = $1
            }
        }
        END {
            for (s = 0; s < 16384; s++) if (!(s in owner)) { print "uncovered", s; exit 1 }
            for (i = 1; i <= n; i++) count[order[i]] = 0
            for (p = 0; p < 64; p++) { holder[p] = owner[p * 256]; count[holder[p]]++ }
            base = int(64 / n); extra = 64 - base * n
            # rank: most partitions first, then CLUSTER NODES order
            for (i = 1; i <= n; i++) rank[i] = order[i]
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++)
                if (count[rank[j]] > count[rank[i]]) { t = rank[i]; rank[i] = rank[j]; rank[j] = t }
            for (i = 1; i <= n; i++) want[rank[i]] = base + (i <= extra ? 1 : 0)
            for (i = 1; i <= n; i++) surplus[order[i]] = count[order[i]] - want[order[i]]
            for (p = 63; p >= 0; p--) {
                target[p] = holder[p]; m = holder[p]
                if (surplus[m] <= 0) continue
                best = ""
                for (i = 1; i <= n; i++) {
                    m2 = order[i]
                    if (surplus[m2] < 0 && (best == "" || surplus[m2] < surplus[best])) best = m2
                }
                target[p] = best; surplus[m]--; surplus[best]++
            }
            for (p = 0; p < 64; p++) {
                delete by
                for (s = p * 256; s < p * 256 + 256; s++)
                    if (owner[s] != target[p]) by[owner[s]] = by[owner[s]] (by[owner[s]] == "" ? "" : ",") s
                for (src in by) print p, target[p], src, by[src]
            }
        }'
}

# move_slots SOURCE-ID TARGET-ID SLOT,SLOT,...
move_slots() {
    src=$(addr_of_id "$1"); dst=$(addr_of_id "$2"); slots=$(echo "$3" | tr , ' ')
    if [ -z "$src" ] || [ -z "$dst" ]; then log "no live master $1 or $2"; exit 1; fi
    # Errors here (a slot already importing, or already owned after an interrupted run)
    # are left to the steps below, which fail if the slot really is not where it must be.
    for s in $slots; do echo "CLUSTER SETSLOT $s IMPORTING $1"; done | cli_batch "$dst" >/dev/null || true
    for s in $slots; do echo "CLUSTER SETSLOT $s MIGRATING $2"; done | cli_batch "$src" >/dev/null || true
    moved=0
    # Only the slots that hold keys (one per partition, p*256) need MIGRATE: count them in one go.
    keyed=$(for s in $slots; do echo "CLUSTER COUNTKEYSINSLOT $s"; done | cli_batch "$src" \
        | tr -d '\r' | awk -v slots="$slots" 'BEGIN { split(slots, S, " ") } $1 > 0 { print S[NR] }')
    for s in $keyed; do
        while :; do
            keys=$(cli "$src" CLUSTER GETKEYSINSLOT "$s" 100 | tr -d '\r')
            [ -n "$keys" ] || break
            quoted=$(echo "$keys" | sed 's/\\/\\\\/g; s/"/\\"/g; s/^/"/; s/$/"/' | tr '\n' ' ')
            # AUTH2 and the password on stdin: never on a command line.
            tries=0
            while :; do
                out=$(printf 'MIGRATE %s %s "" 0 60000 REPLACE AUTH2 %s "%s" KEYS %s\n' \
                    "$(host_of "$dst")" "$(port_of "$dst")" "$user" "$REDISCLI_AUTH" "$quoted" \
                    | cli_batch "$src" | tr -d '\r')
                # A new master whose replica is still syncing refuses writes (NOREPLICAS).
                case $out in *NOREPLICAS*) ;; *) break ;; esac
                tries=$((tries + 1))
                if [ "$tries" -ge "$settle_timeout" ]; then break; fi
                sleep 1
            done
            case $out in OK|NOKEY) ;; *) log "MIGRATE of slot $s failed: $out"; exit 1 ;; esac
            moved=$((moved + $(echo "$keys" | wc -l)))
        done
    done
    replicas=$(nodes_of "$dst" | awk -v id="$2" '$4 == id && $3 !~ /fail/ { n++ } END { print n + 0 }')
    if [ "$moved" -gt 0 ] && [ "$replicas" -gt 0 ]; then
        got=$(cli "$dst" WAIT "$replicas" 30000 | tr -d '\r')
        if [ "$got" -lt "$replicas" ]; then
            log "$got of $replicas replicas of $dst confirmed the keys; rerun to finish"; exit 1
        fi
    fi
    for n in "$dst" "$src" $(masters | awk -v a="$1" -v b="$2" '$1 != a && $1 != b { print $2 }'); do
        for s in $slots; do echo "CLUSTER SETSLOT $s NODE $2"; done | cli_batch "$n" >/dev/null || true
    done
    keys_moved=$((keys_moved + moved))
    settle "$2" "$3"
}

# settle TARGET-ID SLOT,SLOT,...: every live node names the target, none has a slot half-moved.
settle() {
    deadline=$(( $(date +%s) + settle_timeout ))
    for n in $(nodes_of "$seed" | awk '$3 !~ /fail|noaddr|handshake/ { split($2, a, "@"); print a[1] }'); do
        until nodes_of "$n" | awk -v id="$1" -v want="$2" '
                /\[/ { bad = 1 }
                $1 == id { for (i = 9; i <= NF; i++) {
                    k = split($i, r, "-"); lo = r[1]; hi = (k > 1) ? r[2] : r[1]
                    for (s = lo; s <= hi; s++) mine[s] = 1 } }
                END { c = split(want, w, ","); for (i = 1; i <= c; i++) if (!(w[i] in mine)) bad = 1
                      exit bad }'; do
            if [ "$(date +%s)" -ge "$deadline" ]; then
                log "the slots moved, but $n does not agree yet; rerun to finish"; exit 1
            fi
            sleep 0.1
        done
    done
}

keys_moved=0
if [ "${REDIS_REBALANCE_DRY_RUN:-no}" != yes ]; then
    half_moved | while read -r slot src dst; do
        log "finishing slot $slot, left half-moved by an interrupted run"
        move_slots "$src" "$dst" "$slot"
    done
fi
moves=$(plan)
case $moves in uncovered*) log "slot ${moves#uncovered } is served by no master"; exit 1 ;; esac
total=$(echo "$moves" | awk 'NF { print $1 }' | sort -u | wc -l)
log "$total partitions to move (or align) over $(masters | wc -l) masters"
[ -n "$moves" ] || exit 0
echo "$moves" | while read -r p target src slots; do
    log "move partition $p ($(echo "$slots" | tr , '\n' | wc -l) slots): $(addr_of_id "$src") -> $(addr_of_id "$target")"
done
[ "${REDIS_REBALANCE_DRY_RUN:-no}" = yes ] && exit 0
done_n=0
echo "$moves" | while read -r p target src slots; do
    before=$keys_moved
    move_slots "$src" "$target" "$slots"
    done_n=$((done_n + 1))
    log "[$done_n] partition $p -> $(addr_of_id "$target"): $((keys_moved - before)) keys"
done
log "done"

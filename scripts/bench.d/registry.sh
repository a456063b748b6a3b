#!/usr/bin/env bash
# Registry: etcd -> gateway propagation delay of 100 registrations (p50/p99/max); gateway sync of 1,000 services x 10 instances (time, RSS, route lookup cost 1,000 vs 10 routes).
#
# One real etcd (Debian's etcd-server, temporary data dir, ephemeral ports, pinned to CPU
# $LOAD_CPU) and the real `tideway gateway` binary (built with the feature `etcd`,
# worker_threads = 1, pinned to CPU $SERVER_CPU) following it. Each part uses its own key prefix.
#
# (i) propagation: bench-registry (pinned to $LOAD_CPU) registers $BENCH_PROPAGATION_COUNT
#     instances one after another through `EtcdRegistry::register`, each a tiny RPC service of
#     its own (`bench.Who-N` on its own port, publishing `GET /who/N`, answering its instance
#     id). For each, the time from `register` returning to the first `GET /who/N` through the
#     gateway that answers 200 with that id; the gateway is polled every 1 ms on a keep-alive
#     connection (404 until it has the route).
# (ii) sync: bench-registry puts $BENCH_SERVICES services x $BENCH_INSTANCES instances (one
#     published route per service, distinct addresses, no leases) into etcd with batched
#     transactions, and $BENCH_SMALL_SERVICES x $BENCH_INSTANCES under another prefix. Then
#     fresh gateways are started and `bench-registry sync` polls /metrics every 5 ms from the
#     spawn until `tideway_registry_instances` (the catalog) and `tideway_routes` (the swapped-in
#     route table; the config file adds 1 route) show everything: $BENCH_SYNC_ROUNDS rounds on
#     the large set, one on the small set and one on an empty prefix (baseline). VmRSS of each
#     gateway at that moment and $SETTLE_SECS s later.
#     Route lookup cost, two ways: `RouteTable::lookup` in a loop over tables of 10, 1,000 and
#     10,000 routes shaped like the published ones (bench-registry lookup, pinned to
#     $SERVER_CPU); and wrk (-t1 -c$BENCH_CONNECTIONS, $BENCH_SECS s, $BENCH_ROUNDS interleaved
#     rounds) on the config file's `GET /rpc/item` route (bench-items-server over Tideway RPC)
#     of the large-set gateway and of the small-set gateway: req/s and requests per gateway
#     CPU-second.
#
# Knobs (environment): BENCH_PROPAGATION_COUNT BENCH_SERVICES BENCH_SMALL_SERVICES
# BENCH_INSTANCES BENCH_SYNC_ROUNDS SETTLE_SECS BENCH_SECS BENCH_ROUNDS BENCH_CONNECTIONS
# BENCH_PARTS (default "propagation sync") SERVER_CPU LOAD_CPU CARGO_TARGET_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

count="${BENCH_PROPAGATION_COUNT:-100}"
services="${BENCH_SERVICES:-1000}"
small_services="${BENCH_SMALL_SERVICES:-10}"
per_service="${BENCH_INSTANCES:-10}"
sync_rounds="${BENCH_SYNC_ROUNDS:-3}"
settle_secs="${SETTLE_SECS:-2}"
secs="${BENCH_SECS:-5}"
rounds="${BENCH_ROUNDS:-3}"
conns="${BENCH_CONNECTIONS:-64}"
parts="${BENCH_PARTS:-propagation sync}"
server_cpu="${SERVER_CPU:-0}"
load_cpu="${LOAD_CPU:-1}"

log() { echo "bench registry: $*" >&2; }

if [ "$(nproc)" -lt 2 ]; then
    log "needs at least 2 CPUs (the gateway and the rest each get one); have $(nproc)"
    exit 1
fi

"$root/scripts/install-deps" etcd=etcd-server wrk=wrk curl=curl protoc=protobuf-compiler \
    /usr/include/google/protobuf/descriptor.proto=libprotobuf-dev

log "building (cargo build --release -p tideway -p tideway-bench --features tideway/etcd,tideway-bench/etcd)"
cargo build --release -p tideway -p tideway-bench --features tideway/etcd,tideway-bench/etcd >&2
bin="$(cargo_target_dir)/release"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$root/bench-results/registry-$stamp"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
tmp="$(mktemp -d /tmp/tideway-bench-registry.XXXXXX)"
clk_tck="$(getconf CLK_TCK)"

cleanup() {
    stop_all
    keep_results "$tmp"/*.out "$tmp"/*.err
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop PID: SIGTERM, then wait until it is gone (also when it is not our child).
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$1" 2>/dev/null || true
}

# etcd, pinned to the load CPU. Default settings apart from the addresses (fsync on).
etcd_port="$(free_port)"
etcd_peer="$(free_port)"
etcd_url="http://127.0.0.1:$etcd_port"
taskset -c "$load_cpu" etcd --name=bench --data-dir="$tmp/etcd-data" \
    --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
    --listen-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
    --initial-cluster="bench=http://127.0.0.1:$etcd_peer" --logger=zap --log-level=warn \
    >"$tmp/etcd.log" 2>&1 &
etcd_pid=$!
procs+=("$etcd_pid")
for _ in $(seq 100); do
    curl -fsS --max-time 1 "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"' && break
    kill -0 "$etcd_pid" 2>/dev/null || { log "etcd exited:"; cat "$tmp/etcd.log" >&2; exit 1; }
    sleep 0.1
done
log "etcd $(etcd --version | head -n1 | awk '{ print $3 }') pid $etcd_pid at $etcd_url"

# The RPC service behind the config file's /rpc/item route.
taskset -c "$load_cpu" "$bin/bench-items-server" --addr 127.0.0.1:0 >"$tmp/items.log" 2>&1 &
items_pid=$!
procs+=("$items_pid")
items_addr=""
for _ in $(seq 100); do
    items_addr="$(sed -n '1s/^LISTENING //p' "$tmp/items.log")"
    [ -n "$items_addr" ] && break
    sleep 0.1
done
[ -n "$items_addr" ] || { log "bench-items-server did not start"; exit 1; }

# gateway_config NAME PREFIX ADMIN_PORT: writes $tmp/NAME.toml.
gateway_config() {
    cat >"$tmp/$1.toml" <<EOF
# Generated by scripts/bench.d/registry.sh
[server]
listen = "127.0.0.1:0"
worker_threads = 1
admin_listen = "127.0.0.1:$3"

[[services]]
name = "bench.Items"
endpoints = ["$items_addr"]

[[routes]]
path = "/rpc/item"
service = "bench.Items"
rpc_method = "item"
methods = ["GET"]

[registry]
backend = "etcd"
endpoints = ["$etcd_url"]
prefix = "$2"
EOF
    "$bin/tideway" check-config "$tmp/$1.toml" >&2
}

# listen_addr NAME: the gateway's HTTP address from the first line of $tmp/NAME.out.
listen_addr() {
    local addr=""
    for _ in $(seq 100); do
        addr="$(sed -n '1s|^Tideway gateway listening on http://||p' "$tmp/$1.out" 2>/dev/null)"
        [ -n "$addr" ] && { echo "$addr"; return 0; }
        sleep 0.1
    done
    log "gateway $1 printed no address"
    return 1
}

log "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "{\"loadavg_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$results"
source_state="$(source_state)"
python3 -c 'import json, sys; print(json.dumps({"source": sys.argv[1]}))' "$source_state" >>"$results"

failed=()

# ---- (i) propagation ----------------------------------------------------------------------
if [[ " $parts " == *" propagation "* ]]; then
    admin_port="$(free_port)"
    gateway_config prop /bench-prop "$admin_port"
    RUST_LOG=warn taskset -c "$server_cpu" "$bin/tideway" gateway --config "$tmp/prop.toml" \
        >"$tmp/prop.out" 2>"$tmp/prop.err" &
    prop_pid=$!
    procs+=("$prop_pid")
    prop_addr="$(listen_addr prop)"
    for _ in $(seq 100); do
        curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$admin_port/readyz" 2>/dev/null && break
        sleep 0.1
    done
    log "(i) propagation: $count registrations, gateway pid $prop_pid at $prop_addr"
    if ! taskset -c "$load_cpu" "$bin/bench-registry" propagation --etcd "$etcd_url" \
        --prefix /bench-prop --gateway "$prop_addr" --count "$count" >>"$results"; then
        failed+=("propagation")
    fi
    stop "$prop_pid"
fi

# ---- (ii) sync ----------------------------------------------------------------------------
if [[ " $parts " == *" sync "* ]]; then
    log "(ii) filling etcd: $services x $per_service under /bench-large, $small_services x $per_service under /bench-small"
    taskset -c "$load_cpu" "$bin/bench-registry" fill --etcd "$etcd_url" --prefix /bench-large \
        --services "$services" --instances "$per_service" >>"$results"
    taskset -c "$load_cpu" "$bin/bench-registry" fill --etcd "$etcd_url" --prefix /bench-small \
        --services "$small_services" --instances "$per_service" >>"$results"

    # sync_gateway NAME PREFIX SERVICES LABEL [--keep]: one fresh gateway, timed until synced.
    sync_gateway() {
        local name="$1" prefix="$2" n="$3" label="$4"
        shift 4
        local port
        port="$(free_port)"
        gateway_config "$name" "$prefix" "$port"
        sync_admin="127.0.0.1:$port"
        log "(ii) sync $label: $((n * per_service)) instances, $((n + 1)) routes"
        if ! "$bin/bench-registry" sync --gateway-bin "$bin/tideway" --config "$tmp/$name.toml" \
            --admin "$sync_admin" --expect-routes $((n + 1)) --expect-instances $((n * per_service)) \
            --log "$tmp/$name" --settle-secs "$settle_secs" --cpus "$server_cpu" --label "$label" \
            "$@" >"$tmp/$name.json"; then
            failed+=("sync $label")
            return 1
        fi
        cat "$tmp/$name.json" >>"$results"
        sync_pid="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["pid"])' "$tmp/$name.json")"
    }

    sync_gateway empty /bench-empty 0 empty || true
    for r in $(seq "$sync_rounds"); do
        if [ "$r" -lt "$sync_rounds" ]; then
            sync_gateway "large-$r" /bench-large "$services" large || true
        else
            sync_gateway large /bench-large "$services" large --keep || true
        fi
    done
    large_pid="${sync_pid:-}"
    [ -n "$large_pid" ] && procs+=("$large_pid")
    sync_gateway small /bench-small "$small_services" small --keep || true
    small_pid="${sync_pid:-}"
    [ -n "$small_pid" ] && procs+=("$small_pid")

    log "(ii) RouteTable::lookup micro-benchmark"
    taskset -c "$server_cpu" "$bin/bench-registry" lookup --routes 10,1000,10000 >>"$results"

    if [ -n "$large_pid" ] && [ -n "$small_pid" ] && [ "$large_pid" != "$small_pid" ]; then
        declare -A url_of pid_of
        url_of[large]="http://$(listen_addr large)/rpc/item"
        url_of[small]="http://$(listen_addr small)/rpc/item"
        pid_of[large]="$large_pid"
        pid_of[small]="$small_pid"
        for target in small large; do
            curl -fsS --max-time 5 -o /dev/null "${url_of[$target]}"
        done
        cat >"$tmp/report.lua" <<'EOF'
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non2xx": %d, "errors": %d}\n',
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        e.status, e.connect + e.read + e.write + e.timeout))
end
EOF
        for round in $(seq "$rounds"); do
            for target in small large; do
                log "(ii) wrk round $round/$rounds: $target (${secs}s)"
                pid="${pid_of[$target]}"
                taskset -c "$load_cpu" wrk -t1 -c"$conns" -d1s "${url_of[$target]}" >/dev/null || true
                t0="$(cpu_ticks "$pid")"
                taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$tmp/report.lua" \
                    "${url_of[$target]}" >"$tmp/wrk-$target-$round.log" || true
                t1="$(cpu_ticks "$pid")"
                line="$(sed -n 's/^WRK_JSON //p' "$tmp/wrk-$target-$round.log")"
                if [ -z "$line" ]; then
                    failed+=("wrk $target round $round")
                    continue
                fi
                python3 - "$line" "$target" "$round" "$((t1 - t0))" "$clk_tck" "$conns" >>"$results" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
ticks, clk = int(sys.argv[4]), int(sys.argv[5])
r["connections"] = int(sys.argv[6])
secs = r["duration_us"] / 1e6
r.update({"mode": "wrk", "target": sys.argv[2], "round": int(sys.argv[3]),
          "req_per_s": r["requests"] / secs, "cpu_s": ticks / clk,
          "req_per_cpu_s": r["requests"] / (ticks / clk) if ticks else None})
print(json.dumps(r))
PY
            done
        done
    else
        failed+=("wrk (a sync gateway is missing)")
    fi
fi

echo "{\"loadavg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$results"
for f in "${failed[@]}"; do
    python3 -c 'import json, sys; print(json.dumps({"failed": sys.argv[1]}))' "$f" >>"$results"
done

python3 - "$results" "$out/summary.txt" <<'PY'
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
lines = []
say = lines.append

def first(key):
    return next((r[key] for r in rows if key in r), "?")

def fmt(x, spec=",.0f"):
    return "-" if x is None else format(x, spec)

prop = next((r for r in rows if r.get("mode") == "propagation"), None)
if prop:
    ones = [r for r in rows if r.get("mode") == "propagation_one"]
    polls = statistics.median(r["polls"] for r in ones) if ones else None
    other = sum(r["other_status"] for r in ones)
    say("(i) propagation: %d registrations, register() returning -> first call routed to the new instance"
        % prop["count"])
    say("  %-10s %9s %9s %9s %9s %9s %14s" % ("", "min ms", "p50 ms", "p99 ms", "max ms", "unrouted", "non-404 polls"))
    say("  %-10s %9s %9s %9s %9s %9d %14d" % (
        "delay", fmt(prop["min_ms"], ".1f"), fmt(prop["p50_ms"], ".1f"), fmt(prop["p99_ms"], ".1f"),
        fmt(prop["max_ms"], ".1f"), prop["unrouted"], other))
    say("  (polled every 1 ms; median %s polls per registration)" % fmt(polls, ".0f"))
    say("")

fills = [r for r in rows if r.get("mode") == "fill"]
syncs = [r for r in rows if r.get("mode") == "sync"]
mib = lambda b: None if b is None else b / 2**20
large = [r for r in syncs if r["label"] == "large"]
if syncs:
    for f in fills:
        say("(ii) fill: %d keys (%d services x %d), %.1f MB, put in %.0f ms"
            % (f["keys"], f["services"], f["instances_per_service"], f["bytes"] / 1e6, f["ms"]))
    say("  %-7s %9s %7s %12s %11s %10s %8s %9s %12s" % (
        "gateway", "instances", "routes", "admin up ms", "catalog ms", "routes ms", "(log ms)",
        "RSS MiB", "settled MiB"))
    for r in syncs:
        say("  %-7s %9d %7d %12s %11s %10s %8s %9s %12s" % (
            r["label"], r["expect_instances"], r["expect_routes"], fmt(r["admin_up_ms"]),
            fmt(r["catalog_ms"]), fmt(r["routes_ms"]), fmt(r.get("applied_log_ms")),
            fmt(mib(r["rss_synced"]), ".1f"), fmt(mib(r["rss_settled"]), ".1f")))
    say("  times from the gateway's spawn: admin up = first /metrics answer; catalog = every instance")
    say("  in the catalog; routes = the route table with every route swapped in (the sync time),")
    say("  both seen by polling /metrics every 5 ms; log = the gateway's own \"registry change applied\"")
    say("  log line with every instance (its timestamp). RSS when synced, and %s s later." % (
        syncs[0].get("settle_secs", "?")))
    say("")

lookups = {r["routes"]: r for r in rows if r.get("mode") == "lookup"}
if lookups:
    say("RouteTable::lookup (GET /svcN/items/{id}, one captured parameter):")
    for n in sorted(lookups):
        say("  %6d routes: %6.1f ns per lookup (table built in %.1f ms)"
            % (n, lookups[n]["ns_per_lookup"], lookups[n]["build_ms"]))
    say("")

wrk = [r for r in rows if r.get("mode") == "wrk"]
summary = {}
if wrk:
    say("wrk -t1 -c%d on GET /rpc/item through the gateway (medians of %d rounds)"
        % (wrk[0]["connections"], max(r["round"] for r in wrk)))
    say("  %-28s %9s %7s %7s %11s %7s" % ("gateway", "req/s", "p50 ms", "p99 ms", "req/CPU-s", "errors"))
    routes_of = {r["label"]: r["expect_routes"] for r in syncs}
    for target in ("small", "large"):
        label = "%s: %s routes" % (target, format(routes_of.get(target, 0), ","))
        g = [r for r in wrk if r["target"] == target]
        if not g:
            continue
        s = {
            "req_per_s": statistics.median(r["req_per_s"] for r in g),
            "p50": statistics.median(r["p50_us"] for r in g) / 1000,
            "p99": statistics.median(r["p99_us"] for r in g) / 1000,
            "per_cpu": statistics.median(r["req_per_cpu_s"] for r in g if r["req_per_cpu_s"]),
            "errors": sum(r["errors"] + r["non2xx"] for r in g),
        }
        summary[target] = s
        say("  %-28s %9s %7.2f %7.2f %11s %7d" % (label, fmt(s["req_per_s"]), s["p50"], s["p99"],
                                                fmt(s["per_cpu"]), s["errors"]))
    # Each round measures small then large back to back: their ratio within a round is less
    # exposed to load that comes and goes on a shared machine than the ratio of medians.
    pairs = []
    for rnd in sorted({r["round"] for r in wrk}):
        by = {r["target"]: r for r in wrk if r["round"] == rnd}
        if "small" in by and "large" in by and by["small"]["req_per_cpu_s"] and by["large"]["req_per_cpu_s"]:
            pairs.append((rnd, by["large"]["req_per_cpu_s"] / by["small"]["req_per_cpu_s"],
                          by["small"]["cpu_s"] / by["small"]["duration_us"] * 1e6,
                          by["large"]["cpu_s"] / by["large"]["duration_us"] * 1e6))
    for rnd, ratio, cpu_small, cpu_large in pairs:
        say("  round %d: large/small req per CPU-s %.2f (gateway CPU use %.0f%% / %.0f%% of the run)"
            % (rnd, ratio, 100 * cpu_small, 100 * cpu_large))
    say("")

say("load average before/after: %s / %s" % (first("loadavg_before"), first("loadavg_after")))
say("built from: %s" % first("source"))
failed = [r["failed"] for r in rows if "failed" in r]
for f in failed:
    say("FAILED: %s" % f)
say("")

sync_ms = statistics.median(r["routes_ms"] for r in large) if large else None
sync_max = max(r["routes_ms"] for r in large) if large else None
lookup_ratio = (lookups[1000]["ns_per_lookup"] / lookups[10]["ns_per_lookup"]
                if 1000 in lookups and 10 in lookups else None)
wrk_ratio = (summary["large"]["per_cpu"] / summary["small"]["per_cpu"]
             if "large" in summary and "small" in summary else None)
if prop and prop["p99_ms"] is not None:
    say("target: propagation p99 < 500 ms: %s (%.1f ms)" % ("met" if prop["p99_ms"] < 500 else "NOT met", prop["p99_ms"]))
if sync_ms is not None:
    say("target: %s instances synced < 2000 ms: %s (median %.0f ms of %d rounds, max %.0f ms)"
        % (format(large[0]["expect_instances"], ","), "met" if sync_ms < 2000 else "NOT met", sync_ms,
           len(large), sync_max))
if lookup_ratio is not None:
    say("route lookup, 1,000 vs 10 routes: %.2fx the time per lookup (micro-benchmark; 10,000: %.2fx)"
        % (lookup_ratio, lookups[10000]["ns_per_lookup"] / lookups[10]["ns_per_lookup"] if 10000 in lookups else float("nan")))
if wrk_ratio is not None:
    say("requests per gateway CPU-second, large-set vs small-set gateway: %.2fx (wrk)" % wrk_ratio)
say("")

def result(key, value, spec=".1f"):
    if value is not None:
        say("RESULT %s=%s" % (key, format(value, spec)))

if prop:
    result("registry_propagation_p50_ms", prop["p50_ms"])
    result("registry_propagation_max_ms", prop["max_ms"])
result("registry_sync_max_ms", sync_max, ".0f")
if large:
    result("registry_sync_rss_mib", mib(large[-1]["rss_settled"]))
empty = next((r for r in syncs if r["label"] == "empty"), None)
if empty:
    result("registry_empty_rss_mib", mib(empty["rss_settled"]))
result("registry_lookup_ratio_1000_vs_10", lookup_ratio, ".2f")
result("registry_wrk_per_cpu_ratio_large_vs_small", wrk_ratio, ".2f")
if prop:
    result("registry_propagation_p99_ms", prop["p99_ms"])
result("registry_sync_10k_instances_ms", sync_ms, ".0f")

text = "\n".join(lines)
print(text)
with open(sys.argv[2], "w") as f:
    f.write(text + "\n")
sys.exit(1 if failed else 0)
PY

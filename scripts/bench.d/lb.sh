#!/usr/bin/env bash
# Load balancing: three instances, one answering after 2 s, 1 s deadline, per balancer (success %, p50/p99); rolling restart with graceful shutdown.
#
# Issue 6's benchmark, through the real `tideway gateway --config FILE` (release build,
# worker_threads = 1, pinned to CPU $SERVER_CPU). The service `bench.Lb` runs as three
# bench-lb processes (static endpoints in the gateway's [[services]]), on CPU $LOAD_CPU with
# the load generator, bench-http-load ($LB_CLIENTS keep-alive clients, each sending its next GET
# a random 0.5-1.5 x $LB_THINK_MS ms after its previous answer; the URLs cycle over $LB_KEYS
# keys, /lb/k0 ... so a consistent-hash balancer sees many keys).
#
# (1) slow instance: instances a and b answer after $FAST_DELAY_MS ms, c after $SLOW_DELAY_MS ms;
#     the route's deadline is $DEADLINE_MS ms. For each balancer in $LB_BALANCERS, a fresh
#     gateway with `[clusters."bench.Lb"] balancer = ...` (everything else default: outlier
#     ejection, breakers, retries) takes $LB_SECS s of load. Every request counts, from the first
#     (no warm-up is left out): success = 200 answers / requests sent. The calls each instance
#     started (its /stats) show how the balancer spread them.
# (2) rolling restart: three instances answering after $RESTART_DELAY_MS ms, a fresh gateway with
#     the default balancer (p2c PeakEWMA), $RESTART_CLIENTS clients for $RESTART_SECS s. After
#     $RESTART_FIRST_SECS s each instance in turn gets SIGTERM (graceful shutdown: GoAway on its
#     connections, calls in flight finish, exit) and, once it has exited, a new process is
#     started on the same port; $RESTART_GAP_SECS s between instances. The route is marked
#     idempotent = $RESTART_IDEMPOTENT (default false: only calls certainly not sent, or refused,
#     may be retried). Failed = every answer other than 200, plus client give-ups and errors.
#
# Besides the tables, each run prints how long the gateway and the load generator waited for a
# CPU (schedstat run_delay) and the load average: other work on a shared machine shows there.
#
# Knobs (environment): BENCH_SOURCE (the commit built, when not run from a git checkout) LB_SECS LB_CLIENTS LB_THINK_MS LB_KEYS LB_BALANCERS FAST_DELAY_MS
# SLOW_DELAY_MS DEADLINE_MS RESTART_SECS RESTART_FIRST_SECS RESTART_GAP_SECS RESTART_CLIENTS
# RESTART_DELAY_MS RESTART_IDEMPOTENT BENCH_SCENARIOS (default "slow restart")
# GATEWAY_LOG (the gateway's RUST_LOG, default warn) SERVER_CPU LOAD_CPU CARGO_TARGET_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

lb_secs="${LB_SECS:-15}"
lb_clients="${LB_CLIENTS:-50}"
lb_think_ms="${LB_THINK_MS:-50}"
lb_keys="${LB_KEYS:-64}"
balancers="${LB_BALANCERS:-p2c round_robin random weighted_round_robin consistent_hash}"
fast_delay_ms="${FAST_DELAY_MS:-1}"
slow_delay_ms="${SLOW_DELAY_MS:-2000}"
deadline_ms="${DEADLINE_MS:-1000}"
restart_secs="${RESTART_SECS:-20}"
restart_first_secs="${RESTART_FIRST_SECS:-3}"
restart_gap_secs="${RESTART_GAP_SECS:-4}"
restart_clients="${RESTART_CLIENTS:-50}"
restart_delay_ms="${RESTART_DELAY_MS:-5}"
restart_idempotent="${RESTART_IDEMPOTENT:-false}"
scenarios="${BENCH_SCENARIOS:-slow restart}"
server_cpu="${SERVER_CPU:-0}"
load_cpu="${LOAD_CPU:-1}"
gateway_log="${GATEWAY_LOG:-warn}"
# Connections from the gateway to each instance: one carries 1,024 calls, far more than the
# clients can have in flight.
rpc_connections=1

log() { echo "bench lb: $*" >&2; }

if [ "$(nproc)" -lt 2 ]; then
    log "needs at least 2 CPUs (the gateway and the rest each get one); have $(nproc)"
    exit 1
fi
if [ $((restart_first_secs + 3 * restart_gap_secs)) -ge "$restart_secs" ]; then
    log "RESTART_SECS must exceed RESTART_FIRST_SECS + 3 x RESTART_GAP_SECS"
    exit 1
fi

"$root/scripts/install-deps" curl=curl

log "building (cargo build --release -p tideway -p tideway-bench)"
cargo build --release -p tideway -p tideway-bench >&2
bin="$(cargo_target_dir)/release"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$root/bench-results/lb-$stamp"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
tmp="$(mktemp -d /tmp/tideway-bench-lb.XXXXXX)"

cleanup() {
    stop_all
    keep_results
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run_delay_ms PID: milliseconds the process has waited for a CPU so far (schedstat).
run_delay_ms() {
    awk '{ printf "%.0f", $2 / 1e6 }' "/proc/$1/schedstat" 2>/dev/null || echo 0
}

# record JSON: appends one line to results.jsonl.
record() { echo "$1" >>"$results"; }

declare -A inst_pid inst_addr inst_stats
# start_instance NAME DELAY_MS [ADDR]: starts bench-lb on $load_cpu (port 0 unless ADDR).
start_instance() {
    local name="$1" delay="$2" addr="${3:-127.0.0.1:0}"
    local log_file="$tmp/instance-$name-$RANDOM.log"
    taskset -c "$load_cpu" "$bin/bench-lb" --name "$name" --addr "$addr" --delay-ms "$delay" \
        >"$log_file" 2>&1 &
    local pid=$!
    procs+=("$pid")
    local listening stats
    if ! listening="$(wait_line "$log_file" '1s/^LISTENING //p' "$pid" 0.05)" ||
        ! stats="$(wait_line "$log_file" 's/^STATS //p' "$pid" 0.05)"; then
        log "bench-lb $name did not start:"
        cat "$log_file" >&2
        return 1
    fi
    inst_pid[$name]="$pid"
    inst_addr[$name]="$listening"
    inst_stats[$name]="$stats"
}

# instance_started NAME: calls the instance has started since it began (its /stats).
instance_started() {
    curl -fsS --max-time 2 "http://${inst_stats[$1]}/stats" 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["started"])' 2>/dev/null || echo -1
}

# start_gateway TAG CLUSTER_TOML IDEMPOTENT NAMES...: writes the config and starts
# `tideway gateway` on $server_cpu; sets $gateway_pid, $gateway_addr and $admin_addr.
start_gateway() {
    local tag="$1" cluster="$2" idempotent="$3"
    shift 3
    local endpoints="" n
    for n in "$@"; do
        endpoints="$endpoints\"${inst_addr[$n]}\", "
    done
    local config="$tmp/gateway-$tag.toml"
    admin_addr="127.0.0.1:$(free_port)"
    cat >"$config" <<EOF
# Generated by scripts/bench.d/lb.sh, run $tag
[server]
listen = "127.0.0.1:0"
admin_listen = "$admin_addr"
worker_threads = 1

[[services]]
name = "bench.Lb"
endpoints = [${endpoints%, }]
connections_per_endpoint = $rpc_connections

[clusters."bench.Lb"]
$cluster

[[routes]]
path = "/lb/{key}"
service = "bench.Lb"
rpc_method = "work"
params = { key = "string" }
timeout = "${deadline_ms}ms"
idempotent = $idempotent
EOF
    "$bin/tideway" check-config "$config" >&2
    local log_file="$tmp/gateway-$tag.log"
    RUST_LOG="$gateway_log" taskset -c "$server_cpu" "$bin/tideway" gateway --config "$config" \
        >"$log_file" 2>"$tmp/gateway-$tag.stderr.log" &
    gateway_pid=$!
    procs+=("$gateway_pid")
    if ! gateway_addr="$(wait_line "$log_file" '1s|^Tideway gateway listening on http://||p' "$gateway_pid" 0.05)"; then
        log "tideway gateway did not start:"
        cat "$log_file" "$tmp/gateway-$tag.stderr.log" >&2
        return 1
    fi
    for _ in $(seq 50); do
        curl -fsS --max-time 1 -o /dev/null "http://$admin_addr/healthz" 2>/dev/null && return 0
        sleep 0.1
    done
    log "the gateway's admin listener at $admin_addr does not answer"
    return 1
}

# urls: the load generator's --url arguments, one per key.
urls=()
for k in $(seq 0 $((lb_keys - 1))); do
    urls+=(--url "http://GATEWAY/lb/k$k")
done
gateway_urls() { printf '%s\n' "${urls[@]}" | sed "s|GATEWAY|$gateway_addr|"; }

# load TAG CLIENTS SECS: runs bench-http-load on $load_cpu against the gateway; its JSON goes
# to $out/load-TAG.json.
load() {
    local tag="$1" clients="$2" secs="$3"
    local args=()
    mapfile -t args < <(gateway_urls)
    if ! taskset -c "$load_cpu" "$bin/bench-http-load" "${args[@]}" --connections "$clients" \
        --duration-secs "$secs" --think-ms "$lb_think_ms" --timeout-ms $((deadline_ms + 2000)) \
        --late-ms "$deadline_ms" --ramp-ms "$lb_think_ms" >"$out/load-$tag.json" \
        2>"$tmp/load-$tag.log"; then
        log "load generator failed ($tag):"
        cat "$tmp/load-$tag.log" >&2
        echo '{}' >"$out/load-$tag.json"
        return 1
    fi
}

# cluster_toml BALANCER: the [clusters."bench.Lb"] body for a balancer.
cluster_toml() {
    case "$1" in
        p2c) echo 'balancer = "p2c_peak_ewma"' ;;
        round_robin | random) echo "balancer = \"$1\"" ;;
        weighted_round_robin) echo 'balancer = { kind = "weighted_round_robin" }' ;;
        consistent_hash) echo 'balancer = { kind = "consistent_hash", key = { param = "key" } }' ;;
        *)
            log "unknown balancer $1"
            return 1
            ;;
    esac
}

log "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
record "{\"loadavg_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
# BENCH_SOURCE: what was built, when the tree is not a git checkout (an exported commit).
source_state="${BENCH_SOURCE:-$(source_state)}"
python3 -c 'import json, sys; print(json.dumps({"source": sys.argv[1]}))' "$source_state" >>"$results"
python3 -c 'import json, sys; print(json.dumps({"config": dict(zip(sys.argv[1::2], sys.argv[2::2]))}))' \
    lb_secs "$lb_secs" lb_clients "$lb_clients" lb_think_ms "$lb_think_ms" lb_keys "$lb_keys" \
    fast_delay_ms "$fast_delay_ms" slow_delay_ms "$slow_delay_ms" deadline_ms "$deadline_ms" \
    restart_secs "$restart_secs" restart_first_secs "$restart_first_secs" \
    restart_gap_secs "$restart_gap_secs" restart_clients "$restart_clients" \
    restart_delay_ms "$restart_delay_ms" restart_idempotent "$restart_idempotent" >>"$results"

# ---- (1) slow instance, per balancer -------------------------------------------------------
if [[ " $scenarios " == *" slow "* ]]; then
    start_instance a "$fast_delay_ms"
    start_instance b "$fast_delay_ms"
    start_instance c "$slow_delay_ms"
    log "instances a, b (${fast_delay_ms} ms) and c (${slow_delay_ms} ms): ${inst_addr[a]} ${inst_addr[b]} ${inst_addr[c]}"
    for bal in $balancers; do
        start_gateway "slow-$bal" "$(cluster_toml "$bal")" true a b c
        log "slow instance, $bal: $lb_clients clients for ${lb_secs}s"
        before_a="$(instance_started a)" before_b="$(instance_started b)" before_c="$(instance_started c)"
        gw_wait0="$(run_delay_ms "$gateway_pid")"
        load0="$(cut -d' ' -f1 /proc/loadavg)"
        load "slow-$bal" "$lb_clients" "$lb_secs" || true
        gw_wait1="$(run_delay_ms "$gateway_pid")"
        load1="$(cut -d' ' -f1 /proc/loadavg)"
        curl -fsS --max-time 2 "http://$admin_addr/admin/services" >"$out/services-slow-$bal.json" 2>/dev/null || echo '{}' >"$out/services-slow-$bal.json"
        record "$(python3 -c 'import json, sys; a = sys.argv; print(json.dumps({"run": "slow", "balancer": a[1], "load": json.load(open(a[2])), "services": json.load(open(a[3])), "instance_calls": {"a": int(a[4]), "b": int(a[5]), "c": int(a[6])}, "gateway_cpu_wait_ms": int(a[7]), "loadavg": [float(a[8]), float(a[9])]}))' \
            "$bal" "$out/load-slow-$bal.json" "$out/services-slow-$bal.json" \
            $(($(instance_started a) - before_a)) $(($(instance_started b) - before_b)) \
            $(($(instance_started c) - before_c)) $((gw_wait1 - gw_wait0)) "$load0" "$load1")"
        stop "$gateway_pid"
    done
    for n in a b c; do stop "${inst_pid[$n]}"; done
fi

# ---- (2) rolling restart -------------------------------------------------------------------
if [[ " $scenarios " == *" restart "* ]]; then
    start_instance r1 "$restart_delay_ms"
    start_instance r2 "$restart_delay_ms"
    start_instance r3 "$restart_delay_ms"
    start_gateway restart 'balancer = "p2c_peak_ewma"' "$restart_idempotent" r1 r2 r3
    log "rolling restart: $restart_clients clients for ${restart_secs}s, a restart every ${restart_gap_secs}s from ${restart_first_secs}s"
    gw_wait0="$(run_delay_ms "$gateway_pid")"
    load0="$(cut -d' ' -f1 /proc/loadavg)"
    t0="$(date +%s.%N)"
    load restart "$restart_clients" "$restart_secs" &
    load_pid=$!
    sleep "$restart_first_secs"
    restarts=()
    for n in r1 r2 r3; do
        addr="${inst_addr[$n]}"
        calls_before="$(instance_started "$n")"
        t_term="$(date +%s.%N)"
        kill -TERM "${inst_pid[$n]}"
        wait "${inst_pid[$n]}" 2>/dev/null || true
        t_exit="$(date +%s.%N)"
        start_instance "$n" "$restart_delay_ms" "$addr"
        t_up="$(date +%s.%N)"
        restarts+=("$(python3 -c 'import json, sys; a = sys.argv; t0 = float(a[2]); print(json.dumps({"instance": a[1], "sigterm_at_s": round(float(a[3]) - t0, 3), "exited_at_s": round(float(a[4]) - t0, 3), "up_again_at_s": round(float(a[5]) - t0, 3), "calls_before": int(a[6])}))' \
            "$n" "$t0" "$t_term" "$t_exit" "$t_up" "$calls_before")")
        log "restarted $n on $addr: $(echo "${restarts[-1]}")"
        sleep "$restart_gap_secs"
    done
    wait "$load_pid" || true
    gw_wait1="$(run_delay_ms "$gateway_pid")"
    load1="$(cut -d' ' -f1 /proc/loadavg)"
    curl -fsS --max-time 2 "http://$admin_addr/admin/services" >"$out/services-restart.json" 2>/dev/null || echo '{}' >"$out/services-restart.json"
    after_calls="{\"r1\": $(instance_started r1), \"r2\": $(instance_started r2), \"r3\": $(instance_started r3)}"
    record "$(python3 -c 'import json, sys; a = sys.argv; print(json.dumps({"run": "restart", "load": json.load(open(a[1])), "services": json.load(open(a[2])), "restarts": [json.loads(x) for x in a[7:]], "calls_after_restart": json.loads(a[3]), "gateway_cpu_wait_ms": int(a[4]), "loadavg": [float(a[5]), float(a[6])]}))' \
        "$out/load-restart.json" "$out/services-restart.json" "$after_calls" \
        $((gw_wait1 - gw_wait0)) "$load0" "$load1" "${restarts[@]}")"
    stop "$gateway_pid"
    for n in r1 r2 r3; do stop "${inst_pid[$n]}"; done
fi

record "{\"loadavg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"

python3 - "$results" "$out/summary.txt" <<'PY'
import json
import sys

results_path, summary_path = sys.argv[1], sys.argv[2]
rows = [json.loads(line) for line in open(results_path) if line.strip()]
lines = []
say = lines.append
config = next((r["config"] for r in rows if "config" in r), {})
source = next((r["source"] for r in rows if "source" in r), "?")
load_before = next((r["loadavg_before"] for r in rows if "loadavg_before" in r), "?")
load_after = next((r["loadavg_after"] for r in rows if "loadavg_after" in r), "?")

def outcome(load):
    """(sent, ok, failed by kind) of one bench-http-load report; every request counts."""
    statuses = dict(load.get("statuses", {}))
    for status, s in load.get("warmup", {}).get("statuses", {}).items():
        if status in statuses:
            statuses[status] = dict(statuses[status], count=statuses[status]["count"] + s["count"])
        else:
            statuses[status] = s
    ok = statuses.get("200", {}).get("count", 0)
    failed = {k: v["count"] for k, v in statuses.items() if k != "200"}
    for kind in ("timeouts", "io_errors", "connect_errors"):
        if load.get(kind):
            failed[kind] = load[kind]
    return ok + sum(failed.values()), ok, failed

def fmt_failed(failed):
    return ", ".join("%s: %d" % kv for kv in sorted(failed.items())) or "-"

def cluster_stats(run):
    """The gateway's counters of the bench.Lb cluster at the end of a run (/admin/services)."""
    services = (run.get("services") or {}).get("services") or []
    svc = next((s for s in services if s.get("name") == "bench.Lb"), {})
    return svc.get("stats", {})

names = {
    "p2c": ("p2c", "p2c PeakEWMA"),
    "round_robin": ("rr", "round robin"),
    "random": ("random", "random"),
    "weighted_round_robin": ("wrr", "smooth weighted RR"),
    "consistent_hash": ("hash", "consistent hash"),
}
results = {}
slow = [r for r in rows if r.get("run") == "slow"]
if slow:
    say("Slow instance: 3 instances of bench.Lb (a, b: %s ms; c: %s ms), route deadline %s ms, "
        "%s clients x %s s, think %s ms, %s keys; through `tideway gateway` (1 worker)" % (
            config.get("fast_delay_ms"), config.get("slow_delay_ms"), config.get("deadline_ms"),
            config.get("lb_clients"), config.get("lb_secs"), config.get("lb_think_ms"),
            config.get("lb_keys")))
    say("")
    head = ("balancer", "requests", "req/s", "success %", "p50 ms", "p99 ms", "calls a/b/c",
            "failed (status: n)", "ejections", "gw wait ms", "load wait ms", "loadavg")
    say("%-19s %8s %6s %9s %7s %8s %17s %24s %9s %10s %12s %11s" % head)
    for r in slow:
        load = r["load"]
        sent, ok, failed = outcome(load)
        pct = 100.0 * ok / sent if sent else None
        key, label = names.get(r["balancer"], (r["balancer"], r["balancer"]))
        results[key] = {"pct": pct, "p50": load.get("p50_ms"), "p99": load.get("p99_ms")}
        calls = r["instance_calls"]
        ejections = cluster_stats(r).get("ejections", "?")
        say("%-19s %8d %6.0f %9s %7s %8s %17s %24s %9s %10d %12s %11s" % (
            label, sent, load.get("responses_per_s", 0),
            "-" if pct is None else "%.3f" % pct,
            "%.1f" % load["p50_ms"] if "p50_ms" in load else "-",
            "%.1f" % load["p99_ms"] if "p99_ms" in load else "-",
            "%d/%d/%d" % (calls["a"], calls["b"], calls["c"]),
            fmt_failed(failed), ejections, r["gateway_cpu_wait_ms"],
            "%.0f" % load["cpu_wait_ms"] if "cpu_wait_ms" in load else "-",
            "%.1f->%.1f" % tuple(r["loadavg"])))
    say("(p50/p99 over every answer, 504s included; calls a/b/c: calls each instance started;")
    say(" wait: time the gateway / load generator spent waiting for a CPU during the run)")
    say("")

restart = next((r for r in rows if r.get("run") == "restart"), None)
restart_failed = None
if restart:
    load = restart["load"]
    sent, ok, failed = outcome(load)
    restart_failed = sent - ok
    say("Rolling restart: 3 instances (%s ms), p2c PeakEWMA, %s clients x %s s, route idempotent = %s; "
        "SIGTERM (GoAway, drain) then a new process on the same port, one every %s s" % (
            config.get("restart_delay_ms"), config.get("restart_clients"),
            config.get("restart_secs"), config.get("restart_idempotent"),
            config.get("restart_gap_secs")))
    for x in restart["restarts"]:
        say("  %s: SIGTERM at %.2f s, exited at %.2f s, listening again at %.2f s" % (
            x["instance"], x["sigterm_at_s"], x["exited_at_s"], x["up_again_at_s"]))
    say("  calls each new process served: %s" % ", ".join(
        "%s %d" % kv for kv in sorted(restart["calls_after_restart"].items())))
    say("  requests %d, ok %d, failed %d (%s); p50 %.1f ms, p99 %.1f ms, max %.1f ms" % (
        sent, ok, restart_failed, fmt_failed(failed), load.get("p50_ms", 0),
        load.get("p99_ms", 0), load.get("worst_ms", 0) or 0))
    bad_secs = [s for s in load.get("timeline", [])
                if s.get("timeouts") or s.get("errors") or any(k != "200" for k in s.get("by_status", {}))]
    for s in bad_secs:
        say("  second %s: %s timeouts %s errors %s" % (s["t"], s["by_status"], s["timeouts"], s["errors"]))
    if load.get("first_error"):
        say("  first error: %s" % load["first_error"])
    st = cluster_stats(restart)
    if st:
        say("  gateway's cluster: %s" % ", ".join("%s %s" % (k, st.get(k, "?")) for k in (
            "calls", "failed_calls", "retries", "budget_exhausted", "drains", "ejections", "shed")))
    say("  gateway waited %d ms for a CPU, load generator %.0f ms; loadavg %.1f->%.1f" % (
        restart["gateway_cpu_wait_ms"], load.get("cpu_wait_ms", 0), *restart["loadavg"]))
    say("")

say("source: %s; load average before/after: %s / %s" % (source, load_before, load_after))
p2c = results.get("p2c", {}).get("pct")
if p2c is not None:
    say("target: p2c PeakEWMA success >= 99.9 %%: %s (%.3f %%)" % ("met" if p2c >= 99.9 else "NOT met", p2c))
if restart_failed is not None:
    say("target: rolling restart 0 failed: %s (%d)" % ("met" if restart_failed == 0 else "NOT met", restart_failed))
say("")

def result(key, value, spec=".3f"):
    if value is not None:
        say("RESULT %s=%s" % (key, format(value, spec)))

for key in ("p2c", "rr", "random", "wrr", "hash"):
    r = results.get(key)
    if r:
        result("lb_%s_success_pct" % key, r["pct"])
for key in ("p2c", "rr", "random", "wrr", "hash"):
    r = results.get(key)
    if r:
        result("lb_%s_p50_ms" % key, r["p50"], ".1f")
        result("lb_%s_p99_ms" % key, r["p99"], ".1f")
result("rolling_restart_failed", restart_failed, "d")

text = "\n".join(lines)
print(text)
with open(summary_path, "w") as f:
    f.write(text + "\n")
PY

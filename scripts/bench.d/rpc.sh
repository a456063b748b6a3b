#!/usr/bin/env bash
# RPC: Tideway vs tonic, 1 KiB echo at concurrency 1/64/1000 on one connection; memory per pending call.
#
# Both servers run on one current-thread runtime pinned to CPU $SERVER_CPU (taskset); the load
# generator runs pinned to CPU $LOAD_CPU. For every (concurrency, target) pair and every round,
# bench-rpc-load warms up, then measures calls/s, latency percentiles and the server's CPU time
# (utime+stime from /proc/PID/stat, over the measured window only). Rounds interleave the two
# targets so that background load hits both alike; the table shows medians over rounds.
#
# Then, on a fresh server per target with the in-flight limits raised to 20,000, it starts
# $BENCH_PENDING calls that the server holds for $BENCH_HOLD_SECS and compares VmRSS of both
# processes before and while they are pending.
#
# Knobs (environment): BENCH_SECS BENCH_WARMUP_SECS BENCH_ROUNDS BENCH_CONCURRENCY BENCH_PAYLOAD
# BENCH_PENDING BENCH_HOLD_SECS BENCH_TARGETS SERVER_CPU LOAD_CPU CARGO_TARGET_DIR.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

secs="${BENCH_SECS:-5}"
warmup="${BENCH_WARMUP_SECS:-1}"
rounds="${BENCH_ROUNDS:-3}"
concurrency="${BENCH_CONCURRENCY:-1 64 1000}"
payload="${BENCH_PAYLOAD:-1024}"
pending="${BENCH_PENDING:-10000}"
hold="${BENCH_HOLD_SECS:-5}"
targets="${BENCH_TARGETS:-tideway tonic}"
server_cpu="${SERVER_CPU:-0}"
load_cpu="${LOAD_CPU:-1}"
# Above Tideway's default of 1024 per connection, so that all pending calls reach the server.
pending_limit=20000

log() { echo "bench rpc: $*" >&2; }

if [ "$(nproc)" -lt 2 ]; then
    log "needs at least 2 CPUs (server and load generator each get one); have $(nproc)"
    exit 1
fi

log "building (cargo build --release -p tideway-bench)"
cargo build --release -p tideway-bench >&2
source "$root/scripts/bench.d/lib.bash"
bin="$(cargo_target_dir)/release"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$root/bench-results/rpc-$stamp"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"

servers=()
cleanup() {
    for pid in "${servers[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${servers[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server TARGET [ARGS...]: starts bench-TARGET-server pinned to $server_cpu on port 0 and
# sets $server_pid and $server_addr from its first stdout line, `LISTENING <addr>`.
start_server() {
    local target="$1"
    shift
    local log_file="$out/server-$target-$RANDOM.out"
    taskset -c "$server_cpu" "$bin/bench-$target-server" --addr 127.0.0.1:0 "$@" >"$log_file" 2>&1 &
    server_pid=$!
    servers+=("$server_pid")
    server_addr=""
    for _ in $(seq 100); do
        server_addr="$(sed -n '1s/^LISTENING //p' "$log_file")"
        [ -n "$server_addr" ] && return 0
        if ! kill -0 "$server_pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    log "bench-$target-server did not start:"
    cat "$log_file" >&2
    return 1
}

stop_server() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# load ARGS...: runs the load generator pinned to $load_cpu and appends its JSON line to the
# results; a failure is recorded as {"failed": ...} and does not stop the run.
load() {
    local line
    if line="$(taskset -c "$load_cpu" "$bin/bench-rpc-load" --payload "$payload" "$@")"; then
        echo "$line" >>"$results"
    else
        log "bench-rpc-load $* failed"
        echo "{\"failed\": \"$*\"}" >>"$results"
    fi
}

log "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "{\"loadavg_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$results"

declare -A pid_of addr_of
for target in $targets; do
    if start_server "$target"; then
        pid_of[$target]="$server_pid"
        addr_of[$target]="$server_addr"
        log "$target server pid $server_pid at $server_addr"
    fi
done

for round in $(seq "$rounds"); do
    for c in $concurrency; do
        for target in $targets; do
            [ -n "${pid_of[$target]:-}" ] || continue
            log "round $round/$rounds: $target, concurrency $c"
            load --target "$target" --addr "${addr_of[$target]}" --server-pid "${pid_of[$target]}" \
                --concurrency "$c" --warmup-secs "$warmup" --duration-secs "$secs"
        done
    done
done
for target in $targets; do
    [ -n "${pid_of[$target]:-}" ] && stop_server "${pid_of[$target]}"
done

for target in $targets; do
    case "$target" in
        tideway) limit_args=(--max-in-flight "$pending_limit") ;;
        # 16 MiB: h2 refuses a burst of thousands of tiny DATA frames with the default window.
        tonic) limit_args=(--max-concurrent-streams "$pending_limit" --connection-window-bytes 16777216) ;;
        *) limit_args=() ;;
    esac
    start_server "$target" "${limit_args[@]}" || continue
    log "$target: $pending calls held ${hold}s"
    load --target "$target" --addr "$server_addr" --server-pid "$server_pid" \
        --pending "$pending" --hold-secs "$hold" --max-in-flight "$pending_limit"
    stop_server "$server_pid"
done

echo "{\"loadavg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$results"

python3 - "$results" "$out/summary.txt" <<'PY'
import json
import statistics
import sys

results_path, summary_path = sys.argv[1], sys.argv[2]
rows = [json.loads(line) for line in open(results_path) if line.strip()]
lines = []
say = lines.append

failed = [r["failed"] for r in rows if "failed" in r]
runs = [r for r in rows if r.get("mode") == "throughput"]
pend = {r["target"]: r for r in rows if r.get("mode") == "pending"}
load_before = next((r["loadavg_before"] for r in rows if "loadavg_before" in r), "?")
load_after = next((r["loadavg_after"] for r in rows if "loadavg_after" in r), "?")

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

groups = {}
for r in runs:
    groups.setdefault((r["target"], r["concurrency"]), []).append(r)

def fmt(x, spec=",.0f"):
    return "-" if x is None else format(x, spec)

summary = {}
say("RPC echo, %d-byte payload, one connection; medians of %d round(s)" % (
    runs[0]["payload"] if runs else 0, max((len(g) for g in groups.values()), default=0)))
say("")
head = ("target", "conc", "calls/s", "p50 us", "p99 us", "srv CPU", "calls/srv-CPU-s", "(min..max)", "errors")
say("%-8s %5s %10s %9s %9s %8s %16s %21s %6s" % head)
for (target, c), g in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0] != "tideway", kv[0][0])):
    per_cpu = [r["server_calls_per_cpu_s"] for r in g if r.get("server_calls_per_cpu_s")]
    s = {
        "calls_per_s": med(r["calls_per_s"] for r in g),
        "p50_us": med(r["p50_us"] for r in g),
        "p99_us": med(r["p99_us"] for r in g),
        "cpu_util": med(r["server_cpu_s"] / r["secs"] for r in g if r.get("server_cpu_s") is not None),
        "per_cpu": med(per_cpu),
        "errors": sum(r["errors"] for r in g),
    }
    summary[(target, c)] = s
    spread = "%s..%s" % (fmt(min(per_cpu)), fmt(max(per_cpu))) if per_cpu else "-"
    say("%-8s %5d %10s %9s %9s %7s%% %16s %21s %6d" % (
        target, c, fmt(s["calls_per_s"]), fmt(s["p50_us"], ",.1f"), fmt(s["p99_us"], ",.1f"),
        fmt(None if s["cpu_util"] is None else 100 * s["cpu_util"], ".0f"), fmt(s["per_cpu"]),
        spread, s["errors"]))

say("")
say("Tideway / tonic, calls per server CPU-second:")
ratios = {}
for c in sorted({c for _, c in summary}):
    a, b = summary.get(("tideway", c)), summary.get(("tonic", c))
    if a and b and a["per_cpu"] and b["per_cpu"]:
        ratios[c] = a["per_cpu"] / b["per_cpu"]
        say("  concurrency %4d: %.2fx" % (c, ratios[c]))

if pend:
    say("")
    say("Memory per pending call (VmRSS while N calls are held minus before, / N):")
    say("%-8s %7s %12s %12s %22s %22s %7s" % (
        "target", "N", "client B", "server B", "client RSS MiB", "server RSS MiB", "errors"))
    mib = lambda b: "-" if b is None else "%.1f" % (b / 2**20)
    for target, r in sorted(pend.items(), key=lambda kv: kv[0] != "tideway"):
        say("%-8s %7d %12s %12s %22s %22s %7d" % (
            target, r["pending"], fmt(r["client_bytes_per_pending_call"]),
            fmt(r["server_bytes_per_pending_call"]),
            "%s -> %s" % (mib(r["client_rss_before"]), mib(r["client_rss_during"])),
            "%s -> %s" % (mib(r["server_rss_before"]), mib(r["server_rss_during"])),
            r["errors"]))
        if r["completed_before_sample"]:
            say("  warning: %d %s calls completed before the sample" % (
                r["completed_before_sample"], target))

say("")
say("load average before/after: %s / %s (the server and load generator each want a whole core)" % (
    load_before, load_after))
for f in failed:
    say("FAILED: bench-rpc-load %s" % f)

t64, n64 = summary.get(("tideway", 64)), summary.get(("tonic", 64))
goal_cpu, goal_ratio = 100_000, 1.5
if t64 and t64["per_cpu"]:
    say("target: >= %s calls per server CPU-second at concurrency 64: %s" % (
        format(goal_cpu, ","), "met" if t64["per_cpu"] >= goal_cpu else "NOT met"))
if 64 in ratios:
    say("target: >= %.1fx tonic per CPU-second at concurrency 64: %s" % (
        goal_ratio, "met" if ratios[64] >= goal_ratio else "NOT met"))

say("")
def result(key, value, spec=".0f"):
    if value is not None:
        say("RESULT %s=%s" % (key, format(value, spec)))
result("rpc_calls_per_cpu_s", t64 and t64["per_cpu"])
result("rpc_vs_tonic_per_cpu", ratios.get(64), ".2f")
result("rpc_calls_per_s_c64", t64 and t64["calls_per_s"])
result("rpc_p99_us_c64", t64 and t64["p99_us"], ".1f")
result("tonic_calls_per_cpu_s", n64 and n64["per_cpu"])
result("tonic_p99_us_c64", n64 and n64["p99_us"], ".1f")
for target, prefix in (("tideway", "rpc"), ("tonic", "tonic")):
    r = pend.get(target)
    if r:
        result("%s_bytes_per_pending_call_client" % prefix, r["client_bytes_per_pending_call"])
        result("%s_bytes_per_pending_call_server" % prefix, r["server_bytes_per_pending_call"])

text = "\n".join(lines)
print(text)
with open(summary_path, "w") as f:
    f.write(text + "\n")
sys.exit(1 if failed else 0)
PY

#!/usr/bin/env bash
# Overload: 2,000 clients against a slow service (vs nginx), a dead service, a flood above the limits, impatient clients; RSS, 504 lateness, 503 latency, cancellation.
#
# All four scenarios of issue 4 at full scale, on 127.0.0.1, against the real `tideway gateway`
# binary (worker_threads = 1, pinned to CPU $SERVER_CPU). The services, nginx's backend and the
# load generator run on CPU $LOAD_CPU. Every scenario starts a fresh gateway.
#
# (a) slow service: $BENCH_CLIENTS keep-alive clients loop GETs for $SLOW_SECS s on a route whose
#     service answers after $DELAY_MS ms. Three targets, one after the other:
#       tideway-rpc   gateway -> bench-slow-server (`bench.Slow/delay`, Tideway RPC, 4 connections)
#       nginx         nginx (Debian, one worker, upstream keep-alive) -> bench-http-backend --delay-ms
#       tideway-http  gateway -> the same HTTP backend as nginx (HTTP upstream route), for reference
#     VmRSS of the process under test (nginx: the worker) is sampled every $SAMPLE_MS ms: baseline
#     (median of the samples in the second before the load, after a warm-up), peak (during the
#     load), and $AFTER_SECS s after the last response.
# (b) dead service: the route's service is bench-dead-host, which accepts connections and never
#     reads or answers. $BENCH_CLIENTS clients for $DEAD_SECS s; the route's deadline is
#     $DEAD_DEADLINE_MS ms. Every request must get 504 within deadline + 100 ms; the client waits
#     up to deadline + 2 s, so a late answer is seen and counted. The gateway's pending RPC calls
#     (`tideway_pending_rpc_calls` from /metrics) must return to 0 after the load. The clients'
#     first requests are spread over one deadline, as independent clients arrive; each client
#     sends its next request as soon as it has its answer. Then, on a fresh gateway, a lockstep
#     run ($DEAD_LOCKSTEP_SECS s) starts all clients in the same instant, so that all their
#     deadlines expire together: it shows what a burst of 2,000 expiries costs.
# (c) flood: a route with max_in_flight = $FLOOD_LIMIT on the slow service, a memory budget of
#     $FLOOD_BUDGET, and $BENCH_CLIENTS clients, each sending its next request a random
#     0.5-1.5 x $FLOOD_THINK_MS ms after its previous answer (first requests spread over
#     $FLOOD_THINK_MS ms), for $FLOOD_WARMUP_SECS s of warm-up plus $FLOOD_SECS s. Excess
#     requests must get 503 within 5 ms (p99 at the client, over the $FLOOD_SECS s after the
#     warm-up; the warm-up, in which the 2,000 connections are opened, is reported apart); RSS
#     must stay below the budget; no refused request may reach the service. Each 503 is timed
#     two ways: until the load generator read it, and until it arrived at the client's socket
#     (the kernel's receive stamp, SO_TIMESTAMPNS). The second is the target's figure
#     (flood_shed_p99_ms): one thread serving 2,000 connections falls behind in bursts and
#     adds its own milliseconds to the first (flood_shed_read_p99_ms). The peer, in the same
#     run: nginx answering the same flood with 503 itself (`return 503`), timed both ways.
# (d) impatient clients: $BENCH_CLIENTS clients send 2 s calls and give up after
#     $IMPATIENT_TIMEOUT_MS ms by closing the connection, then reconnect, for $IMPATIENT_SECS s.
#     The service's handlers in flight (its /stats) must return to 0 well before a 2 s call could
#     have finished on its own; handlers must end cancelled, not completed.
#
# The load generator is bench-http-load (hyper client, one current-thread runtime): latency per
# response status from writing the request to reading the whole body; connecting is excluded.
#
# Besides the tables, each scenario prints how long the process under test and the load
# generator waited for a CPU (schedstat run_delay): other work on a shared machine shows there.
#
# Knobs (environment): BENCH_CLIENTS DELAY_MS SLOW_SECS AFTER_SECS DEAD_SECS DEAD_DEADLINE_MS
# DEAD_LOCKSTEP_SECS (0 skips the lockstep run) FLOOD_SECS FLOOD_WARMUP_SECS FLOOD_LIMIT
# FLOOD_THINK_MS FLOOD_BUDGET IMPATIENT_SECS IMPATIENT_TIMEOUT_MS SAMPLE_MS
# BENCH_SCENARIOS (default "a b c d") SLOW_TARGETS (default "tideway-rpc nginx tideway-http")
# GATEWAY_LOG (the gateway's RUST_LOG, default warn) SERVER_CPU LOAD_CPU CARGO_TARGET_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

clients="${BENCH_CLIENTS:-2000}"
delay_ms="${DELAY_MS:-2000}"
slow_secs="${SLOW_SECS:-10}"
after_secs="${AFTER_SECS:-10}"
dead_secs="${DEAD_SECS:-30}"
dead_deadline_ms="${DEAD_DEADLINE_MS:-1000}"
dead_lockstep_secs="${DEAD_LOCKSTEP_SECS:-10}"
# (b) measures the deadline path: every call to the dead service waits for its deadline, the
# worst case for memory and timers. With the default cluster settings the service's circuit
# breaker opens after the first round of timeouts and later calls get 503 at once (see
# BENCHMARKS.md); DEAD_BREAKER=on keeps those defaults, "off" (the default here) sets the
# breaker and outlier thresholds of bench.Dead out of reach.
dead_breaker="${DEAD_BREAKER:-off}"
flood_secs="${FLOOD_SECS:-10}"
flood_warmup_secs="${FLOOD_WARMUP_SECS:-1}"
flood_limit="${FLOOD_LIMIT:-100}"
flood_think_ms="${FLOOD_THINK_MS:-200}"
flood_budget="${FLOOD_BUDGET:-64MiB}"
impatient_secs="${IMPATIENT_SECS:-10}"
impatient_timeout_ms="${IMPATIENT_TIMEOUT_MS:-100}"
sample_ms="${SAMPLE_MS:-200}"
scenarios="${BENCH_SCENARIOS:-a b c d}"
slow_targets="${SLOW_TARGETS:-tideway-rpc nginx tideway-http}"
server_cpu="${SERVER_CPU:-0}"
load_cpu="${LOAD_CPU:-1}"
# The gateway's log filter (RUST_LOG), as in the HTTP benchmark; its stderr goes to a file.
gateway_log="${GATEWAY_LOG:-warn}"
# The memory budget of the gateway in (a), (b) and (d), as in `tideway demo`: far above what it
# needs, so it never sheds there.
default_budget="256MiB"
# Connections from the gateway to each RPC endpoint, set explicitly so the figures do not move
# with the default (once 1 x 1,024 calls in flight, too few for 2,000 concurrent calls).
rpc_connections=4

log() { echo "bench overload: $*" >&2; }

if [ "$(nproc)" -lt 2 ]; then
    log "needs at least 2 CPUs (the process under test and the load each get one); have $(nproc)"
    exit 1
fi

# Every client connection is a descriptor in the load generator, the gateway (or nginx twice:
# client and upstream side) and the backend; the processes started below inherit this limit.
raise_nofile $((2 * clients + 512)) "$clients clients; lower BENCH_CLIENTS" || exit 1

"$root/scripts/install-deps" nginx=nginx curl=curl
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

log "building (cargo build --release -p tideway -p tideway-bench)"
cargo build --release -p tideway -p tideway-bench >&2
bin="$(cargo_target_dir)/release"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$root/bench-results/overload-$stamp"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
tmp="$(mktemp -d /tmp/tideway-bench-overload.XXXXXX)"

cleanup() {
    stop_all
    keep_results
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }

# start_gateway TAG CONFIG_EXTRA: writes the config (the common part plus CONFIG_EXTRA, which
# holds the scenario's [server] keys) and starts `tideway gateway` on $server_cpu; sets
# $gateway_pid, $gateway_addr and $admin_addr.
start_gateway() {
    local tag="$1" server_extra="$2" routes_extra="${3:-}"
    local config="$tmp/gateway-$tag.toml"
    local dead_cluster=""
    if [ "$dead_breaker" = off ]; then
        dead_cluster='[clusters."bench.Dead"]
outlier = { consecutive_failures = 1000000000 }
breaker = { min_requests = 1000000000 }'
    fi
    admin_addr="127.0.0.1:$(free_port)"
    cat >"$config" <<EOF
# Generated by scripts/bench.d/overload.sh, scenario $tag
[server]
listen = "127.0.0.1:0"
admin_listen = "$admin_addr"
worker_threads = 1
$server_extra

[[services]]
name = "bench.Slow"
endpoints = ["$slow_addr"]
connections_per_endpoint = $rpc_connections

[[services]]
name = "bench.Dead"
endpoints = ["$dead_addr"]
connections_per_endpoint = $rpc_connections

$dead_cluster

[[routes]]
path = "/fast"
service = "bench.Slow"
rpc_method = "fast"

[[routes]]
path = "/slow/{ms}"
service = "bench.Slow"
rpc_method = "delay"
params = { ms = "integer" }
timeout = "10s"

[[routes]]
path = "/dead/{ms}"
service = "bench.Dead"
rpc_method = "delay"
params = { ms = "integer" }
timeout = "${dead_deadline_ms}ms"

[[routes]]
path = "/proxy/{*rest}"
upstream = "http://$backend_addr"
strip_prefix = "/proxy"
upstream_max_idle = $clients
$routes_extra
EOF
    "$bin/tideway" check-config "$config" >&2
    local log_file="$tmp/gateway-$tag.log"
    RUST_LOG="$gateway_log" taskset -c "$server_cpu" "$bin/tideway" gateway --config "$config" \
        >"$log_file" 2>"$tmp/gateway-$tag.stderr.log" &
    gateway_pid=$!
    procs+=("$gateway_pid")
    if ! gateway_addr="$(wait_line "$log_file" '1s|^Tideway gateway listening on http://||p' "$gateway_pid")"; then
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

# start_nginx TAG: one worker on $server_cpu proxying /api/ to the delay backend with upstream
# keep-alive; sets $nginx_pid (master), $nginx_worker and $nginx_addr.
start_nginx() {
    local prefix="$tmp/nginx-$1"
    mkdir -p "$prefix"
    local port
    port="$(free_port)"
    cat >"$prefix/nginx.conf" <<EOF
# Generated by scripts/bench.d/overload.sh
worker_processes 1;
worker_rlimit_nofile $nofile;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;

events {
    # Each client takes a connection, and so does its request to the backend.
    worker_connections $((2 * clients + 1024));
}

http {
    access_log off;
    default_type text/plain;
    keepalive_requests 1000000;
    keepalive_timeout 75s;

    upstream backend {
        server $backend_addr;
        # As many idle upstream connections as there are clients, so nginx does not close and
        # reopen upstream connections every round (the gateway's pool gets the same number).
        keepalive $clients;
        keepalive_requests 1000000;
    }

    server {
        # The gateway's accept queue is 4096 deep; nginx's default (511) would drop SYNs when
        # 2,000 clients connect at once.
        listen 127.0.0.1:$port backlog=4096;

        location /api/ {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
            proxy_read_timeout 10s;
        }

        location = /idle {
            return 200 "ok";
        }

        # (c)'s peer: nginx refusing every request itself, as the gateway refuses the excess.
        location /limited/ {
            default_type application/json;
            return 503 '{"error":{"code":"overloaded"}}';
        }
    }
}
EOF
    nginx_addr="127.0.0.1:$port"
    run_nginx "$prefix" "$server_cpu" "http://$nginx_addr/idle"
}

# start_sampler TAG ARGS...: bench-sampler every $sample_ms ms into $tmp/samples-TAG.csv (on
# $load_cpu); sets $sampler_pid and $samples.
start_sampler() {
    local tag="$1"
    shift
    samples="$out/samples-$tag.csv"
    taskset -c "$load_cpu" "$bin/bench-sampler" --interval-ms "$sample_ms" --out "$samples" "$@" \
        2>"$tmp/sampler-$tag.log" &
    sampler_pid=$!
    procs+=("$sampler_pid")
}

# load TAG ARGS...: runs bench-http-load on $load_cpu; its JSON goes to $out/load-TAG.json.
load() {
    local tag="$1"
    shift
    if ! taskset -c "$load_cpu" "$bin/bench-http-load" "$@" >"$out/load-$tag.json" \
        2>"$tmp/load-$tag.log"; then
        log "load generator failed ($tag):"
        cat "$tmp/load-$tag.log" >&2
        echo '{}' >"$out/load-$tag.json"
        return 1
    fi
}

# metric NAME: the sum of a series on the gateway's /metrics now (empty when unreachable).
metric() {
    curl -fsS --max-time 2 "http://$admin_addr/metrics" 2>/dev/null |
        awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF; found = 1 } END { if (found) print s }'
}

# route_bucket PATH_PART LE: the gateway's latency histogram bucket `le` summed over the routes
# whose label contains PATH_PART (the gateway's own view of its latency, from the request's
# arrival to its answer).
route_bucket() {
    curl -fsS --max-time 2 "http://$admin_addr/metrics" 2>/dev/null |
        awk -v p="$1" -v le="le=\"$2\"}" 'index($0, "tideway_request_duration_seconds_bucket{") == 1 &&
            index($0, p) && index($0, le) { s += $NF; found = 1 } END { if (found) print s }'
}

# svc_stat KEY: a counter from the slow service's /stats.
svc_stat() {
    curl -fsS --max-time 2 "$stats_url" | python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# record JSON: appends one line to results.jsonl.
record() { echo "$1" >>"$results"; }

log "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
record "{\"loadavg_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"
source_state="$(source_state)"
python3 -c 'import json, sys; print(json.dumps({"source": sys.argv[1]}))' "$source_state" >>"$results"
python3 -c 'import json, sys; print(json.dumps({"config": dict(zip(sys.argv[1::2], sys.argv[2::2]))}))' \
    clients "$clients" delay_ms "$delay_ms" slow_secs "$slow_secs" after_secs "$after_secs" \
    dead_secs "$dead_secs" dead_deadline_ms "$dead_deadline_ms" flood_secs "$flood_secs" \
    flood_warmup_secs "$flood_warmup_secs" flood_limit "$flood_limit" flood_think_ms "$flood_think_ms" flood_budget "$flood_budget" \
    impatient_secs "$impatient_secs" impatient_timeout_ms "$impatient_timeout_ms" \
    sample_ms "$sample_ms" rpc_connections "$rpc_connections" dead_breaker "$dead_breaker" >>"$results"

# The services, on the load generator's CPU, shared by all scenarios.
start_bench bench-slow-server "$load_cpu" main
slow_pid="$started_pid"
slow_addr="$started_addr"
stats_url="http://$(wait_line "$started_log" 's/^STATS //p' "$slow_pid")/stats"
start_bench bench-http-backend "$load_cpu" main --delay-ms "$delay_ms"
backend_pid="$started_pid"
backend_addr="$started_addr"
start_bench bench-dead-host "$load_cpu" main
dead_addr="$started_addr"
log "slow service $slow_addr (stats $stats_url), delay backend $backend_addr, dead host $dead_addr"

# ---- (a) slow service -------------------------------------------------------------------
scenario_a() {
    local target="$1" url pid tag="a-$1"
    case "$target" in
        tideway-rpc | tideway-http)
            start_gateway "$tag" "max_in_flight = 10000
max_memory = \"$default_budget\""
            pid="$gateway_pid"
            if [ "$target" = tideway-rpc ]; then
                url="http://$gateway_addr/slow/$delay_ms"
            else
                url="http://$gateway_addr/proxy/api/item"
            fi
            ;;
        nginx)
            start_nginx "$tag"
            pid="$nginx_worker"
            url="http://$nginx_addr/api/item"
            ;;
        *)
            log "unknown slow target '$target'"
            exit 2
            ;;
    esac
    if [ "$target" = nginx ]; then
        start_sampler "$tag" --pid "proc=$pid"
    else
        start_sampler "$tag" --pid "proc=$pid" --metrics "http://$admin_addr/metrics"
    fi
    # Warm-up: one round of 8 calls, so that the route, the RPC connections or the upstream pool
    # exist before the baseline is read.
    load "$tag-warmup" --url "$url" --connections 8 --requests 8 --timeout-ms 10000 || true
    sleep 1.5
    local t_base t_load t_end t_after
    t_base="$(now)"
    sleep 1
    t_load="$(now)"
    log "(a) $target: $clients clients for ${slow_secs}s on $url"
    load "$tag" --url "$url" --connections "$clients" --duration-secs "$slow_secs" \
        --timeout-ms 10000 || true
    t_end="$(now)"
    sleep "$after_secs"
    t_after="$(now)"
    sleep 0.5
    stop "$sampler_pid"
    local pending=""
    [ "$target" != nginx ] && pending="$(metric tideway_pending_rpc_calls)"
    python3 -c 'import json, sys; a = sys.argv; print(json.dumps({"scenario": "a", "target": a[1], "load": json.load(open(a[2])), "samples": a[3], "t_base": float(a[4]), "t_load": float(a[5]), "t_end": float(a[6]), "t_after": float(a[7]), "pending_after": a[8] or None, "master_rss_kib": int(a[9]) if a[9] else None}))' \
        "$target" "$out/load-$tag.json" "$samples" "$t_base" "$t_load" "$t_end" "$t_after" \
        "$pending" "$([ "$target" = nginx ] && awk '/^VmRSS:/ { print $2 }' "/proc/$nginx_pid/status" || true)" \
        >>"$results"
    if [ "$target" = nginx ]; then stop_nginx; else stop "$gateway_pid"; fi
}

# ---- (b) dead service -------------------------------------------------------------------
scenario_b() {
    local tag=b
    start_gateway "$tag" "max_in_flight = 10000
max_memory = \"$default_budget\""
    start_sampler "$tag" --pid "gateway=$gateway_pid" --metrics "http://$admin_addr/metrics"
    sleep 1.5
    local url="http://$gateway_addr/dead/$delay_ms" t_load t_end t_after
    t_load="$(now)"
    log "(b) dead service: $clients clients for ${dead_secs}s on $url (deadline ${dead_deadline_ms} ms)"
    load "$tag" --url "$url" --connections "$clients" --duration-secs "$dead_secs" \
        --ramp-ms "$dead_deadline_ms" --timeout-ms $((dead_deadline_ms + 2000)) \
        --late-ms $((dead_deadline_ms + 100)) || true
    t_end="$(now)"
    sleep 2
    t_after="$(now)"
    local pending in_flight
    pending="$(metric tideway_pending_rpc_calls)"
    in_flight="$(metric tideway_in_flight_requests)"
    sleep 0.5
    python3 -c 'import json, sys; a = sys.argv; print(json.dumps({"scenario": "b", "load": json.load(open(a[1])), "samples": a[2], "t_load": float(a[3]), "t_end": float(a[4]), "t_after": float(a[5]), "pending_after": float(a[6]) if a[6] else None, "in_flight_after": float(a[7]) if a[7] else None, "deadline_ms": int(a[8])}))' \
        "$out/load-$tag.json" "$samples" "$t_load" "$t_end" "$t_after" "$pending" "$in_flight" \
        "$dead_deadline_ms" >>"$results"
    if [ "$dead_lockstep_secs" -gt 0 ]; then
        # A fresh gateway: nothing learnt about the dead service in the first run (an open
        # circuit breaker, an ejected instance) carries over.
        sleep 0.5
        stop "$sampler_pid"
        stop "$gateway_pid"
        tag=b-lockstep
        start_gateway "$tag" "max_in_flight = 10000
max_memory = \"$default_budget\""
        start_sampler "$tag" --pid "gateway=$gateway_pid" --metrics "http://$admin_addr/metrics"
        sleep 1.5
        url="http://$gateway_addr/dead/$delay_ms"
        log "(b) lockstep: $clients clients started at once for ${dead_lockstep_secs}s (fresh gateway)"
        t_load="$(now)"
        load "$tag" --url "$url" --connections "$clients" --duration-secs "$dead_lockstep_secs" \
            --timeout-ms $((dead_deadline_ms + 2000)) --late-ms $((dead_deadline_ms + 100)) || true
        t_end="$(now)"
        sleep 2
        t_after="$(now)"
        pending="$(metric tideway_pending_rpc_calls)"
        in_flight="$(metric tideway_in_flight_requests)"
        python3 -c 'import json, sys; a = sys.argv; print(json.dumps({"scenario": "b-lockstep", "load": json.load(open(a[1])), "samples": a[2], "t_load": float(a[3]), "t_end": float(a[4]), "t_after": float(a[5]), "pending_after": float(a[6]) if a[6] else None, "in_flight_after": float(a[7]) if a[7] else None, "deadline_ms": int(a[8])}))' \
            "$out/load-$tag.json" "$samples" "$t_load" "$t_end" "$t_after" "$pending" \
            "$in_flight" "$dead_deadline_ms" >>"$results"
    fi
    sleep 0.5
    stop "$sampler_pid"
    stop "$gateway_pid"
}

# ---- (c) flood above the limits -----------------------------------------------------------
scenario_c() {
    local tag=c
    start_gateway "$tag" "max_in_flight = 10000
max_memory = \"$flood_budget\"" "
[[routes]]
path = \"/limited/{ms}\"
service = \"bench.Slow\"
rpc_method = \"delay\"
params = { ms = \"integer\" }
timeout = \"10s\"
max_in_flight = $flood_limit"
    start_sampler "$tag" --pid "gateway=$gateway_pid" --metrics "http://$admin_addr/metrics" \
        --stats "$stats_url"
    sleep 1.5
    local url="http://$gateway_addr/limited/$delay_ms" t_load t_end shed0 shed1 started0 started1
    local fast0 fast1 sub1s0 sub1s1
    shed0="$(metric tideway_shed_total)"
    started0="$(svc_stat started)"
    fast0="$(route_bucket /limited/ 0.005)"
    sub1s0="$(route_bucket /limited/ 1)"
    t_load="$(now)"
    log "(c) flood: $clients clients, one request per ${flood_think_ms} ms each after an answer, ${flood_secs}s, route limit $flood_limit, budget $flood_budget"
    load "$tag" --url "$url" --connections "$clients" \
        --duration-secs "$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[2]))' "$flood_warmup_secs" "$flood_secs")" \
        --warmup-secs "$flood_warmup_secs" --think-ms "$flood_think_ms" --ramp-ms "$flood_think_ms" \
        --timeout-ms 10000 --late-ms 5 || true
    t_end="$(now)"
    # The gateway folds histogram samples into buckets once a second.
    sleep 1.5
    shed1="$(metric tideway_shed_total)"
    started1="$(svc_stat started)"
    fast1="$(route_bucket /limited/ 0.005)"
    sub1s1="$(route_bucket /limited/ 1)"
    stop "$sampler_pid"
    python3 -c 'import json, sys; a = sys.argv; f = lambda s: float(s) if s else 0.0; print(json.dumps({"scenario": "c", "load": json.load(open(a[1])), "samples": a[2], "t_load": float(a[3]), "t_end": float(a[4]), "shed": f(a[6]) - f(a[5]), "svc_started": int(a[8]) - int(a[7]), "budget": a[9], "limit": int(a[10]), "think_ms": int(a[11]), "gateway_le_5ms": f(a[13]) - f(a[12]), "gateway_le_1s": f(a[15]) - f(a[14])}))' \
        "$out/load-$tag.json" "$samples" "$t_load" "$t_end" "$shed0" "$shed1" "$started0" \
        "$started1" "$flood_budget" "$flood_limit" "$flood_think_ms" "$fast0" "$fast1" \
        "$sub1s0" "$sub1s1" >>"$results"
    stop "$gateway_pid"
    # The peer in the same run: nginx answering every request of the same flood with 503 at
    # once (no upstream, no limit to check), so the client-side tail that the machine and the
    # load generator add is seen apart from the gateway's.
    start_nginx "$tag"
    log "(c) flood, peer: nginx answering 503 itself"
    load "$tag-nginx" --url "http://$nginx_addr/limited/$delay_ms" --connections "$clients" \
        --duration-secs "$(python3 -c 'import sys; print(float(sys.argv[1]) + float(sys.argv[2]))' "$flood_warmup_secs" "$flood_secs")" \
        --warmup-secs "$flood_warmup_secs" --think-ms "$flood_think_ms" --ramp-ms "$flood_think_ms" \
        --timeout-ms 10000 --late-ms 5 || true
    stop_nginx
    python3 -c 'import json, sys; print(json.dumps({"scenario": "c-nginx", "load": json.load(open(sys.argv[1]))}))' \
        "$out/load-$tag-nginx.json" >>"$results"
}

# ---- (d) impatient clients ----------------------------------------------------------------
scenario_d() {
    local tag=d
    start_gateway "$tag" "max_in_flight = 10000
max_memory = \"$default_budget\""
    start_sampler "$tag" --pid "gateway=$gateway_pid" --pid "service=$slow_pid" \
        --metrics "http://$admin_addr/metrics" --stats "$stats_url"
    load "$tag-warmup" --url "http://$gateway_addr/fast" --connections 8 --requests 64 || true
    sleep 1.5
    local url="http://$gateway_addr/slow/$delay_ms" t_base t_load t_end t_after s0 s1
    t_base="$(now)"
    sleep 1
    s0="$(curl -fsS --max-time 2 "$stats_url")"
    t_load="$(now)"
    log "(d) impatient clients: $clients clients give up after ${impatient_timeout_ms} ms on ${delay_ms} ms calls, ${impatient_secs}s"
    load "$tag" --url "$url" --connections "$clients" --duration-secs "$impatient_secs" \
        --timeout-ms "$impatient_timeout_ms" || true
    t_end="$(now)"
    # Long enough for a call that was not cancelled to finish on its own and be seen, and as
    # long as (a) waits before its "after" RSS sample.
    local wait_after=$(((delay_ms + 999) / 1000 + 1))
    [ "$wait_after" -lt "$after_secs" ] && wait_after="$after_secs"
    sleep "$wait_after"
    t_after="$(now)"
    s1="$(curl -fsS --max-time 2 "$stats_url")"
    local pending in_flight
    pending="$(metric tideway_pending_rpc_calls)"
    in_flight="$(metric tideway_in_flight_requests)"
    stop "$sampler_pid"
    python3 -c 'import json, sys; a = sys.argv; f = lambda s: float(s) if s else None; print(json.dumps({"scenario": "d", "load": json.load(open(a[1])), "samples": a[2], "t_base": float(a[3]), "t_load": float(a[4]), "t_end": float(a[5]), "t_after": float(a[6]), "svc_before": json.loads(a[7]), "svc_after": json.loads(a[8]), "pending_after": f(a[9]), "in_flight_after": f(a[10]), "timeout_ms": int(a[11]), "delay_ms": int(a[12])}))' \
        "$out/load-$tag.json" "$samples" "$t_base" "$t_load" "$t_end" "$t_after" "$s0" "$s1" \
        "$pending" "$in_flight" "$impatient_timeout_ms" "$delay_ms" >>"$results"
    stop "$gateway_pid"
}

for s in $scenarios; do
    case "$s" in
        a) for target in $slow_targets; do scenario_a "$target"; done ;;
        b) scenario_b ;;
        c) scenario_c ;;
        d) scenario_d ;;
        *)
            log "unknown scenario '$s'"
            exit 2
            ;;
    esac
done

record "{\"loadavg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}"

python3 - "$results" "$out/summary.txt" <<'PY'
import csv
import json
import statistics
import sys

results_path, summary_path = sys.argv[1], sys.argv[2]
rows = [json.loads(line) for line in open(results_path) if line.strip()]
lines = []
say = lines.append
cfg = next((r["config"] for r in rows if "config" in r), {})
source = next((r["source"] for r in rows if "source" in r), "?")
load_before = next((r["loadavg_before"] for r in rows if "loadavg_before" in r), "?")
load_after = next((r["loadavg_after"] for r in rows if "loadavg_after" in r), "?")
results = {}
targets = []

def read_samples(path):
    with open(path) as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()}
                for r in csv.DictReader(f)]

def col(samples, key, t0=None, t1=None):
    return [s[key] for s in samples
            if s.get(key) is not None and (t0 is None or s["unix_s"] >= t0)
            and (t1 is None or s["unix_s"] <= t1)]

def nearest(samples, key, t):
    """The last sample of `key` taken at or before t."""
    xs = [s for s in samples if s.get(key) is not None and s["unix_s"] <= t]
    return xs[-1][key] if xs else None

def mib(kib):
    return None if kib is None else kib / 1024

def fmt(x, spec=".1f"):
    return "-" if x is None else format(x, spec)

def status(load, code):
    return load.get("statuses", {}).get(str(code), {})

def other_than(load, *codes):
    return sum(s["count"] for k, s in load.get("statuses", {}).items() if int(k) not in codes)

def unanswered(load):
    return load.get("timeouts", 0) + load.get("io_errors", 0) + load.get("connect_errors", 0)

def cpu_wait(smp, key, t0, t1):
    """Milliseconds the process waited for a CPU between t0 and t1 (schedstat run_delay)."""
    xs = col(smp, key, t0, t1)
    return xs[-1] - xs[0] if len(xs) >= 2 else None

def stalls(smp, t0, t1):
    xs = col(smp, "scheduler_stalls", t0, t1)
    worst = col(smp, "worst_stall_ms", t0, t1)
    if len(xs) < 2:
        return None
    return "%d scheduler stall(s) >= 100 ms (worst since start %s ms)" % (
        xs[-1] - xs[0], fmt(max(worst) if worst else None, ".0f"))

def noise_line(smp, key, who, load, t0, t1):
    """How much the process under test and the load generator waited for a CPU: other work on
    their cores shows up here, and in every latency figure of the run."""
    w = cpu_wait(smp, key, t0, t1)
    st = stalls(smp, t0, t1)
    say("    CPU wait during the load: %s %s ms, load generator %s ms (of %.0f s; it used %.1f CPU-s)%s"
        % (who, fmt(w, ".0f"), fmt(load.get("cpu_wait_ms"), ".0f"), t1 - t0, load.get("cpu_s", 0),
           "; " + st if st else ""))

def target(what, value, goal, ok):
    if value is not None:
        targets.append("target: %s %s: %s (%s)" % (what, goal, "met" if ok(value) else "NOT met",
                                                    value if isinstance(value, int) else fmt(value, ".2f")))

say("Overload scenarios on 127.0.0.1: %s clients; the gateway (worker_threads = 1) or the nginx"
    % cfg.get("clients", "?"))
say("worker on one CPU, services and the load generator on the other; RSS sampled every %s ms."
    % cfg.get("sample_ms", "?"))

# (a)
a_rows = [r for r in rows if r.get("scenario") == "a"]
a = {}
if a_rows:
    say("")
    say("(a) slow service: every call answered after %s ms; %s keep-alive clients loop for %s s"
        % (cfg["delay_ms"], cfg["clients"], cfg["slow_secs"]))
    head = ("target", "requests", "200", "errors", "p50 ms", "p99 ms", "max ms", "RSS base",
            "peak", "after %ss" % cfg["after_secs"], "peak/base", "after/base")
    say("%-30s %8s %7s %6s %8s %8s %8s %9s %8s %9s %9s %10s" % head)
    label = {"tideway-rpc": "Tideway -> RPC service", "nginx": "nginx -> HTTP backend (worker)",
             "tideway-http": "Tideway -> HTTP backend"}
    waits, heap = [], []
    for r in a_rows:
        smp = read_samples(r["samples"])
        base = statistics.median(col(smp, "proc_rss_kib", r["t_base"], r["t_load"]) or [0]) or None
        peak = max(col(smp, "proc_rss_kib", r["t_load"], r["t_after"]) or [0]) or None
        after = nearest(smp, "proc_rss_kib", r["t_after"])
        load = r["load"]
        ok = status(load, 200)
        errors = other_than(load, 200) + unanswered(load)
        a[r["target"]] = {"base": base, "peak": peak, "after": after, "errors": errors,
                          "pending_after": r.get("pending_after")}
        say("%-30s %8d %7d %6d %8s %8s %8s %5s MiB %4s MiB %5s MiB %9s %10s" % (
            label.get(r["target"], r["target"]), load.get("requests", 0), ok.get("count", 0),
            errors, fmt(ok.get("p50_ms")), fmt(ok.get("p99_ms")), fmt(load.get("worst_ms")),
            fmt(mib(base)), fmt(mib(peak)), fmt(mib(after)),
            fmt(peak / base if peak and base else None, ".2f"),
            fmt(after / base if after and base else None, ".2f")))
        waits.append((label.get(r["target"], r["target"]), cpu_wait(smp, "proc_cpu_wait_ms", r["t_load"], r["t_end"]),
                      load.get("cpu_wait_ms"), r["t_end"] - r["t_load"]))
        at_peak = [x for x in smp if r["t_load"] <= x["unix_s"] <= r["t_after"] and x.get("proc_rss_kib") == peak]
        if at_peak and at_peak[0].get("allocator_allocated_kib") is not None:
            heap.append((label.get(r["target"], r["target"]), at_peak[0]["allocator_allocated_kib"],
                         at_peak[0].get("allocator_resident_kib"), peak,
                         col(smp, "allocator_allocated_kib", r["t_base"], r["t_load"])))
    nginx_master = next((r.get("master_rss_kib") for r in a_rows if r["target"] == "nginx"), None)
    if nginx_master:
        say("nginx: RSS is the worker's; the master held %.1f MiB at the end." % mib(nginx_master))
    for name, allocated, resident, rss_peak, before in heap:
        say("%s at its RSS peak (%.1f MiB): jemalloc allocated %.1f MiB, resident %s MiB (allocated"
            " before the load %s MiB)" % (name, mib(rss_peak), mib(allocated), fmt(mib(resident)),
                                         fmt(mib(statistics.median(before)) if before else None)))
    for name, w, lw, secs in waits:
        say("CPU wait during the load, %s: %s ms; load generator %s ms (of %.0f s)" % (
            name, fmt(w, ".0f"), fmt(lw, ".0f"), secs))
    say("RSS base = median of the samples in the second before the load (after an 8-call warm-up);")
    say("peak = highest sample from the load's start on; after = the sample %s s after the last answer."
        % cfg["after_secs"])
    tw, ng = a.get("tideway-rpc"), a.get("nginx")
    if tw and ng and tw["peak"] and ng["peak"]:
        results["slow_peak_rss_vs_nginx"] = tw["peak"] / ng["peak"]
    if tw and tw["after"] and tw["base"]:
        results["slow_rss_after_vs_base"] = tw["after"] / tw["base"]
    if tw:
        results["slow_errors"] = tw["errors"]
        results["slow_peak_rss_mib"] = mib(tw["peak"])
    if ng:
        results["nginx_slow_peak_rss_mib"] = mib(ng["peak"])
        results["nginx_slow_errors"] = ng["errors"]
    th = a.get("tideway-http")
    if th and ng and th["peak"] and ng["peak"]:
        results["slow_http_peak_rss_vs_nginx"] = th["peak"] / ng["peak"]
    target("(a) errors, Tideway -> RPC", results.get("slow_errors"), "= 0", lambda v: v == 0)
    target("(a) peak RSS vs nginx's", results.get("slow_peak_rss_vs_nginx"), "<= 1.0",
           lambda v: v <= 1.0)
    target("(a) RSS %s s after the load vs baseline" % cfg["after_secs"],
           results.get("slow_rss_after_vs_base"), "<= 1.10", lambda v: v <= 1.10)

# (b)
b_rows = [r for r in rows if r.get("scenario") in ("b", "b-lockstep")]
if b_rows:
    d = b_rows[0]["deadline_ms"]
    say("")
    say("(b) dead service (accepts, never answers): %s clients, route deadline %d ms; each client sends"
        % (cfg["clients"], d))
    say("    again as soon as it has its answer; circuit breaker and outlier ejection of the dead service: %s"
        % ("on (defaults)" if cfg.get("dead_breaker") == "on" else "off (the deadline path is measured)"))
    say("%-26s %9s %7s %7s %10s %8s %8s %8s %12s %13s %17s" % (
        "run", "requests", "504", "other", "late>%dms" % (d + 100), "p50 ms", "p99 ms", "max ms",
        "pending peak", "pending after", "RSS base/peak MiB"))
for b in b_rows:
    load = b["load"]
    smp = read_samples(b["samples"])
    g504 = status(load, 504)
    non504 = other_than(load, 504) + unanswered(load)
    late = load.get("late_responses", 0) + unanswered(load)
    rss = col(smp, "gateway_rss_kib", b["t_load"], b["t_end"])
    base = nearest(smp, "gateway_rss_kib", b["t_load"])
    pend = col(smp, "pending_rpc_calls", b["t_load"], b["t_end"])
    secs = b["t_end"] - b["t_load"]
    name = ("%.0f s, first requests spread over %d ms" % (secs, d) if b["scenario"] == "b"
            else "%.0f s, lockstep start" % secs)
    say("%-26s %9d %7d %7d %10d %8s %8s %8s %12s %13s %17s" % (
        name, load.get("requests", 0), g504.get("count", 0), non504, late,
        fmt(g504.get("p50_ms")), fmt(g504.get("p99_ms")), fmt(load.get("worst_ms")),
        fmt(max(pend) if pend else None, ".0f"), fmt(b.get("pending_after"), ".0f"),
        "%s / %s" % (fmt(mib(base)), fmt(mib(max(rss) if rss else None)))))
    # The same 504s timed to their arrival at the client's socket (kernel stamp): a burst of
    # answers arriving together waits in the sockets until the one load generator thread reads
    # them, and that wait is the load generator's, not the gateway's.
    w504 = load.get("wire", {}).get("statuses", {}).get("504", {})
    wire_late = w504.get("late", 0) + unanswered(load) if w504 else None
    if w504:
        say("    504s at the client's socket (kernel stamp): %d late, p50 %s ms, p99 %s ms, max %s ms" % (
            wire_late, fmt(w504.get("p50_ms")), fmt(w504.get("p99_ms")), fmt(w504.get("max_ms"))))
    others = [(k, s) for k, s in sorted(load.get("statuses", {}).items()) if k != "504"]
    if others or unanswered(load):
        say("    besides 504: %s; %d timeouts, %d I/O errors" % (
            ", ".join("%s x%d (p50 %.1f ms)" % (k, s["count"], s["p50_ms"]) for k, s in others) or "-",
            load.get("timeouts", 0), load.get("io_errors", 0)))
    noise_line(smp, "gateway_cpu_wait_ms", "gateway", load, b["t_load"], b["t_end"])
    # When the late and the non-504 answers came, by second of the run (the worst seconds).
    marks = []
    for sec in load.get("timeline", []):
        odd = {k: v for k, v in sec["by_status"].items() if k != "504"}
        if sec["late"] or odd or sec["timeouts"] or sec["errors"]:
            marks.append(((sec["late"] + sec["timeouts"] + sec["errors"], sum(odd.values())), sec, odd))
    if marks:
        # Seconds with late answers first, then those with the most answers other than 504.
        worst = sorted(sorted(marks, key=lambda m: m[0], reverse=True)[:8], key=lambda m: m[1]["t"])
        say("    by second of the run: %s%s" % ("; ".join(
            "t=%ds %s%s(max %.0f ms)" % (
                sec["t"], "%d late " % sec["late"] if sec["late"] else "",
                "".join("%sx%d " % (k, v) for k, v in sorted(odd.items())), sec["max_ms"])
            for _, sec, odd in worst), "" if len(marks) <= 8 else "; %d more seconds" % (len(marks) - 8)))
    if b["scenario"] == "b":
        dur = b["t_end"] - b["t_load"]
        thirds = [max(col(smp, "gateway_rss_kib", b["t_load"] + i * dur / 3,
                          b["t_load"] + (i + 1) * dur / 3) or [0]) for i in range(3)]
        say("    peak RSS in each third of the run: %s MiB" % " / ".join(fmt(mib(x)) for x in thirds))
        results["deadhost_late_responses"] = late
        results["deadhost_late_at_socket"] = wire_late
        results["deadhost_non_504"] = non504
        results["deadhost_pending_after"] = b.get("pending_after")
        results["deadhost_peak_rss_mib"] = mib(max(rss)) if rss else None
        results["deadhost_504_p99_ms"] = g504.get("p99_ms")
        target("(b) answers later than deadline + 100 ms", late, "= 0", lambda v: v == 0)
        target("(b) answers other than 504", non504, "= 0", lambda v: v == 0)
        target("(b) pending RPC calls after the load", b.get("pending_after"), "= 0", lambda v: v == 0)
    else:
        results["deadhost_lockstep_late_responses"] = late
        results["deadhost_lockstep_late_at_socket"] = wire_late
        results["deadhost_lockstep_504_max_at_socket_ms"] = w504.get("max_ms")
        results["deadhost_lockstep_504_max_ms"] = load.get("worst_ms")
        results["deadhost_lockstep_pending_after"] = b.get("pending_after")
if b_rows:
    say("    late = answers later than deadline + 100 ms (as read by the load generator), plus requests with no answer within deadline + 2 s;")
    say("    pending after = tideway_pending_rpc_calls 2 s after the run")

# (c)
c = next((r for r in rows if r.get("scenario") == "c"), None)
if c:
    load = c["load"]
    smp = read_samples(c["samples"])
    s503, s200 = status(load, 503), status(load, 200)
    rss = col(smp, "gateway_rss_kib", c["t_load"], c["t_end"])
    budget_text = c["budget"]
    units = {"KiB": 1, "MiB": 1024, "GiB": 1024 ** 2}
    budget_kib = next((float(budget_text[:-3]) * m for u, m in units.items() if budget_text.endswith(u)), None)
    peak = max(rss) if rss else None
    say("")
    say("(c) flood: route max_in_flight %d on %s ms calls, memory budget %s; %s clients, each"
        " sending again 0.5-1.5 x %d ms after an answer; %s s measured after a %s s warm-up" % (
            c["limit"], cfg["delay_ms"], budget_text, cfg["clients"], c["think_ms"], cfg["flood_secs"],
            cfg.get("flood_warmup_secs", "?")))
    w = load.get("warmup", {}).get("statuses", {})
    say("%9s %7s %7s %6s %9s %9s %9s %9s %9s %10s %13s" % (
        "requests", "200", "503", "other", "503 p50", "503 p99", "503 max", "503 >5ms", "shed",
        "svc calls", "RSS peak MiB"))
    say("%9d %7d %7d %6d %9s %9s %9s %9d %9.0f %10d %13s" % (
        load.get("requests", 0), s200.get("count", 0) + w.get("200", {}).get("count", 0),
        s503.get("count", 0) + w.get("503", {}).get("count", 0),
        other_than(load, 200, 503) + unanswered(load), fmt(s503.get("p50_ms"), ".2f"),
        fmt(s503.get("p99_ms"), ".2f"), fmt(s503.get("max_ms"), ".2f"), s503.get("late", 0),
        c["shed"], c["svc_started"], "%s of %s" % (fmt(mib(peak)), fmt(mib(budget_kib), ".0f"))))
    say("    counts: the whole run; 503 latencies: after the warm-up. Offered: %.0f requests/s;"
        " svc calls = calls the service started (every admitted request is one)"
        % (load.get("requests", 0) / max(load.get("elapsed_secs", 1), 1e-9)))
    gw_fast = c["gateway_le_5ms"] / c["gateway_le_1s"] if c.get("gateway_le_1s") else None
    if gw_fast is not None:
        say("    the gateway's own histogram, whole run: %.2f%% of its answers under 1 s (the 503s) took"
            " <= 5 ms from the request's arrival to its answer (client side, after the warm-up: %.2f%%)" % (
                100 * gw_fast, 100 * (1 - s503.get("late", 0) / s503["count"]) if s503.get("count") else 0))
        results["flood_gateway_503_within_5ms_pct"] = 100 * gw_fast
    noise_line(smp, "gateway_cpu_wait_ms", "gateway", load, c["t_load"], c["t_end"])
    w503 = load.get("warmup", {}).get("statuses", {}).get("503", {})
    if w503:
        say("    warm-up (%s s: the %s connections opening, their first requests; not in the row above):"
            " %d x 503, p50 %s ms, p99 %s ms, max %s ms, %d over 5 ms" % (
                cfg.get("flood_warmup_secs", "?"), cfg["clients"], w503["count"], fmt(w503["p50_ms"], ".2f"),
                fmt(w503["p99_ms"], ".2f"), fmt(w503["max_ms"], ".2f"), w503.get("late", 0)))
        results["flood_warmup_503_p99_ms"] = w503["p99_ms"]
    # The same 503s timed to when their last bytes reached the client's socket (the kernel's
    # receive stamp), which leaves out the load generator's own delay in reading them.
    wire503 = load.get("wire", {}).get("statuses", {}).get("503", {})
    cn = next((r for r in rows if r.get("scenario") == "c-nginx"), None)
    n503 = status(cn["load"], 503) if cn else {}
    nwire503 = cn["load"].get("wire", {}).get("statuses", {}).get("503", {}) if cn else {}
    say("    503 latency after the warm-up, two ways (p50 / p99 / max ms, answers over 5 ms):")
    say("      %-44s %s" % ("", "gateway                        nginx (return 503, same flood)"))
    line = lambda d: "%7s %7s %7s %6s" % (fmt(d.get("p50_ms"), ".2f"), fmt(d.get("p99_ms"), ".2f"),
                                          fmt(d.get("max_ms"), ".2f"), d.get("late", "-"))
    say("      %-44s %s      %s" % ("until read by the client (row above)", line(s503), line(n503)))
    say("      %-44s %s      %s" % ("until arrived at its socket (kernel stamp)", line(wire503), line(nwire503)))
    say("      answers without a kernel stamp (timed by the read instead): %s" % load.get("wire", {}).get("unstamped", "-"))
    results["flood_shed_p99_ms"] = wire503.get("p99_ms")
    results["flood_shed_read_p99_ms"] = s503.get("p99_ms")
    if n503:
        results["nginx_flood_503_read_p99_ms"] = n503.get("p99_ms")
        results["nginx_flood_503_p99_ms"] = nwire503.get("p99_ms")
    results["flood_peak_rss_mib"] = mib(peak)
    results["flood_503"] = s503.get("count", 0)
    # Every call the service started must be an admitted request, answered 200 (those started in
    # the warm-up included).
    admitted = s200.get("count", 0) + load.get("warmup", {}).get("statuses", {}).get("200", {}).get("count", 0)
    results["flood_refused_reaching_service"] = max(0, c["svc_started"] - admitted)
    target("(c) p99 of 503 answers (arrival at the client's socket)", wire503.get("p99_ms"), "<= 5 ms",
           lambda v: v <= 5.0)
    if peak and budget_kib:
        target("(c) peak RSS below the budget", peak / budget_kib, "< 1.0", lambda v: v < 1.0)

# (d)
d = next((r for r in rows if r.get("scenario") == "d"), None)
if d:
    load = d["load"]
    smp = read_samples(d["samples"])
    s0, s1 = d["svc_before"], d["svc_after"]
    started = s1["started"] - s0["started"]
    completed = s1["completed"] - s0["completed"]
    cancelled = s1["cancelled"] - s0["cancelled"]
    inflight = col(smp, "svc_in_flight", d["t_load"], d["t_end"])
    # Time from the last give-up until the service has no handler in flight.
    zero_at = next((s["unix_s"] for s in smp if s["unix_s"] >= d["t_end"]
                    and s.get("svc_in_flight") == 0), None)
    drain_ms = None if zero_at is None else max(0.0, (zero_at - d["t_end"]) * 1000)
    g_base = statistics.median(col(smp, "gateway_rss_kib", d["t_base"], d["t_load"]) or [0]) or None
    g_peak = max(col(smp, "gateway_rss_kib", d["t_load"], d["t_end"]) or [0]) or None
    g_after = nearest(smp, "gateway_rss_kib", d["t_after"])
    answered = load.get("responses", 0)
    say("")
    say("(d) impatient clients: %s clients give up after %d ms on %d ms calls (close, reconnect), %s s"
        % (cfg["clients"], d["timeout_ms"], d["delay_ms"], cfg["impatient_secs"]))
    say("%9s %9s %8s %11s %10s %10s %14s %14s %13s %22s" % (
        "requests", "given up", "answered", "svc started", "completed", "cancelled",
        "svc in flight", "0 again after", "pending after", "gateway RSS base/peak/after"))
    say("%9d %9d %8d %11d %10d %10d %14s %14s %13s %22s" % (
        load.get("requests", 0), load.get("timeouts", 0), answered, started, completed, cancelled,
        "peak %s" % fmt(max(inflight) if inflight else None, ".0f"),
        "%s ms" % fmt(drain_ms, ".0f"), fmt(d.get("pending_after"), ".0f"),
        "%s/%s/%s MiB" % (fmt(mib(g_base)), fmt(mib(g_peak)), fmt(mib(g_after)))))
    say("    0 again after = from the end of the load to the first /stats sample with no handler"
        " in flight (sampled every %s ms); after = %.0f s after the load" % (cfg["sample_ms"], d["t_after"] - d["t_end"]))
    noise_line(smp, "gateway_cpu_wait_ms", "gateway", load, d["t_load"], d["t_end"])
    results["impatient_svc_drain_ms"] = drain_ms
    results["impatient_completed_handlers"] = completed
    results["impatient_cancelled_handlers"] = cancelled
    results["impatient_pending_after"] = d.get("pending_after")
    results["impatient_rss_after_vs_base"] = g_after / g_base if g_after and g_base else None
    target("(d) service handlers back to 0 after the load", drain_ms, "within 1000 ms",
           lambda v: v <= 1000)
    target("(d) handlers that ran their full %d ms" % d["delay_ms"], completed, "= 0", lambda v: v == 0)
    target("(d) pending RPC calls after the load", d.get("pending_after"), "= 0", lambda v: v == 0)

say("")
say("load average before/after: %s / %s" % (load_before, load_after))
say("built from: %s" % source)
lines.extend(targets)
say("")

def result(key, spec):
    v = results.get(key)
    if v is not None:
        say("RESULT %s=%s" % (key, format(v, spec)))

for key, spec in (("slow_peak_rss_vs_nginx", ".2f"), ("slow_rss_after_vs_base", ".2f"),
                  ("deadhost_late_responses", "d"), ("flood_shed_p99_ms", ".2f"),
                  ("slow_errors", "d"), ("slow_peak_rss_mib", ".1f"), ("nginx_slow_peak_rss_mib", ".1f"),
                  ("slow_http_peak_rss_vs_nginx", ".2f"), ("deadhost_non_504", "d"),
                  ("deadhost_504_p99_ms", ".1f"), ("deadhost_pending_after", ".0f"),
                  ("deadhost_peak_rss_mib", ".1f"), ("deadhost_lockstep_late_responses", "d"),
                  ("deadhost_lockstep_504_max_ms", ".1f"), ("deadhost_lockstep_pending_after", ".0f"),
                  ("deadhost_late_at_socket", "d"), ("deadhost_lockstep_late_at_socket", "d"),
                  ("deadhost_lockstep_504_max_at_socket_ms", ".1f"),
                  ("flood_peak_rss_mib", ".1f"), ("flood_refused_reaching_service", "d"),
                  ("flood_gateway_503_within_5ms_pct", ".2f"), ("flood_warmup_503_p99_ms", ".2f"),
                  ("flood_shed_read_p99_ms", ".2f"), ("nginx_flood_503_p99_ms", ".2f"),
                  ("nginx_flood_503_read_p99_ms", ".2f"),
                  ("impatient_svc_drain_ms", ".0f"), ("impatient_completed_handlers", "d"),
                  ("impatient_pending_after", ".0f"), ("impatient_rss_after_vs_base", ".2f")):
    result(key, spec)

text = "\n".join(lines)
print(text)
with open(summary_path, "w") as f:
    f.write(text + "\n")
PY

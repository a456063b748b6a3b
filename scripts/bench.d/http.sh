#!/usr/bin/env bash
# HTTP: Tideway gateway vs nginx on a small JSON GET with wrk (req/s, p50/p99, req per proxy CPU-s); memory per idle connection.
#
# S1: `wrk -t1 -c64 --latency` fetches an 88-byte JSON document from four targets:
#   (a) backend    bench-http-backend (hyper, one current-thread runtime) directly;
#   (b) nginx      nginx from Debian (worker_processes 1, upstream keep-alive) proxying to it;
#   (c) tideway-http  the real `tideway gateway` (worker_threads = 1) proxying to it as an HTTP
#                  upstream route;
#   (d) tideway-rpc   the same gateway routing the request to bench-items-server (`bench.Items`,
#                  one current-thread runtime), which answers the same JSON over Tideway RPC.
# CPU layout: the process under test (the nginx worker, the gateway, or for (a) the backend)
# runs on CPU $SERVER_CPU; wrk, the backend (when it is not under test) and the RPC service
# run on CPU $LOAD_CPU. The backend is moved between the two with `taskset -a -p`.
# Each round gives every target $BENCH_SECS (10) seconds of load, in $BENCH_SLICES (5) slices
# (`wrk -d2s` each) interleaved with the other targets' slices: A B C D A B C D ... The machine
# is shared, and its speed drifts over seconds; targets measured seconds apart, not tens of
# seconds, see the same drift. A round starts with a short wrk warm-up of every target. The CPU
# time (utime+stime, /proc/PID/stat, all threads) of the process under test is read just before
# and just after each slice; for nginx that is the worker process (the master's CPU time is
# recorded too). A round's figures per target: requests and CPU time summed over its slices,
# p50/p99 the median of the slices'. The table shows medians over rounds.
#
# S2 (paired; when S1's targets include nginx and tideway-http): the two proxies loaded at the
# same time, each by its own `wrk -t1 -c64` (both on CPU $LOAD_CPU), for $BENCH_PAIRED_SECS (5)
# seconds, $BENCH_PAIRED_ROUNDS (7) times after a 1 s warm-up of both. They share CPU
# $SERVER_CPU, so both see the same machine at the same moment: the drift and the other
# tenants that make S1's sequential slices disagree by several per cent cancel out of the ratio
# of their CPU time per request. Reported: that ratio per round and its median (a supplement
# to S1's figure, which is the one the issue's target is judged on).
#
# S3: on a fresh process per target, a Python client opens $BENCH_IDLE_CONNS keep-alive
# connections, sends one GET on each and reads the answer, then leaves them idle; the
# tideway-tls and nginx-tls targets do the same over TLS 1.3 (Python's ssl, ALPN http/1.1; one
# self-signed ECDSA P-256 certificate made with openssl for both). VmRSS of the
# process under test (gateway; nginx worker; plain hyper backend for reference) is read before
# the connections are opened and, from $BENCH_IDLE_WAIT_SECS (5) of idleness on,
# $BENCH_IDLE_SAMPLES (3) times 1 s apart; the smallest of those samples counts:
# (idle - before) / N. Further samples until $BENCH_IDLE_SETTLE_SECS (15) show where the memory
# settles (allocators return freed pages with a delay); that figure is reported separately.
#
# Knobs (environment): BENCH_SECS BENCH_SLICES BENCH_WARMUP_SECS BENCH_ROUNDS BENCH_CONNECTIONS BENCH_TARGETS
# BENCH_PAIRED_ROUNDS BENCH_PAIRED_SECS (BENCH_PAIRED_ROUNDS=0 skips S2)
# BENCH_IDLE_CONNS BENCH_IDLE_WAIT_SECS BENCH_IDLE_SAMPLES BENCH_IDLE_SETTLE_SECS BENCH_IDLE_TARGETS
# (BENCH_TARGETS=none or BENCH_IDLE_TARGETS=none skips S1 or S3) SERVER_CPU LOAD_CPU
# CARGO_TARGET_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

secs="${BENCH_SECS:-10}"
slices="${BENCH_SLICES:-5}"
warmup="${BENCH_WARMUP_SECS:-1}"
rounds="${BENCH_ROUNDS:-3}"
conns="${BENCH_CONNECTIONS:-64}"
targets="${BENCH_TARGETS:-backend nginx tideway-http tideway-rpc}"
paired_rounds="${BENCH_PAIRED_ROUNDS:-7}"
paired_secs="${BENCH_PAIRED_SECS:-5}"
idle_conns="${BENCH_IDLE_CONNS:-5000}"
idle_wait="${BENCH_IDLE_WAIT_SECS:-5}"
idle_samples="${BENCH_IDLE_SAMPLES:-3}"
idle_settle="${BENCH_IDLE_SETTLE_SECS:-15}"
idle_targets="${BENCH_IDLE_TARGETS:-tideway nginx hyper tideway-tls nginx-tls}"
# `none` skips a part.
[ "$targets" = none ] && targets=""
[ "$idle_targets" = none ] && idle_targets=""
server_cpu="${SERVER_CPU:-0}"
load_cpu="${LOAD_CPU:-1}"
# Requests nginx serves on one keep-alive connection (client side and upstream side) before it
# closes it. nginx's default is 1000, which would make wrk reconnect every few hundred ms here;
# the gateway and the backend have no such cap, so nginx gets none either.
nginx_keepalive_requests=1000000

log() { echo "bench http: $*" >&2; }

if [ "$slices" -lt 1 ] || [ $((secs % slices)) -ne 0 ]; then
    log "BENCH_SECS ($secs) must be a whole multiple of BENCH_SLICES ($slices)"
    exit 2
fi
slice_secs=$((secs / slices))

if [ "$(nproc)" -lt 2 ]; then
    log "needs at least 2 CPUs (the proxy and the load generator each get one); have $(nproc)"
    exit 1
fi

# Thousands of idle connections need as many descriptors, in the client and in the server; the
# processes started below inherit this limit.
raise_nofile $((idle_conns + 256)) "$idle_conns idle connections; lower BENCH_IDLE_CONNS" || exit 1

"$root/scripts/install-deps" wrk=wrk nginx=nginx curl=curl openssl=openssl
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

log "building (cargo build --release -p tideway -p tideway-bench)"
cargo build --release -p tideway -p tideway-bench >&2
bin="$(cargo_target_dir)/release"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$root/bench-results/http-$stamp"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
tmp="$(mktemp -d /tmp/tideway-bench-http.XXXXXX)"
clk_tck="$(getconf CLK_TCK)"

cleanup() {
    stop_all
    # Logs of the servers are kept with the results.
    keep_results
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_gateway TAG [tls]: writes the gateway config and starts `tideway gateway` on
# $server_cpu (with `tls`, serving HTTPS with S3's certificate); sets $gateway_pid and
# $gateway_addr.
start_gateway() {
    local config="$tmp/gateway.toml"
    local tls=""
    if [ "${2:-}" = tls ]; then
        tls="$(printf '[server.tls]\ncert = "%s"\nkey = "%s"' "$tmp/cert.pem" "$tmp/key.pem")"
    fi
    cat >"$config" <<EOF
# Generated by scripts/bench.d/http.sh
[server]
listen = "127.0.0.1:0"
worker_threads = 1
# Metrics on, as in production: every request is counted and timed.
admin_listen = "127.0.0.1:0"
$tls

[[services]]
name = "bench.Items"
endpoints = ["$items_addr"]

[[routes]]
path = "/rpc/item"
service = "bench.Items"
rpc_method = "item"
methods = ["GET"]

[[routes]]
path = "/proxy/{*rest}"
upstream = "http://$backend_addr"
strip_prefix = "/proxy"
EOF
    "$bin/tideway" check-config "$config" >&2
    local log_file="$tmp/gateway-$1.log"
    RUST_LOG=warn taskset -c "$server_cpu" "$bin/tideway" gateway --config "$config" \
        >"$log_file" 2>"$tmp/gateway-$1.stderr.log" &
    gateway_pid=$!
    procs+=("$gateway_pid")
    gateway_addr=""
    for _ in $(seq 100); do
        gateway_addr="$(sed -n '1s|^Tideway gateway listening on https\{0,1\}://||p' "$log_file")"
        [ -n "$gateway_addr" ] && return 0
        kill -0 "$gateway_pid" 2>/dev/null || break
        sleep 0.1
    done
    log "tideway gateway did not start:"
    cat "$log_file" "$tmp/gateway-$1.stderr.log" >&2
    return 1
}

# start_nginx TAG [tls]: writes nginx.conf (one worker, upstream keep-alive to the backend) and
# runs nginx in the foreground on $server_cpu, with $tmp/nginx-TAG/ as its prefix; sets
# $nginx_pid (master), $nginx_worker and $nginx_addr. With `tls`, $nginx_addr is a TLS listener
# (the certificate of S3's TLS targets) answering /idle, and the only one.
start_nginx() {
    local prefix="$tmp/nginx-$1"
    mkdir -p "$prefix"
    local port listen scheme=http
    port="$(free_port)"
    listen="listen 127.0.0.1:$port;"
    if [ "${2:-}" = tls ]; then
        listen="listen 127.0.0.1:$port ssl; ssl_certificate $tmp/cert.pem; ssl_certificate_key $tmp/key.pem;"
        scheme=https
    fi
    cat >"$prefix/nginx.conf" <<EOF
# Generated by scripts/bench.d/http.sh
worker_processes 1;
worker_rlimit_nofile $nofile;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;

events {
    worker_connections $((idle_conns + 1024));
}

http {
    access_log off;
    default_type text/plain;
    keepalive_requests $nginx_keepalive_requests;
    keepalive_timeout 75s;

    upstream backend {
        server $backend_addr;
        keepalive 64;
        keepalive_requests $nginx_keepalive_requests;
    }

    server {
        $listen

        location /api/ {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The same forwarding headers the gateway adds.
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }

        location = /idle {
            return 200 "ok";
        }
    }
}
EOF
    nginx_addr="127.0.0.1:$port"
    run_nginx "$prefix" "$server_cpu" "$scheme://$nginx_addr/idle"
}

# check URL: the target must answer 200 with exactly the backend's document.
check() {
    local body code
    body="$tmp/check-body"
    code="$(curl -sS --max-time 5 -o "$body" -w '%{http_code}' "$1" || echo 000)"
    if [ "$code" != 200 ] || ! cmp -s "$body" "$tmp/expected.json"; then
        log "GET $1 answered $code with: $(head -c 300 "$body" 2>/dev/null)"
        return 1
    fi
}

cat >"$tmp/report.lua" <<'EOF'
-- Prints wrk's totals and latency percentiles (microseconds) as one JSON line.
done = function(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%.1f,"p90_us":%.1f,' ..
        '"p99_us":%.1f,"p999_us":%.1f,"max_us":%.1f,"mean_us":%.1f,"err_connect":%d,' ..
        '"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
        summary.requests, summary.duration, summary.bytes, latency:percentile(50),
        latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max,
        latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
EOF

cat >"$tmp/idle.py" <<'EOF'
"""Opens N keep-alive HTTP/1.1 connections, one GET on each, leaves them idle and reports how
much the server's VmRSS grew per connection. Prints one JSON line."""
import json
import resource
import socket
import sys
import time

target, host, port, path, n, pid, wait_secs, samples, settle_secs = sys.argv[1:10]
tls = len(sys.argv) > 10 and sys.argv[10] == "tls"
port, n, pid, samples = int(port), int(n), int(pid), int(samples)
wait_secs, settle_secs = float(wait_secs), float(settle_secs)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: bench-idle\r\n\r\n" % (path, host, port)).encode()

def rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS for pid %d" % pid)

def exchange(sock):
    """Sends the GET and reads one whole response (Content-Length bodies only)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("connection closed in the body")
        body += chunk
    return status

if tls:
    import ssl
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the bench's own self-signed certificate
    context.set_alpn_protocols(["http/1.1"])

def connect():
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        s = context.wrap_socket(s, server_hostname="localhost")
    return s

# Warm-up on one connection, so that lazily built state (route tables, the RPC connection,
# upstream pools) exists before the baseline is read.
warm = connect()
for _ in range(3):
    if exchange(warm) != 200:
        raise SystemExit("warm-up request was not answered 200")
warm.close()
time.sleep(1.0)
rss_before = rss(pid)

socks, bad = [], 0
t0 = time.monotonic()
for _ in range(n):
    s = connect()
    if exchange(s) != 200:
        bad += 1
    socks.append(s)
t_open = time.monotonic()
open_secs = t_open - t0
rss_open = rss(pid)

# The headline samples: `samples` readings 1 s apart from `wait_secs` after the last response.
# Then, to show where memory settles (the allocator returns pages with a delay), readings every
# 2 s until `settle_secs`.
series = []
for i in range(samples):
    time.sleep(max(0.0, t_open + wait_secs + i - time.monotonic()))
    series.append((round(time.monotonic() - t_open, 1), rss(pid)))
rss_idle = min(v for _, v in series)
while time.monotonic() - t_open + 2.0 <= settle_secs + 0.01:
    time.sleep(2.0)
    series.append((round(time.monotonic() - t_open, 1), rss(pid)))
rss_settled = series[-1][1]

# Which connections did the server close while they were idle?
# (Non-blocking: on a socket with a timeout, Python waits for readability even with MSG_DONTWAIT.)
closed, unexpected_data = 0, 0
for s in socks:
    if tls:
        # SSLSocket refuses MSG_PEEK: ask the socket underneath, through a duplicate.
        s = socket.socket(fileno=socket.dup(s.fileno()))
    s.setblocking(False)
    try:
        if s.recv(1, socket.MSG_PEEK) == b"":
            closed += 1
        else:
            unexpected_data += 1
    except BlockingIOError:
        pass  # open and quiet, as it should be
    except OSError:
        closed += 1  # reset
for s in socks:
    s.close()

print(json.dumps({
    "mode": "idle",
    "target": target,
    "connections": n,
    "non_200": bad,
    "closed_by_server": closed,
    "unexpected_data": unexpected_data,
    "open_secs": open_secs,
    "wait_secs": wait_secs,
    "samples": samples,
    "rss_before": rss_before,
    "rss_open": rss_open,
    "rss_idle_samples": series,
    "rss_idle": rss_idle,
    "rss_settled": rss_settled,
    "settled_secs": series[-1][0],
    "kib_per_conn_open": (rss_open - rss_before) / 1024 / n,
    "kib_per_conn": (rss_idle - rss_before) / 1024 / n,
    "kib_per_conn_settled": (rss_settled - rss_before) / 1024 / n,
}))
EOF

log "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "{\"loadavg_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$results"
# What was measured: the binaries are built from the working tree, which may be ahead of HEAD.
source_state="$(source_state)"
python3 -c 'import json, sys; print(json.dumps({"source": sys.argv[1]}))' "$source_state" >>"$results"

# The servers that are not under test, on the load generator's CPU.
start_bench bench-http-backend "$load_cpu" s1 --addr 127.0.0.1:0
backend_pid="$started_pid"
backend_addr="$started_addr"
start_bench bench-items-server "$load_cpu" s1 --addr 127.0.0.1:0
items_addr="$started_addr"
curl -sS --max-time 5 -o "$tmp/expected.json" "http://$backend_addr/api/item"
log "backend pid $backend_pid at $backend_addr; items service at $items_addr"

start_nginx s1
log "nginx master pid $nginx_pid, worker pid $nginx_worker at $nginx_addr ($("$nginx_bin" -v 2>&1))"
start_gateway s1
log "gateway pid $gateway_pid at $gateway_addr"

declare -A url_of pid_of
url_of[backend]="http://$backend_addr/api/item"
pid_of[backend]="$backend_pid"
url_of[nginx]="http://$nginx_addr/api/item"
pid_of[nginx]="$nginx_worker"
url_of[tideway-http]="http://$gateway_addr/proxy/api/item"
pid_of[tideway-http]="$gateway_pid"
url_of[tideway-rpc]="http://$gateway_addr/rpc/item"
pid_of[tideway-rpc]="$gateway_pid"
for target in $targets; do
    [ -n "${url_of[$target]:-}" ] || { log "unknown target '$target'"; exit 2; }
    check "${url_of[$target]}"
done

# backend_accepted: connections the backend has accepted so far, this request's own included.
backend_accepted() {
    curl -sS --max-time 5 "http://$backend_addr/stats" | sed -n 's/.*"accepted":\([0-9]*\).*/\1/p'
}

# warm_up TARGET: a short wrk run, not measured.
warm_up() {
    local target="$1"
    [ "$target" = backend ] && taskset -a -p -c "$server_cpu" "$backend_pid" >/dev/null
    taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${warmup}s" "${url_of[$target]}" >/dev/null || true
    [ "$target" = backend ] && taskset -a -p -c "$load_cpu" "$backend_pid" >/dev/null
    return 0
}

# measure ROUND SLICE TARGET: one measured slice of wrk load; appends one JSON line. For the
# two proxies it also counts the connections they opened to the backend during the slice.
measure() {
    local round="$1" slice="$2" target="$3"
    local url="${url_of[$target]}" pid="${pid_of[$target]}"
    local wrk_out="$out/wrk-$target-r$round-s$slice.txt"
    if [ "$target" = backend ]; then
        taskset -a -p -c "$server_cpu" "$backend_pid" >/dev/null
    fi
    local t0 t1 m0=0 m1=0 a0=0 a1=0 upstream_conns=-1
    case "$target" in nginx | tideway-http) a0="$(backend_accepted)" ;; esac
    t0="$(cpu_ticks "$pid")"
    [ "$target" = nginx ] && m0="$(cpu_ticks "$nginx_pid")"
    taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${slice_secs}s" --latency -s "$tmp/report.lua" \
        "$url" >"$wrk_out" || true
    t1="$(cpu_ticks "$pid")"
    [ "$target" = nginx ] && m1="$(cpu_ticks "$nginx_pid")"
    case "$target" in
        nginx | tideway-http)
            a1="$(backend_accepted)"
            upstream_conns=$((a1 - a0 - 1))
            ;;
    esac
    if [ "$target" = backend ]; then
        taskset -a -p -c "$load_cpu" "$backend_pid" >/dev/null
    fi
    local line
    line="$(sed -n 's/^WRK_JSON //p' "$wrk_out")"
    if [ -z "$line" ]; then
        log "wrk printed no summary for $target:"
        cat "$wrk_out" >&2
        echo "{\"failed\": \"wrk $target round $round slice $slice\"}" >>"$results"
        return 0
    fi
    python3 - "$line" "$target" "$round" "$conns" "$((t1 - t0))" "$((m1 - m0))" "$clk_tck" \
        "$upstream_conns" "$slice" >>"$results" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
target, rnd, conns, ticks, master_ticks, clk, upstream_conns = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
secs = r["duration_us"] / 1e6
cpu_s = ticks / clk
r.update({
    "mode": "slice", "slice": int(sys.argv[9]), "target": target, "round": rnd,
    "connections": conns, "secs": secs,
    "req_per_s": r["requests"] / secs, "proxy_cpu_s": cpu_s,
    "req_per_cpu_s": r["requests"] / cpu_s if cpu_s > 0 else None,
    "nginx_master_cpu_s": master_ticks / clk if target == "nginx" else None,
    "errors": r["err_connect"] + r["err_read"] + r["err_write"] + r["err_status"] + r["err_timeout"],
    "upstream_conns_opened": upstream_conns if upstream_conns >= 0 else None,
})
print(json.dumps(r))
PY
}

for round in $(seq "$rounds"); do
    for target in $targets; do
        warm_up "$target"
    done
    for slice in $(seq "$slices"); do
        log "round $round/$rounds, slice $slice/$slices: $targets (${slice_secs}s each)"
        for target in $targets; do
            measure "$round" "$slice" "$target"
        done
    done
done

# paired ROUND: nginx and the gateway's HTTP upstream route under load at once (S2); appends
# one JSON line.
paired() {
    local round="$1" n0 n1 g0 g1 other
    local nginx_out="$out/wrk-paired-nginx-r$round.txt" gateway_out="$out/wrk-paired-tideway-r$round.txt"
    # (`wait` on the one wrk in the background: a bare `wait` would wait for the servers too.)
    taskset -c "$load_cpu" wrk -t1 -c"$conns" -d1s "${url_of[nginx]}" >/dev/null &
    other=$!
    taskset -c "$load_cpu" wrk -t1 -c"$conns" -d1s "${url_of[tideway-http]}" >/dev/null || true
    wait "$other" || true
    n0="$(cpu_ticks "$nginx_worker")"
    g0="$(cpu_ticks "$gateway_pid")"
    taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${paired_secs}s" -s "$tmp/report.lua" \
        "${url_of[nginx]}" >"$nginx_out" &
    other=$!
    taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${paired_secs}s" -s "$tmp/report.lua" \
        "${url_of[tideway-http]}" >"$gateway_out" || true
    wait "$other" || true
    n1="$(cpu_ticks "$nginx_worker")"
    g1="$(cpu_ticks "$gateway_pid")"
    python3 - "$nginx_out" "$gateway_out" "$((n1 - n0))" "$((g1 - g0))" "$clk_tck" "$round" \
        >>"$results" <<'PY'
import json, sys
def summary(path):
    for line in open(path):
        if line.startswith("WRK_JSON "):
            return json.loads(line[len("WRK_JSON "):])
    return None
nginx, gateway = summary(sys.argv[1]), summary(sys.argv[2])
n_ticks, g_ticks, clk, rnd = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
if not nginx or not gateway or not n_ticks or not g_ticks:
    print(json.dumps({"failed": "paired round %d: no wrk summary or no CPU time" % rnd}))
    sys.exit(0)
errors = lambda r: r["err_connect"] + r["err_read"] + r["err_write"] + r["err_status"] + r["err_timeout"]
nginx_per_cpu = nginx["requests"] / (n_ticks / clk)
gateway_per_cpu = gateway["requests"] / (g_ticks / clk)
print(json.dumps({
    "mode": "paired", "round": rnd,
    "nginx_requests": nginx["requests"], "nginx_cpu_s": n_ticks / clk, "nginx_per_cpu": nginx_per_cpu,
    "tideway_requests": gateway["requests"], "tideway_cpu_s": g_ticks / clk,
    "tideway_per_cpu": gateway_per_cpu, "ratio": gateway_per_cpu / nginx_per_cpu,
    "errors": errors(nginx) + errors(gateway),
}))
PY
}

case " $targets " in
    *\ nginx\ *tideway-http\ * | *\ tideway-http\ *nginx\ *)
        for round in $(seq "$paired_rounds"); do
            log "S2 (paired) round $round/$paired_rounds: nginx and tideway-http at once (${paired_secs}s)"
            paired "$round"
        done
        ;;
esac

case " $idle_targets " in
    *-tls\ *)
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj /CN=localhost -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
        ;;
esac

# S3 on fresh processes: what the earlier load left in the allocator must not absorb the idle
# connections' memory.
stop "$gateway_pid"
stop_nginx

# idle TARGET ADDR PATH PID [tls]: runs the idle-connection client against ADDR and appends its
# line.
idle() {
    local host="${2%:*}" port="${2##*:}"
    log "$1: $idle_conns idle connections to $2$3 (about $((idle_settle + 4)) s)"
    if ! taskset -c "$load_cpu" python3 "$tmp/idle.py" "$1" "$host" "$port" "$3" "$idle_conns" \
        "$4" "$idle_wait" "$idle_samples" "$idle_settle" "${5:-}" >>"$results"; then
        log "idle-connection client failed against $1"
        echo "{\"failed\": \"idle $1\"}" >>"$results"
    fi
}

for target in $idle_targets; do
    case "$target" in
        tideway)
            start_gateway s3
            idle tideway "$gateway_addr" /rpc/item "$gateway_pid"
            stop "$gateway_pid"
            ;;
        nginx)
            start_nginx s3
            idle nginx "$nginx_addr" /idle "$nginx_worker"
            stop_nginx
            ;;
        hyper)
            start_bench bench-http-backend "$server_cpu" s3 --addr 127.0.0.1:0
            idle hyper "$started_addr" /api/item "$started_pid"
            stop "$started_pid"
            ;;
        tideway-tls)
            start_gateway s3-tls tls
            idle tideway-tls "$gateway_addr" /rpc/item "$gateway_pid" tls
            stop "$gateway_pid"
            ;;
        nginx-tls)
            start_nginx s3-tls tls
            idle nginx-tls "$nginx_addr" /idle "$nginx_worker" tls
            stop_nginx
            ;;
        *)
            log "unknown idle target '$target'"
            exit 2
            ;;
    esac
done

echo "{\"loadavg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$results"

python3 - "$results" "$out/summary.txt" "$(wc -c <"$tmp/expected.json")" <<'PY'
import json
import statistics
import sys

results_path, summary_path, body_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(line) for line in open(results_path) if line.strip()]
lines = []
say = lines.append

failed = [r["failed"] for r in rows if "failed" in r]

# One row per target and round from its slices: requests, time and CPU summed; latency
# percentiles the median of the slices'.
by_run = {}
for r in rows:
    if r.get("mode") == "slice":
        by_run.setdefault((r["target"], r["round"]), []).append(r)
runs = []
for (target, rnd), g in sorted(by_run.items()):
    secs_sum = sum(x["secs"] for x in g)
    requests = sum(x["requests"] for x in g)
    cpu_s = sum(x["proxy_cpu_s"] for x in g)
    opened = [x["upstream_conns_opened"] for x in g if x.get("upstream_conns_opened") is not None]
    runs.append({
        "target": target, "round": rnd, "connections": g[0]["connections"], "slices": len(g),
        "secs": secs_sum, "requests": requests, "req_per_s": requests / secs_sum,
        "proxy_cpu_s": cpu_s, "req_per_cpu_s": requests / cpu_s if cpu_s > 0 else None,
        "p50_us": statistics.median(x["p50_us"] for x in g),
        "p99_us": statistics.median(x["p99_us"] for x in g),
        "errors": sum(x["errors"] for x in g),
        "upstream_conns_opened": sum(opened) if opened else None,
        "nginx_master_cpu_s": sum(x["nginx_master_cpu_s"] or 0 for x in g) if target == "nginx" else None,
    })
idle = {r["target"]: r for r in rows if r.get("mode") == "idle"}
load_before = next((r["loadavg_before"] for r in rows if "loadavg_before" in r), "?")
load_after = next((r["loadavg_after"] for r in rows if "loadavg_after" in r), "?")
source = next((r["source"] for r in rows if "source" in r), "?")

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def fmt(x, spec=",.0f"):
    return "-" if x is None else format(x, spec)

order = ["backend", "nginx", "tideway-http", "tideway-rpc"]
label = {
    "backend": "(a) backend, direct",
    "nginx": "(b) nginx -> backend",
    "tideway-http": "(c) Tideway -> backend (HTTP)",
    "tideway-rpc": "(d) Tideway -> RPC service",
}
measured = {
    "backend": "backend",
    "nginx": "nginx worker",
    "tideway-http": "gateway",
    "tideway-rpc": "gateway",
}
groups = {}
for r in runs:
    groups.setdefault(r["target"], []).append(r)

summary = {}
n_rounds = max((len(g) for g in groups.values()), default=0)
conns = runs[0]["connections"] if runs else 0
secs = runs[0]["secs"] if runs else 0
# The S1 part of the summary is printed only when S1 ran (BENCH_TARGETS=none skips it).
say = lines.append if runs else (lambda _line: None)
n_slices = runs[0]["slices"] if runs else 0
say("S1: GET of a %d-byte JSON document, wrk -t1 -c%d, %.0f s per target and round in %d interleaved"
    " slices; medians of %d round(s)" % (body_bytes, conns, secs, n_slices, n_rounds))
say("")
head = ("target", "req/s", "p50 ms", "p99 ms", "measured", "CPU", "req/CPU-s", "(min..max)", "errors",
        "new upstream conns")
say("%-30s %9s %7s %7s %13s %5s %10s %17s %6s %18s" % head)
for target in sorted(groups, key=lambda t: order.index(t) if t in order else 99):
    g = groups[target]
    per_cpu = [r["req_per_cpu_s"] for r in g if r.get("req_per_cpu_s")]
    s = {
        "req_per_s": med(r["req_per_s"] for r in g),
        "p50_us": med(r["p50_us"] for r in g),
        "p99_us": med(r["p99_us"] for r in g),
        "cpu_util": med(r["proxy_cpu_s"] / r["secs"] for r in g),
        "per_cpu": med(per_cpu),
        "errors": sum(r["errors"] for r in g),
        "upstream_conns": med(r.get("upstream_conns_opened") for r in g),
    }
    summary[target] = s
    spread = "%s..%s" % (fmt(min(per_cpu)), fmt(max(per_cpu))) if per_cpu else "-"
    ms = lambda us: None if us is None else us / 1000
    say("%-30s %9s %7s %7s %13s %4s%% %10s %17s %6d %18s" % (
        label.get(target, target), fmt(s["req_per_s"]), fmt(ms(s["p50_us"]), ".2f"),
        fmt(ms(s["p99_us"]), ".2f"), measured.get(target, "?"),
        fmt(None if s["cpu_util"] is None else 100 * s["cpu_util"], ".0f"), fmt(s["per_cpu"]),
        spread, s["errors"], fmt(s["upstream_conns"])))
master = [r["nginx_master_cpu_s"] for r in groups.get("nginx", []) if r.get("nginx_master_cpu_s") is not None]
if master:
    say("nginx: CPU and req/CPU-s are the worker's alone; the master used %.2f CPU-s over all its runs."
        % sum(master))
say("CPU = CPU time of the measured process / wall time of the run (the gateway: all its threads).")
say("new upstream conns = connections the backend accepted from the proxy during the measured slices.")
say("p50, p99 = the median of a round's slices, then the median over rounds.")

def ratio(a, b, key):
    a, b = summary.get(a), summary.get(b)
    if a and b and a[key] and b[key]:
        return a[key] / b[key]
    return None

rpc_vs_nginx = ratio("tideway-rpc", "nginx", "per_cpu")
proxy_vs_nginx = ratio("tideway-http", "nginx", "per_cpu")
p99_vs_nginx = ratio("tideway-http", "nginx", "p99_us")
p99_rpc_vs_nginx = ratio("tideway-rpc", "nginx", "p99_us")
say("")
say("Ratios to nginx (b):")
say("  requests per CPU-second, HTTP->RPC (d) / (b):   %s" % fmt(rpc_vs_nginx, ".2f"))
say("  requests per CPU-second, HTTP proxy (c) / (b):  %s" % fmt(proxy_vs_nginx, ".2f"))
say("  p99, HTTP proxy (c) / (b):                      %s" % fmt(p99_vs_nginx, ".2f"))
say("  p99, HTTP->RPC (d) / (b):                       %s" % fmt(p99_rpc_vs_nginx, ".2f"))
say = lines.append

paired_rows = [r for r in rows if r.get("mode") == "paired"]
paired_ratio = med(r["ratio"] for r in paired_rows)
if paired_rows:
    say("")
    say("S2 (paired): nginx and the gateway's HTTP upstream route loaded at once, each by its own wrk;"
        " CPU time per request of each")
    say("%-6s %12s %12s %14s %14s %8s %6s" % ("round", "nginx req", "gateway req", "nginx req/CPU-s",
                                              "gw req/CPU-s", "gw/nginx", "errors"))
    for r in paired_rows:
        say("%-6d %12s %12s %14s %14s %8.3f %6d" % (
            r["round"], fmt(r["nginx_requests"]), fmt(r["tideway_requests"]), fmt(r["nginx_per_cpu"]),
            fmt(r["tideway_per_cpu"]), r["ratio"], r["errors"]))
    say("  requests per CPU-second, HTTP proxy / nginx, paired: median %.3f (min %.3f, max %.3f)" % (
        paired_ratio, min(r["ratio"] for r in paired_rows), max(r["ratio"] for r in paired_rows)))

if idle:
    say("")
    say("S3: memory per idle keep-alive client connection (VmRSS after the idle wait minus before, / N)")
    say("%-22s %5s %9s %9s %9s %10s %22s %6s %6s" % (
        "process", "N", "KiB/conn", "(at open)", "(settled)", "RSS before", "MiB open->idle->settl", "closed", "non200"))
    mib = lambda b: b / 2**20
    names = {"tideway": "Tideway gateway", "nginx": "nginx worker", "hyper": "plain hyper (backend)",
             "tideway-tls": "Tideway gateway, TLS", "nginx-tls": "nginx worker, TLS"}
    order = list(names)
    for target in sorted(idle, key=lambda t: order.index(t) if t in names else 9):
        r = idle[target]
        say("%-22s %5d %9.2f %9.2f %9.2f %6.1f MiB %22s %6d %6d" % (
            names.get(target, target), r["connections"], r["kib_per_conn"], r["kib_per_conn_open"],
            r["kib_per_conn_settled"], mib(r["rss_before"]),
            "%.1f->%.1f->%.1f" % (mib(r["rss_open"]), mib(r["rss_idle"]), mib(r["rss_settled"])),
            r["closed_by_server"], r["non_200"]))
    r0 = next(iter(idle.values()))
    say("KiB/conn = smallest sample %.0f-%.0f s after the last response; (at open) = right after it;"
        % (r0["wait_secs"], r0["rss_idle_samples"][r0["samples"] - 1][0]))
    say("(settled) = last sample, %.0f s after it. closed = connections the server closed meanwhile."
        % r0["settled_secs"])

say("")
say("load average before/after: %s / %s (the proxy and wrk each want a whole core)" % (load_before, load_after))
say("built from: %s" % source)
for f in failed:
    say("FAILED: %s" % f)

def target_line(what, value, goal, ok):
    if value is not None:
        say("target: %s %s: %s (%s)" % (what, goal, "met" if ok(value) else "NOT met", fmt(value, ".2f")))

tw = idle.get("tideway")
idle_kib = tw["kib_per_conn"] if tw else None
target_line("HTTP->RPC requests per CPU-second vs nginx", rpc_vs_nginx, ">= 1.5x", lambda v: v >= 1.5)
target_line("HTTP proxy requests per CPU-second vs nginx", proxy_vs_nginx, ">= 1.0x", lambda v: v >= 1.0)
target_line("HTTP proxy p99 vs nginx", p99_vs_nginx, "<= 1.0x", lambda v: v <= 1.0)
target_line("KiB per idle connection (gateway)", idle_kib, "<= 2", lambda v: v <= 2.0)

say("")

def result(key, value, spec=".2f"):
    if value is not None:
        say("RESULT %s=%s" % (key, format(value, spec)))

result("http_rpc_vs_nginx_per_cpu", rpc_vs_nginx)
result("http_proxy_vs_nginx_per_cpu", proxy_vs_nginx)
result("p99_vs_nginx", p99_vs_nginx)
result("idle_kib_per_conn", idle_kib)
for target, key in (("backend", "backend"), ("nginx", "nginx"), ("tideway-http", "tideway_http"),
                    ("tideway-rpc", "tideway_rpc")):
    s = summary.get(target)
    if s:
        result("%s_req_per_cpu_s" % key, s["per_cpu"], ".0f")
        result("%s_req_per_s" % key, s["req_per_s"], ".0f")
        result("%s_p99_us" % key, s["p99_us"], ".0f")
result("p99_rpc_vs_nginx", p99_rpc_vs_nginx)
result("http_proxy_vs_nginx_per_cpu_paired", paired_ratio, ".3f")
if tw:
    result("idle_kib_per_conn_settled", tw["kib_per_conn_settled"])
for target in ("nginx", "hyper"):
    if target in idle:
        result("%s_idle_kib_per_conn" % target, idle[target]["kib_per_conn"])
for target, key in (("tideway-tls", "tls_idle_kib_per_conn"), ("nginx-tls", "nginx_tls_idle_kib_per_conn")):
    if target in idle:
        result(key, idle[target]["kib_per_conn"])

text = "\n".join(lines)
print(text)
with open(summary_path, "w") as f:
    f.write(text + "\n")
sys.exit(1 if failed else 0)
PY

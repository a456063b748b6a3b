#!/usr/bin/env bash
# Edge: the cost of JWT verification + a rate limit on the S1 HTTP->RPC route (issue 7), req/s and req per gateway CPU-s.
#
# The S1 HTTP->RPC scenario of scripts/bench.d/http.sh: `wrk -t1 -c64 --latency` fetches an
# 88-byte JSON document that the real `tideway gateway` (worker_threads = 1, pinned to CPU
# $SERVER_CPU) gets from bench-items-server (`bench.Items`, one current-thread runtime, on CPU
# $LOAD_CPU with wrk) over Tideway RPC. The gateway's routes all call the same method; they
# differ only in their edge policy:
#   plain   /rpc/item      no policy (the baseline);
#   rs256   /rpc/item-rs   JWT bearer auth with an RSA-2048 RS256 key, plus a local GCRA rate
#                          limit keyed by token subject;
#   hs256   /rpc/item-hs   the same with an HS256 secret (for reference);
#   es256   /rpc/item-es   the same with a P-256 ES256 key.
# Tokens are made here with openssl (not by Tideway): header {alg, typ, kid}, claims sub, iss,
# aud, exp (+1 h), nbf, iat and a `role` claim the route forwards to the service. Each key
# names its issuer and audience, so `iss`, `aud`, `exp`, `nbf` and `sub` are all checked. wrk
# sends `Authorization: Bearer <token>` (-H). The limit's rate ($BENCH_RATE_LIMIT/s, burst
# $BENCH_RATE_BURST) is far above the offered load, so nothing may be refused: every run must
# come back with 0 non-200 answers (wrk's status errors), which is checked and reported, as are
# the gateway's own counters (tideway_auth_accepted_total, tideway_rate_limited_total).
# Before measuring, each protected route is checked to answer 200 with the token, and 401
# without it and with a tampered signature (so verification really happens).
#
# Gateways: with $BENCH_GATEWAYS="default nocache" (the default) two gateways run, one after the
# other under load, never at once: `default` with the edge's default settings (the verified-token
# cache on), `nocache` with `jwt_cache_entries = 0` (every request verifies its signature).
# Targets are ROUTE for the default gateway and ROUTE-nocache for the other; each gateway's
# overhead is measured against its own plain route.
#
# For every round and target, a short wrk warm-up is followed by the measured wrk run; the
# gateway's CPU time (utime+stime, /proc/PID/stat, all threads) is read just before and after.
# Rounds interleave the targets; the table shows medians over rounds.
#
# RESULT edge_policy_overhead_pct: 100 * (1 - rs256 / plain) in requests per gateway CPU-second
# (medians, default gateway; positive = the edge costs). Target: under 15.
#
# Knobs (environment): BENCH_SECS BENCH_WARMUP_SECS BENCH_ROUNDS BENCH_CONNECTIONS BENCH_TARGETS
# BENCH_GATEWAYS BENCH_RATE_LIMIT BENCH_RATE_BURST SERVER_CPU LOAD_CPU CARGO_TARGET_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.bash"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

secs="${BENCH_SECS:-10}"
warmup="${BENCH_WARMUP_SECS:-1}"
rounds="${BENCH_ROUNDS:-3}"
conns="${BENCH_CONNECTIONS:-64}"
gateways="${BENCH_GATEWAYS:-default nocache}"
rate_limit="${BENCH_RATE_LIMIT:-1000000}"
rate_burst="${BENCH_RATE_BURST:-100000}"
server_cpu="${SERVER_CPU:-0}"
load_cpu="${LOAD_CPU:-1}"
default_targets=""
for g in $gateways; do
    suffix=""
    [ "$g" = default ] || suffix="-$g"
    default_targets="$default_targets plain$suffix rs256$suffix hs256$suffix es256$suffix"
done
targets="${BENCH_TARGETS:-$default_targets}"
# Whitespace normalised: one space between names, none around.
targets="$(echo $targets)"

log() { echo "bench edge: $*" >&2; }

if [ "$(nproc)" -lt 2 ]; then
    log "needs at least 2 CPUs (the gateway and the load generator each get one); have $(nproc)"
    exit 1
fi

"$root/scripts/install-deps" wrk=wrk curl=curl openssl=openssl

log "building (cargo build --release -p tideway -p tideway-bench)"
cargo build --release -p tideway -p tideway-bench >&2
bin="$(cargo_target_dir)/release"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="$root/bench-results/edge-$stamp"
mkdir -p "$out"
results="$out/results.jsonl"
: >"$results"
tmp="$(mktemp -d /tmp/tideway-bench-edge.XXXXXX)"
clk_tck="$(getconf CLK_TCK)"

cleanup() {
    stop_all
    # Logs and configs are kept with the results (keys and tokens are throwaway, made per run).
    keep_results
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Keys and tokens (openssl; nothing from Tideway) -------------------------------------------

issuer="https://auth.bench.tideway.local"
audience="express-api"
subject="courier-4711"

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$tmp/rs256.pem" 2>/dev/null
openssl pkey -in "$tmp/rs256.pem" -pubout -out "$tmp/rs256.pub.pem"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/es256.pem" 2>/dev/null
openssl pkey -in "$tmp/es256.pem" -pubout -out "$tmp/es256.pub.pem"
# The secret is these 64 characters (the gateway reads the file as bytes).
hs_secret="$(openssl rand -hex 32)"

# make_token ALG KID: a signed compact JWS with the bench's claims.
make_token() {
    local alg="$1" kid="$2" now header claims input sig
    now="$(date +%s)"
    header="$(printf '{"alg":"%s","typ":"JWT","kid":"%s"}' "$alg" "$kid" | b64url)"
    claims="$(printf '{"sub":"%s","iss":"%s","aud":"%s","iat":%d,"nbf":%d,"exp":%d,"role":"courier"}' \
        "$subject" "$issuer" "$audience" "$now" "$now" "$((now + 3600))" | b64url)"
    input="$header.$claims"
    case "$alg" in
        RS256) sig="$(printf '%s' "$input" | openssl dgst -sha256 -sign "$tmp/rs256.pem" -binary | b64url)" ;;
        HS256) sig="$(printf '%s' "$input" | openssl dgst -sha256 -mac HMAC -macopt "key:$hs_secret" -binary | b64url)" ;;
        ES256)
            # openssl signs ECDSA as DER; a JWS carries r || s, 32 bytes each.
            sig="$(printf '%s' "$input" | openssl dgst -sha256 -sign "$tmp/es256.pem" -binary |
                python3 -c '
import base64, sys
der = sys.stdin.buffer.read()
assert der[0] == 0x30
i = 3 if der[1] & 0x80 else 2
out = b""
for _ in range(2):
    assert der[i] == 0x02
    n = der[i + 1]
    out += der[i + 2:i + 2 + n].lstrip(b"\0").rjust(32, b"\0")
    i += 2 + n
sys.stdout.write(base64.urlsafe_b64encode(out).decode().rstrip("="))')"
            ;;
        *) log "unknown algorithm $alg"; return 1 ;;
    esac
    printf '%s.%s' "$input" "$sig"
}

token_rs="$(make_token RS256 bench-rs256)"
token_hs="$(make_token HS256 bench-hs256)"
token_es="$(make_token ES256 bench-es256)"
# The same token with its signature's first character changed (still valid base64url).
tamper() { local t="$1" s="${1##*.}"; local c="${s:0:1}"; [ "$c" = A ] && c=B || c=A; printf '%s%s%s' "${t%.*}." "$c" "${s:1}"; }

# --- The gateways -------------------------------------------------------------------------------

declare -A gw_pid gw_addr gw_admin

# start_gateway VARIANT: writes the config (the variant adds its [edge] settings) and starts
# `tideway gateway` on $server_cpu.
start_gateway() {
    local variant="$1" edge_extra=""
    case "$variant" in
        default) ;;
        nocache) edge_extra="jwt_cache_entries = 0" ;;
        *) log "unknown gateway variant '$variant'"; return 1 ;;
    esac
    local config="$tmp/gateway-$variant.toml" admin
    admin="127.0.0.1:$(free_port)"
    local policy
    cat >"$config" <<EOF
# Generated by scripts/bench.d/edge.sh, gateway variant $variant
[server]
listen = "127.0.0.1:0"
worker_threads = 1
# Metrics on, as in production: every request is counted and timed.
admin_listen = "$admin"

[[services]]
name = "bench.Items"
endpoints = ["$items_addr"]

[[routes]]
path = "/rpc/item"
service = "bench.Items"
rpc_method = "item"
methods = ["GET"]

[[routes]]
path = "/rpc/item-rs"
service = "bench.Items"
rpc_method = "item"
methods = ["GET"]

[[routes]]
path = "/rpc/item-hs"
service = "bench.Items"
rpc_method = "item"
methods = ["GET"]

[[routes]]
path = "/rpc/item-es"
service = "bench.Items"
rpc_method = "item"
methods = ["GET"]

[edge]
$edge_extra

[[edge.jwt_keys]]
id = "bench-rs256"
algorithm = "RS256"
public_key_file = "$tmp/rs256.pub.pem"
issuer = "$issuer"
audience = ["$audience"]

[[edge.jwt_keys]]
id = "bench-hs256"
algorithm = "HS256"
secret_file = "$tmp/hs256.secret"
issuer = "$issuer"
audience = ["$audience"]

[[edge.jwt_keys]]
id = "bench-es256"
algorithm = "ES256"
public_key_file = "$tmp/es256.pub.pem"
issuer = "$issuer"
audience = ["$audience"]
EOF
    for policy in "GET /rpc/item-rs" "GET /rpc/item-hs" "GET /rpc/item-es"; do
        cat >>"$config" <<EOF

[route_policies."$policy"]
auth = { methods = "jwt", forward_claims = ["role"] }
rate_limit = { rate = $rate_limit.0, burst = $rate_burst, key = "subject" }
EOF
    done
    "$bin/tideway" check-config "$config" >&2
    local log_file="$tmp/gateway-$variant.log"
    RUST_LOG=warn taskset -c "$server_cpu" "$bin/tideway" gateway --config "$config" \
        >"$log_file" 2>"$tmp/gateway-$variant.stderr.log" &
    gw_pid[$variant]=$!
    procs+=("${gw_pid[$variant]}")
    gw_admin[$variant]="$admin"
    local addr=""
    for _ in $(seq 100); do
        addr="$(sed -n '1s|^Tideway gateway listening on http://||p' "$log_file")"
        [ -n "$addr" ] && break
        kill -0 "${gw_pid[$variant]}" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        log "tideway gateway ($variant) did not start:"
        cat "$log_file" "$tmp/gateway-$variant.stderr.log" >&2
        return 1
    fi
    gw_addr[$variant]="$addr"
    for _ in $(seq 50); do
        curl -fsS --max-time 1 -o /dev/null "http://$admin/healthz" 2>/dev/null && return 0
        sleep 0.1
    done
    log "the admin listener of gateway $variant at $admin does not answer"
    return 1
}

printf '%s' "$hs_secret" >"$tmp/hs256.secret"

# metric ADMIN NAME: the sum of every series of counter NAME (0 when absent).
metric() {
    curl -fsS --max-time 5 "http://$1/metrics" |
        awk -v n="$2" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%d\n", s }'
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

log "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "{\"loadavg_before\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$results"
source_state="$(source_state)"
python3 -c 'import json, sys; print(json.dumps({"source": sys.argv[1]}))' "$source_state" >>"$results"

start_bench bench-items-server "$load_cpu" edge --addr 127.0.0.1:0
items_addr="$started_addr"
log "items service at $items_addr"

declare -A url_of gw_of token_of
for target in $targets; do
    route="${target%%-*}"
    variant=default
    [ "$route" = "$target" ] || variant="${target#*-}"
    if [ -z "${gw_pid[$variant]:-}" ]; then
        start_gateway "$variant"
        log "gateway $variant: pid ${gw_pid[$variant]} at ${gw_addr[$variant]}, admin ${gw_admin[$variant]}"
    fi
    gw_of[$target]="$variant"
    case "$route" in
        plain) url_of[$target]="http://${gw_addr[$variant]}/rpc/item"; token_of[$target]="" ;;
        rs256) url_of[$target]="http://${gw_addr[$variant]}/rpc/item-rs"; token_of[$target]="$token_rs" ;;
        hs256) url_of[$target]="http://${gw_addr[$variant]}/rpc/item-hs"; token_of[$target]="$token_hs" ;;
        es256) url_of[$target]="http://${gw_addr[$variant]}/rpc/item-es"; token_of[$target]="$token_es" ;;
        *) log "unknown target '$target'"; exit 2 ;;
    esac
done

# code URL [TOKEN]: the HTTP status of a GET (with the bearer token when given); the body goes
# to $tmp/check-body.
code() {
    local args=(-sS --max-time 5 -o "$tmp/check-body" -w '%{http_code}')
    [ -n "${2:-}" ] && args+=(-H "Authorization: Bearer $2")
    curl "${args[@]}" "$1" || echo 000
}

# The plain route gives the expected document; every protected route gives it with its token
# and refuses a request without a token, with a tampered signature, and with an algorithm the
# named key is not pinned to.
first="${targets%% *}"
curl -sS --max-time 5 -o "$tmp/expected.json" "http://${gw_addr[${gw_of[$first]}]}/rpc/item"
[ -s "$tmp/expected.json" ] || { log "the plain route answered nothing"; exit 1; }
for target in $targets; do
    url="${url_of[$target]}" token="${token_of[$target]}"
    c="$(code "$url" "$token")"
    if [ "$c" != 200 ] || ! cmp -s "$tmp/check-body" "$tmp/expected.json"; then
        log "$target: GET $url answered $c with: $(head -c 300 "$tmp/check-body")"
        exit 1
    fi
    [ -n "$token" ] || continue
    for bad in "" "$(tamper "$token")"; do
        c="$(code "$url" "$bad")"
        if [ "$c" != 401 ]; then
            log "$target: GET $url with token '${bad:0:20}...' answered $c, expected 401"
            exit 1
        fi
    done
    other="$token_hs"
    [ "$token" = "$token_hs" ] && other="$token_rs"
    # A token whose kid names a key pinned to another algorithm is refused.
    c="$(code "$url" "$(printf '{"alg":"HS256","typ":"JWT","kid":"bench-rs256"}' | b64url).${other#*.}")"
    if [ "$c" != 401 ]; then
        log "$target: a token naming the RS256 key with alg HS256 answered $c, expected 401"
        exit 1
    fi
done
log "checks passed: protected routes answer 200 with their token, 401 without, tampered or with a mismatched algorithm"

# measure ROUND TARGET: warm-up, then the measured wrk run; appends one JSON line.
measure() {
    local round="$1" target="$2"
    local url="${url_of[$target]}" token="${token_of[$target]}" variant="${gw_of[$target]}"
    local pid="${gw_pid[$variant]}" admin="${gw_admin[$variant]}"
    local wrk_out="$out/wrk-$target-r$round.txt"
    local hdr=()
    [ -n "$token" ] && hdr=(-H "Authorization: Bearer $token")
    taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${warmup}s" "${hdr[@]}" "$url" >/dev/null || true
    local t0 t1 acc0 acc1 lim0 lim1 rej0 rej1
    acc0="$(metric "$admin" tideway_auth_accepted_total)"
    lim0="$(metric "$admin" tideway_rate_limited_total)"
    rej0="$(metric "$admin" tideway_auth_rejections_total)"
    t0="$(cpu_ticks "$pid")"
    taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$tmp/report.lua" \
        "${hdr[@]}" "$url" >"$wrk_out" || true
    t1="$(cpu_ticks "$pid")"
    acc1="$(metric "$admin" tideway_auth_accepted_total)"
    lim1="$(metric "$admin" tideway_rate_limited_total)"
    rej1="$(metric "$admin" tideway_auth_rejections_total)"
    local line
    line="$(sed -n 's/^WRK_JSON //p' "$wrk_out")"
    if [ -z "$line" ]; then
        log "wrk printed no summary for $target:"
        cat "$wrk_out" >&2
        echo "{\"failed\": \"wrk $target round $round\"}" >>"$results"
        return 0
    fi
    python3 - "$line" "$target" "$round" "$conns" "$((t1 - t0))" "$clk_tck" "$variant" \
        "$((acc1 - acc0))" "$((lim1 - lim0))" "$((rej1 - rej0))" >>"$results" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
target, rnd, conns, ticks, clk, variant = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
accepted, limited, rejected = int(sys.argv[8]), int(sys.argv[9]), int(sys.argv[10])
secs = r["duration_us"] / 1e6
cpu_s = ticks / clk
r.update({
    "mode": "throughput", "target": target, "gateway": variant, "round": rnd,
    "connections": conns, "secs": secs, "req_per_s": r["requests"] / secs, "gateway_cpu_s": cpu_s,
    "req_per_cpu_s": r["requests"] / cpu_s if cpu_s > 0 else None,
    "non_200": r["err_status"],
    "errors": r["err_connect"] + r["err_read"] + r["err_write"] + r["err_status"] + r["err_timeout"],
    "auth_accepted": accepted, "rate_limited": limited, "auth_rejected": rejected,
})
print(json.dumps(r))
PY
}

for round in $(seq "$rounds"); do
    for target in $targets; do
        log "round $round/$rounds: $target (${secs}s)"
        measure "$round" "$target"
    done
done

# The verified-token cache's counters, when the gateway has them.
for variant in "${!gw_admin[@]}"; do
    curl -fsS --max-time 5 "http://${gw_admin[$variant]}/metrics" >"$out/metrics-$variant.txt" || true
    python3 - "$variant" "$out/metrics-$variant.txt" >>"$results" <<'PY'
import json, sys
variant, path = sys.argv[1], sys.argv[2]
found = {}
for line in open(path):
    if line.startswith("tideway_jwt_cache"):
        name, value = line.rsplit(" ", 1)
        found[name] = float(value)
print(json.dumps({"mode": "cache", "gateway": variant, "series": found}))
PY
done

echo "{\"loadavg_after\": \"$(cut -d' ' -f1-3 /proc/loadavg)\"}" >>"$results"

python3 - "$results" "$out/summary.txt" "$(wc -c <"$tmp/expected.json")" "$rate_limit" "$rate_burst" <<'PY'
import json
import statistics
import sys

results_path, summary_path, body_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
rate, burst = sys.argv[4], sys.argv[5]
rows = [json.loads(line) for line in open(results_path) if line.strip()]
lines = []
say = lines.append

failed = [r["failed"] for r in rows if "failed" in r]
runs = [r for r in rows if r.get("mode") == "throughput"]
caches = {r["gateway"]: r["series"] for r in rows if r.get("mode") == "cache"}
load_before = next((r["loadavg_before"] for r in rows if "loadavg_before" in r), "?")
load_after = next((r["loadavg_after"] for r in rows if "loadavg_after" in r), "?")
source = next((r["source"] for r in rows if "source" in r), "?")

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def fmt(x, spec=",.0f"):
    return "-" if x is None else format(x, spec)

describe = {
    "plain": "no policy (baseline)",
    "rs256": "JWT RS256 + rate limit",
    "hs256": "JWT HS256 + rate limit",
    "es256": "JWT ES256 + rate limit",
}
groups = {}
for r in runs:
    groups.setdefault(r["target"], []).append(r)
n_rounds = max((len(g) for g in groups.values()), default=0)
conns = runs[0]["connections"] if runs else 0
secs = runs[0]["secs"] if runs else 0
say("Edge policies on S1 HTTP->RPC: GET of a %d-byte JSON document, wrk -t1 -c%d, %.0f s per run;"
    % (body_bytes, conns, secs))
say("medians of %d interleaved round(s); rate limit %s/s, burst %s, keyed by token subject"
    % (n_rounds, rate, burst))
say("")
head = ("gateway", "route", "req/s", "p50 ms", "p99 ms", "CPU", "req/CPU-s", "(min..max)",
        "overhead", "non-200", "auth ok", "limited")
say("%-8s %-24s %8s %7s %7s %5s %10s %17s %9s %7s %9s %7s" % head)
summary = {}
order = ["plain", "rs256", "hs256", "es256"]
for target in sorted(groups, key=lambda t: (groups[t][0]["gateway"] != "default", groups[t][0]["gateway"],
                                            order.index(t.split("-")[0]) if t.split("-")[0] in order else 9)):
    g = groups[target]
    route = target.split("-")[0]
    per_cpu = [r["req_per_cpu_s"] for r in g if r.get("req_per_cpu_s")]
    s = {
        "gateway": g[0]["gateway"], "route": route,
        "req_per_s": med(r["req_per_s"] for r in g),
        "p50_us": med(r["p50_us"] for r in g), "p99_us": med(r["p99_us"] for r in g),
        "cpu_util": med(r["gateway_cpu_s"] / r["secs"] for r in g),
        "per_cpu": med(per_cpu),
        "non_200": sum(r["non_200"] for r in g),
        "errors": sum(r["errors"] for r in g),
        "requests": sum(r["requests"] for r in g),
        "accepted": sum(r["auth_accepted"] for r in g),
        "limited": sum(r["rate_limited"] for r in g),
        "rejected": sum(r["auth_rejected"] for r in g),
    }
    summary[target] = s
for target, s in summary.items():
    base = summary.get("plain" if s["gateway"] == "default" else "plain-" + s["gateway"])
    s["overhead_pct"] = None
    s["overhead_rps_pct"] = None
    if base and s["route"] != "plain" and base["per_cpu"] and s["per_cpu"]:
        s["overhead_pct"] = 100 * (1 - s["per_cpu"] / base["per_cpu"])
        s["overhead_rps_pct"] = 100 * (1 - s["req_per_s"] / base["req_per_s"])
for target, s in summary.items():
    g = groups[target]
    per_cpu = [r["req_per_cpu_s"] for r in g if r.get("req_per_cpu_s")]
    spread = "%s..%s" % (fmt(min(per_cpu)), fmt(max(per_cpu))) if per_cpu else "-"
    ms = lambda us: None if us is None else us / 1000
    say("%-8s %-24s %8s %7s %7s %4s%% %10s %17s %8s%% %7d %9s %7s" % (
        s["gateway"], describe.get(s["route"], s["route"]), fmt(s["req_per_s"]),
        fmt(ms(s["p50_us"]), ".2f"), fmt(ms(s["p99_us"]), ".2f"),
        fmt(None if s["cpu_util"] is None else 100 * s["cpu_util"], ".0f"), fmt(s["per_cpu"]),
        spread, fmt(s["overhead_pct"], "+.1f"), s["non_200"],
        "-" if s["route"] == "plain" else fmt(s["accepted"], ","),
        "-" if s["route"] == "plain" else fmt(s["limited"], ",")))
say("overhead = 1 - (req/CPU-s of the route) / (req/CPU-s of the same gateway's plain route).")
say("CPU = gateway CPU time / wall time of the run. non-200 = wrk's status errors, all rounds.")
say("auth ok / limited = the gateway's tideway_auth_accepted_total / tideway_rate_limited_total")
say("over the measured runs (warm-ups excluded); auth ok counts every request wrk completed plus")
say("the ones still in flight when wrk stopped.")
for target, s in summary.items():
    if s["errors"] or s["limited"] or s["rejected"]:
        say("WARNING: %s: %d errors (%d non-200), %d rate-limited, %d auth rejections"
            % (target, s["errors"], s["non_200"], s["limited"], s["rejected"]))
    if s["route"] != "plain" and s["accepted"] < s["requests"]:
        say("WARNING: %s: the gateway authenticated %d requests, wrk completed %d"
            % (target, s["accepted"], s["requests"]))
for variant, series in sorted(caches.items()):
    if series:
        say("verified-token cache, gateway %s: %s" % (variant, ", ".join(
            "%s=%.0f" % (k, v) for k, v in sorted(series.items()))))
say("")
say("load average before/after: %s / %s (the gateway and wrk each want a whole core)" % (load_before, load_after))
say("built from: %s" % source)
for f in failed:
    say("FAILED: %s" % f)
head_s = summary.get("rs256")
overhead = head_s["overhead_pct"] if head_s else None
if overhead is not None:
    say("target: edge policy overhead (RS256 + rate limit, req per CPU-s) under 15%%: %s (%.1f%%)"
        % ("met" if overhead < 15 else "NOT met", overhead))
say("")

def result(key, value, spec=".1f"):
    if value is not None:
        say("RESULT %s=%s" % (key, format(value, spec)))

non_200 = sum(s["non_200"] for s in summary.values())
result("edge_non_200_total", non_200, "d")
for target, s in summary.items():
    key = target.replace("-", "_")
    result("%s_req_per_cpu_s" % key, s["per_cpu"], ".0f")
    result("%s_req_per_s" % key, s["req_per_s"], ".0f")
    result("%s_p99_us" % key, s["p99_us"], ".0f")
    if s["route"] != "plain":
        result("%s_overhead_pct" % key, s["overhead_pct"])
        result("%s_overhead_req_per_s_pct" % key, s["overhead_rps_pct"])
result("edge_policy_overhead_pct", overhead)

text = "\n".join(lines)
print(text)
with open(summary_path, "w") as f:
    f.write(text + "\n")
sys.exit(1 if failed or non_200 else 0)
PY

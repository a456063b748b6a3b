# Helpers shared by the benchmark scripts in this folder (sourced, not run; not a benchmark:
# `scripts/bench` lists only *.sh).

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# CPU ticks (utime + stime) of process $1 so far.
cpu_ticks() {
    # Field 2 (the command) is in parentheses; utime and stime are fields 12 and 13 after it.
    sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# Stops process $1 (SIGTERM) and reaps it.
stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# wait_line FILE SED_EXPR PID [STEP]: prints the first output of `sed -n SED_EXPR FILE` once
# there is one, polling 100 times every STEP seconds (default 0.1) while PID lives; fails
# otherwise.
wait_line() {
    local found="" step="${4:-0.1}"
    for _ in $(seq 100); do
        found="$(sed -n "$2" "$1")"
        [ -n "$found" ] && { echo "$found"; return 0; }
        kill -0 "$3" 2>/dev/null || break
        sleep "$step"
    done
    return 1
}

# Processes a benchmark started (each script adds its own); stop_all stops and reaps them.
procs=()
stop_all() {
    for pid in "${procs[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${procs[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
}

# keep_results [FILE...]: copies the logs and configs in $tmp (and each nginx-* directory's
# nginx.conf and error.log, plus any FILE given) to $out, then removes $tmp.
keep_results() {
    cp "$tmp"/*.log "$tmp"/*.toml "$@" "$out"/ 2>/dev/null || true
    for d in "$tmp"/nginx-*; do
        [ -d "$d" ] || continue
        cp "$d/nginx.conf" "$out/$(basename "$d").conf" 2>/dev/null || true
        cp "$d/error.log" "$out/$(basename "$d")-error.log" 2>/dev/null || true
    done
    rm -rf "$tmp"
}

# start_bench NAME CPU TAG [ARG...]: starts $bin/NAME ARG... pinned to CPU, its output in
# $tmp/NAME-TAG.log, and waits for its first line `LISTENING <addr>`. Sets $started_pid,
# $started_addr and $started_log; adds the process to $procs. Needs `log` and $bin, $tmp.
start_bench() {
    local name="$1" cpu="$2" tag="$3"
    shift 3
    started_log="$tmp/$name-$tag.log"
    taskset -c "$cpu" "$bin/$name" "$@" >"$started_log" 2>&1 &
    started_pid=$!
    procs+=("$started_pid")
    if ! started_addr="$(wait_line "$started_log" '1s/^LISTENING //p' "$started_pid")"; then
        log "$name did not start:"
        cat "$started_log" >&2
        return 1
    fi
}

# The directory cargo builds into: $CARGO_TARGET_DIR, or `build.target-dir` of a cargo config,
# or ./target (cargo itself says which).
cargo_target_dir() {
    cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# What the binaries under test were built from: the commit, and the files with uncommitted
# changes that go into them. Call it right after the build: commits made while a long run
# goes on must not be credited to it.
source_state() {
    local state dirty
    state="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    dirty="$( (git status --porcelain -- crates examples Cargo.toml Cargo.lock 2>/dev/null || true) | awk '{ print $2 }' | tr '\n' ' ')"
    [ -n "$dirty" ] && state="$state + uncommitted changes in: ${dirty% }"
    echo "$state"
}

# raise_nofile NEEDED WHAT: raises the open-file limit (inherited by the processes a benchmark
# starts) and fails, naming WHAT, when it stays below NEEDED. Sets $nofile. Needs `log`.
raise_nofile() {
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    nofile="$(ulimit -n)"
    if [ "$nofile" != unlimited ] && [ "$nofile" -lt "$1" ]; then
        log "open-file limit is $nofile, too low for $2"
        return 1
    fi
}

# run_nginx PREFIX CPU PROBE_URL: runs nginx in the foreground with PREFIX/nginx.conf, pinned
# to CPU, and waits until PROBE_URL answers 2xx; sets $nginx_pid (the master) and
# $nginx_worker, and adds the master to $procs. Needs `log` and $nginx_bin.
run_nginx() {
    local prefix="$1" cpu="$2" probe="$3"
    taskset -c "$cpu" "$nginx_bin" -p "$prefix/" -c "$prefix/nginx.conf" -g 'daemon off;' \
        >"$prefix/stdout.log" 2>&1 &
    nginx_pid=$!
    procs+=("$nginx_pid")
    nginx_worker=""
    for _ in $(seq 100); do
        nginx_worker="$(pgrep -P "$nginx_pid" | head -n1 || true)"
        if [ -n "$nginx_worker" ] &&
            curl -kfsS --max-time 2 -o /dev/null "$probe" 2>/dev/null; then
            return 0
        fi
        kill -0 "$nginx_pid" 2>/dev/null || break
        sleep 0.1
    done
    log "nginx did not start:"
    cat "$prefix/stdout.log" "$prefix/error.log" >&2 2>/dev/null || true
    return 1
}

# stop_nginx: SIGTERM to $nginx_pid (the master), which stops its worker; then makes sure
# $nginx_worker is gone.
stop_nginx() {
    stop "$nginx_pid"
    for _ in $(seq 50); do
        kill -0 "$nginx_worker" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$nginx_worker" 2>/dev/null || true
}

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

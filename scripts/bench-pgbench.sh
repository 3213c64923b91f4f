#!/usr/bin/env bash
# pgbench -S (read-only point selects) against PostgreSQL directly, through a
# Gatehouse gateway and through pgbouncer, in one run, at each client count
# and query mode, printing TPS and average latency and how each path
# compares with the direct one.
#
#   scripts/bench-pgbench.sh
#
# Environment:
#   BENCH_SECONDS   seconds per pgbench run (default 15)
#   BENCH_SCALE     pgbench -i scale factor (default 10: 1,000,000 accounts)
#   BENCH_CLIENTS   client counts (default "1 8"); -j equals the client count
#   BENCH_MODES     pgbench -M modes (default "simple extended")
#   BENCH_WARMUP    seconds of unrecorded direct warm-up (default 5)
#   GATEHOUSE_BIN   the gatehouse binary (default: the newer of
#                   target/release-lto/gatehouse, the build to deploy, and
#                   target/release/gatehouse); the gateway leg is skipped, with a note, when
#                   `$GATEHOUSE_BIN serve --help` fails
#   GATEHOUSE_POLICY  policy file for the gateway (default
#                   fixtures/policies/allow-all.toml)
#   BENCH_PERF      a directory: profile the gateway with `perf record -g`
#                   during each of its runs (perf-MODE-CLIENTS.data there)
#   BENCH_SYSCALLS=1  count each proxy's system calls and context switches
#                   (`perf stat`) during its shared-core runs and print them
#                   per transaction
#   BENCH_KEEP_LEDGER  a directory: keep the gateway's ledger (and its
#                   verifier.pub) there after the run
#   BENCH_PINNED=0  skip the pinned layout (otherwise, on 2 or more CPUs
#                   with taskset, every leg runs a second time with
#                   PostgreSQL and pgbench on CPU 0 and the proxy alone on
#                   CPU 1, the way a gateway runs on a host of its own)
#   BENCH_SIGN_EVERY  the gateway's [ledger] sign_every (default: what
#                   `gatehouse init` writes, 50ms; "0" signs every commit)
#   BENCH_SEGMENT_MAX  the gateway's [ledger] segment_max ("64 MiB"): the
#                   ledger is cut into sealed segments while it runs
#   BENCH_WORKLOAD  "select" (default: pgbench -S, one point select per
#                   transaction) or "tpcb" (pgbench's built-in TPC-B-like
#                   script: seven statements per transaction, three updates
#                   and an insert among them)
#   BENCH_PGBOUNCER=0  skip the pgbouncer leg (otherwise it runs when
#                   pgbouncer is installed, or can be installed: as root with
#                   apt-get)
#
# Runs as root (the server and pgbouncer then run as the `postgres` OS user
# through runuser, since neither runs as root) or as a normal user. The
# server is a fresh cluster in a temp dir with default durability settings;
# everything it starts is stopped and deleted on exit. Only 127.0.0.1 is used.
set -euo pipefail

BENCH_SECONDS="${BENCH_SECONDS:-15}"
BENCH_SCALE="${BENCH_SCALE:-10}"
BENCH_CLIENTS="${BENCH_CLIENTS:-1 8}"
BENCH_MODES="${BENCH_MODES:-simple extended}"
BENCH_WARMUP="${BENCH_WARMUP:-5}"
BENCH_PGBOUNCER="${BENCH_PGBOUNCER:-1}"
BENCH_WORKLOAD="${BENCH_WORKLOAD:-select}"
case "$BENCH_WORKLOAD" in
  select) WORKLOAD_ARGS=(-S) ;;
  tpcb) WORKLOAD_ARGS=() ;;
  *) echo "BENCH_WORKLOAD must be select or tpcb, not $BENCH_WORKLOAD" >&2; exit 2 ;;
esac

REPO="$(cd "$(dirname "$0")/.." && pwd)"
GATEHOUSE_BIN="${GATEHOUSE_BIN:-}"
if [ -z "$GATEHOUSE_BIN" ]; then
  # The newer of the two builds, so a stale one is never measured by mistake.
  for b in "$REPO/target/release-lto/gatehouse" "$REPO/target/release/gatehouse"; do
    if [ -x "$b" ] && { [ -z "$GATEHOUSE_BIN" ] || [ "$b" -nt "$GATEHOUSE_BIN" ]; }; then
      GATEHOUSE_BIN="$b"
    fi
  done
fi
GATEHOUSE_POLICY="${GATEHOUSE_POLICY:-$REPO/fixtures/policies/allow-all.toml}"

# Nothing from the caller's environment decides where or how we connect.
for v in $(compgen -e | grep '^PG' || true); do unset "$v"; done
export PGCONNECT_TIMEOUT=10

log() { printf '== %s\n' "$*" >&2; }
note() { printf 'NOTE: %s\n' "$*" >&2; NOTES+=("$*"); }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }
NOTES=()

# ---------------------------------------------------------------- binaries
find_bindir() {
  local d
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir 2>/dev/null || true)"
    if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  fi
  if [ -x /usr/lib/postgresql/15/bin/initdb ]; then echo /usr/lib/postgresql/15/bin; return 0; fi
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return 0; fi
  return 1
}
BINDIR="$(find_bindir)" || die "PostgreSQL server binaries not found (searched \`pg_config --bindir\`, /usr/lib/postgresql/*/bin): install the postgresql package: apt-get install postgresql"
for b in initdb pg_ctl postgres psql pgbench; do
  [ -x "$BINDIR/$b" ] || die "$BINDIR/$b is missing: install the postgresql and postgresql-client packages"
done
PSQL="$BINDIR/psql"
PGBENCH="$BINDIR/pgbench"

IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1
RUN_AS=()
if [ "$IS_ROOT" = 1 ]; then
  id -u postgres >/dev/null 2>&1 || die "running as root, but there is no postgres OS user to run the server as (apt-get install postgresql creates it)"
  RUN_AS=(runuser -u postgres --)
fi
# Run a server-side program (initdb, pg_ctl, pgbouncer) as the server's user.
as_server() { (cd "$WORK" && "${RUN_AS[@]}" "$@"); }

# ---------------------------------------------------------------- cleanup
WORK=""
PG_STARTED=0
GH_PID=""
PGB_PID=""
PGBENCH_PID=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$PGBENCH_PID" ]; then kill "$PGBENCH_PID" 2>/dev/null || true; wait "$PGBENCH_PID" 2>/dev/null || true; fi
  if [ -n "$GH_PID" ] && kill -0 "$GH_PID" 2>/dev/null; then
    kill "$GH_PID" 2>/dev/null || true
    wait "$GH_PID" 2>/dev/null || true
  fi
  if [ -n "$WORK" ] && [ -f "$WORK/pgbouncer.pid" ]; then
    kill "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null || true
  fi
  if [ -n "$PGB_PID" ]; then
    kill "$PGB_PID" 2>/dev/null || true
    wait "$PGB_PID" 2>/dev/null || true
  fi
  if [ "$PG_STARTED" = 1 ]; then
    as_server "$BINDIR/pg_ctl" -D "$WORK/data" -m fast -w stop >/dev/null 2>&1 \
      || as_server "$BINDIR/pg_ctl" -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ -n "${BENCH_KEEP_LEDGER:-}" ] && [ -n "$WORK" ] && [ -f "$WORK/gatehouse/ledger.db" ]; then
    mkdir -p "$BENCH_KEEP_LEDGER"
    cp "$WORK/gatehouse/ledger.db" "$WORK/gatehouse/verifier.pub" "$BENCH_KEEP_LEDGER/" 2>/dev/null || true
  fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-bench.XXXXXX")"
chmod 755 "$WORK"
[ "$IS_ROOT" = 1 ] && chown postgres: "$WORK"

# ---------------------------------------------------------------- ports
USED_PORTS=" "
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Sets PICKED to a port nothing listens on and that this run has not used.
pick_port() {
  local p i
  for i in $(seq 1 100); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if ! port_in_use "$p"; then USED_PORTS="$USED_PORTS$p "; PICKED=$p; return 0; fi
  done
  die "no free port found on 127.0.0.1"
}
wait_for_port() { # port seconds pid-or-empty
  local i
  for i in $(seq 1 $(( $2 * 10 ))); do
    port_in_use "$1" && return 0
    if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- machine
machine() {
  local cpu mem
  cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
  mem="$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null || true)"
  echo "Machine: $(nproc) CPUs (${cpu:-unknown CPU}), ${mem:-unknown} RAM, $(uname -sr)"
  echo "PostgreSQL: $("$BINDIR/postgres" --version) ($BINDIR), default durability settings"
  echo "pgbench ${WORKLOAD_ARGS[*]:-(TPC-B)}, scale $BENCH_SCALE, ${BENCH_SECONDS}s per run, -j = clients, clients and servers share the machine"
  echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
}
machine >&2

# ---------------------------------------------------------------- postgres
PGUSER_NAME=postgres
PGPASS="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$PGPASS" > "$WORK/pwfile"
chmod 600 "$WORK/pwfile"
[ "$IS_ROOT" = 1 ] && chown postgres: "$WORK/pwfile"

log "initdb in $WORK/data"
as_server "$BINDIR/initdb" -D "$WORK/data" -U "$PGUSER_NAME" -A scram-sha-256 \
  --pwfile="$WORK/pwfile" -E UTF8 --locale=C >"$WORK/initdb.log" 2>&1 \
  || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
rm -f "$WORK/pwfile"

PGPORT_=""
for attempt in 1 2 3 4 5; do
  pick_port
  if as_server "$BINDIR/pg_ctl" -w -t 60 -D "$WORK/data" -l "$WORK/postgres.log" \
      -o "-c listen_addresses=127.0.0.1 -p $PICKED -c unix_socket_directories='$WORK' -c max_connections=100" \
      start >/dev/null 2>&1; then
    PGPORT_=$PICKED
    PG_STARTED=1
    break
  fi
  as_server "$BINDIR/pg_ctl" -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1 || true
done
[ -n "$PGPORT_" ] || { tail -n 30 "$WORK/postgres.log" >&2 || true; die "PostgreSQL did not start"; }
log "PostgreSQL on 127.0.0.1:$PGPORT_"

PGPASSWORD="$PGPASS" "$PSQL" -X -q -h 127.0.0.1 -p "$PGPORT_" -U "$PGUSER_NAME" -d postgres \
  -v ON_ERROR_STOP=1 -c "CREATE DATABASE bench" >/dev/null
log "pgbench -i -s $BENCH_SCALE"
PGPASSWORD="$PGPASS" "$PGBENCH" -i -q -s "$BENCH_SCALE" -h 127.0.0.1 -p "$PGPORT_" \
  -U "$PGUSER_NAME" bench >"$WORK/pgbench-init.log" 2>&1 \
  || { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }

# Legs: name, port, user, password. Direct is always first.
LEGS=(direct)
declare -A LEG_PORT LEG_USER LEG_PASS
LEG_PORT[direct]=$PGPORT_
LEG_USER[direct]=$PGUSER_NAME
LEG_PASS[direct]=$PGPASS

# ---------------------------------------------------------------- gatehouse
# Starts a gateway in front of the cluster and registers the "gatehouse" leg;
# returns non-zero (after a note) when it cannot.
gatehouse_setup() {
  if [ -z "$GATEHOUSE_BIN" ]; then
    note "gatehouse leg skipped: GATEHOUSE_BIN is not set and no gatehouse binary is built in $REPO/target (cargo build --profile release-lto -p gatehouse)"
    return 1
  fi
  if ! "$GATEHOUSE_BIN" serve --help >/dev/null 2>&1; then
    note "gatehouse leg skipped: '$GATEHOUSE_BIN serve --help' failed (no gateway in this build)"
    return 1
  fi
  if [ ! -f "$GATEHOUSE_POLICY" ]; then
    note "gatehouse leg skipped: policy file $GATEHOUSE_POLICY is missing"
    return 1
  fi
  local dir="$WORK/gatehouse" cfg="$WORK/gatehouse/gatehouse.toml" secret
  pick_port
  local port=$PICKED
  "$GATEHOUSE_BIN" init --dir "$dir" --origin bench >"$WORK/gatehouse-init.log" 2>&1 \
    || { note "gatehouse leg skipped: gatehouse init failed: $(tail -n 3 "$WORK/gatehouse-init.log")"; return 1; }
  if [ -n "${BENCH_SEGMENT_MAX:-}" ]; then
    sed -i "s/^\[ledger\]$/[ledger]\nsegment_max = \"$BENCH_SEGMENT_MAX\"/" "$cfg"
  fi
  if [ -n "${BENCH_SIGN_EVERY:-}" ]; then
    sed -i "s/^sign_every = .*/sign_every = \"$BENCH_SIGN_EVERY\"/" "$cfg"
    grep -q "^sign_every = \"$BENCH_SIGN_EVERY\"" "$cfg" \
      || { note "gatehouse leg skipped: this gatehouse's configuration has no sign_every"; return 1; }
  fi
  cat >>"$cfg" <<EOF

[listen]
address = "127.0.0.1:$port"

[[target]]
name = "bench"
url = "postgres://$PGUSER_NAME@127.0.0.1:$PGPORT_/bench"
password_env = "GATEHOUSE_UPSTREAM_PASSWORD"
EOF
  "$GATEHOUSE_BIN" identity create --config "$cfg" bench-agent >"$WORK/gatehouse-identity.log" 2>&1 \
    || { note "gatehouse leg skipped: identity create failed: $(tail -n 3 "$WORK/gatehouse-identity.log")"; return 1; }
  secret="$("$GATEHOUSE_BIN" credential issue --config "$cfg" bench-agent --ttl 1h 2>"$WORK/gatehouse-credential.log" | tail -n 1)" \
    || { note "gatehouse leg skipped: credential issue failed: $(tail -n 3 "$WORK/gatehouse-credential.log")"; return 1; }
  [ -n "$secret" ] || { note "gatehouse leg skipped: credential issue printed no secret"; return 1; }
  "$GATEHOUSE_BIN" policy apply --config "$cfg" "$GATEHOUSE_POLICY" >"$WORK/gatehouse-policy.log" 2>&1 \
    || { note "gatehouse leg skipped: policy apply failed: $(tail -n 3 "$WORK/gatehouse-policy.log")"; return 1; }
  GATEHOUSE_UPSTREAM_PASSWORD="$PGPASS" "$GATEHOUSE_BIN" serve --config "$cfg" \
    >"$WORK/gatehouse.log" 2>&1 </dev/null &
  GH_PID=$!
  if ! wait_for_port "$port" 30 "$GH_PID"; then
    note "gatehouse leg skipped: gatehouse serve did not listen on 127.0.0.1:$port: $(tail -n 5 "$WORK/gatehouse.log")"
    return 1
  fi
  if ! PGPASSWORD="$secret" "$PSQL" -X -A -t -h 127.0.0.1 -p "$port" -U bench-agent -d bench \
      -c "SELECT count(*) FROM pgbench_branches" >"$WORK/gatehouse-check.log" 2>&1; then
    note "gatehouse leg skipped: a query through the gateway failed: $(tail -n 3 "$WORK/gatehouse-check.log")"
    return 1
  fi
  LEGS+=(gatehouse)
  LEG_PORT[gatehouse]=$port
  LEG_USER[gatehouse]=bench-agent
  LEG_PASS[gatehouse]=$secret
  log "Gatehouse on 127.0.0.1:$port ($GATEHOUSE_BIN)"
}

# ---------------------------------------------------------------- pgbouncer
find_pgbouncer() {
  command -v pgbouncer 2>/dev/null && return 0
  [ -x /usr/sbin/pgbouncer ] && { echo /usr/sbin/pgbouncer; return 0; }
  return 1
}
pgbouncer_setup() {
  local bin port
  if [ "$BENCH_PGBOUNCER" = 0 ]; then
    note "pgbouncer leg skipped: BENCH_PGBOUNCER=0"
    return 1
  fi
  if ! bin="$(find_pgbouncer)"; then
    if [ "$IS_ROOT" = 1 ] && command -v apt-get >/dev/null 2>&1; then
      log "installing pgbouncer (apt-get install -y pgbouncer)"
      export DEBIAN_FRONTEND=noninteractive
      if ! apt-get install -y -qq pgbouncer >"$WORK/apt.log" 2>&1; then
        apt-get update -qq >>"$WORK/apt.log" 2>&1 || true
        apt-get install -y -qq pgbouncer >>"$WORK/apt.log" 2>&1 || true
      fi
    fi
    if ! bin="$(find_pgbouncer)"; then
      if [ "$IS_ROOT" = 1 ]; then
        note "pgbouncer leg skipped: pgbouncer is not installed and apt-get install pgbouncer failed"
      else
        note "pgbouncer leg skipped: pgbouncer is not installed (as root: apt-get install pgbouncer)"
      fi
      return 1
    fi
  fi
  pick_port
  port=$PICKED
  # Plain password in the auth file: pgbouncer uses it for SCRAM both with
  # its clients and with the server. Session pooling, so -M extended works.
  printf '"%s" "%s"\n' "$PGUSER_NAME" "$PGPASS" >"$WORK/userlist.txt"
  cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
bench = host=127.0.0.1 port=$PGPORT_ dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = session
default_pool_size = 20
max_client_conn = 100
ignore_startup_parameters = extra_float_digits
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
EOF
  chmod 600 "$WORK/userlist.txt" "$WORK/pgbouncer.ini"
  [ "$IS_ROOT" = 1 ] && chown postgres: "$WORK/userlist.txt" "$WORK/pgbouncer.ini"
  as_server "$bin" "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 </dev/null &
  PGB_PID=$!
  if ! wait_for_port "$port" 30 "$PGB_PID"; then
    note "pgbouncer leg skipped: pgbouncer did not listen on 127.0.0.1:$port: $(tail -n 5 "$WORK/pgbouncer.out" "$WORK/pgbouncer.log" 2>/dev/null)"
    return 1
  fi
  if ! PGPASSWORD="$PGPASS" "$PSQL" -X -A -t -h 127.0.0.1 -p "$port" -U "$PGUSER_NAME" -d bench \
      -c "SELECT count(*) FROM pgbench_branches" >"$WORK/pgbouncer-check.log" 2>&1; then
    note "pgbouncer leg skipped: a query through pgbouncer failed: $(tail -n 3 "$WORK/pgbouncer-check.log")"
    return 1
  fi
  LEGS+=(pgbouncer)
  LEG_PORT[pgbouncer]=$port
  LEG_USER[pgbouncer]=$PGUSER_NAME
  LEG_PASS[pgbouncer]=$PGPASS
  log "pgbouncer $("$bin" --version 2>/dev/null | head -n 1 | awk '{print $NF}') on 127.0.0.1:$port (session pooling)"
}

gatehouse_setup || true
pgbouncer_setup || true

# ---------------------------------------------------------------- runs
declare -A TPS LAT CPU SYSCALLS SWITCHES
# The process whose CPU time a leg's run is charged to (empty for direct).
leg_pid() {
  case "$1" in
    gatehouse) echo "$GH_PID" ;;
    pgbouncer) cat "$WORK/pgbouncer.pid" 2>/dev/null || true ;;
  esac
}
# User plus system CPU time of a process and its threads, in clock ticks.
cpu_ticks() {
  [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 0
  sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
# Set by the pinned layout: pgbench runs on these CPUs (empty: anywhere).
PGBENCH_CPUS=""
# run_pgbench LEG MODE CLIENTS SECONDS [KEY]: results are kept under KEY
# (default LEG), so the pinned layout's runs sit beside the shared ones.
run_pgbench() {
  local leg=$1 mode=$2 clients=$3 secs=$4 key=${5:-$1} out
  out="$WORK/run-$key-$mode-$clients.log"
  local pin=()
  [ -n "$PGBENCH_CPUS" ] && pin=(taskset -c "$PGBENCH_CPUS")
  # In the background and waited for, so that a signal to this script is
  # handled (and pgbench stopped) at once rather than after the run.
  PGPASSWORD="${LEG_PASS[$leg]}" ${pin[@]+"${pin[@]}"} "$PGBENCH" -n ${WORKLOAD_ARGS[@]+"${WORKLOAD_ARGS[@]}"} -M "$mode" -c "$clients" -j "$clients" \
    -T "$secs" -h 127.0.0.1 -p "${LEG_PORT[$leg]}" -U "${LEG_USER[$leg]}" bench >"$out" 2>&1 &
  PGBENCH_PID=$!
  local perf_pid=""
  if [ -n "${BENCH_PERF:-}" ] && [ "$leg" = gatehouse ] && command -v perf >/dev/null 2>&1; then
    mkdir -p "$BENCH_PERF"
    perf record -q -F 2999 -g -p "$GH_PID" -o "$BENCH_PERF/perf-$mode-$clients.data" \
      -- sleep "$secs" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  local pid ticks0 ticks1
  pid="$(leg_pid "$leg")"
  local stat_pid="" stat_out="$WORK/stat-$key-$mode-$clients.csv"
  if [ "${BENCH_SYSCALLS:-0}" != 0 ] && [ "$leg" != direct ] && [ -n "$pid" ] && command -v perf >/dev/null 2>&1; then
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$pid" -o "$stat_out" \
      -- sleep "$secs" >/dev/null 2>&1 &
    stat_pid=$!
  fi
  ticks0="$(cpu_ticks "$pid")"
  local ok=0
  wait "$PGBENCH_PID" || ok=$?
  ticks1="$(cpu_ticks "$pid")"
  PGBENCH_PID=""
  [ -n "$perf_pid" ] && { wait "$perf_pid" || true; }
  if [ -n "$stat_pid" ]; then
    wait "$stat_pid" || true
    SYSCALLS[$key/$mode/$clients]="$(awk -F, '$3 == "raw_syscalls:sys_enter" { print $1 }' "$stat_out")"
    SWITCHES[$key/$mode/$clients]="$(awk -F, '$3 == "context-switches" { print $1 }' "$stat_out")"
  fi
  if [ "$ok" = 0 ]; then
    TPS[$key/$mode/$clients]="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out")"
    LAT[$key/$mode/$clients]="$(sed -n 's/^latency average = \([0-9.]*\) ms$/\1/p' "$out")"
    # The proxy's CPU time per transaction: what it costs on top of the
    # server and the client (pgbench's connection setup is included, and
    # negligible over a run).
    CPU[$key/$mode/$clients]=""
    if [ -n "$ticks0" ] && [ -n "$ticks1" ] && [ -n "${TPS[$key/$mode/$clients]}" ]; then
      CPU[$key/$mode/$clients]="$(awk -v d="$((ticks1 - ticks0))" -v hz="$(getconf CLK_TCK)" \
        -v t="${TPS[$key/$mode/$clients]}" -v s="$secs" \
        'BEGIN { if (t > 0) printf "%.0f", d / hz * 1e6 / (t * s) }')"
    fi
  else
    TPS[$key/$mode/$clients]=""
    LAT[$key/$mode/$clients]=""
    note "pgbench failed for $key, -M $mode, $clients clients: $(tail -n 3 "$out" | tr '\n' ' ')"
  fi
}

if [ "$BENCH_WARMUP" -gt 0 ]; then
  log "warm-up: ${BENCH_WARMUP}s direct"
  run_pgbench direct simple 8 "$BENCH_WARMUP"
fi

# Legs interleaved per configuration, so slow drift of the machine does not
# favour one of them.
for mode in $BENCH_MODES; do
  for clients in $BENCH_CLIENTS; do
    for leg in "${LEGS[@]}"; do
      log "$leg: -M $mode, $clients client(s), ${BENCH_SECONDS}s"
      run_pgbench "$leg" "$mode" "$clients" "$BENCH_SECONDS"
    done
  done
done

# ---------------------------------------------------------------- pinned layout
# PostgreSQL (the postmaster and every backend, present and future) and
# pgbench on CPU 0, each proxy alone on CPU 1: the proxies no longer take
# CPU from the server and the client, so TPS shows what a gateway on a host
# of its own would pass.
PINNED=0
if [ "${BENCH_PINNED:-1}" != 0 ]; then
  if [ "$(nproc)" -lt 2 ] || ! command -v taskset >/dev/null 2>&1; then
    note "pinned layout skipped: it needs 2 CPUs and taskset"
  else
    pm="$(head -n 1 "$WORK/data/postmaster.pid" 2>/dev/null || true)"
    if [ -n "$pm" ] && taskset -p -c 0 "$pm" >/dev/null 2>&1; then
      for child in $(pgrep -P "$pm" 2>/dev/null); do taskset -a -p -c 0 "$child" >/dev/null 2>&1 || true; done
      [ -n "$GH_PID" ] && taskset -a -p -c 1 "$GH_PID" >/dev/null 2>&1 || true
      bouncer="$(cat "$WORK/pgbouncer.pid" 2>/dev/null || true)"
      [ -n "$bouncer" ] && taskset -a -p -c 1 "$bouncer" >/dev/null 2>&1 || true
      PGBENCH_CPUS=0
      PINNED=1
      for mode in $BENCH_MODES; do
        for clients in $BENCH_CLIENTS; do
          for leg in "${LEGS[@]}"; do
            log "pinned $leg: -M $mode, $clients client(s), ${BENCH_SECONDS}s"
            run_pgbench "$leg" "$mode" "$clients" "$BENCH_SECONDS" "pinned-$leg"
          done
        done
      done
      PGBENCH_CPUS=""
    else
      note "pinned layout skipped: cannot set the server's CPU affinity"
    fi
  fi
fi

# ---------------------------------------------------------------- report
echo
machine
echo
printf '%-9s %7s  %-10s %12s %12s %10s %14s %12s\n' mode clients target TPS "lat avg ms" "TPS/direct" "lat - direct" "CPU us/txn"
printf '%-9s %7s  %-10s %12s %12s %10s %14s %12s\n' --------- ------- ---------- ------------ ------------ ---------- -------------- ------------
for mode in $BENCH_MODES; do
  for clients in $BENCH_CLIENTS; do
    dt="${TPS[direct/$mode/$clients]:-}"
    dl="${LAT[direct/$mode/$clients]:-}"
    for leg in "${LEGS[@]}"; do
      t="${TPS[$leg/$mode/$clients]:-}"
      l="${LAT[$leg/$mode/$clients]:-}"
      c="${CPU[$leg/$mode/$clients]:-}"
      if [ -z "$t" ]; then
        printf '%-9s %7s  %-10s %12s %12s %10s %14s %12s\n' "$mode" "$clients" "$leg" failed - - - -
        continue
      fi
      awk -v mode="$mode" -v c="$clients" -v leg="$leg" -v t="$t" -v l="$l" -v dt="$dt" -v dl="$dl" -v cpu="${c:--}" 'BEGIN {
        ratio = (dt > 0) ? sprintf("%.2fx", t / dt) : "-";
        diff = (dl != "" && l != "") ? sprintf("%+.0f us", (l - dl) * 1000) : "-";
        printf "%-9s %7s  %-10s %12.0f %12.3f %10s %14s %12s\n", mode, c, leg, t, l, ratio, diff, cpu
      }'
    done
  done
done
# The pinned layout, and each proxy's TPS against pgbouncer's in the same
# layout (issue 15's targets are ratios to pgbouncer).
if [ "$PINNED" = 1 ]; then
  echo
  echo "pinned layout: PostgreSQL and pgbench on CPU 0, the proxy alone on CPU 1"
  printf '%-9s %7s  %-10s %12s %12s %10s %12s %12s\n' mode clients target TPS "lat avg ms" "TPS/direct" "TPS/pgbouncer" "CPU us/txn"
  printf '%-9s %7s  %-10s %12s %12s %10s %12s %12s\n' --------- ------- ---------- ------------ ------------ ---------- ------------ ------------
  for mode in $BENCH_MODES; do
    for clients in $BENCH_CLIENTS; do
      dt="${TPS[pinned-direct/$mode/$clients]:-}"
      bt="${TPS[pinned-pgbouncer/$mode/$clients]:-}"
      for leg in "${LEGS[@]}"; do
        t="${TPS[pinned-$leg/$mode/$clients]:-}"
        l="${LAT[pinned-$leg/$mode/$clients]:-}"
        c="${CPU[pinned-$leg/$mode/$clients]:-}"
        if [ -z "$t" ]; then
          printf '%-9s %7s  %-10s %12s\n' "$mode" "$clients" "$leg" failed
          continue
        fi
        awk -v mode="$mode" -v c="$clients" -v leg="$leg" -v t="$t" -v l="$l" -v dt="$dt" -v bt="$bt" -v cpu="${c:--}" 'BEGIN {
          ratio = (dt > 0) ? sprintf("%.2fx", t / dt) : "-";
          vs = (bt > 0) ? sprintf("%.2fx", t / bt) : "-";
          printf "%-9s %7s  %-10s %12.0f %12.3f %10s %12s %12s\n", mode, c, leg, t, l, ratio, vs, cpu
        }'
      done
    done
  done
fi
# Shared cores, each proxy against pgbouncer in the same run.
if [ -n "${LEG_PORT[pgbouncer]:-}" ] && [ -n "${LEG_PORT[gatehouse]:-}" ]; then
  echo
  echo "shared cores, gatehouse against pgbouncer (TPS ratio; CPU per statement ratio)"
  for mode in $BENCH_MODES; do
    for clients in $BENCH_CLIENTS; do
      awk -v mode="$mode" -v c="$clients" -v g="${TPS[gatehouse/$mode/$clients]:-0}" -v b="${TPS[pgbouncer/$mode/$clients]:-0}" \
        -v gc="${CPU[gatehouse/$mode/$clients]:-0}" -v bc="${CPU[pgbouncer/$mode/$clients]:-0}" 'BEGIN {
        printf "%-9s %7s  TPS %s  CPU %s\n", mode, c, (b > 0) ? sprintf("%.2fx", g / b) : "-", (bc > 0) ? sprintf("%.1fx", gc / bc) : "-"
      }'
    done
  done
fi
if [ "${BENCH_SYSCALLS:-0}" != 0 ]; then
  echo
  echo "system calls and context switches per transaction, shared cores (perf stat on the proxy)"
  for mode in $BENCH_MODES; do
    for clients in $BENCH_CLIENTS; do
      for leg in "${LEGS[@]}"; do
        [ "$leg" = direct ] && continue
        awk -v mode="$mode" -v c="$clients" -v leg="$leg" -v t="${TPS[$leg/$mode/$clients]:-0}" -v s="$BENCH_SECONDS" \
          -v n="${SYSCALLS[$leg/$mode/$clients]:-}" -v w="${SWITCHES[$leg/$mode/$clients]:-}" 'BEGIN {
          if (t > 0 && n != "" && n !~ /[^0-9]/)
            printf "%-9s %7s  %-10s syscalls %6.1f  switches %5.2f\n", mode, c, leg, n / (t * s), w / (t * s)
        }'
      done
    done
  done
fi
# The gateway's ledger must verify after the run: stop the gateway (a clean
# stop signs its unsigned tail), then run the verifier, strictly.
if [ -n "$GH_PID" ] && kill -0 "$GH_PID" 2>/dev/null; then
  kill "$GH_PID" 2>/dev/null || true
  wait "$GH_PID" 2>/dev/null || true
  GH_PID=""
fi
VERIFY_BIN="$(dirname "$GATEHOUSE_BIN")/gatehouse-verify"
if [ -n "${LEG_PORT[gatehouse]:-}" ] && [ -f "$WORK/gatehouse/ledger.db" ]; then
  if [ -x "$VERIFY_BIN" ]; then
    echo
    # Issue 17's measure: events verified per second and the verifier's
    # peak memory (GNU time's %e and %M, when it is installed).
    timed=()
    if [ -x /usr/bin/time ]; then
      timed=(/usr/bin/time -f "%e %M" -o "$WORK/verify.time")
    fi
    if "${timed[@]}" "$VERIFY_BIN" "$WORK/gatehouse/ledger.db" --key "$WORK/gatehouse/verifier.pub" --strict >"$WORK/verify.log" 2>&1; then
      echo "gatehouse-verify --strict on the gateway's ledger: $(head -n 1 "$WORK/verify.log")"
      if [ -s "$WORK/verify.time" ]; then
        read -r secs peak_kb <"$WORK/verify.time"
        events=$(head -n 1 "$WORK/verify.log" | sed -n 's/^intact: \([0-9]*\) events.*/\1/p')
        if [ -n "$events" ]; then
          awk -v s="$secs" -v kb="$peak_kb" -v n="$events" 'BEGIN {
            printf "gatehouse-verify: %.2f s, %.0f events/s, peak memory %.1f MB\n", s, (s > 0 ? n / s : 0), kb / 1024 }'
        fi
      fi
    else
      echo "gatehouse-verify --strict on the gateway's ledger FAILED:"
      head -n 5 "$WORK/verify.log"
    fi
  else
    note "the gateway's ledger was not verified: no $VERIFY_BIN (cargo build --release -p gatehouse-verify)"
  fi
fi
# How well the gateway's ledger grouped its commits: events per signed
# checkpoint.
if [ -n "${LEG_PORT[gatehouse]:-}" ] && [ -f "$WORK/gatehouse/ledger.db" ]; then
  python3 - "$WORK/gatehouse/ledger.db" <<'PY' 2>/dev/null || true
import glob, os, re, sqlite3, sys
path = sys.argv[1]
# A ledger in segments (BENCH_SEGMENT_MAX): every ledger.db.NNNNNN file.
files = sorted(f for f in glob.glob(path + ".*") if re.fullmatch(r"\d{6,}", f[len(path) + 1:])) or [path]
events = signed = commits = statements = size = 0
for f in files:
    # The gateway has stopped: fold the WAL into the file, so its size is
    # the ledger's (issue 17's measure of bytes per statement).
    try:
        sqlite3.connect(f).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    except sqlite3.Error:
        pass  # a sealed, read-only segment has no WAL
    db = sqlite3.connect(f"file:{f}?mode=ro", uri=True)
    events += db.execute("SELECT count(*) FROM events").fetchone()[0]
    signed += db.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    # The events of one commit share its timestamp.
    commits += db.execute("SELECT count(DISTINCT ts) FROM events").fetchone()[0]
    # A statement's record: kind 30 (format 3), 25, or 4 (with a Decision) before it.
    statements += db.execute("SELECT count(*) FROM events WHERE kind IN (4, 25, 30)").fetchone()[0]
    size += os.path.getsize(f)
if len(files) > 1:
    print(f"\ngatehouse ledger: {len(files)} segments")
if signed:
    print(f"\ngatehouse ledger: {events} events in {commits} commits ({events / commits:.2f} events per commit), {signed} signed checkpoints")
if statements:
    print(f"gatehouse ledger: {events / statements:.2f} events and {commits / statements:.2f} commits per statement")
if statements:
    print(f"gatehouse ledger: {size / 1e6:.1f} MB for {statements} statements: {size / statements:.0f} bytes per statement, {size / events:.0f} per event")
PY
fi
if [ "${#NOTES[@]}" -gt 0 ]; then
  echo
  for n in "${NOTES[@]}"; do echo "note: $n"; done
fi

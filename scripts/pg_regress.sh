#!/usr/bin/env bash
# PostgreSQL's own regression suite (pg_regress, installcheck mode) run
# directly against a throwaway server, then through pgward with no statement
# rules and no masking, and the two result sets compared test by test.
#
#   PG_SRC=/path/to/postgresql-15.x scripts/pg_regress.sh
#
# PG_SRC is a configured source tree where `make -C src/test/regress` has
# built pg_regress, regress.so, refint.so and autoinc.so for the same major
# version as the server in PGBIN (Debian: `apt-get source postgresql-15`,
# `./configure --without-icu --without-readline --without-zlib`, then that
# make). The server and pg_regress run as RUN_AS (default postgres when this
# script runs as root, else the current user); every cluster is a fresh
# initdb on a free port, never 5432.
#
# Environment (all optional except PG_SRC):
#   PGBIN        server and psql binaries   (default: pg_config --bindir)
#   PGWARD       pgward binary              (default: the release build)
#   WORK         where everything is kept   (default: a new /tmp/pgward-regress.*)
#   ONLY         direct | pgward | both     (default: both)
#   MAX_CONNECTIONS  pg_regress --max-connections (default 1, as `make installcheck`;
#                0 means no limit, as `make installcheck-parallel`)
#   SCHEDULE     schedule file              (default: PG_SRC's parallel_schedule)
#   EXPECTED_DIFFERENT  tests allowed to differ through pgward, space-separated
#                (default "largeobject": psql's \lo_import, \lo_export and
#                \lo_unlink use fast-path FunctionCall, which pgward refuses)
#
# Output: WORK/direct and WORK/pgward hold each run's pg_regress output
# (results/, regression.diffs, regression.out, the pg_regress log), WORK/compare.txt
# the comparison printed at the end. Exit status: 0 when the runs differ in
# no test outside EXPECTED_DIFFERENT (or ONLY is not both), 1 when one does,
# 2 when a run could not be made.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
: "${PG_SRC:?set PG_SRC to a PostgreSQL source tree with src/test/regress built}"
PG_SRC="$(cd "$PG_SRC" && pwd)"
regress="$PG_SRC/src/test/regress"
PGBIN="${PGBIN:-$(pg_config --bindir)}"
PGWARD="${PGWARD:-${CARGO_TARGET_DIR:-$here/target}/release/pgward}"
ONLY="${ONLY:-both}"
MAX_CONNECTIONS="${MAX_CONNECTIONS:-1}"
SCHEDULE="${SCHEDULE:-$regress/parallel_schedule}"
EXPECTED_DIFFERENT="${EXPECTED_DIFFERENT-largeobject}"
if [ "$(id -u)" = 0 ]; then RUN_AS="${RUN_AS:-postgres}"; else RUN_AS="${RUN_AS:-$(id -un)}"; fi
WORK="${WORK:-$(mktemp -d /tmp/pgward-regress.XXXXXX)}"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
# RUN_AS works in here (mktemp makes it private to whoever runs this).
chmod 755 "$WORK"

for f in "$regress/pg_regress" "$regress/regress.so" "$PGBIN/postgres" "$PGBIN/psql"; do
    [ -x "$f" ] || [ -f "$f" ] || { echo "missing $f" >&2; exit 2; }
done
case "$ONLY" in direct | both) ;; pgward) ;; *) echo "ONLY must be direct, pgward or both" >&2; exit 2 ;; esac
if [ "$ONLY" != direct ] && [ ! -x "$PGWARD" ]; then
    echo "missing $PGWARD (cargo build --release, or set PGWARD)" >&2
    exit 2
fi

# Runs a command as RUN_AS, keeping the environment pg_regress needs.
as_user() {
    if [ "$(id -un)" = "$RUN_AS" ]; then "$@"; else runuser -u "$RUN_AS" -- "$@"; fi
}

# A TCP port nobody answers on, below the kernel's ephemeral range (so no
# outgoing connection holds it) and never 5432.
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}

# The one password: the cluster's superuser's and the pgward identity's.
password="regress-$RANDOM$RANDOM"
superuser="postgres"

# Starts a fresh cluster in $1 listening on 127.0.0.1:$2 (SCRAM over TCP).
start_cluster() {
    local dir="$1" port="$2"
    mkdir -p "$dir"
    chown "$RUN_AS" "$dir" 2>/dev/null || true
    printf '%s\n' "$password" >"$dir.pw"
    chown "$RUN_AS" "$dir.pw" 2>/dev/null || true
    as_user "$PGBIN/initdb" -D "$dir/data" -U "$superuser" --pwfile="$dir.pw" \
        --no-locale -E UTF8 --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1
    rm -f "$dir.pw"
    # As pg_regress's own temporary instance, so prepared_xacts runs for real.
    cat >>"$dir/data/postgresql.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_prepared_transactions = 2
fsync = off
log_line_prefix = '%m [%p] %q%a '
EOF
    as_user "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}

stop_cluster() {
    as_user "$PGBIN/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
}

# Runs the suite against host 127.0.0.1:$2, output in $1.
run_suite() {
    local out="$1" port="$2" jobs=()
    [ "$MAX_CONNECTIONS" = 0 ] || jobs=(--max-connections="$MAX_CONNECTIONS")
    mkdir -p "$out"
    chown "$RUN_AS" "$out" 2>/dev/null || true
    (
        cd "$out"
        # pg_regress keeps PGPASSWORD in installcheck mode; PGOPTIONS gets its
        # -c intervalstyle=postgres_verbose added, as in `make installcheck`.
        as_user env PGPASSWORD="$password" "$regress/pg_regress" \
            --inputdir="$regress" --outputdir="$out" --bindir="$PGBIN" \
            --dlpath="$regress" --schedule="$SCHEDULE" --max-concurrent-tests=20 "${jobs[@]}" \
            --host=127.0.0.1 --port="$port" --user="$superuser" >"$out/pg_regress.log" 2>&1
    ) || true
    summarise_run "$out"
}

# "name status" for every test a pg_regress log reports.
statuses() {
    sed -nE 's/^(test +| +)([A-Za-z0-9_.-]+) +\.\.\. +(ok|FAILED|failed \(ignored\))( .*)?$/\2 \3/p' "$1/pg_regress.log" |
        sed 's/failed (ignored)/ignored/'
}

summarise_run() {
    local total ok
    total=$(statuses "$1" | wc -l)
    ok=$(statuses "$1" | awk '$2 == "ok"' | wc -l)
    printf '%-7s %3d tests, %3d ok, %3d failed\n' "$(basename "$1"):" "$total" "$ok" "$((total - ok))"
}

# The pgward config: one upstream reached under every database name (the
# catch-all: pg_regress opens "postgres" to create "regression", tests create
# more), every identity acting as the superuser role the suite needs, no
# rules, no masking.
write_pgward_config() {
    local file="$1" listen="$2" upstream_port="$3" verifier
    verifier=$(printf '%s\n' "$password" | "$PGWARD" passwd "$superuser" | sed -n 's/^scram_verifier = //p')
    cat >"$file" <<EOF
[server]
listen = "127.0.0.1:$listen"

[upstreams.pg]
host = "127.0.0.1"
port = $upstream_port
dbname = "postgres"
user = "$superuser"
password_env = "PGWARD_REGRESS_PASSWORD"
sslmode = "disable"

[[upstreams.pg.role_map]]
users = ["*"]
role = "$superuser"

[databases]
"*" = "pg"

[users.$superuser]
scram_verifier = $verifier

[policy]
default_action = "allow"
builtin_rules = false
EOF
}

pgward_pid=""
cleanup() {
    [ -z "$pgward_pid" ] || kill "$pgward_pid" 2>/dev/null || true
    stop_cluster "$WORK/cluster-direct"
    stop_cluster "$WORK/cluster-pgward"
}
trap cleanup EXIT

echo "work directory: $WORK"
if [ "$ONLY" != pgward ]; then
    port=$(free_port)
    start_cluster "$WORK/cluster-direct" "$port" ||
        { echo "cluster did not start: see $WORK/cluster-direct/*.log" >&2; exit 2; }
    echo "direct run: server on port $port"
    run_suite "$WORK/direct" "$port"
    stop_cluster "$WORK/cluster-direct"
fi

if [ "$ONLY" != direct ]; then
    port=$(free_port)
    start_cluster "$WORK/cluster-pgward" "$port" ||
        { echo "cluster did not start: see $WORK/cluster-pgward/*.log" >&2; exit 2; }
    listen=$(free_port)
    write_pgward_config "$WORK/pgward.toml" "$listen" "$port"
    PGWARD_REGRESS_PASSWORD="$password" "$PGWARD" check-config --config "$WORK/pgward.toml" >"$WORK/check-config.log" 2>&1 ||
        { cat "$WORK/check-config.log" >&2; exit 2; }
    PGWARD_REGRESS_PASSWORD="$password" "$PGWARD" run --config "$WORK/pgward.toml" >"$WORK/pgward.log" 2>&1 &
    pgward_pid=$!
    # Ready once it accepts a login.
    for _ in $(seq 1 100); do
        PGPASSWORD="$password" PGCONNECT_TIMEOUT=2 "$PGBIN/psql" -X -qAt -h 127.0.0.1 -p "$listen" \
            -U "$superuser" -d postgres -c 'select 1' >/dev/null 2>&1 && break
        kill -0 "$pgward_pid" 2>/dev/null || { cat "$WORK/pgward.log" >&2; exit 2; }
        sleep 0.1
    done
    echo "pgward run: pgward on port $listen, server on port $port"
    run_suite "$WORK/pgward" "$listen"
    kill "$pgward_pid" 2>/dev/null || true
    wait "$pgward_pid" 2>/dev/null || true
    pgward_pid=""
    stop_cluster "$WORK/cluster-pgward"
fi

[ "$ONLY" = both ] || exit 0

# Test by test: status each way, and whether the output itself differs
# (results/NAME.out of one run against the other's, whatever expected says).
{
    echo "== summary"
    summarise_run "$WORK/direct"
    summarise_run "$WORK/pgward"
    echo
    echo "== tests whose status or output differs (direct -> pgward)"
    join -a1 -a2 -e missing -o 0,1.2,2.2 <(statuses "$WORK/direct" | sort) <(statuses "$WORK/pgward" | sort) |
        while read -r name direct via; do
            a="$WORK/direct/results/$name.out" b="$WORK/pgward/results/$name.out"
            if [ "$direct" = "$via" ] && [ -f "$a" ] && [ -f "$b" ] && cmp -s "$a" "$b"; then continue; fi
            echo "$name" >>"$WORK/different"
            echo "-- $name: $direct -> $via"
            # The reason, as far as a script can tell: the first lines only
            # the pgward run printed.
            diff "$a" "$b" 2>&1 | grep '^>' | head -n 6 || true
        done
} | tee "$WORK/compare.txt"

unexpected=""
if [ -f "$WORK/different" ]; then
    while read -r name; do
        case " $EXPECTED_DIFFERENT " in *" $name "*) ;; *) unexpected="$unexpected $name" ;; esac
    done <"$WORK/different"
fi
if [ -n "$unexpected" ]; then
    echo "differs beyond EXPECTED_DIFFERENT:$unexpected"
    exit 1
fi
echo "no difference beyond EXPECTED_DIFFERENT (${EXPECTED_DIFFERENT:-none})"

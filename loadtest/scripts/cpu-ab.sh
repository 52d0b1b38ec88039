#!/bin/bash
# Proxy CPU per transaction (user / system), before and after, side by side in one run:
# PgBouncer and, for each of two pgward binaries, the relay (no rules), the built-in
# rules, and rules + masking. pgbench -S at C clients, S seconds, R reps, interleaved.
# usage: cpu-ab.sh BEFORE_BIN AFTER_BIN [seconds] [clients] [reps]
# THREADS=N (environment): each pgward runs N session threads and PgBouncer
# runs as N processes sharing the port (so_reuseport), so that both have the
# same number of threads (the default: pgward one per core, PgBouncer one).
# BEFORE_SERVER / AFTER_SERVER (environment): an extra line for that pgward's
# [server] section, to compare one binary under two settings, e.g.
# BEFORE_SERVER='relay = "runtime"' cpu-ab.sh target/release/pgward target/release/pgward
# SYSCALLS=1 (environment): also counts each proxy's system calls and context
# switches per transaction (perf stat on the syscall tracepoints), printed
# after the CPU table.
# Runs as root (initdb as the postgres user, as the harness does); needs
# PostgreSQL 15's binaries, pgbench and PgBouncer installed.
set -e
if [ $# -lt 2 ]; then
    echo "usage: $0 BEFORE_BIN AFTER_BIN [seconds] [clients] [reps]" >&2
    exit 2
fi
BB=$1; AB=$2; S=${3:-5}; C=${4:-16}; R=${5:-3}
D=${CPU_AB_DIR:-/tmp/pgward-cpu-ab}; pkill -f "$D/" || true; sleep 0.5; rm -rf $D; mkdir -p $D; chown postgres $D; cd $D
echo secret > pw; chown postgres pw
fp(){ python3 -c 'import socket;s=socket.socket();s.bind(("",0));print(s.getsockname()[1])'; }
PGP=$(fp); PBP=$(fp)
su postgres -c "initdb -D $D/data -U app --auth=scram-sha-256 --pwfile=$D/pw" >/dev/null
su postgres -c "pg_ctl -s -D $D/data -o '-p $PGP -k $D -c listen_addresses=127.0.0.1 -c max_connections=300' -l $D/pg.log start"
export PGPASSWORD=secret
pgbench -i -s 1 -h 127.0.0.1 -p $PGP -U app postgres >/dev/null 2>&1
psql -XqAt -h 127.0.0.1 -p $PGP -U app postgres -c "CREATE TABLE wide (id int, c1 text, c2 text, c3 text, c4 text, c5 text, c6 text, c7 text, c8 text, c9 text, c10 text); CREATE ROLE app_masked LOGIN PASSWORD 'maskedpw'; REVOKE TEMPORARY ON DATABASE postgres FROM PUBLIC; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_masked"
echo -n secret > app.pw; echo -n maskedpw > masked.pw
VER=$($AB passwd app <<< secret | grep -o 'SCRAM-SHA-256[^"]*')
declare -A PORT PID
start(){ # name bin extra-config role [server line]
  local port=$(fp)
  cat > $1.toml <<T
[server]
listen = "127.0.0.1:$port"
max_client_connections = 10000
${THREADS:+threads = $THREADS}
$5
[upstreams.postgres]
host = "127.0.0.1"
port = $PGP
user = "app"
password_file = "$D/app.pw"
sslmode = "disable"
role_map = [{ users = ["*"], role = "$4" }]
[upstreams.postgres.roles.app_masked]
password_file = "$D/masked.pw"
[users.app]
scram_verifier = "$VER"
$3
T
  PGWARD_LOG=pgward=warn $2 run --config $1.toml > $1.log 2>&1 &
  PID[$1]=$!; PORT[$1]=$port
}
NORULES=$'[policy]\nbuiltin_rules = false'
MASK=$'[[masking.rules]]\nname = "c3"\ncolumns = ["wide.c3"]\nstrategy = "partial"\nkeep_last = 4\n[[masking.rules]]\nname = "c7"\ncolumns = ["wide.c7"]\nstrategy = "redact"'
for w in before after; do
  bin=$BB; line=${BEFORE_SERVER:-}
  [ $w = after ] && bin=$AB && line=${AFTER_SERVER:-}
  start $w-norules $bin "$NORULES" app "$line"
  start $w-rules $bin "" app "$line"
  start $w-masked $bin "$MASK" app_masked "$line"
done
psql -XAt -h 127.0.0.1 -p $PGP -U app postgres -c "select '\"app\" \"'||rolpassword||'\"' from pg_authid where rolname='app'" > users.txt
PID[pgbouncer]=""
for n in $(seq ${THREADS:-1}); do
  cat > pgb$n.ini <<T
[databases]
postgres = host=127.0.0.1 port=$PGP dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PBP
auth_type = scram-sha-256
auth_file = $D/users.txt
pool_mode = session
max_client_conn = 1000
default_pool_size = 100
unix_socket_dir =
logfile = $D/pgb$n.log
pidfile = $D/pgb$n.pid
so_reuseport = $([ ${THREADS:-1} -gt 1 ] && echo 1 || echo 0)
T
  chown postgres pgb$n.ini users.txt
  su postgres -c "/usr/sbin/pgbouncer -d $D/pgb$n.ini"
done
sleep 1
for n in $(seq ${THREADS:-1}); do PID[pgbouncer]="${PID[pgbouncer]} $(cat pgb$n.pid)"; done
PORT[pgbouncer]=$PBP
for t in "${!PORT[@]}"; do for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/${PORT[$t]}) 2>/dev/null && break; sleep 0.1; done; done
# User and system ticks of a target, summed over its processes.
cpu_of(){ for p in ${PID[$1]}; do awk '{sub(/.*\) /,""); print $12, $13}' /proc/$p/stat; done | awk '{u+=$1; s+=$2} END{print u, s}'; }
TARGETS="pgbouncer before-norules after-norules before-rules after-rules before-masked after-masked"
echo "mode target rep tps user_us sys_us total_us" > $D/results.txt
SYSCALL_EVENTS=syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_futex,context-switches
: > $D/syscalls.txt
for m in simple prepared; do for r in $(seq $R); do for t in $TARGETS; do
  read u0 s0 < <(cpu_of $t)
  if [ -n "${SYSCALLS:-}" ]; then
    perf stat -x, -e "$SYSCALL_EVENTS" -p $(echo ${PID[$t]} | tr ' ' ,) -o $D/perf.$m.$t.$r 2>/dev/null &
    PERF=$!
  fi
  out=$(pgbench -n -S -M $m -c $C -j 2 -T $S -h 127.0.0.1 -p ${PORT[$t]} -U app postgres 2>&1)
  tx=$(echo "$out" | awk '/number of transactions actually processed/{print $NF}' | cut -d/ -f1)
  if [ -n "${SYSCALLS:-}" ]; then
    kill -INT $PERF; wait $PERF || true
    awk -F, -v m=$m -v t=$t -v r=$r -v tx=${tx:-0} '!/^#/ && NF>2 && tx>0 {printf "%s %s %d %s %.3f\n", m, t, r, $3, $1/tx}' $D/perf.$m.$t.$r >> $D/syscalls.txt
  fi
  fail=$(echo "$out" | awk '/number of failed/{print $5}')
  read u1 s1 < <(cpu_of $t)
  awk -v m=$m -v t=$t -v r=$r -v tx=${tx:-0} -v u=$((u1-u0)) -v s=$((s1-s0)) -v S=$S -v f="$fail" 'BEGIN{ if (tx==0) {print m, t, r, "FAILED", f; exit} printf "%s %s %d %.0f %.2f %.2f %.2f\n", m, t, r, tx/S, u*1e4/tx, s*1e4/tx, (u+s)*1e4/tx}' | tee -a $D/results.txt
done; done; done
python3 - $D/results.txt <<'P'
import sys, statistics as st, collections
rows=[l.split() for l in open(sys.argv[1]).read().split('\n')[1:] if l.strip()]
d=collections.defaultdict(list)
for m,t,r,*v in rows:
    if v[0]!='FAILED': d[(m,t)].append(tuple(map(float,v)))
print("| mode | target | TPS | user µs/tx | system µs/tx | total µs/tx | total / PgBouncer |")
print("|---|---|---:|---:|---:|---:|---:|")
for m in ['simple','prepared']:
    base=st.median([x[3] for x in d[(m,'pgbouncer')]]) if d[(m,'pgbouncer')] else None
    for t in "pgbouncer before-norules after-norules before-rules after-rules before-masked after-masked".split():
        xs=d[(m,t)]
        if not xs: print(f"| {m} | {t} | failed | | | | |"); continue
        med=[st.median([x[i] for x in xs]) for i in range(4)]
        print(f"| {m} | {t} | {med[0]:,.0f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.2f} | {med[3]/base:.2f} |")
P
[ -n "${SYSCALLS:-}" ] && python3 - $D/syscalls.txt <<'P'
import sys, statistics as st, collections
d=collections.defaultdict(list); events=[]
for l in open(sys.argv[1]):
    m,t,r,e,v=l.split(); d[(m,t,e)].append(float(v))
    if e not in events: events.append(e)
names=[e.replace('syscalls:sys_enter_','') for e in events]
print("\n| mode | target | " + " | ".join(names) + " |")
print("|---|---|" + "---:|"*len(names))
for m in ['simple','prepared']:
    for t in "pgbouncer before-norules after-norules before-rules after-rules before-masked after-masked".split():
        if (m,t,events[0]) in d:
            print(f"| {m} | {t} | " + " | ".join(f"{st.median(d[(m,t,e)]):.2f}" for e in events) + " |")
P
for t in "${!PID[@]}"; do kill ${PID[$t]} 2>/dev/null || true; done
su postgres -c "pg_ctl -s -D $D/data stop -m fast"

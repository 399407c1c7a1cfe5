#!/usr/bin/env bash
# Dialer local infrastructure manager (used by `make up`, `make test` and CI).
#
# Runs PostgreSQL and RabbitMQ as plain processes (no systemd, no Docker) on
# free loopback ports, with all data, config, sockets and logs under RUNDIR.
# Several stacks (different RUNDIRs) can run side by side.
#
#   stack.sh deps                         install missing Debian packages (quiet if none)
#   stack.sh infra-up RUNDIR              start (or create) the stack; writes RUNDIR/infra.env
#   stack.sh infra-down RUNDIR [--purge]  stop everything; --purge also deletes the data
#   stack.sh restart-broker RUNDIR        restart RabbitMQ in place (same ports, same data)
#   stack.sh restart-db RUNDIR            restart PostgreSQL in place (same port, same data)
#   stack.sh stop-broker|start-broker RUNDIR   broker outage for fault-injection tests
#   stack.sh stop-db|start-db RUNDIR           database outage for fault-injection tests
#   stack.sh status RUNDIR                print what is running (exit 0 = all up, 3 = not all up)
#   stack.sh ctl RUNDIR ARGS...           rabbitmqctl -n NODE ARGS... with the stack's env
#
# Environment: DIALER_STACK_FAST=1  -> fsync/synchronous_commit/full_page_writes off
#                                      (tests only; never for data you care about).
#              DIALER_STACK_PG_STATS=1 -> pg_stat_statements loaded, nested statements tracked
#
# RUNDIR/infra.env (sourceable) exports DIALER_DB_URL, DIALER_DB_ADMIN_URL (superuser
# postgres/postgres), DIALER_AMQP_URL, DIALER_AMQP_MGMT_URL, STACK_RUNDIR, STACK_PG_PORT,
# STACK_PG_SOCKDIR, STACK_MQ_PORT, STACK_MQ_MGMT_PORT, STACK_MQ_DIST_PORT,
# STACK_MQ_EPMD_PORT, STACK_MQ_NODE, STACK_RABBITMQCTL.
# Postgres auth: unix socket = trust, TCP 127.0.0.1 = scram-sha-256 (passwords are
# really checked).  Role dialer/dialer (LOGIN CREATEROLE) owns database dialer.
# AMQP user dialer/dialer: administrator, full permissions on vhost /.
#
# Layout of RUNDIR (other files in RUNDIR are left alone, even by --purge):
#   infra.env          see above (removed by infra-down)
#   stack.state        ports chosen at first infra-up (reused while still free)
#   rabbitmqctl        wrapper: rabbitmqctl with this stack's env (= stack.sh ctl RUNDIR)
#   pg/data pg/log     PostgreSQL cluster + server log; pg/ is also the unix socket dir
#   mq/                RabbitMQ config, cookie, pid file, mq/mnesia, mq/log
#
# Notes:
# * As root, PostgreSQL runs as `postgres` and RabbitMQ as `rabbitmq` (runuser);
#   as a normal user both run as that user.
# * The Debian wrapper /usr/sbin/rabbitmq-server (and rabbitmqctl) does, as root,
#   `cd /var/lib/rabbitmq; su rabbitmq -c ...`, and su resets HOME to
#   /var/lib/rabbitmq, i.e. the shared system Erlang cookie.  We therefore bypass
#   it and run /usr/lib/rabbitmq/bin/* directly (as `rabbitmq` via runuser) with
#   an explicit environment.
# * Each stack has a private epmd on its own loopback port (ERL_EPMD_PORT), started
#   by this script before the node and killed by infra-down once no node is
#   registered, so stacks never share or leak an epmd and never touch port 4369.
set -euo pipefail
umask 022

SELF=$(realpath -- "${BASH_SOURCE[0]}")
PROG=stack

# Isolate from the caller's environment: these would leak into our servers/clients.
while IFS= read -r _v; do
    case $_v in RABBITMQ_*|ERL_EPMD_*|PG[A-Z]*) unset "$_v" ;; esac
done < <(compgen -e)
unset _v
export LC_ALL=C.UTF-8 LANG=C.UTF-8

RMQ_BIN=${RMQ_BIN:-/usr/lib/rabbitmq/bin}
WAIT_SECS=60
DEB_PKGS=(pkg-config gcc make libmicrohttpd-dev libjansson-dev libpq-dev librabbitmq-dev
          libcurl4-openssl-dev libconfig-dev libcmocka-dev libssl-dev postgresql
          rabbitmq-server curl jq procps iproute2)

# ---------------------------------------------------------------- helpers

say()  { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die()  { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

now_ms() { local t=${EPOCHREALTIME//[!0-9]/}; echo $((t / 1000)); }
elapsed() { local ms=$(( $(now_ms) - $1 )); printf '%d.%01ds' $((ms / 1000)) $(((ms % 1000) / 100)); }

# single-quote a value for a sourceable shell file
shq() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }

# run a command as a service user (only switches user when we are root)
run_as() {
    local u=$1; shift
    if [[ $EUID -eq 0 && $u != root ]]; then
        runuser -u "$u" -- "$@"
    else
        "$@"
    fi
}

# alive = exists and is not a zombie (some container inits reap exited processes late);
# /proc rather than kill -0 so that it also works for other users' processes
pid_alive() {
    [[ ${1:-} =~ ^[0-9]+$ && -e /proc/$1 ]] || return 1
    local st=
    read -r st <"/proc/$1/stat" 2>/dev/null || return 0
    st=${st##*) }
    [[ ${st:0:1} != Z ]]
}

# pids of processes whose full command line contains $1 (literal match).
# The needle is passed through the environment so awk's own argv never matches.
procs_matching() {
    NEEDLE=$1 ps -eww -o pid=,args= 2>/dev/null |
        NEEDLE=$1 SELFPID=$$ awk 'index($0, ENVIRON["NEEDLE"]) && $1 != ENVIRON["SELFPID"] { print $1 }' || true
}

# wait_gone MS PID...: wait up to MS milliseconds for the pids to exit
wait_gone() {
    local deadline=$(( $(now_ms) + $1 )) p alive; shift
    while :; do
        alive=0
        for p in "$@"; do pid_alive "$p" && alive=1; done
        ((alive)) || return 0
        (( $(now_ms) < deadline )) || return 1
        sleep 0.05
    done
}

# kill pids: TERM, wait up to $1 s, then KILL
kill_wait() {
    local secs=$1; shift
    local pids=() p
    for p in "$@"; do pid_alive "$p" && pids+=("$p"); done
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null || true
    local deadline=$(( $(now_ms) + secs * 1000 ))
    while (( $(now_ms) < deadline )); do
        local alive=0
        for p in "${pids[@]}"; do pid_alive "$p" && alive=1; done
        ((alive)) || return 0
        sleep 0.1
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.2
}

# pids listening on TCP port $1 (as non-root: only our own processes are visible)
listening_pids() {
    ss -Hltnp "( sport = :$1 )" 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u || true
}

# A fresh port must be free of any socket, not only of listeners: a client
# connection's local port (or one in TIME_WAIT) also makes a bind fail.
port_in_use() { [[ -n $(ss -Htan "( sport = :$1 )" 2>/dev/null) ]]; }
# A server restarted in place binds its old port again (with SO_REUSEADDR,
# so its own connections left in TIME_WAIT do not count): only a listener
# stops it.
port_listening() { [[ -n $(ss -Hltn "( sport = :$1 )" 2>/dev/null) ]]; }

# The kernel hands out client ports from this range (after a benchmark,
# thousands sit in TIME_WAIT); servers are given ports below it.
EPHEMERAL_LO=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LO > 21000)) || EPHEMERAL_LO=40001

# pick_port VAR: random free TCP port from 20000 up to the kernel's client
# ports (32767 by default; checked with ss), not already taken by this run
# and outside rabbitmqctl's own dist range 35672-35682.
TAKEN_PORTS=" "
pick_port() {
    local __var=$1 p i
    for ((i = 0; i < 500; i++)); do
        p=$(( 20000 + ((RANDOM << 15) | RANDOM) % (EPHEMERAL_LO - 20000) ))
        ((p >= 35672 && p <= 35682)) && continue
        [[ $TAKEN_PORTS == *" $p "* ]] && continue
        port_in_use "$p" && continue
        TAKEN_PORTS+="$p "
        printf -v "$__var" '%s' "$p"
        return 0
    done
    die "could not find a free port in 20000-$((EPHEMERAL_LO - 1))"
}

# keep_or_pick VAR: keep the port stored in VAR if it is still free, else pick a new one
keep_or_pick() {
    local __var=$1 cur=${!1:-}
    if [[ -n $cur && $TAKEN_PORTS != *" $cur "* ]] && ! port_listening "$cur"; then
        TAKEN_PORTS+="$cur "
    else
        pick_port "$__var"
    fi
}

tail_log() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n 20 "$f" >&2
    done
}

# ---------------------------------------------------------------- deps

cmd_deps() {
    local missing=() pkg
    declare -A ok=()
    while read -r pkg status; do
        [[ $status == "install ok installed" ]] && ok[$pkg]=1
    done < <(dpkg-query -W -f='${Package} ${Status}\n' "${DEB_PKGS[@]}" 2>/dev/null || true)
    for pkg in "${DEB_PKGS[@]}"; do
        [[ -n ${ok[$pkg]:-} ]] || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    if [[ $EUID -ne 0 ]]; then
        die "missing Debian packages: ${missing[*]}
  run as root:  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}
  (or: sudo $SELF deps)"
    fi
    say "installing ${#missing[@]} package(s): ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    say "packages installed"
}

# ---------------------------------------------------------------- context

# PG_BIN: newest /usr/lib/postgresql/*/bin with a server (or $PG_BIN if given)
find_pg_bin() {
    [[ -n ${PG_BIN:-} ]] && return 0
    local d
    while read -r d; do
        [[ -x $d/initdb && -x $d/pg_ctl && -x $d/postgres ]] && PG_BIN=$d
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
    [[ -n ${PG_BIN:-} ]] || { PG_BIN=/nonexistent; return 1; }
}

check_tools() {
    find_pg_bin || true
    [[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] || die "PostgreSQL server binaries not found (run: $SELF deps)"
    [[ -x $RMQ_BIN/rabbitmq-server && -x $RMQ_BIN/rabbitmqctl ]] ||
        die "RabbitMQ not found in $RMQ_BIN (run: $SELF deps)"
    local t
    for t in epmd ss ps curl runuser flock; do
        command -v "$t" >/dev/null || die "'$t' not found (run: $SELF deps)"
    done
}

# set_ctx RUNDIR: resolve paths (does not create anything)
set_ctx() {
    [[ -n ${1:-} ]] || die "missing RUNDIR argument"
    RUNDIR=$(realpath -m -- "$1")
    [[ $RUNDIR != / ]] || die "refusing to use / as RUNDIR"
    PGDIR=$RUNDIR/pg
    PGDATA_DIR=$PGDIR/data
    PGLOG=$PGDIR/log/postgresql.log
    MQDIR=$RUNDIR/mq
    MQ_PIDFILE=$MQDIR/rabbitmq.pid
    STATE=$RUNDIR/stack.state
    ENVFILE=$RUNDIR/infra.env
    MQ_SHORT=dialer-$(printf '%s' "$RUNDIR" | sha1sum | cut -c1-10)
    MQ_NODE=$MQ_SHORT@localhost
    if [[ $EUID -eq 0 ]]; then
        PG_USER=postgres MQ_USER=rabbitmq
    else
        PG_USER=$(id -un) MQ_USER=$(id -un)
    fi
    PG_PORT='' MQ_PORT='' MQ_MGMT_PORT='' MQ_DIST_PORT='' EPMD_PORT=''
    if [[ -f $STATE ]]; then
        # shellcheck disable=SC1090
        . "$STATE"
    fi
}

lock_rundir() {
    exec 9>"$RUNDIR/.stack.lock"
    flock -w 120 9 || die "another stack.sh holds $RUNDIR/.stack.lock"
}

save_state() {
    cat >"$STATE.tmp" <<EOF
PG_PORT=$PG_PORT
MQ_PORT=$MQ_PORT
MQ_MGMT_PORT=$MQ_MGMT_PORT
MQ_DIST_PORT=$MQ_DIST_PORT
EPMD_PORT=$EPMD_PORT
EOF
    mv -f "$STATE.tmp" "$STATE"
}

require_state() {
    [[ -f $STATE && -n $PG_PORT && -n $MQ_PORT ]] || die "no stack in $RUNDIR (run: $SELF infra-up $RUNDIR)"
}

# can service user $1 traverse RUNDIR? fail with a clear message if not
check_traverse() {
    local u=$1
    [[ $EUID -eq 0 && $u != root ]] || return 0
    run_as "$u" test -x "$RUNDIR" && return 0
    # RUNDIR itself is ours: just add the search bit (mktemp -d makes 0700 dirs)
    if [[ -O $RUNDIR ]] && run_as "$u" test -x "$(dirname "$RUNDIR")"; then
        chmod a+x "$RUNDIR"
        run_as "$u" test -x "$RUNDIR" && return 0
    fi
    local p=$RUNDIR bad=
    while [[ $p != / ]]; do
        p=$(dirname "$p")
        run_as "$u" test -x "$p" || bad=$p
    done
    [[ -n $bad ]] || bad=$RUNDIR
    die "user '$u' cannot traverse $bad ($(stat -c '%A %U:%G' "$bad")), so it cannot reach $RUNDIR.
  Use a RUNDIR whose parent directories are world-searchable (e.g. under /tmp), or: chmod o+x $bad"
}

# ---------------------------------------------------------------- postgres

pg_pid() {
    local pid
    pid=$(head -n1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null) || return 1
    pid_alive "$pid" || return 1
    echo "$pid"
}
pg_running() { pg_pid >/dev/null; }

pg_socket_dir() {
    # unix socket path must fit in sun_path (107 bytes); fall back to TCP only
    local sock="$PGDIR/.s.PGSQL.$PG_PORT"
    if ((${#sock} <= 100)); then echo "$PGDIR"; else echo ""; fi
}

pg_admin_url() { echo "postgresql://postgres:postgres@127.0.0.1:$PG_PORT/postgres"; }

pg_init() {
    mkdir -p "$PGDIR/log"
    [[ $EUID -ne 0 ]] || chown "$PG_USER:" "$PGDIR" "$PGDIR/log"
    if [[ -f $PGDATA_DIR/PG_VERSION ]]; then return 0; fi
    [[ ! -e $PGDATA_DIR ]] || rm -rf -- "$PGDATA_DIR"  # leftover of an interrupted initdb
    local t0 pwfile=$PGDIR/.pwfile
    t0=$(now_ms)
    printf 'postgres\n' >"$pwfile"
    [[ $EUID -ne 0 ]] || chown "$PG_USER:" "$pwfile"
    chmod 600 "$pwfile"
    local extra=()
    [[ ${DIALER_STACK_FAST:-} == 1 ]] && extra+=(--no-sync)
    if ! run_as "$PG_USER" "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres --pwfile="$pwfile" \
            -E UTF8 --locale=C.UTF-8 --auth-local=trust --auth-host=scram-sha-256 \
            "${extra[@]}" </dev/null >"$PGDIR/log/initdb.log" 2>&1 9>&-; then
        rm -f "$pwfile"
        tail_log "$PGDIR/log/initdb.log"
        die "initdb failed (log: $PGDIR/log/initdb.log)"
    fi
    rm -f "$pwfile"
    printf "\n# dialer stack: generated settings (rewritten at every start)\ninclude_if_exists 'stack.conf'\n" \
        >>"$PGDATA_DIR/postgresql.conf"
    say "postgres: initdb done in $(elapsed "$t0")"
}

pg_write_conf() {
    local sockdir f=$PGDATA_DIR/stack.conf
    sockdir=$(pg_socket_dir)
    {
        echo "# generated by stack.sh -- do not edit"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $PG_PORT"
        echo "unix_socket_directories = '${sockdir//\'/\'\'}'"
        echo "max_connections = 200"
        echo "logging_collector = off"
        if [[ ${DIALER_STACK_FAST:-} == 1 ]]; then
            echo "fsync = off"
            echo "synchronous_commit = off"
            echo "full_page_writes = off"
        fi
        if [[ ${DIALER_STACK_PG_STATS:-} == 1 ]]; then
            echo "shared_preload_libraries = 'pg_stat_statements'"
            echo "pg_stat_statements.track = all"
        fi
    } >"$f"
    [[ $EUID -ne 0 ]] || chown "$PG_USER:" "$f"
    chmod 600 "$f"
}

pg_start() {
    # a killed postmaster can linger as a zombie for a moment (late-reaping container
    # init); postgres would take its pid in postmaster.pid for a live server
    local old
    old=$(head -n1 "$PGDATA_DIR/postmaster.pid" 2>/dev/null || true)
    if [[ $old =~ ^[0-9]+$ ]] && ! pid_alive "$old"; then
        local deadline=$(( $(now_ms) + 5000 ))
        while kill -0 "$old" 2>/dev/null && (( $(now_ms) < deadline )); do sleep 0.05; done
    fi
    pg_write_conf
    run_as "$PG_USER" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGLOG" -W start \
        </dev/null >>"$PGDIR/log/pg_ctl.log" 2>&1 9>&- ||
        { tail_log "$PGDIR/log/pg_ctl.log" "$PGLOG"; die "pg_ctl start failed"; }
}

# poll pg_isready until the server accepts connections (deadline WAIT_SECS)
pg_wait() {
    local deadline started rc
    started=$(now_ms); deadline=$((started + WAIT_SECS * 1000))
    while :; do
        rc=0
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -d postgres -t 2 || rc=$?
        ((rc == 0)) && return 0
        # no postmaster any more (give pg_ctl's fork a moment to write its pid file)
        if ! pg_running && (( $(now_ms) - started > 2000 )); then
            tail_log "$PGLOG"
            die "postgres exited during startup (log: $PGLOG)"
        fi
        if (( $(now_ms) > deadline )); then
            tail_log "$PGLOG"
            die "postgres not ready after ${WAIT_SECS}s (log: $PGLOG)"
        fi
        sleep 0.1
    done
}

pg_setup_sql() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "$(pg_admin_url)" >/dev/null <<'SQL' ||
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dialer') THEN
        CREATE ROLE dialer;
    END IF;
END
$$;
ALTER ROLE dialer WITH LOGIN CREATEROLE PASSWORD 'dialer';
SELECT 'CREATE DATABASE dialer OWNER dialer'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'dialer')\gexec
SQL
        die "postgres: creating role/database 'dialer' failed"
}

pg_stop() {
    local pid kids
    pid=$(pg_pid) || return 0
    kids=$(pgrep -P "$pid" 2>/dev/null || true)
    if ! run_as "$PG_USER" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 30 stop \
            </dev/null >>"$PGDIR/log/pg_ctl.log" 2>&1 9>&-; then
        warn "postgres: fast shutdown failed, using immediate"
        run_as "$PG_USER" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w -t 10 stop \
            </dev/null >>"$PGDIR/log/pg_ctl.log" 2>&1 9>&- || true
    fi
    # shellcheck disable=SC2086
    kill_wait 5 "$pid" $kids
}

# ---------------------------------------------------------------- rabbitmq

mq_env() {
    MQ_ENV=(
        HOME="$MQDIR"
        LC_ALL=C.UTF-8 LANG=C.UTF-8
        ERL_EPMD_PORT="$EPMD_PORT"
        ERL_CRASH_DUMP="$MQDIR/log/erl_crash.dump"
        RABBITMQ_NODENAME="$MQ_NODE"
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        RABBITMQ_NODE_PORT="$MQ_PORT"
        RABBITMQ_DIST_PORT="$MQ_DIST_PORT"
        RABBITMQ_MNESIA_BASE="$MQDIR/mnesia"
        RABBITMQ_LOG_BASE="$MQDIR/log"
        RABBITMQ_PID_FILE="$MQ_PIDFILE"
        RABBITMQ_CONFIG_FILE="$MQDIR/rabbitmq.conf"
        RABBITMQ_ADVANCED_CONFIG_FILE="$MQDIR/advanced.config"
        RABBITMQ_ENABLED_PLUGINS_FILE="$MQDIR/enabled_plugins"
        RABBITMQ_CONF_ENV_FILE="$MQDIR/rabbitmq-env.conf"
        # we run our own epmd; keep distribution on loopback
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
    )
}

# rabbitmqctl -n NODE with the stack's environment, as the broker's user.
# mq_ctl [-t SECS] ARGS...   (-t: kill the CLI after SECS)
mq_ctl() {
    local to=() as=()
    if [[ ${1:-} == -t ]]; then to=(timeout -k 5 "$2"); shift 2; fi
    [[ $EUID -eq 0 && $MQ_USER != root ]] && as=(runuser -u "$MQ_USER" --)
    mq_env
    (cd "$MQDIR" && "${to[@]}" "${as[@]}" env "${MQ_ENV[@]}" "$RMQ_BIN/rabbitmqctl" -n "$MQ_NODE" "$@" 9>&-)
}

mq_pid() {
    local pid
    # rabbit writes the pid without a trailing newline
    pid=$(head -n1 "$MQ_PIDFILE" 2>/dev/null) || return 1
    pid_alive "$pid" || return 1
    echo "$pid"
}
mq_running() { mq_pid >/dev/null; }

epmd_needle() { echo "-port $EPMD_PORT -address 127.0.0.1 -daemon"; }
# our epmd, plus any epmd on our port (rabbitmqctl spawns a plain `epmd -daemon`
# with ERL_EPMD_PORT when it finds none running)
epmd_pids() {
    [[ -n $EPMD_PORT ]] || return 0
    local p
    {
        procs_matching "epmd $(epmd_needle)"
        for p in $(listening_pids "$EPMD_PORT"); do
            [[ $(ps -o comm= -p "$p" 2>/dev/null) == epmd ]] && echo "$p"
        done
        true
    } | sort -u
}
mq_registered() { epmd -port "$EPMD_PORT" -names 2>/dev/null | grep -q "^name $MQ_SHORT at port"; }
epmd_running() { [[ -n $(epmd_pids) ]]; }

epmd_ensure() {
    epmd_running && return 0
    (cd "$MQDIR" && run_as "$MQ_USER" epmd -port "$EPMD_PORT" -address 127.0.0.1 -daemon \
        </dev/null >>"$MQDIR/log/epmd.log" 2>&1 9>&-) || die "could not start epmd on port $EPMD_PORT"
    local deadline=$(( $(now_ms) + 5000 ))
    until epmd -port "$EPMD_PORT" -names >/dev/null 2>&1; do
        (( $(now_ms) < deadline )) || die "epmd on port $EPMD_PORT did not come up"
        sleep 0.05
    done
}

epmd_stop() {
    [[ -n $EPMD_PORT ]] || return 0
    local pids names
    pids=$(epmd_pids)
    [[ -n $pids ]] || return 0
    names=$(epmd -port "$EPMD_PORT" -names 2>/dev/null | grep '^name ' || true)
    if [[ -n $names ]]; then
        warn "epmd on port $EPMD_PORT still has registered nodes, leaving it: $names"
        return 0
    fi
    # shellcheck disable=SC2086
    kill_wait 3 $pids
}

mq_prepare() {
    mkdir -p "$MQDIR/log" "$MQDIR/mnesia"
    cat >"$MQDIR/rabbitmq.conf" <<EOF
# generated by stack.sh -- rewritten at every start
listeners.tcp.default = 127.0.0.1:$MQ_PORT
management.tcp.port = $MQ_MGMT_PORT
management.tcp.ip = 127.0.0.1
loopback_users = none
# created on first boot only (fresh mnesia); re-checked via the management API
default_vhost = /
default_user = dialer
default_pass = dialer
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
# 1s instead of 5s: fresher management-API stats, and 'rabbitmqctl stop' no longer
# waits 5s for the management agent (rabbitmq-server PR #11070, fixed in 3.13)
collect_statistics_interval = 1000
log.console = false
log.file.level = info
EOF
    echo '[rabbitmq_management].' >"$MQDIR/enabled_plugins"
    if [[ ! -s $MQDIR/.erlang.cookie ]]; then
        (tr -dc 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' </dev/urandom | head -c 32 || true) >"$MQDIR/.erlang.cookie"
    fi
    chmod 400 "$MQDIR/.erlang.cookie"
    [[ $EUID -ne 0 ]] || chown -R "$MQ_USER:" "$MQDIR"
}

mq_start() {
    mq_prepare
    epmd_ensure
    rm -f "$MQ_PIDFILE"
    mq_env
    (cd "$MQDIR" && run_as "$MQ_USER" env "${MQ_ENV[@]}" "$RMQ_BIN/rabbitmq-server" -detached \
        </dev/null >>"$MQDIR/log/startup.log" 2>&1 9>&-) ||
        { tail_log "$MQDIR/log/startup.log"; die "rabbitmq-server -detached failed"; }
}

# wait until the node is registered in epmd, then `rabbitmqctl await_startup`
mq_wait() {
    local deadline started left
    started=$(now_ms); deadline=$((started + WAIT_SECS * 1000))
    local logs=("$MQDIR/log/startup.log" "$MQDIR/log/$MQ_NODE.log")
    while ! mq_registered; do
        if (( $(now_ms) - started > 1500 )) && ! mq_running &&
                [[ -z $(procs_matching "-home $MQDIR -epmd_port") ]]; then
            tail_log "${logs[@]}"
            die "rabbitmq exited during startup (logs: $MQDIR/log)"
        fi
        if (( $(now_ms) > deadline )); then
            tail_log "${logs[@]}"
            die "rabbitmq node $MQ_NODE did not register within ${WAIT_SECS}s"
        fi
        sleep 0.1
    done
    left=$(( (deadline - $(now_ms)) / 1000 ))
    ((left >= 5)) || left=5
    if ! mq_ctl -t $((left + 10)) await_startup --timeout "$left" >>"$MQDIR/log/ctl.log" 2>&1; then
        tail_log "$MQDIR/log/ctl.log" "${logs[@]}"
        die "rabbitmq did not finish booting within ${WAIT_SECS}s"
    fi
}

mgmt_ok() {
    curl -fsS -m 5 -u dialer:dialer "http://127.0.0.1:$MQ_MGMT_PORT/api/whoami" 2>/dev/null |
        grep -q '"administrator"'
}

# make sure AMQP user dialer/dialer exists with full rights on / and the admin tag
mq_ensure_user() {
    mgmt_ok && return 0
    {
        mq_ctl add_user dialer dialer || mq_ctl change_password dialer dialer
        mq_ctl set_user_tags dialer administrator
        mq_ctl set_permissions -p / dialer '.*' '.*' '.*'
    } >>"$MQDIR/log/ctl.log" 2>&1 || { tail_log "$MQDIR/log/ctl.log"; die "rabbitmq: creating user 'dialer' failed"; }
    local deadline=$(( $(now_ms) + 10000 ))
    until mgmt_ok; do
        (( $(now_ms) < deadline )) || die "management API on 127.0.0.1:$MQ_MGMT_PORT does not accept dialer/dialer"
        sleep 0.2
    done
}

# graceful stop (keeps durable data); kill the beam if it does not go away
mq_stop() {
    local pid
    if pid=$(mq_pid) && ! { epmd_running && mq_registered; }; then
        # node unreachable for the CLI (its epmd is gone): SIGTERM = graceful stop
        warn "rabbitmq node $MQ_NODE is not registered in epmd; stopping beam $pid with signals"
        kill_wait 15 "$pid"
    elif pid=$(mq_pid); then
        # RabbitMQ < 3.13 stalls 5 s in the management agent's event handler while
        # stopping (rabbitmq-server PR #11070); removing the handler first avoids that.
        mq_ctl -t 15 eval 'gen_event:delete_handler(rabbit_event, rabbit_mgmt_db_handler, []).' \
            >>"$MQDIR/log/ctl.log" 2>&1 || true
        if mq_ctl -t 45 stop >>"$MQDIR/log/ctl.log" 2>&1; then
            # `stop` returns once rabbit:stop() is done: queues, message stores, Ra and
            # Mnesia are synced and closed. What remains is init:stop() tearing down the
            # kernel applications, which takes ~2.5 s for nothing -- don't wait for it.
            wait_gone 500 "$pid" || kill -KILL "$pid" 2>/dev/null || true
            wait_gone 5000 "$pid" || true
        else
            warn "rabbitmqctl stop failed or timed out; killing beam $pid"
            kill_wait 10 "$pid"
        fi
    fi
    # anything else of this node (erl_child_setup, a hung CLI, a beam without pid file)
    # shellcheck disable=SC2046
    kill_wait 5 $(procs_matching "-home $MQDIR -epmd_port")
    rm -f "$MQ_PIDFILE"
}

# ---------------------------------------------------------------- env file

write_env() {
    local sockdir
    sockdir=$(pg_socket_dir)
    {
        echo "# generated by $SELF infra-up -- source me"
        echo "export DIALER_DB_URL=$(shq "postgresql://dialer:dialer@127.0.0.1:$PG_PORT/dialer")"
        echo "export DIALER_DB_ADMIN_URL=$(shq "$(pg_admin_url)")"
        echo "export DIALER_AMQP_URL=$(shq "amqp://dialer:dialer@127.0.0.1:$MQ_PORT/%2F")"
        echo "export DIALER_AMQP_MGMT_URL=$(shq "http://dialer:dialer@127.0.0.1:$MQ_MGMT_PORT")"
        echo "export STACK_RUNDIR=$(shq "$RUNDIR")"
        echo "export STACK_PG_PORT=$PG_PORT"
        echo "export STACK_PG_SOCKDIR=$(shq "$sockdir")"
        echo "export STACK_MQ_PORT=$MQ_PORT"
        echo "export STACK_MQ_MGMT_PORT=$MQ_MGMT_PORT"
        echo "export STACK_MQ_DIST_PORT=$MQ_DIST_PORT"
        echo "export STACK_MQ_EPMD_PORT=$EPMD_PORT"
        echo "export STACK_MQ_NODE=$(shq "$MQ_NODE")"
        echo "export STACK_RABBITMQCTL=$(shq "$RUNDIR/rabbitmqctl")"
    } >"$ENVFILE.tmp"
    mv -f "$ENVFILE.tmp" "$ENVFILE"
    printf '#!/usr/bin/env bash\n# rabbitmqctl -n %s with this stack'"'"'s environment\nexec %q ctl %q "$@"\n' \
        "$MQ_NODE" "$SELF" "$RUNDIR" >"$RUNDIR/rabbitmqctl.tmp"
    chmod 755 "$RUNDIR/rabbitmqctl.tmp"
    mv -f "$RUNDIR/rabbitmqctl.tmp" "$RUNDIR/rabbitmqctl"
}

# ---------------------------------------------------------------- commands

cmd_infra_up() {
    check_tools
    set_ctx "${1:-}"
    local t0; t0=$(now_ms)
    mkdir -p "$RUNDIR"
    lock_rundir
    set_ctx "$RUNDIR"   # re-read state under the lock

    local pg_up=0 mq_up=0
    pg_running && pg_up=1
    mq_running && epmd_running && mq_up=1
    if ((pg_up && mq_up)) && "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 && mgmt_ok; then
        write_env
        say "already running in $RUNDIR (env: $ENVFILE)"
        return 0
    fi

    check_traverse "$PG_USER"
    check_traverse "$MQ_USER"

    # ports: keep the recorded ones of running services, re-check the others
    if ((pg_up)); then TAKEN_PORTS+="$PG_PORT "; else keep_or_pick PG_PORT; fi
    if ((mq_up)); then
        TAKEN_PORTS+="$MQ_PORT $MQ_MGMT_PORT $MQ_DIST_PORT $EPMD_PORT "
    else
        if mq_running; then mq_stop; fi   # half-up broker (e.g. epmd gone): restart cleanly
        if epmd_running; then TAKEN_PORTS+="$EPMD_PORT "; else keep_or_pick EPMD_PORT; fi
        keep_or_pick MQ_PORT; keep_or_pick MQ_MGMT_PORT; keep_or_pick MQ_DIST_PORT
    fi
    save_state

    # RabbitMQ boots in the background (-detached) while Postgres is initialised
    local tmq=
    if ! ((mq_up)); then
        tmq=$(now_ms)
        mq_start
    fi

    if ! ((pg_up)); then
        local tpg; tpg=$(now_ms)
        pg_init
        pg_start
        pg_wait
        pg_setup_sql
        say "postgres: up on 127.0.0.1:$PG_PORT in $(elapsed "$tpg") (log: $PGLOG)"
    else
        pg_wait
    fi

    if [[ -n $tmq ]]; then
        mq_wait
        mq_ensure_user
        say "rabbitmq: $MQ_NODE up on 127.0.0.1:$MQ_PORT (mgmt :$MQ_MGMT_PORT) in $(elapsed "$tmq") (logs: $MQDIR/log)"
    elif ! mgmt_ok; then
        mq_wait          # running but still booting
        mq_ensure_user
    fi

    write_env
    say "infra up in $(elapsed "$t0"); env: $ENVFILE"
}

cmd_infra_down() {
    local purge=0 arg rd=
    for arg in "$@"; do
        case $arg in
            --purge) purge=1 ;;
            -*) die "infra-down: unknown option $arg" ;;
            *) [[ -z $rd ]] || die "infra-down: one RUNDIR only"; rd=$arg ;;
        esac
    done
    set_ctx "$rd"
    if [[ ! -d $RUNDIR ]]; then say "nothing in $RUNDIR"; return 0; fi
    check_tools
    local t0; t0=$(now_ms)
    lock_rundir
    set_ctx "$RUNDIR"

    if ((purge)); then
        # data is going away: no need for a graceful broker shutdown
        local pids
        pids=$(mq_pid || true; procs_matching "-home $MQDIR -epmd_port")
        if [[ -n $pids ]]; then
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null || true
            # shellcheck disable=SC2086
            wait_gone 5000 $pids || true
        fi
        rm -f "$MQ_PIDFILE"
    fi
    mq_stop
    epmd_stop
    pg_stop

    # nothing of this stack may survive
    local left
    left=$(procs_matching "-D $PGDATA_DIR"; procs_matching "-home $MQDIR -epmd_port"; epmd_pids)
    if [[ -n $left ]]; then
        warn "killing leftover processes: ${left//$'\n'/ }"
        # shellcheck disable=SC2086
        kill_wait 3 $left
    fi
    rm -f "$ENVFILE"

    if ((purge)); then
        rm -rf -- "$PGDIR" "$MQDIR" "$STATE" "$RUNDIR/rabbitmqctl" "$RUNDIR/.stack.lock"
        rmdir -- "$RUNDIR" 2>/dev/null || true
        say "infra down, data purged ($RUNDIR) in $(elapsed "$t0")"
    else
        say "infra down in $(elapsed "$t0") (data kept in $RUNDIR)"
    fi
}

stack_ctx_locked() {
    check_tools
    set_ctx "${1:-}"
    [[ -d $RUNDIR ]] || die "no stack in $RUNDIR"
    lock_rundir
    set_ctx "$RUNDIR"
    require_state
}

mq_start_same_ports() {
    local p
    for p in "$MQ_PORT" "$MQ_MGMT_PORT" "$MQ_DIST_PORT"; do
        port_listening "$p" && die "port $p is taken by another process; cannot restart rabbitmq in place"
    done
    if ! epmd_running && port_listening "$EPMD_PORT"; then
        die "epmd port $EPMD_PORT is taken by another process"
    fi
    mq_start
    mq_wait
}

pg_start_same_port() {
    port_listening "$PG_PORT" && die "port $PG_PORT is taken by another process; cannot restart postgres in place"
    pg_start
    pg_wait
}

cmd_restart_broker() {
    stack_ctx_locked "$@"
    local t0; t0=$(now_ms)
    mq_stop
    mq_start_same_ports
    say "rabbitmq: restarted on 127.0.0.1:$MQ_PORT in $(elapsed "$t0")"
}

cmd_restart_db() {
    stack_ctx_locked "$@"
    local t0; t0=$(now_ms)
    pg_stop
    pg_start_same_port
    say "postgres: restarted on 127.0.0.1:$PG_PORT in $(elapsed "$t0")"
}

cmd_stop_broker()  { stack_ctx_locked "$@"; local t0; t0=$(now_ms); mq_stop; say "rabbitmq: stopped in $(elapsed "$t0")"; }
cmd_stop_db()      { stack_ctx_locked "$@"; local t0; t0=$(now_ms); pg_stop; say "postgres: stopped in $(elapsed "$t0")"; }
cmd_start_broker() {
    stack_ctx_locked "$@"
    if mq_running; then say "rabbitmq: already running"; return 0; fi
    local t0; t0=$(now_ms)
    mq_start_same_ports
    say "rabbitmq: started on 127.0.0.1:$MQ_PORT in $(elapsed "$t0")"
}
cmd_start_db() {
    stack_ctx_locked "$@"
    if pg_running; then say "postgres: already running"; return 0; fi
    local t0; t0=$(now_ms)
    pg_start_same_port
    say "postgres: started on 127.0.0.1:$PG_PORT in $(elapsed "$t0")"
}

cmd_status() {
    set_ctx "${1:-}"
    local all=1 pid
    say "rundir $RUNDIR"
    if [[ ! -f $STATE ]]; then say "no stack here"; return 3; fi
    if pid=$(pg_pid); then
        local ready=ready
        "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 2>/dev/null || ready="not accepting connections"
        say "postgres: running pid $pid on 127.0.0.1:$PG_PORT ($ready)"
        [[ $ready == ready ]] || all=0
    else
        say "postgres: stopped (port $PG_PORT)"; all=0
    fi
    if pid=$(mq_pid); then
        local api="mgmt API ok"
        mgmt_ok || { api="mgmt API not answering"; all=0; }
        say "rabbitmq: running pid $pid node $MQ_NODE amqp 127.0.0.1:$MQ_PORT mgmt :$MQ_MGMT_PORT dist :$MQ_DIST_PORT ($api)"
    else
        say "rabbitmq: stopped (node $MQ_NODE, port $MQ_PORT)"; all=0
    fi
    pid=$(epmd_pids | head -n1)
    if [[ -n $pid ]]; then say "epmd: running pid $pid on 127.0.0.1:$EPMD_PORT"; else say "epmd: stopped"; all=0; fi
    [[ -f $ENVFILE ]] && say "env: $ENVFILE"
    ((all)) && return 0 || return 3
}

cmd_ctl() {
    check_tools
    set_ctx "${1:-}"; shift || true
    require_state
    # without our epmd the CLI would spawn a stray one on our port
    epmd_running || die "rabbitmq of $RUNDIR is not running (no epmd on port $EPMD_PORT)"
    mq_ctl "$@"
}

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF" >&2
    exit 2
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
        deps)            cmd_deps "$@" ;;
        infra-up)        check_rundir_arg "$@"; cmd_infra_up "$@" ;;
        infra-down)      find_pg_bin || true; cmd_infra_down "$@" ;;
        restart-broker)  check_rundir_arg "$@"; cmd_restart_broker "$@" ;;
        restart-db)      check_rundir_arg "$@"; cmd_restart_db "$@" ;;
        stop-broker)     check_rundir_arg "$@"; cmd_stop_broker "$@" ;;
        start-broker)    check_rundir_arg "$@"; cmd_start_broker "$@" ;;
        stop-db)         check_rundir_arg "$@"; cmd_stop_db "$@" ;;
        start-db)        check_rundir_arg "$@"; cmd_start_db "$@" ;;
        status)          check_rundir_arg "$@"; find_pg_bin || true; cmd_status "$@" ;;
        ctl)             [[ $# -ge 1 ]] || usage; cmd_ctl "$@" ;;
        -h|--help|help)  usage ;;
        *)               usage ;;
    esac
}

check_rundir_arg() { [[ $# -eq 1 && -n $1 && $1 != -* ]] || usage; }

main "$@"

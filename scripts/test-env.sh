#!/usr/bin/env bash
# Test environment of Portside: PostgreSQL, Redis, a Docker engine of the project's own,
# local registries and a base image built here (no image can be pulled on these machines).
# Three registries: 127.0.0.1:5001 without authentication, 127.0.0.1:5002 requiring a login
# (HTTP Basic, htpasswd) and 127.0.0.1:5003 speaking the token flow (Bearer JWTs from the
# test token server on 127.0.0.1:5004, tests/fixtures/registry_token.py).
#
# Usage: scripts/test-env.sh up|down|env|dev
#   up    install what is missing, start what does not answer, prove it all works (idempotent)
#   down  stop the registry and the Docker engine started by `up` (PostgreSQL/Redis stay up)
#   env   print `export` lines for the tests: eval "$(scripts/test-env.sh env)"
#   dev   what `make dev` needs: a Docker engine (DOCKER_HOST when set, else
#         /var/run/docker.sock when it answers, else, as root, this script's own) and a
#         registry (PORTSIDE_REGISTRY when set, else the plain one on 127.0.0.1:5001);
#         prints `export` lines for them, or nothing and one line on stderr when it cannot
#
# Docker engine notes (Debian bookworm's docker.io 20.10, run as root on a machine without
# systemd):
#   dockerd --iptables=false --storage-driver=vfs --data-root ... --exec-root ... --pidfile ...
#           --host unix:///run/portside-test/docker.sock
#   is all it takes: no --bridge=none is needed. The default bridge (docker0) still comes up,
#   and without iptables NAT rules published ports work through the userland proxy
#   (`docker-proxy`, --userland-proxy=true is the default; do NOT turn it off), so
#   `docker run -p 127.0.0.1:PORT:80` answers on the host. Container-to-container traffic on
#   user-defined networks and their embedded DNS (service names in compose) work too.
#   Containers get no route to the outside world, which is what we want here.
#   127.0.0.0/8 registries are insecure by default, so pushing to 127.0.0.1:5001 over plain
#   HTTP needs no --insecure-registry flag (nor for 5002/5003; the engine fetches the token
#   realm http://127.0.0.1:5004/token as the registry names it).
set -euo pipefail

ROOT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

RUN_DIR=/run/portside-test
LIB_DIR=/var/lib/portside-test
LOG_DIR=/var/log/portside-test

DOCKER_SOCK="$RUN_DIR/docker.sock"
DOCKER_HOST_URL="unix://$DOCKER_SOCK"
DOCKERD_PIDFILE="$RUN_DIR/dockerd.pid"
DOCKERD_LOG="$LOG_DIR/dockerd.log"
DOCKER_DATA_ROOT="$LIB_DIR/docker"
DOCKER_EXEC_ROOT="$RUN_DIR/docker-exec"

REGISTRY_ADDR=127.0.0.1:5001
REGISTRY_CONFIG="$ROOT_DIR/scripts/registry-config.yml"
REGISTRY_PIDFILE="$RUN_DIR/registry.pid" # ensure_registry names it after "registry"
REGISTRY_DATA="$LIB_DIR/registry"

# The registries that need a login, and the users the tests log in with (test-only
# passwords of loopback-only services): push may push, pull and delete; pull only pulls
# (on 5002 any user may do anything: htpasswd authenticates, it does not authorize).
BASIC_REGISTRY_ADDR=127.0.0.1:5002
BASIC_REGISTRY_CONFIG="$ROOT_DIR/scripts/registry-basic.yml"
BASIC_REGISTRY_DIR="$LIB_DIR/registry-basic" # data/ and htpasswd, as the config names them
TOKEN_REGISTRY_ADDR=127.0.0.1:5003
TOKEN_REGISTRY_CONFIG="$ROOT_DIR/scripts/registry-token.yml"
TOKEN_REGISTRY_DIR="$LIB_DIR/registry-token" # data/, token.key, token.crt, users.json
TOKEN_SERVER_ADDR=127.0.0.1:5004
TOKEN_SERVER_SCRIPT="$ROOT_DIR/tests/fixtures/registry_token.py"
TOKEN_SERVER_PIDFILE="$RUN_DIR/registry-token-server.pid"
TOKEN_SERVER_LOG="$LOG_DIR/registry-token-server.log"
TOKEN_ISSUER=portside-test-token-server # as registry-token.yml says
TOKEN_SERVICE=portside-test-registry
REGISTRY_PUSH_USER=portside-push
REGISTRY_PUSH_PASSWORD=portside-push-secret
REGISTRY_PULL_USER=portside-pull
REGISTRY_PULL_PASSWORD=portside-pull-secret

BASE_IMAGE=portside-test/base:latest

PG_HOST=127.0.0.1
PG_PORT=5432
PG_DB="test"
REDIS_HOST=127.0.0.1
REDIS_PORT=6379

WAIT_SECONDS="${PORTSIDE_TEST_ENV_TIMEOUT:-60}"

# prometheus and rsyslog: the agent's metrics test scrapes with a real Prometheus, the log
# forwarding test sends to a real rsyslogd (each started by its test, on a free loopback
# port; policy-rc.d keeps the packages from starting their own). debootstrap: the
# deploy recipe's test makes its Debian base image with it (tests/test_deploy_stack.py).
# wrk: the intake benchmark's saturating sender (bench/wrk.py and its test).
DEBIAN_PACKAGES=(docker.io docker-registry docker-compose busybox-static git curl
    apache2-utils openssl python3-jwt python3-cryptography prometheus rsyslog debootstrap wrk)

log() { printf 'test-env: %s\n' "$*" >&2; }
die() {
    printf 'test-env: ERROR: %s\n' "$*" >&2
    exit 1
}

TEMP_DIRS=()
cleanup_temp_dirs() {
    if ((${#TEMP_DIRS[@]})); then rm -rf "${TEMP_DIRS[@]}"; fi
}
trap cleanup_temp_dirs EXIT
# make_temp_dir VAR: a temporary directory removed when the script exits.
make_temp_dir() {
    local -n temp_dir_out=$1
    temp_dir_out="$(mktemp -d -t portside-test-env.XXXXXX)"
    TEMP_DIRS+=("$temp_dir_out")
}

# alive PID: the process exists and is not a zombie (PID 1 of these machines may take a
# while to reap orphans, and `kill -0` succeeds on a zombie).
alive() {
    local state
    state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [[ -n "$state" && "$state" != Z && "$state" != X ]]
}

# pid_matches PIDFILE PATTERN: the pid in PIDFILE is alive and its command line has PATTERN.
pid_matches() {
    local pidfile=$1 pattern=$2 pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"
}

# spawn_daemon LOG COMMAND...: run COMMAND in the background (its pid in $!), immune to
# hangups, output appended to LOG, and holding no other file descriptor of ours: neither
# the `up` lock (fd 9) nor pipes of whoever ran this script (a CI runner waiting for EOF).
spawn_daemon() {
    local logfile=$1
    shift
    (
        for fd_path in /proc/"$BASHPID"/fd/*; do
            fd="${fd_path##*/}"
            if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)); then
                eval "exec $fd>&-" 2>/dev/null || true
            fi
        done
        exec nohup "$@" </dev/null >>"$logfile" 2>&1
    ) &
}

# wait_for SECONDS DESCRIPTION COMMAND...: run COMMAND until it succeeds or time runs out.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.5
    done
    log "$what answers"
}

# ---------------------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------------------
pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# install_packages [PACKAGE...]: install those (default: all the tests need) if missing.
install_packages() {
    local missing=() pkg wanted=("$@")
    ((${#wanted[@]})) || wanted=("${DEBIAN_PACKAGES[@]}")
    for pkg in "${wanted[@]}"; do
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    [[ "$(id -u)" == 0 ]] || die "missing Debian packages (${missing[*]}); run as root to install them"
    log "installing Debian packages: ${missing[*]}"
    # Keep the package scripts from starting a system-wide dockerd (it would fight ours for
    # the docker0 bridge): policy-rc.d exit 101 means "do not start services".
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        own_policy=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
                "${missing[@]}"
    } >&2 || rc=$?
    if ((own_policy)); then rm -f "$policy"; fi
    ((rc == 0)) || die "apt-get install of ${missing[*]} failed (exit $rc)"
}

# ---------------------------------------------------------------------------------------
# PostgreSQL and Redis (services of the machine; started here only if they do not answer)
# ---------------------------------------------------------------------------------------
pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }
redis_ready() { [[ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

# The role that trust auth lets in: postgres, else root.
pg_role() {
    local role
    for role in postgres root; do
        if PGCONNECT_TIMEOUT=5 psql -h "$PG_HOST" -p "$PG_PORT" -U "$role" -d postgres -w -Atqc 'select 1' \
            >/dev/null 2>&1; then
            echo "$role"
            return 0
        fi
    done
    return 1
}

ensure_postgres() {
    command -v pg_isready >/dev/null || die "pg_isready not found: PostgreSQL is not installed"
    if ! pg_ready; then
        local version
        version="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null |
            sort -V | tail -n 1)"
        [[ -n "$version" ]] || die "PostgreSQL does not answer and no cluster is in /etc/postgresql"
        log "starting PostgreSQL $version/main"
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 ||
            log "pg_ctlcluster returned an error; waiting for PostgreSQL anyway"
        wait_for "$WAIT_SECONDS" PostgreSQL pg_ready ||
            die "PostgreSQL does not answer on $PG_HOST:$PG_PORT after ${WAIT_SECONDS}s"
    fi
    local role
    role="$(pg_role)" ||
        die "PostgreSQL answers but neither role postgres nor root gets in with trust auth"
    if [[ "$(psql -h "$PG_HOST" -p "$PG_PORT" -U "$role" -d postgres -w -Atqc \
        "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]]; then
        log "creating database $PG_DB"
        psql -h "$PG_HOST" -p "$PG_PORT" -U "$role" -d postgres -w -qc "create database $PG_DB" >&2
    fi
    log "PostgreSQL ok (role $role, database $PG_DB)"
}

ensure_redis() {
    command -v redis-cli >/dev/null || die "redis-cli not found: Redis is not installed"
    if ! redis_ready; then
        log "starting Redis"
        mkdir -p /var/lib/redis /var/log/redis
        redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
            --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log >&2 ||
            log "redis-server returned an error; waiting for Redis anyway"
        wait_for "$WAIT_SECONDS" Redis redis_ready ||
            die "Redis does not answer on $REDIS_HOST:$REDIS_PORT after ${WAIT_SECONDS}s"
    fi
    log "Redis ok"
}

# ---------------------------------------------------------------------------------------
# Docker engine
# ---------------------------------------------------------------------------------------
dk() { docker -H "$DOCKER_HOST_URL" "$@"; }
docker_ready() { timeout 10 docker -H "$DOCKER_HOST_URL" info >/dev/null 2>&1; }

ensure_dockerd() {
    command -v docker >/dev/null || die "no docker client on PATH"
    command -v dockerd >/dev/null || die "dockerd not found (Debian package docker.io)"
    if docker_ready; then
        log "Docker engine already answers on $DOCKER_SOCK"
        return 0
    fi
    mkdir -p "$RUN_DIR" "$LOG_DIR" "$DOCKER_DATA_ROOT" "$DOCKER_EXEC_ROOT"
    if pid_matches "$DOCKERD_PIDFILE" "$DOCKER_SOCK"; then
        # Ours, alive, but not answering: maybe still starting.
        if wait_for "$WAIT_SECONDS" "Docker engine" docker_ready; then
            return 0
        fi
        log "dockerd (pid $(<"$DOCKERD_PIDFILE")) does not answer; restarting it"
        stop_pidfile "$DOCKERD_PIDFILE" "$DOCKER_SOCK" dockerd 30
    fi
    # A pid file left by a killed dockerd would make the new one refuse to start if its pid
    # now belongs to another process. Likewise dockerd waits (and fails after 15 s) for the
    # containerd named in containerd.pid when that pid is alive: keep that file only if it
    # names a live containerd of ours, which dockerd then reuses.
    rm -f "$DOCKERD_PIDFILE"
    local containerd_pidfile="$DOCKER_EXEC_ROOT/containerd/containerd.pid"
    if [[ -e "$containerd_pidfile" ]] && ! pid_matches "$containerd_pidfile" "$DOCKER_EXEC_ROOT"; then
        rm -f "$containerd_pidfile"
    fi
    log "starting dockerd (log: $DOCKERD_LOG)"
    spawn_daemon "$DOCKERD_LOG" dockerd \
        --iptables=false \
        --storage-driver=vfs \
        --data-root "$DOCKER_DATA_ROOT" \
        --exec-root "$DOCKER_EXEC_ROOT" \
        --pidfile "$DOCKERD_PIDFILE" \
        --host "$DOCKER_HOST_URL"
    local pid=$!
    local deadline=$((SECONDS + WAIT_SECONDS))
    until docker_ready; do
        if ! alive "$pid"; then
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "dockerd exited while starting; see $DOCKERD_LOG"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "Docker engine does not answer on $DOCKER_SOCK after ${WAIT_SECONDS}s"
        fi
        sleep 0.5
    done
    log "Docker engine answers on $DOCKER_SOCK"
}

# ---------------------------------------------------------------------------------------
# Registries
# ---------------------------------------------------------------------------------------
# registry_ready ADDR: GET /v2/ answers 200, or 401 from one that needs a login.
registry_ready() {
    local code
    code="$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://$1/v2/")" || return 1
    [[ "$code" == 200 || "$code" == 401 ]]
}

# ensure_registry ADDR CONFIG NAME: start `docker-registry serve CONFIG` unless ADDR
# answers; NAME names its pid file and log (the 5001 one keeps registry.pid/registry.log).
ensure_registry() {
    local addr=$1 config=$2 name=$3
    local pidfile="$RUN_DIR/$name.pid" logfile="$LOG_DIR/$name.log"
    command -v docker-registry >/dev/null || die "docker-registry not found"
    if registry_ready "$addr"; then
        log "$name already answers on $addr"
        return 0
    fi
    [[ -f "$config" ]] || die "registry config $config is missing"
    mkdir -p "$RUN_DIR" "$LOG_DIR"
    if pid_matches "$pidfile" "docker-registry"; then
        log "$name (pid $(<"$pidfile")) does not answer; restarting it"
        stop_pidfile "$pidfile" docker-registry "$name" 10
    fi
    rm -f "$pidfile"
    log "starting $name on $addr (log: $logfile)"
    spawn_daemon "$logfile" docker-registry serve "$config"
    local pid=$!
    echo "$pid" >"$pidfile"
    local deadline=$((SECONDS + WAIT_SECONDS))
    until registry_ready "$addr"; do
        if ! alive "$pid"; then
            tail -n 30 "$logfile" >&2 || true
            rm -f "$pidfile"
            die "$name exited while starting; see $logfile"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$logfile" >&2 || true
            die "$name does not answer on http://$addr/v2/ after ${WAIT_SECONDS}s"
        fi
        sleep 0.5
    done
    log "$name answers on $addr"
}

# The htpasswd file of 5002 (bcrypt, as docker-registry requires), written once.
ensure_basic_registry_users() {
    local htpasswd_file="$BASIC_REGISTRY_DIR/htpasswd"
    mkdir -p "$BASIC_REGISTRY_DIR/data"
    [[ -s "$htpasswd_file" ]] && return 0
    command -v htpasswd >/dev/null || die "htpasswd not found (Debian package apache2-utils)"
    htpasswd -Bbn "$REGISTRY_PUSH_USER" "$REGISTRY_PUSH_PASSWORD" >"$htpasswd_file.tmp"
    htpasswd -Bbn "$REGISTRY_PULL_USER" "$REGISTRY_PULL_PASSWORD" >>"$htpasswd_file.tmp"
    mv "$htpasswd_file.tmp" "$htpasswd_file"
    log "wrote $htpasswd_file"
}

# The token server's signing key, its self-signed certificate (the registry's
# rootcertbundle) and its users, written once.
ensure_token_material() {
    local key="$TOKEN_REGISTRY_DIR/token.key" cert="$TOKEN_REGISTRY_DIR/token.crt"
    local users="$TOKEN_REGISTRY_DIR/users.json"
    mkdir -p "$TOKEN_REGISTRY_DIR/data"
    if [[ ! -s "$key" || ! -s "$cert" ]]; then
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$TOKEN_ISSUER" \
            -keyout "$key.tmp" -out "$cert.tmp" 2>/dev/null ||
            die "openssl could not make the token signing key"
        chmod 600 "$key.tmp"
        mv "$cert.tmp" "$cert"
        mv "$key.tmp" "$key"
        log "made the token signing key and certificate in $TOKEN_REGISTRY_DIR"
    fi
    if [[ ! -s "$users" ]]; then
        printf '{"%s": {"password": "%s", "actions": ["pull", "push", "delete"]},\n "%s": {"password": "%s", "actions": ["pull"]}}\n' \
            "$REGISTRY_PUSH_USER" "$REGISTRY_PUSH_PASSWORD" \
            "$REGISTRY_PULL_USER" "$REGISTRY_PULL_PASSWORD" >"$users.tmp"
        chmod 600 "$users.tmp"
        mv "$users.tmp" "$users"
    fi
}

token_server_ready() { curl -fs -m 5 -o /dev/null "http://$TOKEN_SERVER_ADDR/health"; }

# The token server runs on Debian's python3 (python3-jwt, python3-cryptography): `up` runs
# before the project's virtualenv exists.
ensure_token_server() {
    if token_server_ready; then
        log "token server already answers on $TOKEN_SERVER_ADDR"
        return 0
    fi
    /usr/bin/python3 -c 'import jwt, cryptography' 2>/dev/null ||
        die "the token server needs python3-jwt and python3-cryptography"
    if pid_matches "$TOKEN_SERVER_PIDFILE" "$TOKEN_SERVER_SCRIPT"; then
        log "token server (pid $(<"$TOKEN_SERVER_PIDFILE")) does not answer; restarting it"
        stop_pidfile "$TOKEN_SERVER_PIDFILE" "$TOKEN_SERVER_SCRIPT" "token server" 10
    fi
    rm -f "$TOKEN_SERVER_PIDFILE"
    log "starting the token server on $TOKEN_SERVER_ADDR (log: $TOKEN_SERVER_LOG)"
    spawn_daemon "$TOKEN_SERVER_LOG" /usr/bin/python3 "$TOKEN_SERVER_SCRIPT" \
        --listen "$TOKEN_SERVER_ADDR" --key "$TOKEN_REGISTRY_DIR/token.key" \
        --cert "$TOKEN_REGISTRY_DIR/token.crt" --users "$TOKEN_REGISTRY_DIR/users.json" \
        --issuer "$TOKEN_ISSUER" --service "$TOKEN_SERVICE"
    echo "$!" >"$TOKEN_SERVER_PIDFILE"
    if ! wait_for "$WAIT_SECONDS" "token server" token_server_ready; then
        tail -n 30 "$TOKEN_SERVER_LOG" >&2 || true
        die "the token server does not answer on $TOKEN_SERVER_ADDR after ${WAIT_SECONDS}s"
    fi
}

ensure_registries() {
    mkdir -p "$REGISTRY_DATA"
    ensure_registry "$REGISTRY_ADDR" "$REGISTRY_CONFIG" registry
    ensure_basic_registry_users
    ensure_registry "$BASIC_REGISTRY_ADDR" "$BASIC_REGISTRY_CONFIG" registry-basic
    ensure_token_material
    ensure_token_server
    ensure_registry "$TOKEN_REGISTRY_ADDR" "$TOKEN_REGISTRY_CONFIG" registry-token
}

# ---------------------------------------------------------------------------------------
# Base image: a busybox-static root file system, imported (nothing can be pulled)
# ---------------------------------------------------------------------------------------
ensure_base_image() {
    if dk image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        log "base image $BASE_IMAGE present"
        return 0
    fi
    local busybox=/bin/busybox
    [[ -x "$busybox" ]] || die "$busybox not found (Debian package busybox-static)"
    log "building base image $BASE_IMAGE from $busybox"
    local rootfs
    make_temp_dir rootfs
    chmod 755 "$rootfs"
    mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,var/www,home}
    cp "$busybox" "$rootfs/bin/busybox"
    local applet
    # --list-full gives each applet's usual place (bin/sh, usr/bin/env, sbin/ifconfig, ...).
    while IFS= read -r applet; do
        [[ -n "$applet" && "$applet" != bin/busybox ]] || continue
        mkdir -p "$rootfs/$(dirname "$applet")"
        [[ -e "$rootfs/$applet" ]] || ln -s /bin/busybox "$rootfs/$applet"
    done < <("$busybox" --list-full)
    [[ -e "$rootfs/bin/sh" ]] || ln -s /bin/busybox "$rootfs/bin/sh"
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
        'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$rootfs/etc/passwd"
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$rootfs/etc/group"
    chmod 1777 "$rootfs/tmp"
    tar -C "$rootfs" --numeric-owner --owner=0 --group=0 -cf - . |
        dk import \
            -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            -c 'CMD ["/bin/sh"]' \
            -m 'Portside test base: busybox-static root file system' \
            - "$BASE_IMAGE" >/dev/null
    dk image inspect "$BASE_IMAGE" >/dev/null 2>&1 || die "docker import of $BASE_IMAGE failed"
    log "base image $BASE_IMAGE built"
}

# ---------------------------------------------------------------------------------------
# Compose
# ---------------------------------------------------------------------------------------
# Debian bookworm's docker-compose package is compose v1 (python, `docker-compose`); a
# `docker compose` v2 plugin is used instead when the client on PATH has one.
compose_command() {
    if docker compose version >/dev/null 2>&1; then
        echo "docker compose"
    elif command -v docker-compose >/dev/null && docker-compose version >/dev/null 2>&1; then
        echo "docker-compose"
    else
        return 1
    fi
}

# ---------------------------------------------------------------------------------------
# Proof that it all works together
# ---------------------------------------------------------------------------------------
http_get() { curl -fsS -m 5 "$1"; }

smoke_publish() {
    local name="portside-smoke-publish-$$" port body
    dk rm -f "$name" >/dev/null 2>&1 || true
    dk run -d --name "$name" --label io.portside.test=1 -p 127.0.0.1::80 "$BASE_IMAGE" \
        sh -c 'mkdir -p /www && echo publish-ok >/www/index.html && exec httpd -f -p 80 -h /www' \
        >/dev/null
    port="$(dk port "$name" 80/tcp | head -n 1)"
    port="${port##*:}"
    local deadline=$((SECONDS + 20))
    until body="$(http_get "http://127.0.0.1:$port/" 2>/dev/null)" && [[ "$body" == publish-ok ]]; do
        if ((SECONDS >= deadline)); then
            dk logs "$name" >&2 || true
            dk rm -f "$name" >/dev/null 2>&1 || true
            die "a container publishing 127.0.0.1:$port does not answer HTTP from the host"
        fi
        sleep 0.3
    done
    dk rm -f "$name" >/dev/null
    log "published port on 127.0.0.1 answers"
}

# smoke_push ADDR [USER PASSWORD]: push the base image there, logged in if a user is given
# (with a client config of its own: root's ~/.docker is left alone).
smoke_push() {
    local addr=$1 user=${2:-} password=${3:-} tag="$1/$BASE_IMAGE" config
    make_temp_dir config
    if [[ -n "$user" ]] && ! printf '%s' "$password" |
        DOCKER_CONFIG="$config" dk login -u "$user" --password-stdin "$addr" >/dev/null 2>&1; then
        die "docker login to $addr as $user failed"
    fi
    dk tag "$BASE_IMAGE" "$tag"
    if ! DOCKER_CONFIG="$config" dk push "$tag" >/dev/null; then
        dk rmi "$tag" >/dev/null 2>&1 || true
        die "pushing $tag to the registry failed"
    fi
    dk rmi "$tag" >/dev/null
    log "push to $addr works${user:+ (logged in as $user)}"
}

smoke_compose() {
    local cmd project dir port body
    cmd="$(compose_command)" || die "neither 'docker compose' nor 'docker-compose' works"
    project="portside-smoke-$$"
    make_temp_dir dir
    cat >"$dir/docker-compose.yml" <<EOF
version: "3.7"
services:
  web:
    image: $BASE_IMAGE
    command: ["sh", "-c", "mkdir -p /www && echo compose-ok >/www/index.html && exec httpd -f -p 8080 -h /www"]
    ports:
      - "127.0.0.1::8080"
    labels:
      io.portside.test: "1"
EOF
    local -a compose
    read -r -a compose <<<"$cmd"
    compose+=(-p "$project" -f "$dir/docker-compose.yml")
    local ok=0
    if DOCKER_HOST="$DOCKER_HOST_URL" "${compose[@]}" up -d >/dev/null 2>&1; then
        port="$(DOCKER_HOST="$DOCKER_HOST_URL" "${compose[@]}" port web 8080 2>/dev/null | tail -n 1)"
        port="${port##*:}"
        local deadline=$((SECONDS + 20))
        while ((SECONDS < deadline)); do
            if body="$(http_get "http://127.0.0.1:$port/" 2>/dev/null)" &&
                [[ "$body" == compose-ok ]]; then
                ok=1
                break
            fi
            sleep 0.3
        done
    fi
    DOCKER_HOST="$DOCKER_HOST_URL" "${compose[@]}" down -t 1 >/dev/null 2>&1 || ok=0
    ((ok)) || die "a compose project ($cmd) did not come up, answer on 127.0.0.1 and go down"
    log "compose ($cmd) project came up, answered and went down"
}

# ---------------------------------------------------------------------------------------
# Stopping
# ---------------------------------------------------------------------------------------
# stop_pidfile PIDFILE PATTERN NAME SECONDS: TERM the process, KILL it after SECONDS.
stop_pidfile() {
    local pidfile=$1 pattern=$2 name=$3 seconds=$4 pid
    if ! pid_matches "$pidfile" "$pattern"; then
        rm -f "$pidfile"
        log "$name is not running"
        return 0
    fi
    pid="$(<"$pidfile")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + seconds))
    while alive "$pid"; do
        if ((SECONDS >= deadline)); then
            log "$name did not stop in ${seconds}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
            break
        fi
        sleep 0.3
    done
    rm -f "$pidfile"
}

# ---------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------
cmd_up() {
    install_packages
    mkdir -p "$RUN_DIR" "$LIB_DIR" "$LOG_DIR"
    # One `up` at a time. The daemons started below must not inherit fd 9 (see spawn_daemon),
    # or they would hold the lock for as long as they run.
    exec 9>"$RUN_DIR/up.lock"
    flock -w 300 9 || die "another 'test-env.sh up' holds $RUN_DIR/up.lock"
    ensure_postgres
    ensure_redis
    ensure_dockerd
    ensure_registries
    ensure_base_image
    smoke_publish
    smoke_push "$REGISTRY_ADDR"
    smoke_push "$BASIC_REGISTRY_ADDR" "$REGISTRY_PUSH_USER" "$REGISTRY_PUSH_PASSWORD"
    smoke_push "$TOKEN_REGISTRY_ADDR" "$REGISTRY_PUSH_USER" "$REGISTRY_PUSH_PASSWORD"
    smoke_compose
    log "test environment is up; load it with: eval \"\$(scripts/test-env.sh env)\""
}

cmd_down() {
    stop_pidfile "$REGISTRY_PIDFILE" docker-registry registry 10
    stop_pidfile "$RUN_DIR/registry-basic.pid" docker-registry registry-basic 10
    stop_pidfile "$RUN_DIR/registry-token.pid" docker-registry registry-token 10
    stop_pidfile "$TOKEN_SERVER_PIDFILE" "$TOKEN_SERVER_SCRIPT" "token server" 10
    # dockerd stops its containers (up to 15 s each by default) before it exits.
    stop_pidfile "$DOCKERD_PIDFILE" "$DOCKER_SOCK" dockerd 60
    # The containerd that dockerd started normally leaves with it.
    local containerd_pidfile="$DOCKER_EXEC_ROOT/containerd/containerd.pid"
    stop_pidfile "$containerd_pidfile" "$DOCKER_EXEC_ROOT" containerd 15 >/dev/null 2>&1 || true
    log "test environment is down (PostgreSQL and Redis left running)"
}

cmd_env() {
    local role compose
    role="$(pg_role 2>/dev/null)" || role=postgres
    compose="$(compose_command 2>/dev/null)" || compose=docker-compose
    cat <<EOF
export DOCKER_HOST='$DOCKER_HOST_URL'
export PORTSIDE_TEST_REGISTRY='$REGISTRY_ADDR'
export PORTSIDE_TEST_BASIC_REGISTRY='$BASIC_REGISTRY_ADDR'
export PORTSIDE_TEST_TOKEN_REGISTRY='$TOKEN_REGISTRY_ADDR'
export PORTSIDE_TEST_TOKEN_DIR='$TOKEN_REGISTRY_DIR'
export PORTSIDE_TEST_TOKEN_ISSUER='$TOKEN_ISSUER'
export PORTSIDE_TEST_TOKEN_SERVICE='$TOKEN_SERVICE'
export PORTSIDE_TEST_REGISTRY_USER='$REGISTRY_PUSH_USER'
export PORTSIDE_TEST_REGISTRY_PASSWORD='$REGISTRY_PUSH_PASSWORD'
export PORTSIDE_TEST_REGISTRY_PULL_USER='$REGISTRY_PULL_USER'
export PORTSIDE_TEST_REGISTRY_PULL_PASSWORD='$REGISTRY_PULL_PASSWORD'
export PORTSIDE_TEST_BASE_IMAGE='$BASE_IMAGE'
export PORTSIDE_TEST_DATABASE_URL='postgresql+psycopg2://$role@$PG_HOST:$PG_PORT/$PG_DB'
export PORTSIDE_TEST_REDIS_URL='redis://$REDIS_HOST:$REDIS_PORT'
export PORTSIDE_COMPOSE_COMMAND="$compose"
EOF
}

# The engine and registry of `make dev`. The user's own come first; this script's own are
# started only as root (it installs Debian packages and runs dockerd), never in their way.
cmd_dev() {
    local engine="${DOCKER_HOST:-}" registry="${PORTSIDE_REGISTRY:-}"
    if [[ -z "$engine" ]] && timeout 10 docker -H unix:///var/run/docker.sock info >/dev/null 2>&1; then
        engine=unix:///var/run/docker.sock
    fi
    if [[ -z "$engine" || -z "$registry" ]]; then
        if [[ "$(id -u)" != 0 ]]; then
            log "no Docker engine or registry configured and not root: set DOCKER_HOST and PORTSIDE_REGISTRY to build and deploy"
            [[ -n "$engine" ]] && echo "export DOCKER_HOST='$engine'"
            return 0
        fi
        install_packages docker.io docker-registry busybox-static git curl
        mkdir -p "$RUN_DIR" "$LIB_DIR" "$LOG_DIR"
        exec 9>"$RUN_DIR/up.lock"
        flock -w 300 9 || die "another 'test-env.sh' holds $RUN_DIR/up.lock"
        if [[ -z "$engine" ]]; then
            ensure_dockerd
            ensure_base_image
            engine="$DOCKER_HOST_URL"
        fi
        if [[ -z "$registry" ]]; then
            mkdir -p "$REGISTRY_DATA"
            ensure_registry "$REGISTRY_ADDR" "$REGISTRY_CONFIG" registry
            registry="$REGISTRY_ADDR"
        fi
    fi
    echo "export DOCKER_HOST='$engine'"
    echo "export PORTSIDE_REGISTRY='$registry'"
}

main() {
    case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    env) cmd_env ;;
    dev) cmd_dev ;;
    *)
        echo "usage: $0 up|down|env|dev" >&2
        exit 2
        ;;
    esac
}

main "$@"

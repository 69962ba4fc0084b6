#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, for tests and local trials.
#
#   scripts/postgres.sh start   installs PostgreSQL from Debian's packages if it is missing
#                               (as root), starts a cluster in a fresh temp dir on a free
#                               port of 127.0.0.1 and prints, one per line:
#                                 ACTORBOT_TEST_PG_DSN=postgresql://actorbot@127.0.0.1:PORT/actorbot
#                                 ACTORBOT_TEST_PG_DIR=/tmp/actorbot-pg.XXXXXX
#   scripts/postgres.sh stop DIR
#                               stops that cluster and deletes DIR.
#
# As root the cluster runs as the `postgres` user (PostgreSQL refuses to run as root);
# otherwise as the current user. Authentication is `trust`: it listens on loopback only,
# holds test data only and is deleted on stop. fsync is off for speed, for the same reason.
# Exit status 1 with a one-line reason on stderr when no cluster can be started.
set -euo pipefail

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

# The newest installed server's bin directory (Debian keeps them off PATH).
find_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
        echo "$dir"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    elif command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir
    fi
}

# Run a command as the cluster's owner.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local bindir dir port attempt options
    bindir=$(find_bindir)
    if [ -z "$bindir" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "postgres.sh: installing PostgreSQL from Debian's packages…" >&2
            # The package's own cluster is not wanted: ours is started below, per run.
            export DEBIAN_FRONTEND=noninteractive
            { apt-get update -q && apt-get install -y -q postgresql; } >/dev/null 2>&1 \
                || die "could not install PostgreSQL (apt-get install postgresql failed)"
            bindir=$(find_bindir)
        fi
        [ -n "$bindir" ] || die "PostgreSQL is not installed (initdb not found) and cannot be installed without root"
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        die "running as root but there is no postgres user to run the server as"
    fi

    dir=$(mktemp -d "${TMPDIR:-/tmp}/actorbot-pg.XXXXXX")
    chmod 755 "$dir"  # the test process (root) reads the log; the server owns data/
    if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
    as_owner "$bindir/initdb" -D "$dir/data" --username=actorbot --auth=trust \
        --encoding=UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; rm -rf "$dir"; die "initdb failed"; }
    # A port found free can be taken before the server binds it: try a few.
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        options="-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir"
        options+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options+=" -c max_connections=300"
        if as_owner "$bindir/pg_ctl" start -D "$dir/data" -l "$dir/server.log" -w -t 30 \
            -o "$options" >/dev/null 2>&1; then
            as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U actorbot actorbot \
                || { as_owner "$bindir/pg_ctl" stop -D "$dir/data" -m immediate >/dev/null 2>&1
                     rm -rf "$dir"; die "createdb failed"; }
            echo "ACTORBOT_TEST_PG_DSN=postgresql://actorbot@127.0.0.1:$port/actorbot"
            echo "ACTORBOT_TEST_PG_DIR=$dir"
            return 0
        fi
    done
    tail -n 20 "$dir/server.log" >&2 || true
    rm -rf "$dir"
    die "the server did not start (log above)"
}

stop() {
    local dir=${1:-} bindir
    [ -n "$dir" ] && [ -d "$dir/data" ] || die "usage: postgres.sh stop DIR (a dir printed by start)"
    bindir=$(find_bindir)
    # Immediate: the data is thrown away next, nothing needs a clean shutdown.
    as_owner "$bindir/pg_ctl" stop -D "$dir/data" -m immediate -w >/dev/null 2>&1 || true
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    *) die "usage: postgres.sh start | stop DIR" ;;
esac

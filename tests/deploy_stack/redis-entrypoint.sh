#!/bin/sh
# Stand-in for the redis:7 image's docker-entrypoint.sh, on Debian's redis-server: run as
# root, it hands the working directory (/data) to the redis user and runs the server as it.
set -eu
if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
    chown -R redis .
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"

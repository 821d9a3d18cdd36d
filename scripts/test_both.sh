#!/usr/bin/env bash
# `make test` with TEST_DATABASE_URL set: the suite on SQLite and on PostgreSQL side by
# side, each line prefixed with its database, each run in its own temporary folder. Exit
# status: non-zero if either run failed. Side by side because on a 2-core machine the two
# runs, each mostly waiting on processes, sockets and the database, take about as long
# together as one after the other would take for one alone.
#   scripts/test_both.sh PYTHON [PYTEST ARGS...]
set -uo pipefail

python=$1
shift
rm -rf .pytest-tmp && mkdir -p .pytest-tmp

run() {  # run NAME [env...]: pytest with its lines prefixed by NAME
    local name=$1
    shift
    env "$@" "$python" -m pytest --basetemp=".pytest-tmp/$name" "${ARGS[@]}" 2>&1 \
        | sed -u "s/^/[$name] /"
}

ARGS=("$@")
run sqlite -u TEST_DATABASE_URL &
sqlite=$!
run postgresql &
postgresql=$!
wait "$sqlite"
sqlite_status=$?
wait "$postgresql"
postgresql_status=$?
echo "==> SQLite: $([ "$sqlite_status" -eq 0 ] && echo passed || echo "FAILED ($sqlite_status)");" \
     "PostgreSQL: $([ "$postgresql_status" -eq 0 ] && echo passed || echo "FAILED ($postgresql_status)")"
[ "$sqlite_status" -eq 0 ] && [ "$postgresql_status" -eq 0 ]

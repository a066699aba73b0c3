# Sourced by .ci/run (issue 7): Debian's PostgreSQL server on 127.0.0.1 with a throw-away data directory,
# for the shared-server store tests. `bench_pg_start` installs the server if it is missing, starts it and
# exports BENCH_TEST_PG_URL (tests needing PostgreSQL skip without it); `bench_pg_stop` stops it and
# removes the data directory. Local use: `. .ci/postgres.sh; BENCH_PG_PORT=54330 bench_pg_start`.

bench_pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

bench_pg_start() {
  local bin port="${BENCH_PG_PORT:-54329}"
  bin=$(bench_pg_bin)
  if [ -z "$bin" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bin=$(bench_pg_bin)
  fi
  BENCH_PG_DATA=$(mktemp -d /tmp/bench-pg.XXXXXX)
  BENCH_PG_AS=()
  if [ "$(id -u)" = 0 ]; then  # the server refuses to run as root
    chown postgres: "$BENCH_PG_DATA"
    BENCH_PG_AS=(runuser -u postgres --)
  fi
  "${BENCH_PG_AS[@]}" "$bin/initdb" -D "$BENCH_PG_DATA" -A trust -U bench --no-sync >/dev/null
  "${BENCH_PG_AS[@]}" "$bin/pg_ctl" -D "$BENCH_PG_DATA" -w -l "$BENCH_PG_DATA/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $BENCH_PG_DATA -c fsync=off -c max_connections=200" start >/dev/null
  BENCH_PG_CTL="$bin/pg_ctl"
  "$bin/createdb" -h 127.0.0.1 -p "$port" -U bench bench_test
  export BENCH_TEST_PG_URL="postgresql+psycopg://bench@127.0.0.1:$port/bench_test"
  echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data $BENCH_PG_DATA)"
}

bench_pg_stop() {
  if [ -n "${BENCH_PG_DATA:-}" ] && [ -d "$BENCH_PG_DATA" ]; then
    "${BENCH_PG_AS[@]}" "$BENCH_PG_CTL" -D "$BENCH_PG_DATA" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$BENCH_PG_DATA"
  fi
}

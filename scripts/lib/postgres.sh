# Sourced by scripts/test: Debian's PostgreSQL server binaries, for the history tests, which
# start private clusters of their own (initdb in a temporary directory, a free port); the
# machine's own Postgres service is never used. Idempotent.

# ensure_postgres   installs postgresql if no server binaries are present; exports
# WARDEN_TEST_PG_BIN (the directory holding initdb and pg_ctl).
ensure_postgres() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ] || ! command -v psql >/dev/null; then
    local sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  export WARDEN_TEST_PG_BIN="$bin"
}

# Sourced by scripts/test: installs Debian's postgresql (server binaries under
# /usr/lib/postgresql/<major>/bin, and psql) if missing (apt-get; sudo when not root). The
# history store's tests start private clusters from these binaries themselves
# (crates/store/tests/store/postgres.rs); no running server is assumed or used.
ensure_postgres() {
  if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || ! command -v psql >/dev/null; then
    local sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql
  fi
}

# Sourced by scripts/test and scripts/demo: installs redis-server, redis-cli (and openssl)
# from the distribution if they are missing (Debian/Ubuntu apt-get; sudo when not root).
ensure_redis() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  # The TLS test makes its certificates with the openssl command.
  command -v openssl >/dev/null || missing+=(openssl)
  if ((${#missing[@]})); then
    local sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
  fi
}

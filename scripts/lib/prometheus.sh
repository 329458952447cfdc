# Sourced by scripts/test: installs Debian's `prometheus` package (prometheus and promtool)
# if either is missing. Installing it does not start a service in these images; the tests
# start their own Prometheus on a free port.
ensure_prometheus() {
  if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    local sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus
  fi
}

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

# Installs Debian's `prometheus-alertmanager` if missing. The notification tests
# (crates/notify) start their own Alertmanager on a free port, with clustering off; the
# package's service is not started in these images.
ensure_alertmanager() {
  if ! command -v prometheus-alertmanager >/dev/null; then
    local sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus-alertmanager
  fi
}

# Sourced by scripts/test and scripts/demo: the Python venv with Celery, grpcio-tools and
# grpcurl that the tests and the demo run. Idempotent: the venv is (re)made only when it is
# missing or scripts/python/requirements.txt changed since it was made.
#
# ensure_venv ROOT   sets and exports WARDEN_TEST_VENV (default ROOT/.venv) and $venv.
ensure_venv() {
  local root=$1
  venv="${WARDEN_TEST_VENV:-$root/.venv}"
  local req="$root/scripts/python/requirements.txt"
  local stamp="$venv/.requirements.sha256"
  local want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
  fi
  export WARDEN_TEST_VENV="$venv"
}

# ensure_old_celery_venv ROOT   the oldest supported Celery (5.3), for version tests; sets and
# exports WARDEN_TEST_VENV_CELERY53 (default ROOT/.venv-celery53).
ensure_old_celery_venv() {
  local root=$1
  local old="${WARDEN_TEST_VENV_CELERY53:-$root/.venv-celery53}"
  local req="$root/scripts/python/requirements-celery53.txt"
  local stamp="$old/.requirements.sha256"
  local want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$old/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python3 -m venv "$old"
    "$old/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
  fi
  export WARDEN_TEST_VENV_CELERY53="$old"
}

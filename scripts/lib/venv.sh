# Sourced by scripts/test and scripts/demo: the Python venvs the tests and the demo run.
# Idempotent: a venv is (re)made only when it is missing or its requirements file changed
# since it was made.

# make_venv DIR REQUIREMENTS   creates or refreshes DIR from REQUIREMENTS.
make_venv() {
  local dir=$1 req=$2
  local stamp="$dir/.requirements.sha256"
  local want
  want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
  fi
}

# ensure_venv ROOT   Celery, grpcio-tools and grpcurl; sets and exports WARDEN_TEST_VENV
# (default ROOT/.venv) and $venv.
ensure_venv() {
  local root=$1
  venv="${WARDEN_TEST_VENV:-$root/.venv}"
  make_venv "$venv" "$root/scripts/python/requirements.txt"
  export WARDEN_TEST_VENV="$venv"
}

# ensure_old_celery_venv ROOT   the oldest supported Celery (5.3), for version tests; sets and
# exports WARDEN_TEST_VENV_CELERY53 (default ROOT/.venv-celery53).
ensure_old_celery_venv() {
  local root=$1
  local old="${WARDEN_TEST_VENV_CELERY53:-$root/.venv-celery53}"
  make_venv "$old" "$root/scripts/python/requirements-celery53.txt"
  export WARDEN_TEST_VENV_CELERY53="$old"
}

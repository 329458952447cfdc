# Sourced by scripts/test: buf (npm @bufbuild/buf), pinned, in .tools/buf. Idempotent.
BUF_VERSION=1.75.0

# ensure_buf ROOT   installs buf if missing or of another version; sets $buf.
ensure_buf() {
  local dir=$1/.tools/buf
  buf="$dir/node_modules/.bin/buf"
  if [ ! -x "$buf" ] || [ "$("$buf" --version 2>/dev/null)" != "$BUF_VERSION" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      local sudo_cmd=""
      [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
      $sudo_cmd apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq nodejs npm
    fi
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --silent "@bufbuild/buf@$BUF_VERSION"
  fi
}

# check_contract BUF   buf lint, then buf breaking against the contract as it was (a) in the
# previous commit, (b) in the commit that settled v1 (the first with proto/buf.yaml), and (c)
# in HEAD when the working tree's proto/ differs from it. Run from the repository root.
check_contract() {
  local buf=$1
  (cd proto && "$buf" lint)
  echo "buf lint: clean"
  local refs=() baseline
  if git cat-file -e HEAD:proto/buf.yaml 2>/dev/null && ! git diff --quiet HEAD -- proto; then
    refs+=(HEAD)
  fi
  if git cat-file -e HEAD~1:proto/buf.yaml 2>/dev/null; then
    refs+=(HEAD~1)
  elif git rev-parse -q --verify HEAD~1 >/dev/null; then
    echo "buf breaking: the previous commit predates the v1 contract (no proto/buf.yaml)"
  else
    echo "buf breaking: no previous commit in this clone (shallow?); comparing with the baseline only"
  fi
  baseline=$(git log --diff-filter=A --format=%H -- proto/buf.yaml | tail -1)
  if [ -n "$baseline" ]; then
    refs+=("$baseline")
  fi
  for ref in "${refs[@]}"; do
    if ! "$buf" breaking proto --against ".git#ref=$ref,subdir=proto"; then
      echo "buf breaking: proto/ breaks the contract of $ref (above)" >&2
      return 1
    fi
    echo "buf breaking: compatible with $ref"
  done
}

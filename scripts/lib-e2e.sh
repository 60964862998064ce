# shellcheck shell=bash
# scripts/lib-e2e.sh: what the end-to-end scripts share (sourced by
# scripts/e2e and scripts/e2e-pods):
# installing and building the clients and servers (prepare), the child
# process list (PIDS, cleanup), waiting for a server (wait_http), the result
# rows (record, print_results) and version_of. The sourcing script sets
# E2E_NAME (its log prefix) and ROOT before sourcing.

CACHE=${CWCREDS_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cwcreds-e2e}
VGW_VERSION=v1.8.0
# Pinned, like every other client: the README matrix names this version.
JS_SDK_VERSION=3.1178.0
NPM_PACKAGE=@aws-sdk/client-s3@$JS_SDK_VERSION
# Rust's object_store through nodejs-polars (its native module embeds polars-io
# and object_store, whose own credential chain it uses). The platform package is
# named too: npm skips it as an optional dependency (its engines field asks for
# node >= 22; it runs on 20).
OBJSTORE_NPM=(nodejs-polars@0.25.2 nodejs-polars-linux-x64-gnu@0.25.2)

log() { printf '%s %s: %s\n' "$(date -u +%H:%M:%S)" "${E2E_NAME:-e2e}" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }

# prepare WORK: install what is missing (apt, versitygw, npm), build cwcreds,
# the emulator and the Go clients into WORK/bin, resolve pyenv's interpreters.
prepare() {
  export WORK=$1
  mkdir -p "$WORK/bin" "$CACHE/bin"

  # Debian clients: apt-get only when something is missing.
  local missing=()
  [[ -x /usr/bin/aws ]] || missing+=(awscli)
  /usr/bin/python3 -c 'import boto3' 2>/dev/null || missing+=(python3-boto3)
  [[ -x /usr/bin/rclone ]] || missing+=(rclone)
  [[ -x /usr/bin/restic ]] || missing+=(restic)
  [[ -x /usr/bin/s3fs ]] || missing+=(s3fs)
  /usr/bin/python3 -c 'import awscrt.s3' 2>/dev/null || missing+=(python3-awscrt)
  if ((${#missing[@]})); then
    if [[ $(id -u) == 0 ]]; then
      log "apt-get install ${missing[*]}"
      timeout 300 apt-get update -qq >"$WORK/apt.log" 2>&1 || log "apt-get update failed (see below); trying the install anyway"
      DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq -o DPkg::Lock::Timeout=240 --no-install-recommends "${missing[@]}" >>"$WORK/apt.log" 2>&1 ||
        { tail -n 20 "$WORK/apt.log" >&2; log "apt-get install failed: those clients will fail"; }
    else
      log "not root: cannot apt-get install ${missing[*]}; those clients will fail"
    fi
  fi

  # versitygw, pinned, cached between runs (never required to be cached).
  if [[ ! -x $CACHE/bin/versitygw-$VGW_VERSION ]]; then
    log "go install versitygw@$VGW_VERSION (first run only; about a minute)"
    local gobin
    gobin=$(mktemp -d)
    (cd "$WORK" && GOBIN=$gobin GOFLAGS="" timeout 480 go install "github.com/versity/versitygw/cmd/versitygw@$VGW_VERSION") ||
      die "go install versitygw failed"
    mv "$gobin/versitygw" "$CACHE/bin/versitygw-$VGW_VERSION"
    rmdir "$gobin"
  fi
  ln -sf "$CACHE/bin/versitygw-$VGW_VERSION" "$WORK/bin/versitygw"

  # JS SDK v3 from npm, cached.
  # Installed again when the cached copy is not the pinned version.
  if ! grep -qs "\"version\": \"$JS_SDK_VERSION\"" "$CACHE/npm/node_modules/@aws-sdk/client-s3/package.json"; then
    if command -v npm >/dev/null; then
      log "npm install $NPM_PACKAGE"
      mkdir -p "$CACHE/npm"
      [[ -f $CACHE/npm/package.json ]] || echo '{"private":true}' >"$CACHE/npm/package.json"
      (cd "$CACHE/npm" && timeout 300 npm install --no-audit --no-fund --loglevel=error -E "$NPM_PACKAGE" >"$WORK/npm.log" 2>&1) ||
        { tail -n 20 "$WORK/npm.log" >&2; log "npm install failed: the JS client will fail"; }
    else
      log "no npm: the JS client will fail"
    fi
  fi

  # object_store (nodejs-polars), pinned, cached in a directory of its own.
  if [[ ! -f $CACHE/npm-objstore/node_modules/nodejs-polars-linux-x64-gnu/package.json ]]; then
    if command -v npm >/dev/null && [[ $(uname -m) == x86_64 ]]; then
      log "npm install ${OBJSTORE_NPM[*]} (first run only; about 111 MB)"
      mkdir -p "$CACHE/npm-objstore"
      [[ -f $CACHE/npm-objstore/package.json ]] || echo '{"private":true}' >"$CACHE/npm-objstore/package.json"
      (cd "$CACHE/npm-objstore" && timeout 300 npm install --no-audit --no-fund --loglevel=error -E "${OBJSTORE_NPM[@]}" >"$WORK/npm-objstore.log" 2>&1) ||
        { tail -n 20 "$WORK/npm-objstore.log" >&2; log "npm install failed: the object_store client will fail"; }
    else
      log "no npm, or not x86_64: the object_store client will fail"
    fi
  fi

  log "building cwcreds, the API emulator and the Go client"
  (cd "$ROOT" && timeout 300 go build -o "$WORK/bin/cwcreds" ./cmd/cwcreds &&
    timeout 300 go build -o "$WORK/bin/emulator" ./test/emulator &&
    timeout 300 go build -o "$WORK/bin/goclient" ./test/e2e/goclient) || die "go build failed"
  # minio-go and aws-sdk-go v1 live in a module of their own (test/e2e/goclients/go.mod).
  (cd "$ROOT/test/e2e/goclients" && timeout 300 go build -o "$WORK/bin/goclients" .) || die "go build test/e2e/goclients failed"

  # pyenv's interpreters, resolved now (the shims need $PATH and pyenv).
  : >"$WORK/pyenv"
  if command -v pyenv >/dev/null; then
    {
      echo "PYENV_AWS=$(pyenv which aws 2>/dev/null || true)"
      echo "PYENV_PYTHON=$(pyenv which python3 2>/dev/null || true)"
    } >"$WORK/pyenv"
  fi
}

PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}

# wait_http URL SECONDS: until URL answers at all.
wait_http() {
  local deadline=$(($(date +%s) + $2))
  until curl -s -o /dev/null --max-time 1 "$1"; do
    (($(date +%s) < deadline)) || return 1
    sleep 0.1
  done
}

PASS=0 FAIL=0 SKIP=0
ROWS=()
record() { # client version mechanism result [detail]
  local result=$4
  case $result in
    pass) PASS=$((PASS + 1)) ;;
    skip*) SKIP=$((SKIP + 1)) ;;
    *) FAIL=$((FAIL + 1)) ;;
  esac
  ROWS+=("$1|$2|$3|$result${5:+ ($5)}")
  log "$1 | $3 | $result${5:+ ($5)}"
}

version_of() { "$@" 2>&1 | head -n 1 | tr '|' '/' || true; }

# print_results: the rows as a table, then "N passed, M failed[, K skipped]";
# fails when anything failed.
print_results() {
  echo
  printf '%-28s | %-58s | %-40s | %s\n' client version mechanism result
  printf '%s\n' "$(printf -- '-%.0s' {1..160})"
  local row a b m r
  for row in "${ROWS[@]}"; do
    IFS='|' read -r a b m r <<<"$row"
    printf '%-28s | %-58s | %-40s | %s\n' "$a" "$b" "$m" "$r"
  done
  echo
  if ((SKIP)); then echo "$PASS passed, $FAIL failed, $SKIP skipped"; else echo "$PASS passed, $FAIL failed"; fi
  ((FAIL == 0))
}

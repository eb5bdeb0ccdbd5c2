#!/usr/bin/env bash
# A new user's first hour, timed: clone this repository afresh, `make run` until the API says
# ready (/readyz 200, with its embedded worker), then `make install-test` on top. Prints the
# seconds and the size of .venv after each. Run it twice: the first run fills pip's cache
# (a cold download), the second is the "warm pip cache" figure.
#   bash benchmarks/fresh_clone.sh [WORKDIR]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d /tmp/dcl-fresh.XXXXXX)}"
rm -rf "$work/clone"
git clone --quiet "$repo" "$work/clone"
cd "$work/clone"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

load_before=$(cut -d' ' -f1 /proc/loadavg)
start=$(date +%s.%N)
make install >"$work/make-install.log" 2>&1   # what `make run` does first
installed=$(date +%s.%N)
DCL_PORT=$port make run >"$work/make-run.log" 2>&1 &
make_pid=$!
until curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
  if ! kill -0 $make_pid 2>/dev/null; then echo "make run exited:"; tail -30 "$work/make-run.log"; exit 1; fi
  sleep 0.5
done
ready=$(date +%s.%N)
pkill -INT -P $make_pid 2>/dev/null || true   # dcl serve, make's child: it stops its worker
wait $make_pid 2>/dev/null || true
run_size=$(du -sh .venv | cut -f1)

t0=$(date +%s.%N)
make install-test >"$work/make-install-test.log" 2>&1
t1=$(date +%s.%N)
test_size=$(du -sh .venv | cut -f1)
load_after=$(cut -d' ' -f1 /proc/loadavg)

python3 - "$start" "$installed" "$ready" "$t0" "$t1" "$run_size" "$test_size" "$load_before" "$load_after" <<'PY'
import sys
start, installed, ready, t0, t1 = map(float, sys.argv[1:6])
print(f"make run, clone to ready: {ready - start:.0f} s (installing {installed - start:.0f} s, then the API and "
      f"its worker up in {ready - installed:.0f} s), .venv {sys.argv[6]}")
print(f"make install-test on top: {t1 - t0:.0f} s, .venv {sys.argv[7]}")
print(f"load average before / after: {sys.argv[8]} / {sys.argv[9]} (2 cores)")
PY
echo "logs in $work"

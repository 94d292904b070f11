# Sourced by the bench scripts. Sets repo, shared (../shared), cache (generated data) and
# CARGO_TARGET_DIR (default ~/.cache/highwater-target, as .ci/run), builds the release binary
# once and sets bin to it (or takes HIGHWATER_BIN, a binary built before, without building).
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${SHARED_DIR:-$repo/../shared}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/highwater-target}
cache=${BENCH_CACHE:-$HOME/.cache/highwater-bench}
mkdir -p "$cache"
if [ -n "${HIGHWATER_BIN:-}" ]; then
  bin=$HIGHWATER_BIN
else
  cargo build --release --workspace --all-targets --manifest-path "$repo/Cargo.toml" >&2
  bin="$CARGO_TARGET_DIR/release/highwater"
fi

# `measure LABEL ROWS COMMAND...` runs COMMAND as a whole process and prints its wall seconds,
# ROWS per second (unless ROWS is "-") and peak RSS. Output of the command goes to $work/out and
# $work/err ($work must exist); a failure prints its stderr.
measure() {
  local label=$1 rows=$2
  shift 2
  local t0 t1 secs rss rate=""
  t0=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/rss" "$@" >"$work/out" 2>"$work/err" || { cat "$work/err" >&2; return 1; }
  t1=$(date +%s.%N)
  secs=$(awk "BEGIN{print $t1 - $t0}")
  rss=$(tail -1 "$work/rss")
  if [ "$rows" != "-" ]; then
    rate=$(awk "BEGIN{printf \"%10.0f rows/s\", $rows / $secs}")
  fi
  printf '%-34s %8.2f s  %s  peak %6.0f MiB\n' "$label" "$secs" "$rate" "$(awk "BEGIN{print $rss / 1024}")"
}

# `start_postgres [SETTING=VALUE...]` creates $work (a fresh temporary folder), starts a fresh
# cluster of Debian's postgresql package (or $HIGHWATER_PG_BIN) on a free port of 127.0.0.1 with
# fsync off and the given settings, and sets pg_bin and url; the cluster and $work go on exit.
start_postgres() {
  pg_bin=${HIGHWATER_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}
  work=$(mktemp -d)
  as_pg=()
  if [ "$(id -u)" = 0 ]; then
    chown postgres "$work"
    as_pg=(runuser -u postgres --)
  fi
  local port settings=""
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  for setting in "$@"; do settings="$settings -c $setting"; done
  trap stop_postgres EXIT
  "${as_pg[@]}" "$pg_bin/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/data" -l "$work/data/log" -w \
    -o "-p $port -k $work -c listen_addresses=127.0.0.1 -c fsync=off -c TimeZone=UTC$settings" start >/dev/null
  url="postgres://postgres@127.0.0.1:$port/postgres"
}

stop_postgres() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}

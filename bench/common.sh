# Sourced by the bench scripts. Sets repo, shared (../shared), cache (generated data) and
# CARGO_TARGET_DIR (default ~/.cache/highwater-target, as .ci/run), builds the release binary
# once and sets bin to it.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${SHARED_DIR:-$repo/../shared}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/highwater-target}
cache=${BENCH_CACHE:-$HOME/.cache/highwater-bench}
mkdir -p "$cache"
cargo build --release --workspace --all-targets --manifest-path "$repo/Cargo.toml" >&2
bin="$CARGO_TARGET_DIR/release/highwater"

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

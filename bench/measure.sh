# Sourced by the bench scripts: `measure LABEL ROWS COMMAND...` runs COMMAND as a whole process
# and prints its wall seconds, ROWS per second (unless ROWS is "-") and peak RSS. Output of the
# command goes to $work/out and $work/err ($work must exist); a failure prints its stderr.
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

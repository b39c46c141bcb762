#!/bin/sh
# `make fuzz`: builds one libFuzzer target per C entry point that reads network bytes
# (clang -fsanitize=fuzzer,address,undefined, the whole module linked in with Lua 5.4), then
# runs each for FUZZ_SECONDS (default 30) from its committed seed corpus (fuzz/corpus/<target>,
# copied to a scratch corpus so the repository is not touched). Prints per target its
# executions and crashes, then a summary line `fuzz: N targets, N executions, N crashes`.
# Exits non-zero on any crash, leak, sanitizer report or failed invariant.
#   FUZZ_SECONDS=60 sh fuzz/run.sh [target ...]
cd "$(dirname "$0")/.." || exit 2
SECS=${FUZZ_SECONDS:-30}
CLANG=${CLANG:-$(command -v clang || command -v clang-14)}
if [ -z "$CLANG" ] && [ "$(id -u)" = 0 ]; then apt-get install -y -qq clang >/dev/null 2>&1; CLANG=$(command -v clang); fi
[ -n "$CLANG" ] || { echo "clang missing: apt-get install -y clang" >&2; exit 1; }
OUT=build/fuzz
mkdir -p "$OUT/obj"
TARGETS=${*:-"json_decode retry_after content_type content_disposition content_range headers http1_head http1_chunked"}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CF="-O1 -g -fno-omit-frame-pointer -std=c99 -D_GNU_SOURCE -Isrc -I/usr/include/lua5.4"
LIBS="-llua5.4 -lcurl -lcrypto -lsqlite3 -lhiredis -ldl -lm"

# the module's sources, instrumented for coverage but without libFuzzer's main
objs=""
for c in src/*.c; do
  o="$OUT/obj/$(basename "$c" .c).o"
  if [ ! -f "$o" ] || [ "$c" -nt "$o" ] || [ -n "$(find src -name '*.h' -newer "$o")" ]; then
    $CLANG $CF $SAN -fsanitize=fuzzer-no-link -c "$c" -o "$o" || exit 1
  fi
  objs="$objs $o"
done

rc=0; total_exec=0; total_crash=0; n=0
report=""
for t in $TARGETS; do
  bin="$OUT/$t"
  $CLANG $CF $SAN -fsanitize=fuzzer -o "$bin" "fuzz/$t.c" $objs $LIBS || { rc=1; continue; }
  work="$OUT/corpus-$t"; arts="$OUT/crashes-$t"
  rm -rf "$work"; mkdir -p "$work" "$arts"
  [ -d "fuzz/corpus/$t" ] && cp fuzz/corpus/$t/* "$work"/ 2>/dev/null
  log="$OUT/$t.log"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$bin" -max_total_time="$SECS" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$arts/" "$work" >"$log" 2>&1
  code=$?
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -n 1)
  [ -n "$execs" ] || execs=$(grep -oE '#[0-9]+' "$log" | tail -n 1 | tr -d '#')
  [ -n "$execs" ] || execs=0
  crashes=$(ls "$arts" | wc -l)
  if [ "$code" -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
  n=$((n + 1)); total_exec=$((total_exec + execs)); total_crash=$((total_crash + crashes))
  status=ok
  if [ "$code" -ne 0 ] || [ "$crashes" -ne 0 ]; then
    status=FAILED; rc=1
    grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | head -20
  fi
  line=$(printf '%-20s %s executions, %s crashes, %s corpus entries, %s' "$t" "$execs" "$crashes" "$(ls "$work" | wc -l)" "$status")
  echo "fuzz target $line"
  report="$report$line\n"
done
printf "%b" "$report" >"$OUT/summary.txt"
echo "fuzz: $n targets, $total_exec executions, $total_crash crashes (${SECS}s each)"
exit $rc

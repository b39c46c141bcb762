#!/bin/sh
# Runs every suite of `make test`: busted under Lua 5.4 and under LuaJIT, the OpenResty specs,
# the memory check (valgrind), the ASan/UBSan suite (spec/asan.sh) and the fuzz targets
# (fuzz/run.sh, FUZZ_SECONDS=30 each, one test per target); prints each suite's counts and ends
# with one line `busted: N passed, N failed` (the totals). Exits non-zero on any failure.
cd "$(dirname "$0")/.." || exit 2
mkdir -p build
pass=0; fail=0; rc=0
summary=""

suite() { # name, command...
  name=$1; shift
  log=build/test-$name.log
  echo "== $name"
  "$@" >"$log" 2>&1
  code=$?
  cat "$log"
  # busted's closing line: "N successes / N failures / N errors / N pending : T seconds"
  line=$(grep -E '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$log" | tail -n 1)
  if [ -z "$line" ]; then
    echo "!! $name: no busted summary (exit $code)"
    fail=$((fail + 1)); rc=1
    summary="$summary\n$name: no summary"
    return
  fi
  s=$(echo "$line" | awk '{print $1}'); f=$(echo "$line" | awk '{print $4}'); e=$(echo "$line" | awk '{print $7}')
  pass=$((pass + s)); fail=$((fail + f + e))
  [ "$code" -ne 0 ] || [ $((f + e)) -ne 0 ] && rc=1
  summary="$summary\n$name: $s passed, $((f + e)) failed"
}

fuzzsuite() { # name, command...: libFuzzer has no busted summary; each target is one test
  name=$1; shift
  log=build/test-$name.log
  echo "== $name"
  "$@" >"$log" 2>&1
  code=$?
  cat "$log"
  s=$(grep -cE '^fuzz target .* ok$' "$log"); f=$(grep -cE '^fuzz target .* FAILED$' "$log")
  if [ $((s + f)) -eq 0 ]; then
    echo "!! $name: no fuzz target ran (exit $code)"
    fail=$((fail + 1)); rc=1
    summary="$summary\n$name: no targets"
    return
  fi
  [ "$code" -ne 0 ] && [ "$f" -eq 0 ] && f=1
  pass=$((pass + s)); fail=$((fail + f))
  [ "$f" -ne 0 ] && rc=1
  summary="$summary\n$name: $s passed, $f failed"
}

LPATH='./lua/?.lua;./lua/?/init.lua;./spec/?.lua;./examples/?.lua'
suite lua5.4 lua5.4 /usr/bin/busted -o utfTerminal --cpath='./build/lua5.4/?.so' spec
suite luajit luajit /usr/bin/busted -o utfTerminal --cpath='./build/luajit/?.so' spec
if ls spec/openresty/*_spec.lua >/dev/null 2>&1; then
  suite openresty luajit /usr/bin/busted -o utfTerminal --cpath='./build/luajit/?.so' --tags=openresty \
    --exclude-tags=none spec/openresty
fi
suite memcheck sh spec/memcheck.sh
suite asan sh spec/asan.sh
fuzzsuite fuzz env FUZZ_SECONDS="${FUZZ_SECONDS:-30}" sh fuzz/run.sh

printf "$summary\n"
echo "busted: $pass passed, $fail failed"
exit $rc

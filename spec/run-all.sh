#!/bin/sh
# Runs every suite of `make test`: busted under Lua 5.4 and under LuaJIT, the OpenResty specs,
# the ASan/UBSan suite (spec/asan.sh), the memory check (valgrind, spec/memcheck.sh) and the
# fuzz targets (fuzz/run.sh, FUZZ_SECONDS=20 each, one test per target) and the lint checks
# (spec/lint.sh: luacheck and the C warnings as errors, one test per check). Prints each suite's
# log and counts and ends with one line `busted: N passed, N failed` (the totals). Exits
# non-zero on any failure.
#
# The suites run in two waves on the two cores: first the four busted suites together (they
# mostly wait on short fake-provider schedules, so they share the CPU well), then valgrind in
# two halves and the fuzzers (CPU-bound, three jobs on two cores). SERIAL=1 runs everything one
# after another.
cd "$(dirname "$0")/.." || exit 2
mkdir -p build
pass=0; fail=0; rc=0
summary=""

start() { # name, command...: runs in the background; log and exit code under build/
  name=$1; shift
  rm -f "build/test-$name.log" "build/test-$name.rc"
  if [ -n "${SERIAL:-}" ]; then
    "$@" >"build/test-$name.log" 2>&1; echo $? >"build/test-$name.rc"
  else
    ( "$@" >"build/test-$name.log" 2>&1; echo $? >"build/test-$name.rc" ) &
  fi
}

count() { # name, kind (busted | fuzz | lint): prints the log, adds the counts to the totals
  name=$1; kind=$2
  log=build/test-$name.log
  code=$(cat "build/test-$name.rc" 2>/dev/null || echo 1)
  echo "== $name"
  cat "$log"
  if [ "$kind" != busted ]; then
    # no busted summary: each fuzz target (fuzz/run.sh) or lint check (spec/lint.sh) is one test
    prefix="fuzz target"; [ "$kind" = lint ] && prefix=lint
    s=$(grep -cE "^$prefix .* ok\$" "$log"); f=$(grep -cE "^$prefix .* FAILED\$" "$log")
    [ "$code" -ne 0 ] && [ "$f" -eq 0 ] && [ "$s" -gt 0 ] && f=1
  else
    # busted's closing line: "N successes / N failures / N errors / N pending : T seconds"
    line=$(grep -E '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$log" | tail -n 1)
    s=0; f=0
    if [ -n "$line" ]; then
      s=$(echo "$line" | awk '{print $1}')
      f=$(( $(echo "$line" | awk '{print $4}') + $(echo "$line" | awk '{print $7}') ))
      [ "$code" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    fi
  fi
  if [ $((s + f)) -eq 0 ]; then
    echo "!! $name: ran no test (exit $code)"
    f=1
  fi
  pass=$((pass + s)); fail=$((fail + f))
  [ "$f" -ne 0 ] && rc=1
  summary="$summary\n$name: $s passed, $f failed"
}

# Suites that run at once must not share a file: each gets TASKAPI_SUITE (its name), and a spec
# that writes a file of its own under build/ writes it under build/$TASKAPI_SUITE/ (the fault
# matrix does). Everything else a spec makes is under a fresh mktemp folder.
t0=$(date +%s)
start lua5.4 env TASKAPI_SUITE=lua5.4 lua5.4 /usr/bin/busted -o utfTerminal --cpath='./build/lua5.4/?.so' spec
start luajit env TASKAPI_SUITE=luajit luajit /usr/bin/busted -o utfTerminal --cpath='./build/luajit/?.so' spec
start openresty env TASKAPI_SUITE=openresty luajit /usr/bin/busted -o utfTerminal --cpath='./build/luajit/?.so' \
  --tags=openresty --exclude-tags=none spec/openresty
start asan env TASKAPI_SUITE=asan sh spec/asan.sh
start lint sh spec/lint.sh
wait
# valgrind in two halves side by side, each its own suite (TASKAPI_SUITE), so nothing they write
# is shared; with the fuzzers that is three jobs on two cores instead of valgrind alone on one
start memcheck env TASKAPI_SUITE=memcheck MEMCHECK_PART=1 sh spec/memcheck.sh
start memcheck2 env TASKAPI_SUITE=memcheck2 MEMCHECK_PART=2 sh spec/memcheck.sh
start fuzz env FUZZ_SECONDS="${FUZZ_SECONDS:-20}" sh fuzz/run.sh
wait

for s in lua5.4 luajit openresty asan memcheck memcheck2; do count $s busted; done
count fuzz fuzz
count lint lint

printf "$summary\n"
echo "all suites: $(( $(date +%s) - t0 )) s"
echo "busted: $pass passed, $fail failed"
exit $rc

#!/bin/sh
# `make memcheck`: the integration specs (the real C module over real HTTP against the nginx
# fake) under valgrind. Fails on any valgrind error or any definitely lost byte; prints the
# valgrind summary and busted's own closing line.
cd "$(dirname "$0")/.." || exit 2
# the suite's name: what a spec's own output files go under (build/memcheck/), see run-all.sh
TASKAPI_SUITE=${TASKAPI_SUITE:-memcheck}; export TASKAPI_SUITE
mkdir -p build
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install -y valgrind" >&2; exit 1; }
# MEMCHECK_PART=1 or 2 runs one half (make test runs both halves side by side, so valgrind,
# the slowest suite, takes half the time); unset: everything.
# (split so that the two take about the same valgrind time)
part1="spec/core_json_spec.lua spec/core_json_diff_spec.lua spec/core_transport_spec.lua spec/core_download_spec.lua spec/core_mime_spec.lua spec/core_crypto_spec.lua
  spec/core_body_file_spec.lua spec/core_redis_spec.lua spec/util_redis_spec.lua spec/ledger_spec.lua spec/download_safety_spec.lua"
part2="spec/integration_status_spec.lua spec/integration_create_upload_spec.lua spec/integration_download_spec.lua
  spec/integration_errors_spec.lua spec/core_http1_spec.lua spec/core_plain_spec.lua"
case "${MEMCHECK_PART:-}" in
  1) list=$part1 ;;
  2) list=$part2 ;;
  *) list="$part1 $part2" ;;
esac
specs=$(ls $list 2>/dev/null)
vlog=build/memcheck${MEMCHECK_PART:-}.valgrind.log
TASKAPI_MEMCHECK=1 valgrind --leak-check=full --show-leak-kinds=definite --errors-for-leak-kinds=definite \
  --error-exitcode=99 --log-file="$vlog" \
  lua5.4 /usr/bin/busted -o utfTerminal --cpath='./build/lua5.4/?.so' --exclude-tags=slow,big $specs
code=$?
grep -E "definitely lost|ERROR SUMMARY|Invalid|uninitialised|at 0x" "$vlog" | head -40
echo "valgrind: exit $code; $(grep -E 'ERROR SUMMARY' "$vlog" | tail -n 1 | sed 's/^==[0-9]*== //')"
[ "$code" -eq 99 ] && { echo "valgrind reported errors"; exit 1; }
exit $code

#!/bin/sh
# `make asan`: builds taskapi.core with AddressSanitizer + UndefinedBehaviorSanitizer into
# build/asan/taskapi/core.so (the normal builds are left alone) and runs the whole busted
# suite under lua5.4 with the sanitizer runtimes preloaded. Any ASan or UBSan report fails the
# run (halt_on_error, and the report log is checked afterwards too); prints busted's summary.
cd "$(dirname "$0")/.." || exit 2
# the suite's name: what a spec's own output files go under (build/asan/), see run-all.sh
TASKAPI_SUITE=${TASKAPI_SUITE:-asan}; export TASKAPI_SUITE
CC=${CC:-cc}
OUT=build/asan
mkdir -p "$OUT/taskapi"
$CC -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
  -Wall -Wextra -std=c99 -D_GNU_SOURCE -fPIC -shared -I/usr/include/lua5.4 \
  -o "$OUT/taskapi/core.so" src/*.c -lcurl -lcrypto -lsqlite3 -lhiredis || exit 1
# Child processes of the specs (nginx, curl, mktemp, sh) must not inherit the sanitizer
# runtime (their own leaks at exit are not ours): a tiny preloaded library takes LD_PRELOAD
# out of the environment once the interpreter has started with it.
printf '#include <stdlib.h>\n__attribute__((constructor)) static void unpreload(void) { unsetenv("LD_PRELOAD"); }\n' \
  >"$OUT/unpreload.c"
$CC -O1 -fPIC -shared -o "$OUT/unpreload.so" "$OUT/unpreload.c" || exit 1
ASAN_LIB=$($CC -print-file-name=libasan.so)
UBSAN_LIB=$($CC -print-file-name=libubsan.so)
[ -f "$ASAN_LIB" ] || { echo "libasan missing (gcc's libasan8)" >&2; exit 1; }
rm -f "$OUT"/report.*
# Reports go to files (one per process) so that nothing a child writes is lost; the run fails
# when any exists. detect_leaks=1: the interpreter closes its state at exit (busted ends with
# os.exit(code, true)), so what LSan reports would be ours.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:log_path=$PWD/$OUT/report"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87:log_path=$PWD/$OUT/report"
LD_PRELOAD="$ASAN_LIB${UBSAN_LIB:+:$UBSAN_LIB}:$PWD/$OUT/unpreload.so" \
  lua5.4 /usr/bin/busted -o utfTerminal --cpath="./$OUT/?.so" --exclude-tags=openresty,memcheck_only,big,crash ${ASAN_SPECS:-spec} >"$OUT/busted.log" 2>&1
code=$?
cat "$OUT/busted.log"
reports=$(ls "$OUT"/report.* 2>/dev/null)
ours=0
for r in $reports; do
  echo "-- sanitizer report $r"
  head -40 "$r"
  ours=$((ours + 1))
done
echo "asan: busted exit $code; $ours sanitizer report(s)"
[ "$ours" -eq 0 ] || exit 1
exit $code

#!/bin/sh
# make lint (and a suite of make test): luacheck over the Lua code, by .luacheckrc, and the
# C module compiled with the Makefile's warning set as errors for both runtimes. One line per
# check, "lint <name> ok" or "lint <name> FAILED"; exits non-zero when one failed.
cd "$(dirname "$0")/.." || exit 2
rc=0
check() { # name, command...
  name=$1; shift
  if "$@"; then echo "lint $name ok"; else echo "lint $name FAILED"; rc=1; fi
}
if ! command -v luacheck >/dev/null 2>&1; then
  echo "lint: luacheck is missing: apt-get install lua-check (or make deps)"
  echo "lint luacheck FAILED"
  exit 1
fi
check luacheck luacheck --no-color -q lua bin spec examples bench
for lua in lua5.4 luajit; do
  # a build of its own (never the suites' module), every file compiled again
  check "cc-$lua" make -s -B build LUA=$lua BUILD=build/lint-$lua CFLAGS="-O2 -Werror"
done
exit $rc

#!/bin/sh
# make bench: installs the peers if missing, then runs every case (bench/run.lua) and writes
# bench/results.md. Cases can be picked: sh bench/run.sh B1 B5
cd "$(dirname "$0")/.." || exit 2
missing=""
for p in wrk curl lua-socket lua-curl valgrind; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing:$missing"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null || {
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null; } || exit 1
  else
    echo "missing benchmark peers; run as root:  apt-get install -y$missing" >&2
    exit 1
  fi
fi
LUA_PATH='./?.lua;./lua/?.lua;./lua/?/init.lua;;'
LUA_CPATH_5_4='./build/lua5.4/?.so;;'
LUA_CPATH='./build/luajit/?.so;;'
export LUA_PATH LUA_CPATH_5_4 LUA_CPATH
lua5.4 bench/run.lua "$@"; rc=$?; lua5.4 bench/plot.lua || rc=1; exit $rc # [plot] bench/policy.svg, bench/ratios.svg

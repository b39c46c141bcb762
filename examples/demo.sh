#!/bin/sh
# make demo: runs examples/demo.lua with the built module of $LUA (lua5.4 or luajit).
cd "$(dirname "$0")/.." || exit 2
LUA=${LUA:-lua5.4}
export LUA_PATH="./lua/?.lua;./lua/?/init.lua;;"
export LUA_CPATH="./build/$LUA/?.so;;"
exec "$LUA" examples/demo.lua "${1:-demo-out}"

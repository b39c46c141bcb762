# taskapi: build, test, demo, benchmarks.
#   make            build taskapi.core for $(LUA) (lua5.4 by default; LUA=luajit for LuaJIT)
#   make test       install missing packages, build for both runtimes, run every suite
#   make demo       the whole workflow against the local fake provider
#   make memcheck   integration specs under valgrind
#   make asan       the suite against an ASan/UBSan build
#   make bench      benchmarks against peers (bench/results.md)
#   make lint       luacheck (.luacheckrc) and the C module with its warnings as errors
#   make install    install the module, the Lua layer and bin/taskapi under $(PREFIX)
#                   (share/lua/5.x, lib/lua/5.x, bin; the launcher runs under $(LUA))

LUA     ?= lua5.4
PREFIX  ?= /usr/local
CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wwrite-strings -Wcast-align
PKGS    := lua5.4 liblua5.4-dev libcurl4-openssl-dev lua-cjson lua-busted luajit2 \
           libluajit2-5.1-dev nginx libnginx-mod-http-lua lua-resty-core valgrind \
           openssl libssl-dev coreutils util-linux libsqlite3-dev \
           libhiredis-dev redis-server lua-nginx-redis \
           luarocks lua5.1 liblua5.1-0-dev \
           file pngcheck gifsicle webp libjpeg-turbo-progs python3-pil \
           chromium lua-check

ifeq ($(LUA),luajit)
  LUA_INC  ?= /usr/include/luajit-2.1
  LUA_VER  := 5.1
else
  # lua5.4 (default), lua5.3, lua5.1: Debian's headers live in /usr/include/<name>
  LUA_INC  ?= /usr/include/$(LUA)
  LUA_VER  := $(patsubst lua%,%,$(LUA))
endif

BUILD   := build/$(LUA)
MODULE  := $(BUILD)/taskapi/core.so
SRCS    := $(wildcard src/*.c)
HDRS    := $(wildcard src/*.h)

.PHONY: all build build-all deps test demo memcheck asan bench fuzz lint install clean fake-start fake-stop

all: build

build: $(MODULE)

$(MODULE): $(SRCS) $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) -std=c99 -D_GNU_SOURCE -fPIC -shared -I$(LUA_INC) \
	    -o $@ $(SRCS) -lcurl -lcrypto -lsqlite3 -lhiredis

build-all:
	$(MAKE) build LUA=lua5.4
	$(MAKE) build LUA=luajit

# Installs what is missing (as root), or says exactly what to install.
deps:
	@sh .ci/deps.sh $(PKGS)

test: deps build-all
	@sh spec/run-all.sh

demo: deps build
	@LUA=$(LUA) sh examples/demo.sh

memcheck: deps build
	@sh spec/memcheck.sh

asan: deps
	@sh spec/asan.sh

bench: deps build-all
	@sh bench/run.sh

fuzz: deps
	@sh fuzz/run.sh

lint: deps
	@sh spec/lint.sh

install: build
	install -d $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_VER)/taskapi $(DESTDIR)$(PREFIX)/share/lua/$(LUA_VER)/taskapi \
	    $(DESTDIR)$(PREFIX)/bin
	install -m 0644 $(MODULE) $(DESTDIR)$(PREFIX)/lib/lua/$(LUA_VER)/taskapi/core.so
	cd lua && find taskapi -name '*.lua' -exec install -D -m 0644 {} $(DESTDIR)$(PREFIX)/share/lua/$(LUA_VER)/{} \;
	# the launcher runs under the interpreter the module was built for
	sed '1s|^#!.*|#!/usr/bin/env $(LUA)|' bin/taskapi >$(DESTDIR)$(PREFIX)/bin/taskapi
	chmod 0755 $(DESTDIR)$(PREFIX)/bin/taskapi

clean:
	rm -rf build

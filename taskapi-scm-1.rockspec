rockspec_format = "3.0"
package = "taskapi"
version = "scm-1"
-- scm-1: the tip of the main branch, no tag (a release rockspec names a tag). `luarocks make`
-- in a checkout builds the files there and never fetches this.
source = {
  url = "git+https://github.com/taskapi/taskapi.git",
  branch = "main",
}
description = {
  summary = "Task status, waiting and result downloads for AI generation APIs (Tripo3D, SellerPic)",
  detailed = [[
taskapi reads the status of asynchronous generation tasks, waits for them with a polling
policy that respects each provider's limits, runs many waits at once on coroutines (plain Lua
or OpenResty), and streams results to disk in C without ever leaving half a file.
]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1.0",
}
-- libcurl, libcrypto and libsqlite3 come from the system (Debian: libcurl4-openssl-dev, libssl-dev,
-- libsqlite3-dev); their headers live in a
-- multiarch folder the compiler finds by itself, so no external_dependencies probe is made.
build = {
  type = "builtin",
  modules = {
    ["taskapi.core"] = {
      sources = {
        "src/core.c", "src/clock.c", "src/errors.c", "src/json.c", "src/parse.c",
        "src/pool.c", "src/sockets.c", "src/transport.c", "src/download.c", "src/mime.c",
        "src/crypto.c", "src/sqlite.c", "src/buf.c", "src/request.c", "src/result.c",
      },
      defines = { "_GNU_SOURCE" },
      libraries = { "curl", "crypto", "sqlite3" },
    },
    ["taskapi"] = "lua/taskapi/init.lua",
    ["taskapi.check"] = "lua/taskapi/check.lua",
    ["taskapi.client"] = "lua/taskapi/client.lua",
    ["taskapi.backend"] = "lua/taskapi/backend.lua",
    ["taskapi.download"] = "lua/taskapi/download.lua",
    ["taskapi.drive"] = "lua/taskapi/drive.lua",
    ["taskapi.errors"] = "lua/taskapi/errors.lua",
    ["taskapi.files"] = "lua/taskapi/files.lua",
    ["taskapi.handle"] = "lua/taskapi/handle.lua",
    ["taskapi.heap"] = "lua/taskapi/heap.lua",
    ["taskapi.http"] = "lua/taskapi/http.lua",
    ["taskapi.json"] = "lua/taskapi/json.lua",
    ["taskapi.ledger"] = "lua/taskapi/ledger.lua",
    ["taskapi.naming"] = "lua/taskapi/naming.lua",
    ["taskapi.ngx"] = "lua/taskapi/ngx.lua",
    ["taskapi.cosocket"] = "lua/taskapi/cosocket.lua",
    ["taskapi.provider"] = "lua/taskapi/provider.lua",
    ["taskapi.providers.tripo"] = "lua/taskapi/providers/tripo.lua",
    ["taskapi.providers.tripo_v2"] = "lua/taskapi/providers/tripo_v2.lua",
    ["taskapi.providers.sellerpic"] = "lua/taskapi/providers/sellerpic.lua",
    ["taskapi.scheduler"] = "lua/taskapi/scheduler.lua",
    ["taskapi.secret"] = "lua/taskapi/secret.lua",
    ["taskapi.wait"] = "lua/taskapi/wait.lua",
    ["taskapi.webhook"] = "lua/taskapi/webhook.lua",
    ["taskapi.upload"] = "lua/taskapi/upload.lua",
    ["taskapi.cli"] = "lua/taskapi/cli.lua",
    ["taskapi.fake"] = "lua/taskapi/fake/init.lua",
    ["taskapi.fake.model"] = "lua/taskapi/fake/model.lua",
    ["taskapi.fake.media"] = "lua/taskapi/fake/media.lua",
    ["taskapi.fake.inprocess"] = "lua/taskapi/fake/inprocess.lua",
    ["taskapi.fake.nginx"] = "lua/taskapi/fake/nginx.lua",
    ["taskapi.fake.server"] = "lua/taskapi/fake/server.lua",
    ["taskapi.fake.cli"] = "lua/taskapi/fake/cli.lua",
    ["taskapi.fake.webhook"] = "lua/taskapi/fake/webhook.lua",
  },
  install = {
    bin = { taskapi = "bin/taskapi" },
  },
}

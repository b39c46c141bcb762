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
-- libcurl, libcrypto, libsqlite3 and libhiredis come from the system (Debian: libcurl4-openssl-dev,
-- libssl-dev, libsqlite3-dev, libhiredis-dev); their headers live in a
-- multiarch folder the compiler finds by itself, so no external_dependencies probe is made.
build = {
  type = "builtin",
  modules = {
    ["taskapi.core"] = {
      sources = {
        "src/core.c", "src/clock.c", "src/errors.c", "src/json.c", "src/parse.c",
        "src/pool.c", "src/sockets.c", "src/transport.c", "src/download.c", "src/mime.c",
        "src/crypto.c", "src/sqlite.c", "src/redis.c", "src/buf.c", "src/request.c", "src/result.c",
        "src/http1.c", "src/lean.c",
      },
      defines = { "_GNU_SOURCE" },
      libraries = { "curl", "crypto", "sqlite3", "hiredis" },
    },
    ["taskapi"] = "lua/taskapi/init.lua",
    ["taskapi.api.check"] = "lua/taskapi/api/check.lua",
    ["taskapi.client"] = "lua/taskapi/client.lua",
    ["taskapi.run.backend"] = "lua/taskapi/run/backend.lua",
    ["taskapi.ops.download"] = "lua/taskapi/ops/download.lua",
    ["taskapi.run.drive"] = "lua/taskapi/run/drive.lua",
    ["taskapi.errors"] = "lua/taskapi/errors.lua",
    ["taskapi.util.files"] = "lua/taskapi/util/files.lua",
    ["taskapi.run.handle"] = "lua/taskapi/run/handle.lua",
    ["taskapi.util.heap"] = "lua/taskapi/util/heap.lua",
    ["taskapi.util.redis"] = "lua/taskapi/util/redis.lua",
    ["taskapi.api.http"] = "lua/taskapi/api/http.lua",
    ["taskapi.json"] = "lua/taskapi/json.lua",
    ["taskapi.ledger"] = "lua/taskapi/ledger.lua",
    ["taskapi.ledger.sqlite"] = "lua/taskapi/ledger/sqlite.lua",
    ["taskapi.ledger.redis"] = "lua/taskapi/ledger/redis.lua",
    ["taskapi.ops.naming"] = "lua/taskapi/ops/naming.lua",
    ["taskapi.run.ngx"] = "lua/taskapi/run/ngx.lua",
    ["taskapi.run.cosocket"] = "lua/taskapi/run/cosocket.lua",
    ["taskapi.api.provider"] = "lua/taskapi/api/provider.lua",
    ["taskapi.providers.tripo"] = "lua/taskapi/providers/tripo.lua",
    ["taskapi.providers.tripo_v2"] = "lua/taskapi/providers/tripo_v2.lua",
    ["taskapi.providers.sellerpic"] = "lua/taskapi/providers/sellerpic.lua",
    ["taskapi.run.scheduler"] = "lua/taskapi/run/scheduler.lua",
    ["taskapi.api.secret"] = "lua/taskapi/api/secret.lua",
    ["taskapi.ops.wait"] = "lua/taskapi/ops/wait.lua",
    ["taskapi.ops.claims"] = "lua/taskapi/ops/claims.lua",
    ["taskapi.ops.serve"] = "lua/taskapi/ops/serve.lua",
    ["taskapi.webhook"] = "lua/taskapi/webhook.lua",
    ["taskapi.ops.upload"] = "lua/taskapi/ops/upload.lua",
    ["taskapi.cli"] = "lua/taskapi/cli.lua",
    ["taskapi.fake"] = "lua/taskapi/fake/init.lua",
    ["taskapi.fake.model"] = "lua/taskapi/fake/model/init.lua",
    ["taskapi.fake.model.base"] = "lua/taskapi/fake/model/base.lua",
    ["taskapi.fake.model.store"] = "lua/taskapi/fake/model/store.lua",
    ["taskapi.fake.model.clock"] = "lua/taskapi/fake/model/clock.lua",
    ["taskapi.fake.model.faults"] = "lua/taskapi/fake/model/faults.lua",
    ["taskapi.fake.model.files"] = "lua/taskapi/fake/model/files.lua",
    ["taskapi.fake.model.multipart"] = "lua/taskapi/fake/model/multipart.lua",
    ["taskapi.fake.model.storage"] = "lua/taskapi/fake/model/storage.lua",
    ["taskapi.fake.model.tripo_task"] = "lua/taskapi/fake/model/tripo_task.lua",
    ["taskapi.fake.model.tripo"] = "lua/taskapi/fake/model/tripo.lua",
    ["taskapi.fake.model.tripo_v2"] = "lua/taskapi/fake/model/tripo_v2.lua",
    ["taskapi.fake.model.sellerpic"] = "lua/taskapi/fake/model/sellerpic.lua",
    ["taskapi.fake.model.control"] = "lua/taskapi/fake/model/control.lua",
    ["taskapi.fake.model.router"] = "lua/taskapi/fake/model/router.lua",
    ["taskapi.fake.media"] = "lua/taskapi/fake/media.lua",
    ["taskapi.fake.inprocess"] = "lua/taskapi/fake/inprocess.lua",
    ["taskapi.fake.process"] = "lua/taskapi/fake/process.lua",
    ["taskapi.fake.server"] = "lua/taskapi/fake/server.lua",
    ["taskapi.fake.cli"] = "lua/taskapi/fake/cli.lua",
    ["taskapi.fake.webhook"] = "lua/taskapi/fake/webhook.lua",
  },
  install = {
    bin = { taskapi = "bin/taskapi" },
  },
}

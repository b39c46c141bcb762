-- The rockspec lists every C source and every Lua module of the tree (the Makefile builds by
-- wildcard; `luarocks make` only builds what the rockspec names).
local files = require "taskapi.util.files"

describe("taskapi-scm-1.rockspec", function()
  local spec = {}
  setup(function()
    local chunk = assert(loadfile("taskapi-scm-1.rockspec", "t", spec))
    if setfenv then setfenv(chunk, spec) end
    chunk()
  end)

  it("builds taskapi.core from every file of src/", function()
    local listed = {}
    for _, f in ipairs(spec.build.modules["taskapi.core"].sources) do listed[f] = true end
    for f in files.sh("ls src/*.c"):gmatch("%S+") do
      assert.is_true(listed[f] == true, f .. " is not in the rockspec")
    end
  end)

  it("installs every Lua module of lua/", function()
    local by_file = {}
    for name, f in pairs(spec.build.modules) do if type(f) == "string" then by_file[f] = name end end
    for f in files.sh("find lua -name '*.lua' | sort"):gmatch("%S+") do
      local want = f:gsub("^lua/", ""):gsub("/init%.lua$", ""):gsub("%.lua$", ""):gsub("/", ".")
      assert.are.equal(want, by_file[f], f .. " is not installed as " .. want)
    end
    assert.are.equal("bin/taskapi", spec.build.install.bin.taskapi)
  end)

  it("links the system libraries the Makefile links (libcurl, libsqlite3, libhiredis)", function()
    local mk = files.read("Makefile")
    local linked = {}
    for lib in mk:match("%-o %$@ %$%(SRCS%)([^\n]*)"):gmatch("%-l([%w_]+)") do linked[#linked + 1] = lib end
    table.sort(linked)
    local listed = {}
    for _, lib in ipairs(spec.build.modules["taskapi.core"].libraries) do listed[#listed + 1] = lib end
    table.sort(listed)
    assert.same(linked, listed)
    for _, pkg in ipairs({ "libsqlite3-dev", "libhiredis-dev", "redis-server", "lua-nginx-redis" }) do
      assert.is_truthy(mk:find(pkg, 1, true), pkg .. " is not in the Makefile's PKGS")
    end
  end)
end)

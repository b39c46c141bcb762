-- OpenResty: the fleet in nginx (examples/openresty/fleet.conf and fleet.lua, with only the
-- port and the log/pid/temp paths changed): two nodes of two workers each share one private
-- redis-server (resty.redis on cosockets in ngx.timer light threads) and 200 tasks the spec
-- creates on the nginx fake (100 Tripo V3, 100 SellerPic); once a third of the results are
-- saved one node is killed with kill -9 (its master and its workers). Every task is finalized
-- and every result saved once with the served bytes, no task read twice within the minimum
-- interval (the fake's log: spec/support/fleet_log.lua).
local fe = require "support.fake_env"
local rs = require "support.redis"
local fl = require "support.fleet_log"
local example = require "openresty.example_app"

describe("a fleet of two nginx nodes on one Redis #openresty", function()
  local env, srv, dir, nodes

  setup(function()
    env = fe.start { ttl = 300 }
    srv = assert(rs.start { ttl = 300 })
    dir = fe.tmpdir()
    os.execute("chmod 0777 " .. fe.q(dir))
  end)
  teardown(function()
    for _, n in ipairs(nodes or {}) do n.stop() end
    if env then env:stop() end
    if srv then srv.stop() end
    if dir then fe.rmdir(dir) end
  end)

  it("a node killed with kill -9: every result saved once by the other", function()
    local url = srv.url()
    local vars = { TASKAPI_LEDGER = url, TASKAPI_MIN_INTERVAL = fl.MIN, TASKAPI_LEASE = 3, TASKAPI_OUT = dir }
    nodes = {}
    for i = 1, 2 do nodes[i] = example.start(env, dir, vars, { conf = "fleet.conf" }) end
    local mark = env:mark()
    local t0 = fe.now()
    local tasks, results = fl.create(env, url, 100)
    local numbers = { name = "openresty", workers = "2 nodes x 2 nginx workers", created = fe.now() - t0 }
    local done_at = fl.watch(dir, results, function(parts)
      local master = nodes[1].pid
      for pid in fe.sh("ps -o pid= --ppid " .. master):gmatch("%d+") do os.execute("kill -9 " .. pid) end
      os.execute("kill -9 " .. master)
      numbers.note = string.format("; part files when node 1 was killed %d", parts)
    end, 1 / 3, function() return true end)
    assert(done_at, "not every result was saved in 90 s: " .. fl.count_files(dir) .. " of " .. results ..
      "; node 2 said: " .. nodes[2].log():sub(-1500))
    numbers.wall = done_at - t0
    fl.check(env, mark, url, tasks, results, dir, fl.MIN, numbers)
    local counts = fe.sh("curl -s -m 5 " .. fe.q(nodes[2].url .. "/fleet/stats"))
    assert.truthy(counts:find('"finalized"', 1, true), counts)
    assert.equal("", (nodes[2].log():match("%[error%][^\n]*") or ""))
  end)
end)

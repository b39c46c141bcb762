-- taskapi.fake: the fake provider (a local stand-in for the SellerPic and Tripo3D task APIs).
--   fake.new(opts)   -> an in-process fake (taskapi.fake.inprocess): f:add_task, f.log,
--                       f.url, f:base_url(provider), f:transport()
--   fake.start(opts) -> the nginx-hosted fake (taskapi.fake.server): {url=, dir=, stop=, ...}
--   fake.model       -> taskapi.fake.model (the one model behind both)
local M = {}

local inprocess = require "taskapi.fake.inprocess"

M.model = require "taskapi.fake.model"
M.inprocess = inprocess
M.new = inprocess.new

function M.start(opts)
  return require("taskapi.fake.server").start(opts)
end

return M

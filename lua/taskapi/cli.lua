-- taskapi.cli: the `taskapi` command. Subcommands dispatch to the library; `fake` to the
-- fake provider's own command (taskapi.fake.cli).
local M = {}

local USAGE = [[
usage: taskapi <command> [options]

commands:
  fake start [--ttl S]   start the local fake provider on 127.0.0.1; prints its URL
  fake stop              stop it
  fake status            print its URL (exit 1 when none runs)
  help                   this text
]]

function M.main(args)
  args = args or {}
  local cmd = args[1]
  if cmd == "fake" then
    local rest = {}
    for i = 2, #args do rest[#rest + 1] = args[i] end
    return require("taskapi.fake.cli").main(rest)
  end
  if cmd == nil or cmd == "help" or cmd == "--help" or cmd == "-h" then
    io.stdout:write(USAGE)
    return cmd == nil and 2 or 0
  end
  io.stderr:write("taskapi: unknown command '" .. tostring(cmd) .. "'\n" .. USAGE)
  return 2
end

return M

-- luacheck (Debian's lua-check), run by `make lint`. The library runs on Lua 5.4 and LuaJIT
-- 2.1 (OpenResty): the standard is their union, plus nginx's `ngx` where it is present.
std = "max"
max_line_length = 160
self = false -- methods that ignore self keep it: the calling convention is the API
read_globals = { "jit", ngx = { other_fields = true, read_only = false } }

-- specs and the examples' specs: busted's globals. A spec reassigns a result it asserts
-- nothing of (311), takes callback arguments it ignores (212), and replaces
-- coroutine.resume for a moment to inject a failure (122).
files["spec"] = { std = "+busted", ignore = { "311", "212", "122" } }
files["examples/*_spec.lua"] = { std = "+busted" }

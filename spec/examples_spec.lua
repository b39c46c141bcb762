-- Runs the specs of examples/ (the example workflow and the README's testing example) as
-- part of `make test`, whose busted ROOT is spec/. Each file runs in this file's busted
-- environment (describe, it, assert).
local env = _ENV or getfenv(1)
for _, f in ipairs({ "examples/workflow_spec.lua", "examples/test_your_workflow_spec.lua",
    "examples/acme_provider_spec.lua" }) do
  local chunk = assert(loadfile(f, "t", env))
  if setfenv then setfenv(chunk, env) end
  chunk()
end

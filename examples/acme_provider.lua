-- examples/acme_provider.lua: a provider definition for an API the library does not ship, as
-- the README's "Writing a provider definition" shows it. The made-up "Acme" API:
--   GET  /jobs/{id}         -> {"status": 0, "result": {"phase": "rendering", "percent": 40,
--                                "files": [{"name": "preview", "href": "https://..."}]}}
--   POST /jobs              -> {"status": 0, "result": {"job": "<id>"}}
--   an error                -> {"status": <code>, "reason": "..."} with an HTTP error status
-- Everything else (ids checked before any request, retries, polling, downloads with part files,
-- errors that never show the key) comes from the library.
return {
  name = "acme",
  base_url = "https://api.acme.invalid/v1",
  key_env = "ACME_API_KEY",     -- taskapi.new reads the key from here when api_key is absent
  id_syntax = "token",          -- URL-safe strings ("digits": int64 ids, kept exact)
  min_interval = 5,             -- never poll one job faster than this
  status_path = "/jobs/{id}",
  create_path = "/jobs", create_result = "job",
  -- where the envelope keeps its code (0 = ok), its message and its payload
  envelope = { code = "status", message = "reason", data = "result" },
  -- provider codes whose meaning differs from their HTTP status: {kind, retryable}
  codes = { [42] = { "rate_limited", true } },
  -- the provider's states -> the library's (anything else is "unknown", finalized)
  states = { waiting = "queued", rendering = "running", done = "succeeded", error = "failed" },
  read_task = function(d)
    local outputs = {}
    for _, f in ipairs(type(d.files) == "table" and d.files or {}) do
      outputs[#outputs + 1] = { name = f.name, url = f.href, kind = "image" }
    end
    return {
      status = d.phase, progress = d.percent, outputs = outputs,
      error = d.phase == "error" and { code = d.code, message = d.why } or nil,
    }
  end,
}

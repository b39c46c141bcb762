-- Integration: failures of the API over real HTTP against the nginx fake, for both providers:
-- transient ones retried (5xx, 429 with Retry-After in seconds or as a date, HTML gateway
-- pages, truncated JSON), permanent ones returned at once (401, another key's task), and the
-- error values themselves (one line, never the API key).
local fe = require "support.fake_env"

describe("integration: errors", function()
  local env

  setup(function() env = fe.start() end)
  teardown(function() if env then env:stop() end end)

  for _, p in ipairs(fe.PROVIDERS) do
    describe(p, function()
      local c
      setup(function() c = env:client(p) end)

      local add = env:adder(p)

      it("survives two server errors (three retries)", function()
        local id = add { server_errors = 2 }
        local mark = env:mark()
        local task, err = c:status(id)
        assert.is_nil(err)
        assert.equal("succeeded", task.state)
        assert.equal(3, #fe.status_requests(env:log(mark), id))
      end)

      it("gives up after retries + 1 attempts of a persistent server error", function()
        local id = add { server_errors = 10 }
        local mark = env:mark()
        local task, err = c:status(id)
        assert.is_nil(task)
        fe.check_err(err, "server")
        assert.is_true(err.retryable)
        assert.equal(500, err.status)
        assert.equal(id, err.task_id)
        assert.equal(4, #fe.status_requests(env:log(mark), id))
        -- retries = 1: two attempts
        local c1 = env:client(p, { retries = 1 })
        local id2 = add { server_errors = 10 }
        mark = env:mark()
        task, err = c1:status(id2)
        assert.is_nil(task)
        fe.check_err(err, "server")
        assert.equal(2, #fe.status_requests(env:log(mark), id2))
      end)

      it("honours Retry-After in seconds on a 429", function()
        local id = add { rate_limit = { count = 1, retry_after = 1 } }
        local mark = env:mark()
        local t0 = fe.now()
        local task, err = c:status(id)
        local took = fe.now() - t0
        assert.is_nil(err)
        assert.equal("succeeded", task.state)
        assert.equal(2, #fe.status_requests(env:log(mark), id))
        assert.is_true(took >= 0.9, "retried after " .. took .. " s")
        if fe.FAST then assert.is_true(took < 3, "retried after " .. took .. " s") end
      end)

      it("honours Retry-After given as an HTTP date", function()
        local id = add { rate_limit = { count = 1, retry_after = 2, as_date = true } }
        local mark = env:mark()
        local t0 = os.time()
        local c0 = fe.now()
        local task, err = c:status(id)
        local took = fe.now() - c0
        assert.is_nil(err)
        assert.equal("succeeded", task.state)
        local reqs = fe.status_requests(env:log(mark), id)
        assert.equal(2, #reqs)
        -- the date is at most 3 s ahead, at whole seconds: loose bounds
        assert.is_true(os.time() - t0 >= 1, "did not wait for the date")
        assert.is_true(took >= 0.9, "retried after " .. took .. " s")
        if fe.FAST then assert.is_true(took < 5, "retried after " .. took .. " s") end
      end)

      it("ends with rate_limited at once when Retry-After exceeds max_retry_after", function()
        local cm = env:client(p, { max_retry_after = 2 })
        local id = add { rate_limit = { count = 1, retry_after = 30 } }
        local mark = env:mark()
        local t0 = fe.now()
        local task, err = cm:status(id)
        assert.is_nil(task)
        fe.check_err(err, "rate_limited")
        assert.equal(429, err.status)
        assert.equal(30, err.retry_after)
        assert.equal(1, #fe.status_requests(env:log(mark), id))
        if fe.FAST then assert.is_true(fe.now() - t0 < 2) end
      end)

      it("retries an HTML 502 gateway page and reports a persistent one as 'server'", function()
        local id = add { html_error = 1 }
        local task, err = c:status(id)
        assert.is_nil(err)
        assert.equal("succeeded", task.state)
        local id2 = add { html_error = 10 }
        local mark = env:mark()
        task, err = c:status(id2)
        assert.is_nil(task)
        fe.check_err(err, "server")
        assert.equal(502, err.status)
        assert.is_true(err.retryable)
        assert.truthy(err.message:find("502", 1, true))
        assert.equal(4, #fe.status_requests(env:log(mark), id2))
      end)

      it("retries truncated JSON under HTTP 200 and reports a persistent one as bad_response", function()
        local id = add { malformed_json = 1 }
        local mark = env:mark()
        local task, err = c:status(id)
        assert.is_nil(err)
        assert.equal("succeeded", task.state)
        assert.equal(2, #fe.status_requests(env:log(mark), id))
        local id2 = add { malformed_json = 10 }
        mark = env:mark()
        task, err = c:status(id2)
        assert.is_nil(task)
        fe.check_err(err, "bad_response")
        assert.equal(200, err.status)
        assert.equal(4, #fe.status_requests(env:log(mark), id2))
      end)

      it("fails with 'auth' at once on a wrong key (one request, no retry)", function()
        local bad = env:client(p, { api_key = "wrong-key-42" })
        local id = add {}
        local mark = env:mark()
        local task, err = bad:status(id)
        assert.is_nil(task)
        fe.check_err(err, "auth")
        assert.equal(401, err.status)
        assert.is_false(err.retryable)
        assert.is_nil(tostring(err):find("wrong-key-42", 1, true))
        local reqs = env:log(mark)
        assert.equal(1, #reqs)
        assert.is_true(reqs[1].authorization)
        assert.equal("wrong-key-42", reqs[1].key)
        -- the same for other calls
        mark = env:mark()
        local id3, err3 = bad:create { type = fe.is_tripo(p) and "text_to_model" or "instructEdit", model_version = "v3.1-20260211" }
        assert.is_nil(id3)
        fe.check_err(err3, "auth")
        local b, err4 = bad:balance()
        assert.is_nil(b)
        fe.check_err(err4, "auth")
        assert.equal(2, #env:log(mark))
      end)

      it("reports another key's task as not_found at once", function()
        local id = add { owner_key = "other-key" }
        local mark = env:mark()
        local task, err = c:status(id)
        assert.is_nil(task)
        fe.check_err(err, "not_found")
        assert.equal(404, err.status)
        assert.equal(fe.is_tripo(p) and 2001 or 404, err.code)
        assert.is_false(err.retryable)
        assert.equal(id, err.task_id)
        assert.equal(1, #env:log(mark))
        -- its owner sees it
        local other = env:client(p, { api_key = "other-key" })
        assert.equal("succeeded", assert(other:status(id)).state)
      end)

      it("carries the trace id of the failed response", function()
        local c0 = env:client(p, { retries = 0 })
        local id = add { server_errors = 1 }
        local task, err = c0:status(id)
        assert.is_nil(task)
        fe.check_err(err, "server")
        assert.truthy(err.trace_id and err.trace_id:match("^fake%-trace%-%x+$"), tostring(err.trace_id))
        assert.truthy(tostring(err):find(err.trace_id, 1, true))
      end)

      it("reports a transport failure (nothing listening) as retryable 'transport'", function()
        local dead = env:client(p, { base_url = "http://127.0.0.1:1/x", retries = 1 })
        local task, err = dead:status(fe.is_tripo(p) and "abc" or "123")
        assert.is_nil(task)
        fe.check_err(err, "transport")
        assert.is_true(err.retryable)
      end)

      it("reports a response that is not the expected shape as bad_response", function()
        local c0 = env:client(p, { retries = 0 })
        for _, shape in ipairs({ "missing", "null", "array", "string" }) do
          local id = add { wrong_shape = shape }
          local task, err = c0:status(id)
          if p == "sellerpic" and shape == "array" then
            -- an empty data array is read as a task without results yet
            assert.is_table(task)
          else
            assert.is_nil(task, shape)
            fe.check_err(err, "bad_response")
          end
        end
      end)
    end)
  end

  describe("error values", function()
    it("print on one line without the API key, whatever their kind", function()
      local seen = {}
      local function note(err)
        fe.check_err(err)
        seen[err.kind] = true
      end
      for _, p in ipairs(fe.PROVIDERS) do
        local c = env:client(p, { retries = 0 })
        local add = env:adder(p)
        note(select(2, c:status(add { server_errors = 3 })))
        note(select(2, c:status(add { html_error = 3 })))
        note(select(2, c:status(add { malformed_json = 3 })))
        note(select(2, c:status(add { owner_key = "other-key" })))
        note(select(2, c:status(fe.is_tripo(p) and "a\nb" or "1\n2")))
        note(select(2, c:download(add { queue = 30 }, { dir = "/tmp" })))
        note(select(2, c:download(add { final = fe.is_tripo(p) and "failed" or "FAILED" }, { dir = "/tmp" })))
        note(select(2, env:client(p, { api_key = "test-key-revoked" }):status(add {})))
        note(select(2, c:wait(add { queue = 30 }, { timeout = 0.2 })))
        note(select(2, c:create { type = "bad type" }))
      end
      for _, k in ipairs({ "server", "bad_response", "not_found", "invalid_argument", "task_failed", "auth", "timeout" }) do
        assert.is_true(seen[k], "no " .. k .. " error seen")
      end
    end)
  end)
end)

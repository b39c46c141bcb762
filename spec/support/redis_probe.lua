-- spec/support/redis_probe.lua: one run of taskapi.util.redis's API (replies of every type,
-- error replies, a pipeline, eval and its NOSCRIPT reload, the URL's database), as a table
-- that prints the same from both backends: the spec runs it in its own process (the C
-- binding) and inside nginx (resty.redis on cosockets), and compares (spec/openresty/redis_spec.lua).
return function(redis, url)
  local function e(err) -- an error's shape
    return err and { kind = err.kind, message = err.message, code = err.code, retryable = err.retryable } or nil
  end
  local function null(v) return v == redis.null and "<null>" or v end
  local out = {}
  local r, cerr = redis.connect(url)
  if not r then return { connect = e(cerr) } end
  out.flush = r:call("FLUSHDB")
  out.set = r:call("SET", "bin\0key", "a\0b\r\n")
  out.get = r:call("GET", "bin\0key")
  out.missing = null(r:call("GET", "nope"))
  out.num = { r:call("SET", "n", 2 ^ 53), r:call("GET", "n"), r:call("SET", "f", 0.1), r:call("GET", "f") }
  out.incr = r:call("INCRBY", "i", 41)
  out.list = { r:call("RPUSH", "l", "a", "b", 3), r:call("LRANGE", "l", 0, -1) }
  out.mget = r:call("MGET", "nope", "i")
  out.mget[1] = null(out.mget[1])
  local nested = r:call("EVAL", "return {1, 'two', {3, {}}, redis.error_reply('MINE no')}", 0)
  nested[4] = e(nested[4])
  out.nested = nested
  local v, err = r:call("LPUSH", "i", "x")
  out.wrongtype = { v, e(err) }
  v, err = r:call("NOSUCHCOMMAND")
  out.unknown = { v, e(err) }
  local p = r:pipeline({ { "SET", "p", 1 }, { "INCR", "p" }, { "HGET", "p", "f" }, { "GET", "nope" } })
  p[3], p[4] = e(p[3]), null(p[4])
  out.pipeline = p
  v, err = r:pipeline({ { "SET", "p", true } })
  out.bad_pipeline = { v, e(err) }
  v, err = r:call("SET", "k", {})
  out.bad_call = { v, e(err) }
  local script = "return {KEYS[1], ARGV[1]}"
  out.eval = { r:eval(script, { "k" }, { "a" }) }
  out.flush_scripts = r:call("SCRIPT", "FLUSH")
  out.eval_again = { r:eval(script, { "k2" }, { 7 }) }
  v, err = r:eval("return redis.error_reply('NOPE x')", {}, {})
  out.eval_err = { v, e(err) }
  out.db = r:call("CLIENT", "INFO"):match(" db=(%d+)")
  r:close()
  v, err = r:call("PING")
  out.closed = { v, e(err) }
  return out
end

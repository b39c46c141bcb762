-- taskapi.json: the encoder shared by the fake provider and the client.
local json = require "taskapi.json"
local cjson = require "cjson"

describe("taskapi.json.encode", function()
  it("encodes scalars", function()
    assert.equal("true", json.encode(true))
    assert.equal("false", json.encode(false))
    assert.equal("null", json.encode(nil))
    assert.equal("null", json.encode(json.null))
    assert.equal("null", json.encode(cjson.null))
    assert.equal('"abc"', json.encode("abc"))
  end)

  it("keeps integers integers", function()
    assert.equal("0", json.encode(0))
    assert.equal("42", json.encode(42))
    assert.equal("-7", json.encode(-7))
    assert.equal("3", json.encode(3.0))
    assert.equal("9007199254740991", json.encode(2 ^ 53 - 1))
    assert.equal("1700000000", json.encode(1700000000))
    if math.type then
      assert.equal("9223372036854775807", json.encode(math.maxinteger))
      assert.equal("1869254713398571010", json.encode(1869254713398571010))
    end
  end)

  it("encodes non-integers so that they read back exactly", function()
    assert.equal("0.5", json.encode(0.5))
    assert.equal("0.1", json.encode(0.1))
    for _, v in ipairs({ 1 / 3, 2 ^ 60, -1e-300, 123456.789, 2 ^ 53 + 2 }) do
      assert.equal(v, tonumber(json.encode(v)))
    end
  end)

  it("refuses NaN and infinities", function()
    for _, v in ipairs({ 0 / 0, math.huge, -math.huge }) do
      local s, err = json.encode({ x = v })
      assert.is_nil(s)
      assert.matches("cannot encode", err)
    end
  end)

  it("escapes strings correctly", function()
    assert.equal('"a\\"b\\\\c"', json.encode('a"b\\c'))
    assert.equal('"\\u000a\\u0009\\u0000\\u001f"', json.encode("\n\t\0\31"))
    assert.equal('"a/b"', json.encode("a/b"))
    assert.equal('"h\195\169"', json.encode("h\195\169"))
    local s = "x\1y\"z\\\127"
    assert.equal(s, cjson.decode(json.encode({ s = s })).s)
  end)

  it("tells arrays from objects", function()
    assert.equal("[1,2,3]", json.encode({ 1, 2, 3 }))
    assert.equal("{}", json.encode({}))
    assert.equal("[]", json.encode(json.array()))
    assert.equal("[]", json.encode(json.array({})))
    assert.equal('["a"]', json.encode(json.array({ "a" })))
    assert.equal('{"a":1,"b":[true,null]}', json.encode({ b = { true, json.null }, a = 1 }))
  end)

  it("sorts object keys", function()
    assert.equal('{"a":1,"b":2,"c":3,"d":4}', json.encode({ d = 4, c = 3, b = 2, a = 1 }))
  end)

  it("refuses non-string keys in objects and sparse arrays", function()
    assert.is_nil(json.encode({ [1] = 1, [3] = 3 }))
    assert.is_nil(json.encode({ 1, x = 2 }))
    assert.is_nil(json.encode({ [true] = 1 }))
    assert.is_nil(json.encode({ [1.5] = 1 }))
  end)

  it("emits raw number literals verbatim", function()
    assert.equal('{"id":1869254713398571010}', json.encode({ id = json.raw("1869254713398571010") }))
    assert.equal("[-12.5e3]", json.encode({ json.raw("-12.5e3") }))
    assert.has_error(function() json.raw("12a") end)
    assert.has_error(function() json.raw("") end)
  end)

  it("refuses cycles and depth over 100", function()
    local t = {}
    t.self = t
    local s, err = json.encode(t)
    assert.is_nil(s)
    assert.matches("cycle", err)
    local deep = {}
    local cur = deep
    for _ = 1, 100 do cur[1] = {}; cur = cur[1] end
    s, err = json.encode(deep)
    assert.is_nil(s)
    assert.matches("deeper", err)
    local ok = {}
    cur = ok
    for _ = 1, 98 do cur[1] = {}; cur = cur[1] end
    assert.is_string(json.encode(ok))
    -- a shared (non-cyclic) subtable is fine
    local shared = { 1 }
    assert.equal('{"a":[1],"b":[1]}', json.encode({ a = shared, b = shared }))
  end)

  it("refuses functions and userdata", function()
    assert.is_nil(json.encode({ f = print }))
    assert.is_nil(json.encode(io.stdout))
  end)

  it("round-trips through cjson", function()
    local v = { name = "x", list = { 1, 2.5, "s", false }, nested = { a = { b = { c = "d" } } } }
    assert.same(v, cjson.decode(json.encode(v)))
  end)
end)

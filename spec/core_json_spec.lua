-- taskapi.core: JSON decoding (src/json.c: strict RFC 8259, exact big integers, integers on
-- 5.3+, limits; core_json_diff_spec.lua compares it with lua-cjson) and the pure header parsers.
local core = require "taskapi.core"

local is54 = math.type ~= nil

-- Each text of list gives nil, err (kind bad_response, a message).
local function refuses(list)
  for _, s in ipairs(list) do
    local v, err = core.json_decode(s)
    assert.is_nil(v, s)
    assert.are.equal("bad_response", err.kind, s)
    assert.is_string(err.message)
  end
end

describe("core.json_decode", function()
  it("keeps integer literals beyond 2^53 exact, as strings", function()
    local v = assert(core.json_decode('{"id": 1869254713398571010, "ids": [1869254713398571011]}'))
    assert.are.equal("1869254713398571010", v.id)
    assert.are.equal("1869254713398571011", v.ids[1])
  end)

  it("keeps negative big integers exact", function()
    local v = assert(core.json_decode('{"n": -1869254713398571010}'))
    assert.are.equal("-1869254713398571010", v.n)
  end)

  it("puts the limit at 2^53: 9007199254740992 stays a number, 9007199254740993 a string", function()
    local v = assert(core.json_decode('[9007199254740992, 9007199254740993, -9007199254740993, 123456789012345]'))
    assert.are.equal("number", type(v[1]))
    assert.are.equal(9007199254740992, v[1])
    assert.are.equal("9007199254740993", v[2])
    assert.are.equal("-9007199254740993", v[3])
    assert.are.equal(123456789012345, v[4])
  end)

  it("leaves digits inside strings (and escaped quotes) untouched", function()
    local v = assert(core.json_decode('{"s": "1869254713398571010", "e": "a\\"1869254713398571010", "k": 5}'))
    assert.are.equal("1869254713398571010", v.s)
    assert.are.equal('a"1869254713398571010', v.e)
    assert.are.equal(5, v.k)
  end)

  it("gives integers for integral numbers: progress 1 never prints as 1.0", function()
    local v = assert(core.json_decode('{"progress": 1, "zero": 0, "neg": -7, "big": 4503599627370496}'))
    assert.are.equal(1, v.progress)
    assert.are.equal("1", string.format("%s", v.progress))
    assert.are.equal("1", tostring(v.progress))
    assert.are.equal("-7", tostring(v.neg))
    if is54 then
      assert.are.equal("integer", math.type(v.progress))
      assert.are.equal("integer", math.type(v.zero))
      assert.are.equal("integer", math.type(v.big))
    end
  end)

  it("normalizes nested values and a bare number on 5.3+", function()
    local v = assert(core.json_decode('{"a": [{"b": [1, 2.0, 3]}]}'))
    assert.are.equal("2", tostring(v.a[1].b[2]))
    local n = assert(core.json_decode("42"))
    assert.are.equal("42", tostring(n))
    if is54 then assert.are.equal("integer", math.type(n)) end
  end)

  it("keeps floats as floats", function()
    local v = assert(core.json_decode('{"f": 1.5, "g": -0.25, "e": 1.5e-3}'))
    assert.are.equal(1.5, v.f)
    assert.are.equal(-0.25, v.g)
    assert.are.equal(0.0015, v.e)
    if is54 then assert.are.equal("float", math.type(v.f)) end
  end)

  it("decodes null as core.null", function()
    local v = assert(core.json_decode('{"x": null}'))
    assert.are.equal(core.null, v.x)
  end)

  it("refuses malformed JSON with kind bad_response", function()
    refuses({ "{bad", "", "[1,2", '{"a":}', "NaN", "0x10", "<html>502</html>" })
  end)

  it("is strict RFC 8259: no '1.', '.5', leading zeros, NaN, trailing commas or bytes", function()
    refuses({ "1.", ".5", "01", "-01", "+1", "1e", "1e+", "-", "1.e5", "0x1", "Infinity", "-Infinity",
      "nan", "[1,]", '{"a":1,}', "[1 2]", "'a'", '{"a" 1}', '{a:1}', "tru", "nul", "1 2", "{} x", "[", "]",
      '"abc', '"\\x"', '"\\u12"', '"\\u12G4"', "\239\187\191{}" })
  end)

  it("refuses raw control characters and lone surrogates in strings", function()
    refuses({ '"a\nb"', '"a\0b"', '"\t"', '"\\ud800"', '"\\udc00"', '"\\ud800\\u0041"', '"\\ude00\\ud83d"',
      '"\\ud83d"' })
  end)

  it("decodes every escape, \\u as UTF-8 and surrogate pairs as one code point", function()
    local v = assert(core.json_decode('["\\"\\\\\\/\\b\\f\\n\\r\\t", "\\u0041\\u00e9\\u20ac\\ud83d\\ude00", "\\u0000", "caf\195\169"]'))
    assert.are.equal('"\\/\b\f\n\r\t', v[1])
    assert.are.equal("A\195\169\226\130\172\240\159\152\128", v[2])
    assert.are.equal("\0", v[3])
    assert.are.equal("caf\195\169", v[4]) -- other bytes as they are
  end)

  it("gives +0 for every zero on every runtime (LuaJIT never sees -0)", function()
    for _, s in ipairs({ "-0", "-0.0", "-0e5", "0", "-1e-400" }) do
      local v = core.json_decode(s)
      assert.are.equal(0, v, s)
      assert.are.equal(math.huge, 1 / v, s)
    end
  end)

  it("gives +-inf past the double range, floats correctly rounded", function()
    assert.are.equal(math.huge, core.json_decode("1e400"))
    assert.are.equal(-math.huge, core.json_decode("-1.5e999"))
    assert.are.equal(0.1, core.json_decode("0.1"))
    assert.are.equal(1.7976931348623157e308, core.json_decode("1.7976931348623157e308"))
    assert.are.equal(5e-324, core.json_decode("4.9406564584124654e-324"))
    assert.are.equal(123456.789, core.json_decode(" \t\r\n123456.789 \n"))
    assert.are.equal(0.30000000000000004, core.json_decode("0.30000000000000004"))
    assert.are.equal(9007199254740993e10, core.json_decode("9007199254740993e10"))
  end)

  it("reads long exponents and long runs of leading zeros exactly (the text, not a capped count)", function()
    local zeros = string.rep("0", 100000)
    assert.are.equal(1e9, core.json_decode("0." .. zeros .. "1e100010"))
    assert.are.equal(math.huge, core.json_decode("0." .. zeros .. "1e1000010"))
    assert.are.equal(5e9, core.json_decode("0." .. string.rep("0", 1500) .. "5e1510"))
    assert.are.equal(1000, core.json_decode("1e0000000000000000000000003"))
    assert.are.equal(0, core.json_decode("1e-99999999999"))
  end)

  it("keeps duplicate keys' last value and decodes big containers at their size", function()
    assert.are.equal(2, core.json_decode('{"a":1,"a":2}').a)
    local parts, keys = {}, {}
    for i = 1, 1000 do
      parts[i] = tostring(i)
      keys[i] = '"k' .. i .. '":' .. i
    end
    local a = assert(core.json_decode("[" .. table.concat(parts, ",") .. "]"))
    assert.are.equal(1000, #a)
    assert.are.equal(1000, a[1000])
    local o = assert(core.json_decode("{" .. table.concat(keys, ",") .. "}"))
    assert.are.equal(1000, o.k1000)
    assert.are.equal(16, o.k16)
    assert.are.equal(17, o.k17)
  end)

  it("refuses 10,000-deep nesting without crashing", function()
    local deep = string.rep("[", 10000) .. string.rep("]", 10000)
    local v, err = core.json_decode(deep)
    assert.is_nil(v)
    assert.are.equal("bad_response", err.kind)
    local obj = string.rep('{"a":', 10000) .. "1" .. string.rep("}", 10000)
    v, err = core.json_decode(obj)
    assert.is_nil(v)
    assert.are.equal("bad_response", err.kind)
  end)

  it("accepts 1,000 levels of nesting and refuses 1,001", function()
    assert.is_table(core.json_decode(string.rep("[", 1000) .. string.rep("]", 1000)))
    local v, err = core.json_decode(string.rep("[", 1001) .. string.rep("]", 1001))
    assert.is_nil(v)
    assert.truthy(err.message:find("deep", 1, true))
  end)

  it("accepts nesting of 900 levels", function()
    local v = assert(core.json_decode(string.rep("[", 900) .. "1" .. string.rep("]", 900)))
    for _ = 1, 899 do v = v[1] end
    assert.are.equal(1, v[1])
  end)

  it("refuses a body over max_bytes before decoding", function()
    local s = '{"a":"' .. string.rep("x", 200) .. '"}'
    local v, err = core.json_decode(s, 100)
    assert.is_nil(v)
    assert.are.equal("bad_response", err.kind)
    assert.truthy(err.message:find("100", 1, true))
    assert.is_table(core.json_decode(s, 1000))
    local big = '"' .. string.rep("y", 8 * 1024 * 1024) .. '"'
    v, err = core.json_decode(big)
    assert.is_nil(v)
    assert.are.equal("bad_response", err.kind)
  end)

  it("is not affected by the global cjson's settings", function()
    local ok, cjson = pcall(require, "cjson")
    if not ok then return pending("cjson missing") end
    cjson.decode_max_depth(5)
    local v = core.json_decode(string.rep("[", 50) .. string.rep("]", 50))
    cjson.decode_max_depth(1000)
    assert.is_table(v)
  end)
end)

describe("core.set_error_metatable", function()
  it("applies the metatable to C errors once set", function()
    local mt = { __tostring = function(e) return "E(" .. e.kind .. ")" end }
    core.set_error_metatable(mt)
    local _, err = core.json_decode("{")
    assert.are.equal(mt, getmetatable(err))
    assert.are.equal("E(bad_response)", tostring(err))
    core.set_error_metatable(nil)
    _, err = core.json_decode("{")
    assert.is_nil(getmetatable(err))
  end)
end)

describe("core.parse_retry_after", function()
  it("reads delta-seconds", function()
    assert.are.equal(120, core.parse_retry_after("120"))
    assert.are.equal(0, core.parse_retry_after(" 0 "))
    assert.are.equal(86400, core.parse_retry_after("99999999999999999999"))
  end)
  it("reads an HTTP-date relative to now", function()
    local now = 1445412400 -- 2015-10-21 07:26:40 UTC
    assert.are.equal(80, core.parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now))
    assert.are.equal(0, core.parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now))
    assert.are.equal(86400, core.parse_retry_after("Wed, 21 Oct 2025 07:28:00 GMT", now))
  end)
  it("gives nil for negative or garbage values", function()
    for _, s in ipairs({ "-5", "", "abc", "12abc", "1.5", "  ", string.rep("9", 100) .. "x" }) do
      assert.is_nil(core.parse_retry_after(s, 0), s)
    end
    assert.is_nil(core.parse_retry_after(nil))
  end)
end)

describe("core.parse_content_type", function()
  it("lower-cases type/subtype and strips parameters", function()
    assert.are.equal("application/json", core.parse_content_type("Application/JSON; charset=UTF-8"))
    assert.are.equal("text/html", core.parse_content_type("  text/html  "))
    assert.are.equal("model/gltf-binary", core.parse_content_type("model/gltf-binary"))
  end)
  it("rejects malformed values", function()
    for _, s in ipairs({ "", "json", "/json", "application/", "a b/c", "text/html x", "te\0xt/html" }) do
      assert.is_nil(core.parse_content_type(s), s)
    end
  end)
end)

describe("core.parse_content_disposition", function()
  it("reads filename= and prefers filename*=UTF-8''", function()
    assert.are.equal("model.glb", core.parse_content_disposition('attachment; filename="model.glb"'))
    assert.are.equal("plain.png", core.parse_content_disposition("attachment; filename=plain.png"))
    assert.are.equal("na\xc3\xafve file.png",
      core.parse_content_disposition([[attachment; filename="fallback.png"; filename*=UTF-8''na%C3%AFve%20file.png]]))
  end)
  it("strips directory parts, .. and leading dots", function()
    local cases = {
      ['attachment; filename="../../etc/passwd"'] = "passwd",
      ['attachment; filename="..\\\\..\\\\win.ini"'] = "win.ini",
      ["attachment; filename*=UTF-8''%2e%2e%2f%2e%2e%2fevil.sh"] = "evil.sh",
      ['attachment; filename=".bashrc"'] = "bashrc",
      ['attachment; filename="a..b.txt"'] = "a.b.txt",
    }
    for header, want in pairs(cases) do
      local got = core.parse_content_disposition(header)
      assert.are.equal(want, got, header)
      if got then
        assert.is_nil(got:find("/", 1, true))
        assert.is_nil(got:find("..", 1, true))
        assert.is_nil(got:find("\\", 1, true))
      end
    end
  end)
  it("replaces control characters and gives nil for empty names", function()
    assert.are.equal("a_b", core.parse_content_disposition("attachment; filename*=UTF-8''a%0Ab"))
    assert.is_nil(core.parse_content_disposition('attachment; filename=".."'))
    assert.is_nil(core.parse_content_disposition('attachment; filename="x/"'))
    assert.is_nil(core.parse_content_disposition('attachment; filename="../.."'))
    assert.is_nil(core.parse_content_disposition('attachment; filename=""'))
    assert.is_nil(core.parse_content_disposition("attachment"))
    assert.is_nil(core.parse_content_disposition("inline; name=x"))
  end)
  it("caps the length at 255 bytes", function()
    local got = core.parse_content_disposition('attachment; filename="' .. string.rep("a", 1000) .. '.bin"')
    assert.is_true(#got <= 255)
  end)
end)

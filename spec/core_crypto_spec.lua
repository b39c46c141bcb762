-- taskapi.core's hashing (src/crypto.c): HMAC-SHA256 against the test cases of RFC 4231,
-- SHA-256 against the FIPS 180-2 examples, the same digests of files streamed in 64 KiB
-- blocks, and the constant-time comparison.
local core = require "taskapi.core"
local files = require "taskapi.util.files"

local function unhex(h) return (h:gsub("%x%x", function(b) return string.char(tonumber(b, 16)) end)) end
local function bytes(from, to)
  local t = {}
  for i = from, to do t[#t + 1] = string.char(i) end
  return table.concat(t)
end

describe("core.hmac_sha256 (RFC 4231)", function()
  local cases = {
    { "1", string.rep("\11", 20), "Hi There",
      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
    { "2", "Jefe", "what do ya want for nothing?",
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
    { "3", string.rep("\170", 20), string.rep("\221", 50),
      "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
    { "4", bytes(1, 25), string.rep("\205", 50),
      "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
    { "6 (key longer than a block)", string.rep("\170", 131), "Test Using Larger Than Block-Size Key - Hash Key First",
      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
    { "7 (key and data longer than a block)", string.rep("\170", 131),
      "This is a test using a larger than block-size key and a larger than block-size data. " ..
      "The key needs to be hashed before being used by the HMAC algorithm.",
      "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
  }
  for _, c in ipairs(cases) do
    it("test case " .. c[1], function()
      assert.are.equal(c[4], core.hmac_sha256(c[2], c[3]))
    end)
  end

  it("test case 5: the first 128 bits", function()
    assert.are.equal("a3b6167473100ee06e0c796c2955552b",
      core.hmac_sha256(string.rep("\12", 20), "Test With Truncation"):sub(1, 32))
  end)

  it("takes keys and messages with NUL bytes and empty ones", function()
    local a = core.hmac_sha256("k\0ey", "m\0sg")
    assert.are_not.equal(a, core.hmac_sha256("k", "m\0sg"))
    assert.are_not.equal(a, core.hmac_sha256("k\0ey", "m"))
    -- HMAC-SHA256 with an empty key of an empty message (a widely published value)
    assert.are.equal("b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad", core.hmac_sha256("", ""))
  end)

  it("raises on a non-string argument", function()
    assert.has_error(function() core.hmac_sha256(nil, "x") end)
    assert.has_error(function() core.hmac_sha256("k", {}) end)
  end)
end)

describe("core.sha256 (FIPS 180-2)", function()
  it("hashes the standard examples", function()
    assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", core.sha256("abc"))
    assert.are.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      core.sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", core.sha256(""))
    assert.are.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
      core.sha256(string.rep("a", 1000000)))
  end)

  it("gives 64 lowercase hex digits", function()
    assert.truthy(core.sha256("\0\255"):match("^[0-9a-f]+$"))
    assert.are.equal(64, #core.sha256("\0\255"))
    assert.are.equal(32, #unhex(core.sha256("x")))
  end)
end)

describe("core.sha256_file", function()
  local dir
  setup(function() dir = files.tmpdir("taskapi-crypto") end)
  teardown(function() if dir then files.rmdir(dir) end end)

  it("streams a file of many 64 KiB blocks to the digest of its bytes", function()
    local path = dir .. "/million"
    assert(files.write(path, string.rep("a", 1000000)))
    assert.are.equal("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", core.sha256_file(path))
  end)

  it("agrees with core.sha256 at the block boundaries and on an empty file", function()
    for _, n in ipairs({ 0, 1, 65535, 65536, 65537, 3 * 65536 }) do
      local s = string.rep("0123456789abcdef\0", math.ceil(n / 17)):sub(1, n)
      local path = dir .. "/f" .. n
      assert(files.write(path, s))
      assert.are.equal(core.sha256(s), core.sha256_file(path), "size " .. n)
    end
  end)

  it("answers nil and an io error naming the file when it cannot be read", function()
    local h, err = core.sha256_file(dir .. "/missing")
    assert.is_nil(h)
    assert.are.equal("io", err.kind)
    assert.truthy(err.message:find("missing", 1, true), err.message)
    assert.truthy(err.message:find("No such file", 1, true), err.message)
    h, err = core.sha256_file(dir)
    assert.is_nil(h)
    assert.are.equal("io", err.kind)
    assert.truthy(err.message:find("directory", 1, true), err.message)
  end)
end)

describe("core.equal", function()
  it("is true for equal strings only", function()
    assert.is_true(core.equal("", ""))
    assert.is_true(core.equal(core.sha256("a"), core.sha256("a")))
    assert.is_true(core.equal("a\0b", "a\0b"))
    assert.is_false(core.equal("a\0b", "a\0c"))
    assert.is_false(core.equal("abc", "abd"))
    assert.is_false(core.equal("abc", "ab"))
    assert.is_false(core.equal("", "a"))
    local h = core.sha256("a")
    assert.is_false(core.equal(h, h:sub(1, 63) .. (h:sub(64) == "0" and "1" or "0")))
  end)

  it("raises on a non-string argument", function()
    assert.has_error(function() core.equal("a", nil) end)
  end)
end)

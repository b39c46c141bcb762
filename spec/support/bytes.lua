-- Deterministic test bytes of every value 0..255: byte i is (7 i + floor(i / 256)) mod 256.
-- The sequence repeats every 65,536 bytes, so one block is built byte by byte and a longer
-- run is that block repeated (a 3 MiB body costs one string.rep, not three million calls:
-- the specs that use it also run under valgrind).
local block
return function(n)
  if not block then
    local t = {}
    for i = 1, 65536 do t[i] = string.char((i * 7 + math.floor(i / 256)) % 256) end
    block = table.concat(t)
  end
  if n <= 65536 then return block:sub(1, n) end
  return string.rep(block, math.ceil(n / 65536)):sub(1, n)
end

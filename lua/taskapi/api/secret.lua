-- taskapi.api.secret: where a client's API key and the headers that carry it live: a private,
-- weak-keyed table, so printing, iterating or serializing a client never shows the key.
local store = setmetatable({}, { __mode = "k" })

local M = {}

function M.set(client, key)
  store[client] = {
    key = key,
    headers = { "Authorization: Bearer " .. key, "Accept: application/json" },
    json_headers = { "Authorization: Bearer " .. key, "Accept: application/json", "Content-Type: application/json" },
  }
end

function M.get(client)
  return store[client]
end

return M

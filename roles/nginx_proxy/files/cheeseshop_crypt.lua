-- Managed by Ansible (cheeseshop.pypi.nginx_proxy): the password hash check, run in nginx's
-- thread pool (ngx.run_worker_thread) so that a bcrypt check, about 50 ms, never holds up a
-- worker's other requests. Each pool thread loads this module in a Lua state of its own.
local ffi = require("ffi")

ffi.cdef([[ char *crypt_rn(const char *phrase, const char *setting, void *data, int size); ]])
-- Versioned name: a minimal system has no unversioned libcrypt.so (that comes with -dev).
local libcrypt = ffi.load("libcrypt.so.1")
-- crypt() keeps its answer in one static buffer, shared by the threads; crypt_rn() writes into
-- this thread's own (libxcrypt's struct crypt_data is 32 KiB).
local SIZE = 32768
local data = ffi.new("char[?]", SIZE)

local M = {}

-- True when the password gives the hash.
function M.matches(password, hash)
  local result = libcrypt.crypt_rn(password, hash, data, SIZE)
  return result ~= nil and ffi.string(result) == hash
end

return M

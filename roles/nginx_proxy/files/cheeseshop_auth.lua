-- Managed by Ansible (cheeseshop.pypi.nginx_proxy): HTTP Basic authentication for nginx
-- that verifies a password hash once and then remembers the verified credential.
--
-- nginx's auth_basic runs crypt() on every request: with bcrypt that is about 50 ms of a
-- worker each time. Here a credential is verified with libcrypt (the same library auth_basic
-- uses, called through LuaJIT's FFI) in nginx's thread pool, so that the worker serves other
-- requests meanwhile (cheeseshop_crypt.lua), then remembered in a shared dictionary:
--   * keyed by a salted digest of the Authorization header, never by the header itself;
--   * bound to the current content of the users file: any change to it (a user removed, a
--     password changed) makes every remembered credential for that file unknown at once.
--     Each worker re-reads the file at most once a second, so a removal takes effect within
--     about a second of the file changing, on every path;
--   * for at most REMEMBER seconds in any case;
--   * only successes are remembered. Failures are counted per client address, and past
--     FAIL_LIMIT in FAIL_WINDOW seconds that address gets 429 without any crypt() call, held
--     back FAIL_DELAY seconds (FAIL_HOLD of them at a time per address), so a flood of wrong
--     passwords cannot stall the workers or crowd out valid users. Remembered credentials pass before this check, from any address.
local M = {
  REFRESH = 1,
  REMEMBER = 60,
  FAIL_LIMIT = 20,
  FAIL_WINDOW = 60,
  FAIL_DELAY = 1,
  FAIL_HOLD = 64,
  REALM = "private Python package index",
  THREAD_POOL = "cheeseshop_crypt",
}

-- Checked when the name is unknown, so that a wrong name costs what a wrong password costs and
-- the time of an answer does not tell which names exist. No password gives this hash.
local DUMMY_HASH = "$2b$10$OcDymhgO6KN35LqkEHFSpuN4i9nNRMn3CjqKv5prUbTRtOXKwAJlm"

local shared = ngx.shared.pypi_auth
local files = {}   -- per worker: path -> { users = {name = hash}, digest = ..., read_at = ... }
local salt         -- per nginx start, shared by the workers (set in init, before the fork)

function M.init(settings)
  for key, value in pairs(settings or {}) do
    M[key] = value
  end
  local random = assert(io.open("/dev/urandom", "rb"))
  salt = random:read(32)
  random:close()
end

local function users_of(path)
  local now = ngx.now()
  local known = files[path]
  if known and now - known.read_at < M.REFRESH then
    return known
  end
  local handle = io.open(path, "r")
  if not handle then
    return nil
  end
  local content = handle:read("*a")
  handle:close()
  local digest = ngx.md5(content)
  if known and known.digest == digest then
    known.read_at = now
    return known
  end
  local users = {}
  for line in content:gmatch("[^\r\n]+") do
    local name, hash = line:match("^([^:#][^:]*):(.+)$")
    if name then
      users[name] = hash
    end
  end
  known = { users = users, digest = digest, read_at = now }
  files[path] = known
  return known
end

local function challenge()
  ngx.header["WWW-Authenticate"] = 'Basic realm="' .. M.REALM .. '"'
  return ngx.exit(ngx.HTTP_UNAUTHORIZED)
end

-- The access check for one request against one htpasswd file.
function M.check(path)
  local header = ngx.var.http_authorization
  if not header then
    return challenge()
  end
  local file = users_of(path)
  if not file then
    ngx.log(ngx.ERR, "cheeseshop auth: cannot read ", path)
    return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
  end
  local key = "ok:" .. file.digest .. ngx.sha1_bin(salt .. header)
  local user = shared:get(key)
  if user then
    return
  end
  local failures_key = "fail:" .. ngx.var.binary_remote_addr
  if (shared:get(failures_key) or 0) >= M.FAIL_LIMIT then
    -- Held before the answer (the worker serves others meanwhile): a flooding client then waits
    -- instead of making the server answer thousands of 429s a second in place of real users.
    -- At most FAIL_HOLD requests per address are held at once, so that one address cannot tie
    -- up the workers' connections; beyond that the 429 is immediate.
    local held_key = "held:" .. ngx.var.binary_remote_addr
    local held = shared:incr(held_key, 1, 0, M.FAIL_WINDOW)
    if held and held <= M.FAIL_HOLD then
      ngx.sleep(M.FAIL_DELAY)
    end
    shared:incr(held_key, -1, 1, M.FAIL_WINDOW)
    ngx.header["Retry-After"] = tostring(M.FAIL_WINDOW)
    return ngx.exit(ngx.HTTP_TOO_MANY_REQUESTS)
  end
  local encoded = header:match("^%s*[Bb][Aa][Ss][Ii][Cc]%s+(%S+)%s*$")
  local decoded = encoded and ngx.decode_base64(encoded)
  local name, password
  if decoded then
    name, password = decoded:match("^([^:]*):(.*)$")
  end
  local hash = name and file.users[name]
  -- One check per credential at a time: requests that bring the same header meanwhile (a
  -- client's parallel downloads, all connections after a reload) wait for its outcome instead
  -- of queueing 50 ms checks of their own in the thread pool.
  local pending_key = "pending:" .. key
  if not shared:add(pending_key, true, 5) then
    while shared:get(pending_key) do
      ngx.sleep(0.005)
    end
    if shared:get(key) then
      return
    end
    if shared:get("bad:" .. key) then
      shared:incr(failures_key, 1, 0, M.FAIL_WINDOW)
      return challenge()
    end
    -- No outcome within the pending entry's 5 s: check it here.
  end
  local matches = false
  if password and not password:find("\0", 1, true) then
    local ran, result = ngx.run_worker_thread(M.THREAD_POOL, "cheeseshop_crypt", "matches",
                                              password, hash or DUMMY_HASH)
    if not ran then
      shared:delete(pending_key)
      ngx.log(ngx.ERR, "cheeseshop auth: the password check did not run: ", result)
      return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
    end
    matches = hash and result
  end
  if matches then
    shared:set(key, name, M.REMEMBER)
  else
    -- Only for the requests already waiting on this check, never for later ones.
    shared:set("bad:" .. key, true, 1)
    shared:incr(failures_key, 1, 0, M.FAIL_WINDOW)
  end
  shared:delete(pending_key)
  if not matches then
    return challenge()
  end
end

return M

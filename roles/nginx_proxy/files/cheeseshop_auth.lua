-- Managed by Ansible (cheeseshop.pypi.nginx_proxy): HTTP Basic authentication for nginx
-- that verifies a password hash once and then remembers the verified credential.
--
-- nginx's auth_basic runs crypt() on every request: with bcrypt that is about 50 ms of a
-- worker each time. Here a credential is verified with libcrypt (the same library auth_basic
-- uses, called through LuaJIT's FFI) in nginx's thread pool, so that the worker serves other
-- requests meanwhile (cheeseshop_crypt.lua), then remembered in a shared dictionary:
--   * keyed by a salted digest of the decoded name and password, never by the header itself:
--     every spelling of one credential ("basic", extra spaces) is the same key, so no reader
--     can make the server check its password again and again;
--   * bound to the current content of the users file: any change to it (a user removed, a
--     password changed) makes every remembered credential for that file unknown at once.
--     Each worker re-reads the file at most once a second, so a removal takes effect within
--     about a second of the file changing, on every path;
--   * verified again after REMEMBER seconds; a credential verified within SEEN seconds (with
--     any content of the file: a new user or a new password of another changes nothing) is
--     "known" and is never barred by failures, as below;
--   * kept across nginx reloads (the salt and the dictionary outlive a reload).
-- Only successes are remembered. Failures are counted per user name: from one client address
-- (FAIL_LIMIT in FAIL_WINDOW seconds) and from all addresses together (ACCOUNT_FAIL_LIMIT).
-- A check of a credential that is not known takes its failure in advance, before it waits for
-- a thread, and gives it back when the password matches: however many checks run at once,
-- no more than the limits run. Past the per-address limit, or past the account's limit from
-- an address that has failed for that name, the answer is 429 without any crypt() call, held
-- back FAIL_DELAY seconds (FAIL_HOLD of them at a time per address). An address that has not
-- failed for the name still gets one check per FAIL_DELAY seconds for it (shared by all such
-- addresses): a burst elsewhere never locks a valid user out. Many clients share one address
-- (a NAT, a CI runner, a load balancer): one client's wrong passwords never bar another user's
-- name, and a known credential passes whatever the flood. Requests that bring a credential
-- whose check is running wait for its outcome instead of starting checks of their own. At
-- most CHECKS_PER_ADDRESS password checks of one address run at a time, so that one address
-- cannot take every thread of the pool.
-- Two dictionaries: `pypi_auth` holds the salt and the verified credentials, and is written only
-- after a password matched, so no one without a password can push a remembered credential
-- out. `pypi_auth_limits` holds the counters, which anyone can add to (a name and an address
-- per request); they are added without evicting anything (safe_add). When it is full, a count
-- that cannot be kept is a refusal: a credential that is not known gets 429 until entries
-- expire (FAIL_WINDOW at most), and a known one still passes. Evicting counters would have
-- let a flood of new names and addresses wipe out the failures counted against a name.
--
-- Tokens (docs/tokens.md): a password that reads "cheeseshop_<name>.<secret>" is a token, with
-- any user name. Its entry is found by its name in the index's tokens file, which holds the
-- SHA-256 of each token and the second it expires, checked at every request. A token is long
-- and random, so one SHA-256 checks it: no thread pool, no wait. Its failures count as a
-- user's do, under its name; a right token passes whatever the count.
local M = {
  REFRESH = 1,
  REMEMBER = 60,
  SEEN = 7 * 86400,
  FAIL_LIMIT = 20,
  ACCOUNT_FAIL_LIMIT = 100,
  FAIL_WINDOW = 60,
  FAIL_DELAY = 1,
  FAIL_HOLD = 64,
  CHECKS_PER_ADDRESS = 4,
  REALM = "private Python package index",
  THREAD_POOL = "cheeseshop_crypt",
  AUDIT_PER_SECOND = 10,
}

-- Checked when the name is unknown, so that a wrong name costs what a wrong password costs and
-- the time of an answer does not tell which names exist. No password gives this hash.
local DUMMY_HASH = "$2b$10$OcDymhgO6KN35LqkEHFSpuN4i9nNRMn3CjqKv5prUbTRtOXKwAJlm"
-- Longer names are not looked up (htpasswd names are short); they count as failures.
local MAX_NAME = 256

local ffi = require("ffi")
-- nginx is linked with OpenSSL's libcrypto, so its one-shot SHA256() is at hand.
pcall(ffi.cdef, "unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);")
pcall(ffi.cdef, [[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len, const unsigned char *d, size_t n,
                    unsigned char *md, unsigned int *md_len);
]])
local sha256_out = ffi.new("unsigned char[32]")
local hmac_length = ffi.new("unsigned int[1]")
-- A token's text: "cheeseshop_", its name, ".", its secret.
local TOKEN = "^cheeseshop_([%w][%w_%-]*)%.(%w+)$"

local shared = ngx.shared.pypi_auth
local limits = ngx.shared.pypi_auth_limits
local full_logged_at = 0
local files = {}   -- per worker: path -> { users = {name = hash}, digest = ..., read_at = ... }
local salt         -- shared by the workers and kept across reloads (set in init, before the fork)

function M.init(settings)
  for key, value in pairs(settings or {}) do
    M[key] = value
  end
  -- init runs again at every reload, while the dictionary keeps its content: the salt of the
  -- first start stays, and with it every remembered credential.
  if not shared:get("salt") then
    local random = assert(io.open("/dev/urandom", "rb"))
    shared:add("salt", random:read(32))
    random:close()
  end
  salt = shared:get("salt")
end

-- A file's parsed content, per worker: read again at most once a second, parsed again only when
-- its content changed (then a new table: what was remembered in the old one goes with it).
-- nil when the file cannot be read, unless missing is the content to assume when it does not
-- exist (a file that exists but cannot be read is always nil: a mistake to report, not a state).
local function parsed(path, parse, missing)
  local now = ngx.now()
  local known = files[path]
  if known and now - known.read_at < M.REFRESH then
    return known
  end
  local handle, _, code = io.open(path, "r")
  if not handle and not (missing and code == 2) then   -- 2: ENOENT
    return nil
  end
  local content = handle and handle:read("*a") or missing
  if handle then
    handle:close()
  end
  local digest = ngx.md5(content)
  if known and known.digest == digest then
    known.read_at = now
    return known
  end
  known = parse(content)
  known.digest, known.read_at = digest, now
  files[path] = known
  return known
end

-- An htpasswd file: users = { name = hash }.
local function parse_users(content)
  local users = {}
  for line in content:gmatch("[^\r\n]+") do
    local name, hash = line:match("^([^:#][^:]*):(.+)$")
    if name then
      users[name] = hash
    end
  end
  return { users = users }
end

local function users_of(path)
  return parsed(path, parse_users)
end

-- The tokens of an index: name -> { digest = the SHA-256 (32 bytes), expires = epoch seconds }.
-- A missing file has no tokens.
-- verified: salted SHA-1 of a token's text -> true, once its SHA-256 matched, for as long as
-- the file is unchanged: OpenSSL 3's one-shot SHA256() fetches its algorithm on every call,
-- which cost a tenth of the hot page's rate. Only right tokens are added, so its size is
-- bounded by the file's.
local function parse_tokens(content)
  local tokens = {}
  for line in content:gmatch("[^\r\n]+") do
    local name, hex, expires = line:match("^([^:]+):(%x+):(%d+)$")
    if name and #hex == 64 then
      tokens[name] = { digest = hex:gsub("%x%x", function(pair) return string.char(tonumber(pair, 16)) end),
                       expires = tonumber(expires) }
    end
  end
  return { tokens = tokens, verified = {} }
end

local function tokens_of(path)
  return parsed(path, parse_tokens, "")
end

-- An index's minting key (trusted publishing): its tokens are "oidc-<publisher>-<expires>-<nonce>"
-- with the HMAC-SHA256 of that name as their secret, in hex. A missing file: no minted token.
local function parse_key(content)
  return { key = content:match("^%s*(%x+)%s*$") or "", verified = {} }
end

local function hmac_hex(key, text)
  ffi.C.HMAC(ffi.C.EVP_sha256(), key, #key, text, #text, sha256_out, hmac_length)
  return (ffi.string(sha256_out, 32):gsub(".", function(byte) return string.format("%02x", byte:byte()) end))
end

local function sha256(text)
  ffi.C.SHA256(text, #text, sha256_out)
  return ffi.string(sha256_out, 32)
end

local function challenge()
  ngx.header["WWW-Authenticate"] = 'Basic realm="' .. M.REALM .. '"'
  return ngx.exit(ngx.HTTP_UNAUTHORIZED)
end

-- Name and password of a Basic header, or nil when it is not one.
local function credential(header)
  local encoded = header:match("^%s*[Bb][Aa][Ss][Ii][Cc]%s+(%S+)%s*$")
  local decoded = encoded and ngx.decode_base64(encoded)
  if not decoded then
    return nil
  end
  local name, password = decoded:match("^([^:]*):(.*)$")
  if not name or #name > MAX_NAME or password:find("\0", 1, true) then
    return nil
  end
  return name, password
end

local function full()
  local now = ngx.now()
  if now - full_logged_at >= 10 then
    full_logged_at = now
    ngx.log(ngx.WARN, "cheeseshop auth: the failure counters' memory is full; credentials that ",
            "are not known get 429 until entries expire")
  end
end

-- Adds step to a counter, made with a life of ttl seconds when new, and returns its value; nil
-- when the dictionary is full (safe_add evicts nothing). A step down on a counter that is gone
-- changes nothing.
local function bump(key, step, ttl)
  local value = limits:incr(key, step)
  if value or step < 0 then
    return value
  end
  local added, err = limits:safe_add(key, step, ttl)
  if added then
    return step
  end
  if err == "exists" then
    return limits:incr(key, step)
  end
  full()
  return nil
end

-- The counters a failure of this name from this address adds to.
local function failure_keys(name)
  local address = ngx.var.binary_remote_addr
  return "fail:" .. address .. name, "failname:" .. name, "held:" .. address
end

-- The two counts after the step, or nil when a count up could not be kept (then neither is
-- changed, so that a later step down undoes only what was counted).
local function count(name, step)
  local mine_key, account_key = failure_keys(name)
  local mine = bump(mine_key, step, M.FAIL_WINDOW)
  if not mine and step > 0 then
    return nil
  end
  local account = bump(account_key, step, M.FAIL_WINDOW)
  if not account and step > 0 then
    bump(mine_key, -step)
    return nil
  end
  return mine or 0, account or 0
end

local function failed(name)
  count(name, 1)
  return challenge()
end

-- Takes one failure of this name in advance, before its check waits for a thread; false (and
-- nothing taken) when a limit forbids the check.
local function reserve(name)
  local mine, account = count(name, 1)
  if not mine then
    return false
  end
  if mine <= M.FAIL_LIMIT and account <= M.ACCOUNT_FAIL_LIMIT then
    return true
  end
  -- Over the account's limit only, from an address with no failure for this name: the slow lane.
  if mine == 1 and limits:safe_add("slow:" .. name, true, M.FAIL_DELAY) then
    return true
  end
  count(name, -1)
  return false
end

local function barred()
  local _, _, held_key = failure_keys("")
  -- Held before the answer (the worker serves others meanwhile): a flooding client then waits
  -- instead of making the server answer thousands of 429s a second in place of real users.
  -- At most FAIL_HOLD requests per address are held at once, so that one address cannot tie
  -- up the workers' connections; beyond that the 429 is immediate.
  local held = bump(held_key, 1, M.FAIL_WINDOW)
  if held and held <= M.FAIL_HOLD then
    ngx.sleep(M.FAIL_DELAY)
  end
  if held then
    bump(held_key, -1)
  end
  ngx.header["Retry-After"] = tostring(M.FAIL_WINDOW)
  return ngx.exit(ngx.HTTP_TOO_MANY_REQUESTS)
end

-- Runs the hash check in the thread pool, at most CHECKS_PER_ADDRESS at a time per address. A
-- known credential is checked even when the counters' memory is full.
local function verify(password, hash, known)
  local busy_key = "busy:" .. ngx.var.binary_remote_addr
  local waited = 0
  local busy = bump(busy_key, 1, 30)
  while busy and busy > M.CHECKS_PER_ADDRESS do
    bump(busy_key, -1)
    if waited >= 10 then
      return nil, "too many checks in flight from one address"
    end
    ngx.sleep(0.01)
    waited = waited + 0.01
    busy = bump(busy_key, 1, 30)
  end
  if not busy and not known then
    return nil, "the failure counters' memory is full"
  end
  local ran, result = ngx.run_worker_thread(M.THREAD_POOL, "cheeseshop_crypt", "matches",
                                            password, hash or DUMMY_HASH)
  if busy then
    bump(busy_key, -1)
  end
  if not ran then
    return nil, result
  end
  return hash ~= nil and result
end

-- The audit log's line of a refused token (docs/audit.md): nginx.conf writes it, to its file
-- and the journal, when $cheeseshop_audit is set. At most AUDIT_PER_SECOND lines a second per
-- worker, so that a flood of made-up tokens cannot fill the disk; the next line written says
-- how many were left out.
local audit_second, audit_lines, audit_left_out = 0, 0, 0
local function audit_refusal(index, name, result)
  local now = ngx.time()
  if now ~= audit_second then
    audit_second, audit_lines = now, 0
  end
  audit_lines = audit_lines + 1
  if audit_lines > M.AUDIT_PER_SECOND then
    audit_left_out = audit_left_out + 1
    return
  end
  if audit_left_out > 0 then
    result = result .. "; " .. audit_left_out .. " refusals before this one left out of the log"
    audit_left_out = 0
  end
  local vars = ngx.var
  vars.cheeseshop_audit = "1"
  vars.cheeseshop_audit_time = (ngx.utctime():gsub(" ", "T")) .. "Z"
  vars.cheeseshop_audit_index = index or ""
  vars.cheeseshop_audit_identity = "token:" .. name
  vars.cheeseshop_audit_result = result
end

-- A token: right and not expired passes; anything else is a failure counted under its name
-- (in a space of its own, so that it never adds to a user's count).
local function check_token(path, name, password, index, key_path)
  local minted_expires = name:match("^oidc%-[%w][%w_%-]*%-(%d%d%d%d%d%d%d%d%d%d)%-%x%x%x%x%x%x%x%x$")
  local file = minted_expires and parsed(key_path or "", parse_key, "") or tokens_of(path)
  if not file then
    ngx.log(ngx.ERR, "cheeseshop auth: cannot read ", minted_expires and key_path or path)
    return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
  end
  local entry = file.tokens and file.tokens[name]
  if minted_expires and #file.key > 0 then
    -- Minted: the name's own expiry, and the HMAC of the name as the only right secret.
    entry = { expires = tonumber(minted_expires) }
  end
  local seen = ngx.sha1_bin(salt .. password)
  local why = "refused: no such token"
  -- A password verified before costs one table look-up: the HMAC or hash only on a miss.
  if entry and (file.verified[seen]
                or (minted_expires and password:sub(#name + 13) == hmac_hex(file.key, name))
                or (not minted_expires and sha256(password) == entry.digest)) then
    if ngx.time() < entry.expires then
      file.verified[seen] = true
      return
    end
    why = "refused: expired at " .. ngx.http_time(entry.expires)
  elseif entry then
    why = "refused: wrong secret"
  end
  local mine, account = count("\1token\1" .. name, 1)
  if not mine or mine > M.FAIL_LIMIT or account > M.ACCOUNT_FAIL_LIMIT then
    audit_refusal(index, name, why .. "; 429, too many failures")
    return barred()
  end
  audit_refusal(index, name, why .. "; 401")
  return challenge()
end

-- A right password: the user reads on, or gets 403 when it is not one of the index's (outsider).
local function passed(name, outsider)
  if outsider then
    return ngx.exit(ngx.HTTP_FORBIDDEN)
  end
  ngx.ctx.cheeseshop_user = name
end

-- The access check for one request against one htpasswd file and, given, a tokens file
-- (index: its name, for the audit log; minted_key_path: its minting key, trusted publishing).
-- No tokens file (a group): a token is answered 403.
-- known_path, given, is the file of every user of the host: a name that is not in the first
-- file but is in this one is checked against it, and its right password gets 403, not 401, and
-- counts as no failure. uv stops at a 403 instead of trying its next index, and pip does not
-- ask its keyring again for a password that was right. A wrong password is a failure as any.
function M.check(path, tokens_path, index, minted_key_path, known_path)
  local header = ngx.var.http_authorization
  if not header then
    return challenge()
  end
  local name, password = credential(header)
  if name and password:find("cheeseshop_", 1, true) == 1 then
    local token_name, secret = password:match(TOKEN)
    if token_name and #token_name <= 64 and #secret >= 32 and #secret <= 128 then
      if not tokens_path then
        -- A group (no tokens file): a token reads its one index, never a group of several.
        -- 403, not 401: clients stop here instead of asking again. Nothing is checked, so
        -- nothing is counted; the answer tells only that tokens are not taken here.
        return ngx.exit(ngx.HTTP_FORBIDDEN)
      end
      return check_token(tokens_path, token_name, password, index, minted_key_path)
    end
  end
  local file = users_of(path)
  if not file then
    ngx.log(ngx.ERR, "cheeseshop auth: cannot read ", path)
    return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
  end
  if not name then
    return failed("")
  end
  local hash, outsider = file.users[name], nil
  if not hash and known_path then
    outsider = users_of(known_path)
    if not outsider then
      ngx.log(ngx.ERR, "cheeseshop auth: cannot read ", known_path)
      return ngx.exit(ngx.HTTP_INTERNAL_SERVER_ERROR)
    end
    hash = outsider.users[name]
  end
  -- Who passes: a remembered credential is bound to the index's file and, for a user who is not
  -- in it, to the file of every user as well (a password changed there is checked again).
  local credential_digest = ngx.sha1_bin(salt .. name .. ":" .. password)
  local digest = file.digest .. (outsider and outsider.digest or "") .. credential_digest
  local key = "ok:" .. digest
  if shared:get(key) then
    return passed(name, outsider)
  end
  -- One check per credential at a time: requests that bring the same credential meanwhile (a
  -- client's parallel downloads) wait for its outcome instead of queueing checks of their own.
  local pending_key = "pending:" .. digest
  local pending, taken = limits:safe_add(pending_key, true, 5)
  if not pending and taken == "exists" then
    while limits:get(pending_key) do
      ngx.sleep(0.005)
    end
    if shared:get(key) then
      return passed(name, outsider)
    end
    if limits:get("bad:" .. digest) then
      -- The one check failed: each request that waited for it counts as a guess of its own.
      local mine, account = count(name, 1)
      if not mine then
        return barred()
      end
      if mine > M.FAIL_LIMIT or account > M.ACCOUNT_FAIL_LIMIT then
        count(name, -1)
        return barred()
      end
      return challenge()
    end
    -- No outcome within the pending entry's 5 s: check it here.
    limits:safe_set(pending_key, true, 5)
  end
  local seen_key = "seen:" .. credential_digest
  local reserved = not shared:get(seen_key)
  if reserved and not reserve(name) then
    limits:delete(pending_key)
    return barred()
  end
  local matches, problem = verify(password, hash, not reserved)
  if matches == nil then
    limits:delete(pending_key)
    if reserved then
      count(name, -1)
    end
    ngx.log(ngx.ERR, "cheeseshop auth: the password check did not run: ", problem)
    ngx.header["Retry-After"] = "1"
    return ngx.exit(ngx.HTTP_SERVICE_UNAVAILABLE)
  end
  if matches then
    shared:set(key, name, M.REMEMBER)
    shared:set(seen_key, true, M.SEEN)
    if reserved then
      count(name, -1)
    end
  else
    -- Only for the requests already waiting on this check, never for later ones.
    limits:safe_set("bad:" .. digest, true, 1)
    if not reserved then
      count(name, 1)
    end
  end
  limits:delete(pending_key)
  if not matches then
    return challenge()
  end
  return passed(name, outsider)
end

-- Whether the readers file at path names user (a group's page: the password was checked
-- against the group's own readers file already). False when the file cannot be read.
function M.has_user(path, user)
  local file = users_of(path)
  return file ~= nil and file.users[user] ~= nil
end

return M

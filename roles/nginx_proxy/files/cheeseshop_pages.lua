-- The simple API from the static pages cheeseshop.pypi.pages writes (see nginx.conf):
-- which page a URL and an Accept header ask for, and the page's headers.
local M = {}

local ffi = require("ffi")
pcall(ffi.cdef, "long readlink(const char *path, char *buf, size_t size);")
-- A group's holders link ("=a+b"): member names are at most 63 characters.
local HOLDERS_MAX = 4096
local holders_buffer = ffi.new("char[?]", HOLDERS_MAX)
local ENOENT = 2

-- PEP 691: what a client may ask for, and what it is sent.
local FORMATS = {
  ["application/vnd.pypi.simple.v1+json"] = "json",
  ["application/vnd.pypi.simple.latest+json"] = "json",
  ["application/vnd.pypi.simple.v1+html"] = "v1html",
  ["application/vnd.pypi.simple.latest+html"] = "v1html",
  ["text/html"] = "html",
  ["text/*"] = "html",
  ["*/*"] = "html",
}
local CONTENT_TYPES = {
  json = "application/vnd.pypi.simple.v1+json",
  v1html = "application/vnd.pypi.simple.v1+html",
  html = "text/html",
}

-- The format the Accept header prefers (highest q; the first listed among equals). No header,
-- or nothing known in it: HTML, which every client reads.
function M.format(accept)
  if not accept or accept == "" then
    return "html"
  end
  local best, best_q
  for item in accept:gmatch("[^,]+") do
    local media = item:match("^%s*([^;%s]+)")
    local q = tonumber(item:match(";%s*[qQ]%s*=%s*([0-9.]+)") or "1") or 0
    local format = media and FORMATS[media:lower()]
    if format and q > 0 and (not best_q or q > best_q) then
      best, best_q = format, q
    end
  end
  return best or "html"
end

function M.normalise(name)
  return (name:lower():gsub("[-_.]+", "-"))
end

-- The project a request under <prefix> (a simple/ path) asks for, by its normal name, with the
-- page's file extension and format. The root page (from <internal>, the location that holds
-- the pages), a bad name and a name to redirect end the request here: nil.
local function project_of(prefix, internal)
  local rest = ngx.var.uri:sub(#prefix + 1)
  local format = M.format(ngx.var.http_accept)
  local ext = format == "json" and "json" or "html"
  if rest == "" then
    ngx.exec(internal .. "index." .. ext, { f = format })
    return nil
  end
  local name, slash = rest:match("^([A-Za-z0-9._-]+)(/?)$")
  if not name then
    ngx.exit(ngx.HTTP_NOT_FOUND)
    return nil
  end
  local normal = M.normalise(name)
  if slash == "" or normal ~= name then
    -- Relative, as every redirect here: no host of the client's is echoed.
    ngx.redirect(prefix .. normal .. "/", ngx.HTTP_MOVED_PERMANENTLY)
    return nil
  end
  return normal, ext, format
end

-- <prefix> is the index's simple/ path; <internal> the location that holds its pages.
function M.page(prefix, internal)
  local normal, ext, format = project_of(prefix, internal)
  if normal then
    return ngx.exec(internal .. normal .. "/index." .. ext, { f = format })
  end
end

-- Whether a user may read an index: anyone, on an anonymous one; else a name in its readers
-- file (the password was checked against the group's readers file, in the access phase).
local auth
local function may_read(member, user)
  if member.anonymous then
    return true
  end
  if not user then
    return false
  end
  auth = auth or require("cheeseshop_auth")
  return auth.has_user(member.readers_file, user)
end

-- Which members hold a name in a group, from simple/NAME/holders, a symbolic link to "=a+b"
-- ("=": none, the mirror's) that is never followed: one readlink, no file opened (opening the
-- owners file took a fifth of the group pages' rate). "" when neither it nor the owners file of
-- pages written before it exists; nil (and logged) when it cannot be read.
local function holders_of(directory)
  local length = ffi.C.readlink(directory .. "/holders", holders_buffer, HOLDERS_MAX)
  if length > 1 and length < HOLDERS_MAX and holders_buffer[0] == 61 then   -- "="
    return ffi.string(holders_buffer + 1, length - 1)
  elseif length == 1 and holders_buffer[0] == 61 then
    return ""
  elseif length < 0 and ffi.errno() == ENOENT then
    -- Pages of an earlier release, until the page service has written the links.
    local owners_file = io.open(directory .. "/owners", "r")
    if not owners_file then
      return ""
    end
    local owners = owners_file:read("*a")
    owners_file:close()
    return (owners:gsub("\n+$", ""):gsub("\n", "+"))
  end
  ngx.log(ngx.ERR, "cheeseshop pages: cannot read ", directory, "/holders")
  return nil
end

-- The groups, registered once by nginx.conf's init_by_lua: name -> { prefix (its simple/ path),
-- internal (the location of its pages), pages_dir (on disk), max_sets, members: index name ->
-- { anonymous, readers_file } }.
local groups = {}
function M.group(name, settings)
  groups[name] = settings
end

-- A group's page (one URL for several indexes, cheeseshop.pypi.pages' Group): a name only the
-- mirror has is the mirror's page; a name members hold is the page of the members that hold it
-- and that this reader may read, never the mirror's; none: 404.
function M.group_page(name)
  local group = groups[name]
  local prefix, internal, members = group.prefix, group.internal, group.members
  local normal, ext, format = project_of(prefix, internal)
  if not normal then
    return
  end
  local holders = holders_of(group.pages_dir .. "/simple/" .. normal)
  if not holders then
    return ngx.exit(ngx.HTTP_NOT_FOUND)
  end
  if holders == "" then
    return ngx.exec(internal .. normal .. "/mirror/index." .. ext, { f = format })
  end
  local user = ngx.ctx.cheeseshop_user
  local key
  if not holders:find("+", 1, true) then
    -- One holder, the common case: no list to walk.
    local member = members[holders]
    key = member and may_read(member, user) and holders
  else
    local count, first = 0, nil
    for owner in holders:gmatch("[^+]+") do
      count = count + 1
      local member = members[owner]
      if member and may_read(member, user) then
        first = first or owner
        key = key and (key .. "+" .. owner) or owner
      end
    end
    -- Past max_sets holders, the page service makes each member's own page only.
    if key and count > group.max_sets then
      key = first
    end
  end
  if not key then
    return ngx.exit(ngx.HTTP_NOT_FOUND)
  end
  return ngx.exec(internal .. normal .. "/" .. key .. "/index." .. ext, { f = format })
end

-- Header filter of the pages' location.
function M.headers(anonymous)
  local status = ngx.status
  if status == 200 or status == 304 then
    ngx.header["Content-Type"] = CONTENT_TYPES[ngx.var.arg_f] or "text/html"
    ngx.header["Vary"] = "Accept"
    -- Pages change with every upload: a client may keep one but asks again each time.
    ngx.header["Cache-Control"] = anonymous and "public, no-cache" or "private, no-cache"
  end
end

return M

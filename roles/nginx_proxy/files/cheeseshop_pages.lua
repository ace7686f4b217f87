-- The simple API from the static pages cheeseshop.pypi.pages writes (see nginx.conf):
-- which page a URL and an Accept header ask for, and the page's headers.
local M = {}

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
local function may_read(member, user)
  if member.anonymous then
    return true
  end
  if not user then
    return false
  end
  return require("cheeseshop_auth").has_user(member.readers_file, user)
end

-- A group's page (one URL for several indexes, cheeseshop.pypi.pages' Group): a name only the
-- mirror has is the mirror's page; a name members hold is the page of the members that hold it
-- and that this reader may read (simple/NAME/owners lists them), never the mirror's; none: 404.
-- <pages_dir> is the group's pages on disk; members: name -> { anonymous, readers_file }.
function M.group_page(prefix, internal, pages_dir, members, max_sets)
  local normal, ext, format = project_of(prefix, internal)
  if not normal then
    return
  end
  local owners_file = io.open(pages_dir .. "/simple/" .. normal .. "/owners", "r")
  if not owners_file then
    return ngx.exec(internal .. normal .. "/mirror/index." .. ext, { f = format })
  end
  local owners = owners_file:read("*a")
  owners_file:close()
  local user = ngx.ctx.cheeseshop_user
  local readable, count = {}, 0
  for owner in owners:gmatch("[^\n]+") do
    count = count + 1
    local member = members[owner]
    if member and may_read(member, user) then
      readable[#readable + 1] = owner
    end
  end
  if #readable == 0 then
    return ngx.exit(ngx.HTTP_NOT_FOUND)
  end
  -- Past max_sets holders, the page service makes each member's own page only.
  local key = count > max_sets and readable[1] or table.concat(readable, "+")
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

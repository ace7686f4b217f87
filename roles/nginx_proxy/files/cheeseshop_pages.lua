-- The simple API from the static pages cheeseshop.pypi.pages writes (see nginx.conf):
-- which page a URL and an Accept header ask for, the page's headers, and uploads that are
-- answered only once the page service has listed them.
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

-- <prefix> is the index's simple/ path; <internal> the location that holds its pages.
function M.page(prefix, internal)
  local rest = ngx.var.uri:sub(#prefix + 1)
  local format = M.format(ngx.var.http_accept)
  local ext = format == "json" and "json" or "html"
  if rest == "" then
    return ngx.exec(internal .. "index." .. ext, { f = format })
  end
  local name, slash = rest:match("^([A-Za-z0-9._-]+)(/?)$")
  if not name then
    return ngx.exit(ngx.HTTP_NOT_FOUND)
  end
  local normal = M.normalise(name)
  if slash == "" or normal ~= name then
    -- Relative, as every redirect here: no host of the client's is echoed.
    return ngx.redirect(prefix .. normal .. "/", ngx.HTTP_MOVED_PERMANENTLY)
  end
  return ngx.exec(internal .. normal .. "/index." .. ext, { f = format })
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

-- What the page service must look at after pypiserver took a form: the uploaded file, or
-- every file of the project a removal named.
local function request_of(index, fields, files)
  local action = fields and fields[":action"]
  if action == "file_upload" then
    for _, part in ipairs(files or {}) do
      if part.field == "content" then
        return "file " .. index .. " " .. part.filename
      end
    end
  elseif action == "remove_pkg" and fields.name and fields.name ~= "" then
    return "project " .. index .. " " .. fields.name
  end
  return nil
end

local function ask(socket_path, request)
  local sock = ngx.socket.tcp()
  -- A large wheel is hashed and read before the answer: seconds at most.
  sock:settimeout(30000)
  local ok, err = sock:connect("unix:" .. socket_path)
  if not ok then
    return nil, err
  end
  local sent
  sent, err = sock:send(request .. "\n")
  local line
  if sent then
    line, err = sock:receive("*l")
  end
  sock:close()
  return line, err
end

-- The form, as the client sent it, to pypiserver on its loopback port, over a plain
-- HTTP/1.1 connection of this worker's own. (A subrequest would be simpler, but the Lua
-- module of Debian 12 cannot make one for an HTTP/2 request.) Returns the status, the
-- headers that matter and the body, or nil when pypiserver cannot be reached.
local function to_pypiserver(port, path)
  local sock = ngx.socket.tcp()
  sock:settimeout(120000)
  local ok, err = sock:connect("127.0.0.1", port)
  if not ok then
    return nil, err
  end
  local body = ngx.req.get_body_data()
  local file = not body and ngx.req.get_body_file()
  local length = body and #body or 0
  local handle
  if file then
    handle = io.open(file, "rb")
    if not handle then
      sock:close()
      return nil, "the request body file is gone"
    end
    length = handle:seek("end")
    handle:seek("set", 0)
  end
  local head = {
    "POST " .. path .. " HTTP/1.1",
    "Host: 127.0.0.1:" .. port,
    "Content-Type: " .. (ngx.var.content_type or ""),
    "Content-Length: " .. length,
    "X-Forwarded-For: " .. ngx.var.remote_addr,
    "Connection: close",
  }
  local authorization = ngx.var.http_authorization
  if authorization then
    head[#head + 1] = "Authorization: " .. authorization
  end
  ok, err = sock:send(table.concat(head, "\r\n") .. "\r\n\r\n")
  if ok and body then
    ok, err = sock:send(body)
  elseif ok and handle then
    while true do
      local chunk = handle:read(1048576)
      if not chunk then
        break
      end
      ok, err = sock:send(chunk)
      if not ok then
        break
      end
    end
  end
  if handle then
    handle:close()
  end
  local answer
  if ok then
    answer, err = sock:receive("*a")
  end
  sock:close()
  if not answer then
    return nil, err
  end
  local status = tonumber(answer:match("^HTTP/1%.%d (%d%d%d)"))
  local header_end = answer:find("\r\n\r\n", 1, true)
  if not status or not header_end then
    return nil, "pypiserver's answer is not HTTP"
  end
  local headers = {}
  for name, value in answer:sub(1, header_end):gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
    headers[name:lower()] = value
  end
  local rest = answer:sub(header_end + 4)
  if (headers["transfer-encoding"] or ""):lower():find("chunked", 1, true) then
    local parts, at = {}, 1
    while true do
      local size_end = rest:find("\r\n", at, true)
      local size = size_end and tonumber(rest:sub(at, size_end - 1):match("^%x+"), 16)
      if not size or size == 0 then
        break
      end
      parts[#parts + 1] = rest:sub(size_end + 2, size_end + 1 + size)
      at = size_end + 2 + size + 2
    end
    rest = table.concat(parts)
  end
  return status, headers, rest
end

local ENTITIES = { amp = "&", lt = "<", gt = ">", quot = '"', ["#039"] = "'" }

local function unescape_html(text)
  return (text:gsub("&(#?%w+);", function(entity)
    return ENTITIES[entity]
  end))
end

-- The checked form goes to pypiserver. After its 200 the page service lists the change
-- before the client hears of it.
function M.forward(index, port, path, fields, files, socket_path)
  local status, headers, body = to_pypiserver(port, path)
  if not status then
    ngx.log(ngx.ERR, "cheeseshop upload: pypiserver of ", index, ": ", headers)
    -- pypiserver is down: the 503 that says so (nginx.conf).
    return ngx.exec("/_cheeseshop_unavailable")
  end
  if status == ngx.HTTP_OK then
    local request = request_of(index, fields, files)
    if request then
      local line, err = ask(socket_path, request)
      if line ~= "ok" then
        -- Stored all the same: the service lists it when it sees the file (inotify).
        ngx.log(ngx.ERR, "cheeseshop pages: ", request, ": ", line or err)
      end
    end
  end
  -- pypiserver's refusals (409 "already exists", 507 a full volume, ...) are Bottle's HTML
  -- error page, which names pypiserver's own loopback address: only the message goes on.
  local message = status >= 400 and body:match("<pre>(.-)</pre>")
  if message then
    body = unescape_html(message)
    headers["content-type"] = "text/plain; charset=utf-8"
  end
  ngx.status = status
  for _, name in ipairs({ "Content-Type", "WWW-Authenticate", "Retry-After" }) do
    ngx.header[name] = headers[name:lower()]
  end
  ngx.print(body)
  return ngx.exit(ngx.HTTP_OK)
end

return M

-- Managed by Ansible (cheeseshop.pypi.nginx_proxy): what nginx checks of an upload before
-- pypiserver sees it.
--
-- pypiserver stores any file name its pattern allows, a leading dot included, whatever the
-- form's project name says. A ".name-1.0.tar.gz" was then missing from every page, yet
-- downloadable, and no removal could reach it: a hidden channel (security review #27, finding
-- 6). Here the multipart body (already buffered by nginx, in memory or in its temporary file)
-- is read once, a megabyte at a time (in the thread pool when it is a file), and an upload
-- (":action" file_upload) is refused with 400 unless
--   * it carries exactly one "content" file, and at most one "gpg_signature" named after it;
--   * the file's name is a plain distribution name: it starts with a letter or digit, has only
--     letters, digits and . _ ! + -, and ends in .whl, .tar.gz, .zip, .tar.bz2, .tgz or .egg;
--   * that name starts with the form's project name and version, compared as PEP 503 does
--     (case and runs of - _ . do not matter), then a "-" or a ".".
-- Removals and other actions pass unread; pypiserver checks the uploader in every case.
local M = {}

local CHUNK = 1048576
local MAX_FIELD = 4096          -- the form fields read here (name, version, :action) are short
local MAX_HEADERS = 16384
local WANTED = { [":action"] = true, name = true, version = true }
local SUFFIXES = { "%.whl$", "%.tar%.gz$", "%.zip$", "%.tar%.bz2$", "%.tgz$", "%.egg$" }

-- Successive chunks of a string (size bytes each, default all), or of a file (nginx's
-- temporary copy of a large body).
local function string_chunks(data, size)
  local position = 1
  return function()
    local chunk = data:sub(position, position + (size or #data) - 1)
    position = position + #chunk
    return chunk ~= "" and chunk or nil
  end
end

local function file_chunks(handle)
  return function()
    return handle:read(CHUNK)
  end
end

-- The form fields WANTED and the file parts ({field, filename}) of a multipart body, or nil
-- and what is wrong with it.
--
-- pypiserver reads the same body with Python's cgi.FieldStorage, and where a duplicate
-- field is given, it uses the last one. Any body the two would read differently could hide a
-- file from this check, so only the plain forms that twine, uv, poetry and curl send are
-- accepted, read as cgi reads them, and everything else is refused:
--   * a delimiter is a line (ending in LF, or CRLF) that is "--" and the boundary, then only
--     whitespace, as cgi strips it; "--" after the boundary closes the form;
--   * the body starts with its first delimiter (no preamble);
--   * a part's headers are Content-Disposition, once, and at most one Content-Type that is not
--     multipart; no folded lines, no Content-Length (cgi would read that many bytes and find
--     a delimiter where this reader sees data);
--   * the disposition is exactly form-data; name="..." [; filename="..."], no quote or
--     backslash in the values (cgi would unescape them).
local function parse(next_chunk, boundary)
  local dash = "--" .. boundary
  local delimiter = "\n" .. dash
  local buffer, eof = "", false
  local function more()
    if eof then
      return false
    end
    local chunk = next_chunk()
    if not chunk then
      eof = true
      return false
    end
    buffer = buffer .. chunk
    return true
  end

  -- After a delimiter's dash and boundary, from position at: "open" (a part follows; the
  -- buffer then starts at the LF ending the line), "close", or nil when this is no delimiter.
  local function delimiter_end(at)
    while #buffer - at < 1 and more() do end
    while true do
      local rest = buffer:sub(at)
      local closing = rest:sub(1, 2) == "--"
      local tail = closing and rest:sub(3) or rest
      local space, newline = tail:match("^([ \t\r\v\f]*)()\n")
      if space then
        if closing then
          return "close"
        end
        buffer = buffer:sub(at + newline - 1)
        return "open"
      end
      if not tail:match("^[ \t\r\v\f]*$") then
        return nil
      end
      if #tail > CHUNK then
        return nil, "a delimiter line is too long"
      end
      if not more() then
        return closing and "close" or nil
      end
    end
  end

  -- The data before the next delimiter (the buffer starts with the LF before it), at most
  -- limit bytes of it kept (nil: none); leaves the buffer past the delimiter, and says whether
  -- it opens a part or closes the form.
  local function to_delimiter(limit)
    local kept, start, from = {}, 2, 1
    while true do
      local at = buffer:find(delimiter, from, true)
      if at then
        -- Taken before delimiter_end, which moves the buffer past the delimiter.
        local data = limit and buffer:sub(start, at - 1)
        local state, problem = delimiter_end(at + #delimiter)
        if problem then
          return nil, problem
        end
        if state then
          if not limit then
            return "", nil, state
          end
          kept[#kept + 1] = data
          local value = table.concat(kept):gsub("\r$", "")
          if #value > limit then
            return nil, "a form field is too long"
          end
          return value, nil, state
        end
        from = at + 1
      else
        -- Keep what could be the start of a delimiter; the rest is data (kept up to limit).
        local cut = #buffer - #delimiter + 1
        if cut >= start then
          if limit then
            kept[#kept + 1] = buffer:sub(start, cut)
            limit = limit - (cut - start + 1)
            if limit < 0 then
              return nil, "a form field is too long"
            end
          end
          buffer = buffer:sub(cut + 1)
          from = math.max(1, from - cut)
          start = 1
        end
        if not more() then
          return nil, "the form ends early"
        end
      end
    end
  end

  while #buffer < #dash + 1 and more() do end
  if buffer:sub(1, #dash) ~= dash then
    return nil, "the form must start with its boundary"
  end
  local state, problem = delimiter_end(#dash + 1)
  if state ~= "open" then
    return nil, problem or "the form has no parts"
  end
  local fields, files = {}, {}
  while state == "open" do
    -- The buffer starts with the LF that ends the delimiter line; the headers end at the
    -- first empty line.
    local header_end, body_start
    while true do
      header_end, body_start = buffer:find("\n\r?\n")
      if header_end then
        break
      end
      if #buffer > MAX_HEADERS or not more() then
        return nil, "a form part's headers are malformed"
      end
    end
    local headers = buffer:sub(2, header_end)
    buffer = buffer:sub(body_start)
    local disposition, content_type
    for line in headers:gmatch("([^\n]*)\n") do
      local name, value = line:gsub("\r$", ""):match("^([A-Za-z0-9-]+):[ \t]*(.-)[ \t]*$")
      name = name and name:lower()
      if name == "content-disposition" and not disposition then
        disposition = value
      elseif name == "content-type" and not content_type then
        content_type = value
      else
        return nil, "a form part has a header other than one Content-Disposition and one Content-Type"
      end
    end
    if content_type and content_type:lower():find("multipart", 1, true) then
      return nil, "a form part may not be multipart itself"
    end
    local field, filename = (disposition or ""):match('^form%-data;[ \t]*name="([^"\\]*)";[ \t]*filename="([^"\\]*)"$')
    if not field then
      field = (disposition or ""):match('^form%-data;[ \t]*name="([^"\\]*)"$')
    end
    if not field then
      return nil, 'a form part\'s disposition must be form-data; name="..." and maybe filename="..."'
    end
    local value
    value, problem, state = to_delimiter(filename == nil and WANTED[field] and MAX_FIELD or nil)
    if problem then
      return nil, problem
    end
    if filename then
      files[#files + 1] = { field = field, filename = filename }
    elseif WANTED[field] then
      if fields[field] then
        return nil, "the form field " .. field .. " is given twice"
      end
      fields[field] = value
    end
  end
  return fields, files
end

-- PEP 503's normalised form of a project name, also applied to a version and a file name.
local function normalise(text)
  return (text:lower():gsub("[-_.]+", "-"))
end

local function distribution_name_problem(filename, project, version)
  if not filename:match("^[A-Za-z0-9][A-Za-z0-9_.!+-]*$") then
    return "the file name " .. filename .. " must start with a letter or digit and have only letters, digits and . _ ! + -"
  end
  local known = false
  for _, suffix in ipairs(SUFFIXES) do
    known = known or filename:lower():find(suffix) ~= nil
  end
  if not known then
    return "the file name " .. filename .. " must end in .whl, .tar.gz, .zip, .tar.bz2, .tgz or .egg"
  end
  local prefix = normalise(project) .. "-" .. normalise(version)
  local stem = normalise(filename)
  if stem:sub(1, #prefix + 1) ~= prefix .. "-" then
    return "the file name " .. filename .. " is not of the project " .. project .. " version " .. version
  end
end

-- parse() of a body in nginx's temporary file. Run in the thread pool (ngx.run_worker_thread,
-- a Lua state of its own, no request): reading 100 MB takes a few hundred milliseconds that
-- the worker spends serving others.
function M.scan_file(path, boundary)
  local handle, problem = io.open(path, "rb")
  if not handle then
    return nil, "the upload could not be read: " .. tostring(problem)
  end
  local fields, files = parse(file_chunks(handle), boundary)
  handle:close()
  return fields, files
end

-- What is wrong with an upload form's fields and files, or nil.
local function upload_problem(fields, files)
  if fields[":action"] ~= "file_upload" then
    return nil
  end
  local content, signature
  for _, part in ipairs(files) do
    if part.field == "content" and not content then
      content = part.filename
    elseif part.field == "gpg_signature" and not signature then
      signature = part.filename
    else
      return "an upload carries one content file and at most one gpg_signature"
    end
  end
  if not content then
    return "an upload needs its content file"
  end
  if not fields.name or not fields.version or fields.name == "" or fields.version == "" then
    return "an upload needs the name and version fields"
  end
  local problem = distribution_name_problem(content, fields.name, fields.version)
  if problem then
    return problem
  end
  if signature and signature ~= content .. ".asc" then
    return "the signature must be named " .. content .. ".asc"
  end
  return nil
end

-- The boundary of a multipart Content-Type as cgi reads it (the one boundary parameter,
-- quoted or not, without surrounding spaces), or nil and why it is refused.
local function boundary_of(content_type)
  local lowered = content_type:lower()
  local at = lowered:find("boundary=", 1, true)
  if not at or lowered:find("boundary=", at + 1, true) then
    return nil, "a multipart form needs one boundary"
  end
  local raw = content_type:sub(at + #"boundary=")
  local boundary = raw:match('^"([^"\\]*)"%s*$') or raw:match('^"([^"\\]*)"%s*;')
      or raw:match("^([^;\"]*)"):match("^%s*(.-)%s*$")
  if not boundary or #boundary > 70
      or not boundary:match("^[A-Za-z0-9'()+_,./:=? -]*[A-Za-z0-9'()+_,./:=?-]$") then
    return nil, "a multipart form's boundary must be 1 to 70 of the characters RFC 2046 allows"
  end
  return boundary
end

-- The boundary of a multipart form; nil for any other body (pypiserver's alone), or false and
-- why the form is refused.
local function form_boundary(content_type)
  if not content_type:lower():find("^%s*multipart/form%-data") then
    return nil
  end
  local boundary, problem = boundary_of(content_type)
  if not boundary then
    return false, problem
  end
  return boundary
end

-- The check of a whole body held in memory, for the unit tests (tests/unit/lua); nginx calls
-- M.problem. Returns the problem (nil when none), then what was read: the fields and files.
function M.body_problem(content_type, data, chunk_size)
  local boundary, problem = form_boundary(content_type)
  if not boundary then
    return problem
  end
  local fields, files = parse(string_chunks(data, chunk_size), boundary)
  if not fields then
    return files
  end
  return upload_problem(fields, files), fields, files
end

-- nil when the request may go on to pypiserver, else why it may not (the body of a 400).
-- A second value true: the check itself failed (a 500, logged).
function M.problem(thread_pool)
  local boundary, problem = form_boundary(ngx.var.content_type or "")
  if not boundary then
    return problem
  end
  ngx.req.read_body()
  local data = ngx.req.get_body_data()
  local fields, files
  if data then
    fields, files = parse(string_chunks(data), boundary)
  else
    local path = ngx.req.get_body_file()
    if not path then
      return "the upload is empty"
    end
    local ran
    ran, fields, files = ngx.run_worker_thread(thread_pool, "cheeseshop_upload", "scan_file", path, boundary)
    if not ran then
      ngx.log(ngx.ERR, "cheeseshop upload: the check did not run: ", fields)
      return "the upload could not be checked", true
    end
  end
  if not fields then
    return files
  end
  -- What the form holds, for the page service: the uploaded file, or the project removed.
  return upload_problem(fields, files), false, fields, files
end

return M

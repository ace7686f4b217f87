-- Managed by Ansible (cheeseshop.pypi.nginx_proxy): the health answer a load balancer polls.
-- 200 "ok" only while every index's pypiserver answers its own health path; else 503, naming no
-- index. Asked over plain sockets: lua-nginx-module has no subrequests under HTTP/2. The paths
-- come from the configuration, never from the client's URI.
local M = {}

-- A reader host of a cluster (pypi_writer false) runs no pypiserver: it is healthy while it can
-- read every index's root page on the shared volume (files: their paths).
function M.answer_reader(files)
  for _, path in ipairs(files) do
    local file = io.open(path, "rb")
    if not file then
      ngx.status = ngx.HTTP_SERVICE_UNAVAILABLE
      ngx.header["Retry-After"] = "30"
      return ngx.say("503 The package index is unavailable: its pages cannot be read.")
    end
    file:close()
  end
  return ngx.say("ok")
end

-- host: where every pypiserver listens; checks: a list of {port, path}, one per index.
function M.answer(host, checks)
  for _, check in ipairs(checks) do
    local sock = ngx.socket.tcp()
    sock:settimeouts(1000, 1000, 3000)
    local line
    if sock:connect(host, check[1]) then
      sock:send("GET " .. check[2] .. " HTTP/1.0\r\nHost: localhost\r\n\r\n")
      line = sock:receive("*l")
    end
    sock:close()
    if not (line and line:match("^HTTP/1%.%d 200 ")) then
      ngx.status = ngx.HTTP_SERVICE_UNAVAILABLE
      ngx.header["Retry-After"] = "30"
      return ngx.say("503 The package index is unavailable: pypiserver is not answering.")
    end
  end
  return ngx.say("ok")
end

return M

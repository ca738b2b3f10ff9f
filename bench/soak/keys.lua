-- wrk script of the rate-limit key flood (bench/soak/run.sh, phase 3).
-- `wrk ... -s keys.lua URL -- distinct`: every request carries a new X-Key value (k1, k2, ...);
-- `-- one`: every request carries the same key. Both modes build each request in Lua, so
-- wrk's own cost per request is the same and only the server's key handling differs.
local mode, n = "distinct", 0

function init(args)
    mode = args[1] or "distinct"
end

function request()
    n = n + 1
    local key = "k0"
    if mode ~= "one" then
        key = "k" .. n
    end
    return wrk.format("GET", "/", { ["X-Key"] = key })
end

-- Runs an Argo CD health script the way Argo CD does: `obj` is a global holding the object.
-- usage: lua run_health.lua SCRIPT OBJECT.lua   (OBJECT.lua returns the object as a table)
-- Prints the status on the first line and the message on the second.
local script_path, object_path = arg[1], arg[2]
local object = dofile(object_path)
local env = setmetatable({ obj = object }, { __index = _G })
local chunk, err
if setfenv ~= nil then -- Lua 5.1, like Argo CD's gopher-lua
  chunk, err = loadfile(script_path)
  if chunk then setfenv(chunk, env) end
else
  chunk, err = loadfile(script_path, "t", env)
end
if chunk == nil then
  io.stderr:write(tostring(err), "\n")
  os.exit(2)
end
local hs = chunk()
if type(hs) ~= "table" or type(hs.status) ~= "string" then
  io.stderr:write("the script returned no {status=...} table\n")
  os.exit(3)
end
print(hs.status)
print(hs.message or "")

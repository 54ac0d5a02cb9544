-- Argo CD health of a NodeLogConfig (rendered by the operator, acknowledged by the node's
-- agent). Lua 5.1 (Argo CD runs gopher-lua).
local hs = {}
local node = (obj.metadata and obj.metadata.name) or "?"
local generation = obj.metadata and obj.metadata.generation
local status = obj.status

if status == nil or status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the agent of node " .. node .. " to apply generation " .. tostring(generation or 1)
  return hs
end

local ready = nil
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Ready" then
      ready = c
    end
  end
end

local errors = status.errors or {}
if (ready ~= nil and ready.status == "False") or #errors > 0 then
  hs.status = "Degraded"
  if #errors > 0 then
    hs.message = string.format("%d target error(s); first: %s: %s", #errors,
      errors[1].target or "?", errors[1].message or "")
  else
    hs.message = ready.message or ready.reason or "agent not ready"
  end
  return hs
end

hs.status = "Healthy"
hs.message = string.format("%d targets, %d files", status.activeTargets or 0, status.activeFiles or 0)
return hs

-- Argo CD health of a LogBackup (one policy on one node; status written by that node's agent).
-- Lua 5.1 (Argo CD runs gopher-lua).
local hs = {}
local node = (obj.spec and obj.spec.nodeName) or "?"
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the agent of node " .. node
  return hs
end

local phase = status.phase
if phase == "Synced" then
  hs.status = "Healthy"
  hs.message = string.format("%d files from %d pods backed up to %s",
    status.files or 0, status.pods or 0, status.destination or "the backup root")
elseif phase == "Syncing" or phase == "Pending" then
  hs.status = "Progressing"
  hs.message = string.format("%s, %d bytes behind", phase, status.lagBytes or 0)
elseif phase == "Degraded" or phase == "Failed" then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. (status.lastError or "see status.conditions")
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs

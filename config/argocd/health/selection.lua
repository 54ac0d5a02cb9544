-- Argo CD health of a LogCollectionConfig or a LogBackupPolicy, from the status the operator
-- writes. Lua 5.1 (Argo CD runs gopher-lua): `obj` is the object, the result is {status, message}.
local hs = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local status = obj.status
local generation = obj.metadata and obj.metadata.generation
if status == nil or status.observedGeneration == nil
    or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to process generation " .. tostring(generation or 1)
  return hs
end

local invalid = condition(status, "Invalid")
if invalid ~= nil and invalid.status == "True" then
  hs.status = "Degraded"
  hs.message = "Invalid: " .. (invalid.message or invalid.reason or "see status.conditions")
  return hs
end

local degraded = condition(status, "Degraded")
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.message or degraded.reason or "Degraded"
  return hs
end

local summary = string.format("%d pods on %d nodes, %s nodes applied",
  status.pods or 0, status.nodes or 0, status.ready or "0/0")
local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = summary
  return hs
end

-- Selected, rendered, but not every node's agent has acknowledged this generation yet.
hs.status = "Progressing"
if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
else
  hs.message = summary
end
return hs

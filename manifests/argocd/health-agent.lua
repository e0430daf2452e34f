-- Argo CD health check for agents.singularity.dev/Agent (see docs/gitops.md).
-- Argo CD runs it in a Lua 5.1 VM with the live object as the global `obj`; it must return a
-- table {status = "Healthy"|"Progressing"|"Degraded"|"Suspended", message = "..."}.
-- Kept Lua 5.1-compatible and dependency-free; tests/install/test_gitops_health.py runs this very
-- file under Lua 5.1 and 5.4.

local function condition(status, wanted)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function explain(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local function short(sha)
  if sha == nil then
    return "?"
  end
  return string.sub(sha, 1, 12)
end

local function assess(o)
  local status = o.status
  local generation = o.metadata and o.metadata.generation
  if status == nil then
    return "Progressing", "Waiting for the operator to observe the Agent"
  end

  -- Nothing below describes the current spec until the operator has seen it (kstatus rule).
  if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
    return "Progressing", "Waiting for the operator to observe generation " .. tostring(generation)
  end

  -- kstatus' standard abnormal-true conditions, when the operator sets them.
  local stalled = condition(status, "Stalled")
  if stalled ~= nil and stalled.status == "True" then
    return "Degraded", explain(stalled, "Stalled")
  end

  if (o.spec ~= nil and o.spec.paused == true) or status.phase == "Paused" then
    return "Suspended", "Agent is paused"
  end

  -- A script the runtime refused (it keeps running the last good one) is a failure, not progress.
  local loadedCond = condition(status, "BehaviorLoaded")
  if loadedCond ~= nil and loadedCond.status == "False" and loadedCond.reason == "LoadFailed" then
    return "Degraded", explain(loadedCond, "The runtime failed to load the assigned behavior")
  end

  local reconciling = condition(status, "Reconciling")
  if reconciling ~= nil and reconciling.status == "True" then
    return "Progressing", explain(reconciling, "Reconciling")
  end

  -- Hot reload in flight: the operator assigned a script the runtime has not confirmed yet.
  local behavior = status.behavior
  if behavior ~= nil and behavior.sha256 ~= nil then
    local loaded = status.loadedBehavior
    if loaded == nil or loaded.sha256 ~= behavior.sha256 then
      local name = behavior.name or "behavior"
      local rev = ""
      if behavior.revision ~= nil then
        rev = " revision " .. tostring(behavior.revision)
      end
      return "Progressing", "Waiting for the runtime to load " .. name .. rev .. " (sha256 " .. short(behavior.sha256) .. ")"
    end
  end

  local ready = condition(status, "Ready")
  if ready == nil or ready.status == "Unknown" then
    return "Progressing", explain(ready, "Waiting for the Agent to become Ready")
  end
  if ready.status ~= "True" then
    return "Degraded", explain(ready, "Agent is not Ready")
  end

  local message = "Ready"
  if behavior ~= nil and behavior.name ~= nil then
    message = "Ready: running " .. behavior.name
    if behavior.revision ~= nil then
      message = message .. " revision " .. tostring(behavior.revision)
    end
  end
  return "Healthy", message
end

local hs = {}
hs.status, hs.message = assess(obj)
return hs

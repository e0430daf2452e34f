-- Argo CD health check for agents.singularity.dev/AgentBehavior (see docs/gitops.md).
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

local function assess(o)
  local status = o.status
  local generation = o.metadata and o.metadata.generation
  if status == nil then
    return "Progressing", "Waiting for the operator to validate the script"
  end

  -- A verdict on an older generation says nothing about the script in Git now (kstatus rule).
  if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
    return "Progressing", "Waiting for the operator to observe generation " .. tostring(generation)
  end

  -- An aborted canary rollout: Git declares a script that no agent runs.
  local degraded = condition(status, "Degraded")
  if degraded ~= nil and degraded.status == "True" then
    return "Degraded", explain(degraded, "The rollout was aborted")
  end

  local stalled = condition(status, "Stalled")
  if stalled ~= nil and stalled.status == "True" then
    return "Degraded", explain(stalled, "Stalled")
  end

  local valid = condition(status, "Valid")
  if valid ~= nil and valid.status == "False" then
    -- The message carries the Lua error and its line.
    return "Degraded", explain(valid, "The Lua script is not valid")
  end

  local reconciling = condition(status, "Reconciling")
  if reconciling ~= nil and reconciling.status == "True" then
    -- A canary held at a pause without duration waits for a human (like a paused Argo Rollout).
    if reconciling.reason == "RolloutAwaitingPromote" then
      return "Suspended", explain(reconciling, "Waiting for a manual promote")
    end
    return "Progressing", explain(reconciling, "Reconciling")
  end

  if valid == nil or valid.status ~= "True" then
    return "Progressing", explain(valid, "Waiting for the operator to validate the script")
  end

  local message = "Valid"
  if status.revision ~= nil then
    message = "Valid: revision " .. tostring(status.revision)
  end
  return "Healthy", message
end

local hs = {}
hs.status, hs.message = assess(obj)
return hs

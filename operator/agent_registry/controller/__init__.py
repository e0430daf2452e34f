"""The operator: its own list and watch of Agents with the batch reconciler (agent_watch, fleet),
kopf handlers for AgentBehavior, BehaviorPolicy and BehaviorExperiment, the status write-back
loop, the admission webhook, and the pure rendering/condition logic they call.

RBAC the operator process uses (controller + the registry API it serves), exactly:

  apiGroup                        resource                          verbs
  ------------------------------  --------------------------------  ------------------------------
  agents.singularity.dev          agents                            get, list, watch, patch
  agents.singularity.dev          agentbehaviors                    list, watch, patch
  agents.singularity.dev          behaviorpolicies                  list, watch, patch
  agents.singularity.dev          behaviorexperiments               list, watch, patch
  agents.singularity.dev          agents/status                     patch
  agents.singularity.dev          agentbehaviors/status             patch
  agents.singularity.dev          behaviorpolicies/status           patch
  agents.singularity.dev          behaviorexperiments/status        patch
  "" (core)                       configmaps                        create, patch (SSA)
  apps                            deployments                       get, create, patch, delete
  "" (core)                       events                            create (kopf and loop Events)
  authentication.k8s.io           tokenreviews                      create (cluster, API auth)
  authorization.k8s.io            subjectaccessreviews              create (cluster, API auth)
  with --leader-elect (default in a pod), in the Lease's namespace only (the operator's own):
  coordination.k8s.io             leases                            get, create, update
  only with --webhook and a managed configuration (cluster-scoped; not with --webhook-cert):
  admissionregistration.k8s.io    validatingwebhookconfigurations   create, patch
  only with --peering NAME (kopf peering; the kopf.dev peering CRDs must be installed):
  kopf.dev                        kopfpeerings (per namespace) or clusterkopfpeerings (with
                                  --all-namespaces)                 list, watch, patch

Namespaced rules go in a Role per served namespace (--namespace) or a ClusterRole (all
namespaces). No namespaces or CRD access: kopf's cluster scanning is disabled (the CRDs must be
installed before the operator starts; --namespace globs are not expanded). `get` on agents is the
API's (it reads Agent.spec.serviceAccountName to authorize reports); the controller only lists,
watches and patches (the patch of an Agent's metadata removes the finalizer earlier versions put
there).
"""

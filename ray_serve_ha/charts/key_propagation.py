"""How long a key added, revoked or rotated in Secrets Manager takes to reach every running
Serve replica: External Secrets' refresh, the kubelet's sync of the mounted Secret, the
replicas' reread of the file. Plain numbers (no cdk8s), so that the settings and the readiness
gate's construct can read them without loading the charts' libraries.
"""

from __future__ import annotations

# The API keys (all of them, and the UI's own) are read again by the running replicas and UI:
# a key added, revoked or rotated in Secrets Manager reaches the Secrets within this interval,
# and the mounted files at the kubelet's next sync of the pod (KUBELET_POD_SYNC_MAX_S).
API_KEYS_REFRESH_S = 30
# The kubelet resyncs each pod (and so its mounted Secrets) every `syncFrequency` (1 min by
# default) plus up to 50 % jitter (kubelet pod_workers.go, workerResyncIntervalJitterFactor).
KUBELET_POD_SYNC_MAX_S = 90
# How often the Serve replicas look at the mounted key file again: the contract with the
# image (images/ray-serve/ray_serve_llm/api_keys.py RELOAD_INTERVAL_S; a test keeps them equal).
SERVE_KEY_RELOAD_S = 5
# The longest a key added in Secrets Manager takes to be accepted by every running replica.
API_KEY_PROPAGATION_S = API_KEYS_REFRESH_S + KUBELET_POD_SYNC_MAX_S + SERVE_KEY_RELOAD_S

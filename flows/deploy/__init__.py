"""The deploy flow (flow.py), its Kubernetes API calls (kube.py) and its decisions (rollout.py)."""

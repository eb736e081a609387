"""Highly available Ray Serve on Amazon EKS, as a library:

- `ray_serve_ha.charts`: the Kubernetes side (pure spec functions, the tables they read,
  the cdk8s charts), importable without the CDK;
- `ray_serve_ha.constructs`: the CDK constructs (GCS store, fault-tolerant RayService,
  readiness gate, availability probe and alarm, helper security groups) built on them.

It imports nothing of the app that uses it: the project's stacks (stacks/) and app.py are
one such app, examples/existing_cluster.py another. Kept empty, so that importing a chart
module does not load the CDK.
"""

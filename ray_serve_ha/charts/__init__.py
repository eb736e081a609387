"""The library's Kubernetes side: pure functions that build specs as plain dicts, the tables
they read (accelerators, images), the constants that nodes and pods must agree on, and the
cdk8s charts that wrap the specs. Nothing here imports the CDK app (stacks/, app.py)."""

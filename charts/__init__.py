"""`python -m charts`: the library's charts (ray_serve_ha.charts) as plain YAML manifests."""

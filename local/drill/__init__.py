"""The HA drill: traffic through the serve path, a fault on the Ray head (or its Redis),
recovery, and a report of what the clients saw."""

"""Stand-ins for command-line tools a test cannot run here (no Docker daemon, no AWS):
each records its calls and checks what the real tool would refuse."""

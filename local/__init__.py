"""The embedded default: the serving topology on one machine (Redis, a Ray head, two Ray
workers in their own network namespaces, the same serve config, the Gradio UI), and the HA
drill that kills the head under load."""

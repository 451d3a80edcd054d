"""The front ends: the seams they use, the module commands, the self-test, the REST API, the metrics server."""

"""Developer tools for edge-inference (test rig, simulators, manifest helpers); not shipped in the module."""

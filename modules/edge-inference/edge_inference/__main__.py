"""`python -m edge_inference`: the container's entry point and what `make run` calls."""

import sys

from edge_inference.app import main

if __name__ == "__main__":
    sys.exit(main())

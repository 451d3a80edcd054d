"""`python -m tools.edgehub_rig`: the same as `make simulate` (tools/simulate.py)."""

import sys

from tools.simulate import main

if __name__ == "__main__":
    sys.exit(main())

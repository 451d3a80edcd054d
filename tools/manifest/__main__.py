"""`python -m tools.manifest`: the manifest tool's command line (see tools/manifest/__init__.py)."""

import sys

from tools.manifest.cli import main

sys.exit(main())

"""`python -m lib_pinning`: see lib_pinning.cli."""

import sys

from lib_pinning.cli import main

sys.exit(main())

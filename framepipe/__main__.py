"""``python -m framepipe``."""

import sys

from framepipe.cli import main

sys.exit(main())

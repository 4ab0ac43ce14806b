"""``python -m framepipe``."""

import sys

from framepipe.launch import main

sys.exit(main())

"""`python -m services.cli`: the `leyline` command without the console script."""

import sys

from services.cli import main

sys.exit(main())

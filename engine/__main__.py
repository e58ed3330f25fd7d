"""``python -m comcloak.engine`` runs the command line."""

import sys

from comcloak.engine.cli import main

sys.exit(main())

"""``python -m comcloak`` runs the command line."""

import sys

from comcloak.cli.main import main

sys.exit(main())

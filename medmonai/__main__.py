"""``python -m medmonai`` runs the command line."""

from __future__ import annotations

import sys

from medmonai.cli.main import main

sys.exit(main())

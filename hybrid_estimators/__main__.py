"""``python -m hybrid_estimators``: the ``hybrid-estimators`` command."""

import sys

from .cli import main

sys.exit(main())

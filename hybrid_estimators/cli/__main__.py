"""``python -m hybrid_estimators.cli``: the ``hybrid-estimators`` command."""

import sys

from . import main

sys.exit(main())

"""``python -m dagstudy.cli ...``: what a Ray job's entrypoint runs."""

import sys

from dagstudy.cli.main import main

sys.exit(main())

"""Every MLflow server a test starts (directly, through ``infra/local/up.sh`` or ``dagstudy ui``)
runs without MLflow's GenAI job runner, as ``dagstudy ui`` and the stacks start it: two Huey
processes fewer per server (see ``dagstudy.cli.browse.JOBS_OFF``)."""

import os

from dagstudy.cli.browse import JOBS_OFF

os.environ.setdefault(*JOBS_OFF)

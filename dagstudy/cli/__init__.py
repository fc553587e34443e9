"""The ``dagstudy`` command line: ``train`` (``train.py``), the study commands (``study.py``:
run, resume, submit, best, sync, ui) and the confirmation commands (``confirm.py``: confirm,
report), assembled in ``main.py``. Each subcommand validates its input fully before any work
starts; bad input exits with status 2 and one line naming the option and the allowed values."""

from dagstudy.cli.main import main

__all__ = ["main"]

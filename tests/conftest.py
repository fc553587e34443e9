"""Settings for the whole test session.

Ray 2.60 turns token authentication on by itself when ``~/.ray/auth_token`` exists, and a
process keeps the auth mode of its first Ray start: a test that starts a Ray with auth disabled
would leave later Rays of this process (started with tokens) unreachable ("Authentication token
is missing"). Every Ray the tests start is local and bound to this machine, so the session runs
them all with auth disabled, set once before any of them starts (child processes inherit it).
"""

import os

os.environ["RAY_AUTH_MODE"] = "disabled"

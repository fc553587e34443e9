#!/bin/sh
# dagstudy-join: join the Ray cluster as a zero-resource node, run a command, leave.
#
# A Ray driver (`dagstudy run`) needs a raylet on its own machine, or Ray Client (ray://). The
# compose `dagstudy` service runs its driver in its own container, so this script first starts
# a raylet there that offers no CPUs and no GPUs (trials still run on ray-head/ray-worker), then
# runs the command with RAY_ADDRESS pointing at the head, then stops the raylet.
#
# Meant for a container of its own (the compose `dagstudy` service): `ray stop` at the end stops
# every Ray process it can see, which in a container is only the ones started here.
#
# Usage: dagstudy-join COMMAND [ARG...]      e.g.  dagstudy-join dagstudy run studies/mnist.yaml
# Env:   RAY_ADDRESS   the head's GCS address, host:port (compose sets ray-head:6379)
#        RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH, when the cluster uses token auth
set -eu

: "${RAY_ADDRESS:?dagstudy-join: set RAY_ADDRESS to the Ray head (host:6379)}"
if [ "$#" -eq 0 ]; then
    echo "usage: dagstudy-join COMMAND [ARG...]" >&2
    exit 2
fi

ray start --address="$RAY_ADDRESS" --num-cpus=0 --num-gpus=0 --disable-usage-stats
status=0
"$@" || status=$?
ray stop >/dev/null 2>&1 || true
exit "$status"

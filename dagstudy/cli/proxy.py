"""``dagstudy storage-proxy``: Optuna's gRPC storage proxy in front of a study's RDB, so a
cluster's driver and workers talk gRPC to one process (``storage.optuna: grpc://HOST:PORT``)
instead of each holding database connections. Binds to 127.0.0.1 by default: the proxy has no
authentication, so exposing it is a deliberate ``--host`` choice."""

from __future__ import annotations

import sys

from dagstudy.cli.browse import port
from dagstudy.cli.errors import UsageError
from dagstudy.urls import redact_url


def add_parsers(sub) -> None:
    p = sub.add_parser("storage-proxy", help="serve an Optuna RDB through Optuna's gRPC "
                       "storage proxy (for storage.optuna: grpc://HOST:PORT)",
                       description="Serve the Optuna storage at --storage (an RDB URL) through "
                       "Optuna's gRPC storage proxy until interrupted. Studies then set "
                       "storage.optuna (or DAGSTUDY_OPTUNA_STORAGE) to grpc://HOST:PORT; only "
                       "this process connects to the database. Needs grpcio (the 'grpc' "
                       "extra).")
    p.add_argument("--storage", required=True,
                   help="Optuna RDB URL to serve (sqlite:///..., postgresql://...)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default: 127.0.0.1; the proxy has no "
                   "authentication)")
    p.add_argument("--port", type=int, default=13000, help="TCP port, 1-65535 (default: 13000)")
    p.add_argument("--threads", type=int, default=10,
                   help="server threads, i.e. concurrent requests (default: 10)")
    p.set_defaults(run=_cmd_proxy)


def _cmd_proxy(args) -> int:
    from concurrent.futures import ThreadPoolExecutor

    import optuna

    from dagstudy.study.storage import GRPC_SCHEME, StorageError, open_study_storage

    port(args.port)
    if args.threads < 1:
        raise UsageError(f"--threads: {args.threads} is not a thread count (allowed: >= 1)")
    if args.storage.startswith(GRPC_SCHEME):
        raise UsageError("--storage: a gRPC proxy serves a database, not another proxy "
                         "(allowed: sqlite:///..., postgresql://..., mysql://...)")
    try:
        import grpc  # noqa: F401  (Optuna imports it lazily, with a less helpful error)
    except ImportError:
        raise UsageError("storage-proxy needs grpcio: pip install 'dagstudy[grpc]'") from None
    try:
        rdb, _ = open_study_storage(args.storage)
    except StorageError as e:
        raise UsageError(str(e)) from None
    storage = optuna.storages.get_storage(rdb)  # Optuna's in-process cache of the RDB
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"serving {redact_url(args.storage)} at {GRPC_SCHEME}{args.host}:{args.port} "
          f"(Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        optuna.storages.run_grpc_proxy_server(storage, host=args.host, port=args.port,
                                              thread_pool=ThreadPoolExecutor(args.threads))
    except RuntimeError as e:  # grpc: "Failed to bind to address ..."
        raise UsageError(f"--port: cannot serve on {args.host}:{args.port} ({e})") from None
    return 0

"""The learning service, ``netpol-learn serve``: sniffers post their segments to it; it keeps them
in a store with the identity history of one cluster-wide watch, and serves the merged flow log,
the inventory, the learning status and metrics (docs/service.md).

    sniffers --POST /v1/segments-->  Service (_app: Starlette)  --> Store (_store: SQLite; _postgres)
    API server --watch, one per kind--> Identity (_identity) ---^
    Authenticator (_auth): --tokens-file, or TokenReview + SubjectAccessReview in a cluster
    serve (_server): store, tokens and socket first, then uvicorn until SIGTERM/SIGINT
"""

from __future__ import annotations

from netpol_learn._serve._app import DEFAULT_MAX_FUTURE, DEFAULT_MAX_SEGMENT_SIZE, Limits, Service, make_app
from netpol_learn._serve._auth import Authenticator, Decision, KubernetesAuth, TokenFile, bearer_token
from netpol_learn._serve._identity import Identity, inventory_document
from netpol_learn._serve._server import DEFAULT_LISTEN, DEFAULT_SERVICE_NAME, ServeOptions, parse_listen, prepare, serve
from netpol_learn._serve._store import APPLICATION_ID, STORE_VERSION, SegmentId, SqliteStore, Store, open_store

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_FUTURE",
    "DEFAULT_MAX_SEGMENT_SIZE",
    "DEFAULT_SERVICE_NAME",
    "STORE_VERSION",
    "Authenticator",
    "Decision",
    "Identity",
    "KubernetesAuth",
    "Limits",
    "SegmentId",
    "ServeOptions",
    "Service",
    "SqliteStore",
    "Store",
    "TokenFile",
    "bearer_token",
    "inventory_document",
    "make_app",
    "open_store",
    "parse_listen",
    "prepare",
    "serve",
]

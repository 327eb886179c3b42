"""netpol-learn: learn Kubernetes NetworkPolicies from observed traffic.

The public API; the CLI (``netpol_learn._cli``) is a thin layer over it.
"""

from netpol_learn._errors import CaptureError, FlowLogError, NetpolLearnError
from netpol_learn._capture import capture_file, capture_files
from netpol_learn._flowlog import (
    DnsAnswer,
    DnsObservation,
    Flow,
    FlowLog,
    Translation,
    merge_logs,
    read_flow_log,
    write_flow_log,
)

__version__ = "0.1.0"

__all__ = sorted([
    "CaptureError",
    "DnsAnswer",
    "DnsObservation",
    "Flow",
    "FlowLog",
    "FlowLogError",
    "NetpolLearnError",
    "Translation",
    "capture_file",
    "capture_files",
    "merge_logs",
    "read_flow_log",
    "write_flow_log",
])

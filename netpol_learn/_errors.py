"""The exceptions netpol-learn raises.

    NetpolLearnError            root: every error the tool reports to its user
    ├── CaptureError            a capture file that yields nothing usable
    ├── SniffError              a live capture that cannot start or go on
    ├── FlowLogError            a flow log that cannot be read or written
    │   └── FlowLogVersionError a flow log of a version this tool does not read
    ├── InventoryError          an inventory that cannot be loaded or fetched
    ├── OutputError             an output directory that cannot be written safely
    ├── TemplateError           a policy template that cannot be loaded or rendered
    ├── PolicyError             a NetworkPolicy file that cannot be read or is not valid
    ├── ManifestError           sniffer manifests asked for with an invalid namespace or image
    ├── CollectError            the sniffers' logs that cannot be found or read
    └── ServeError              the learning service cannot start (store, listen address, tokens)

Library code raises these; only the CLI turns them into one line on stderr and exit code 2.
Third-party errors are translated where they enter (``raise CaptureError(...) from exc``).
"""


class NetpolLearnError(Exception):
    """An error in the user's input or environment, reported as one line."""


class CaptureError(NetpolLearnError):
    """A capture file could not be read at all."""


class SniffError(NetpolLearnError):
    """A live capture could not start (permission, interface, output) or go on."""


class FlowLogError(NetpolLearnError):
    """A flow log could not be read or written."""


class FlowLogVersionError(FlowLogError):
    """A flow log (or a segment) of a format version this tool does not read."""


class InventoryError(NetpolLearnError):
    """An inventory (snapshot files or the live API) could not be loaded."""


class OutputError(NetpolLearnError):
    """An output directory that cannot be written safely."""


class TemplateError(NetpolLearnError):
    """A policy template that cannot be loaded or rendered."""


class PolicyError(NetpolLearnError):
    """A NetworkPolicy file that cannot be read or is not valid."""


class ManifestError(NetpolLearnError):
    """Sniffer manifests asked for with an invalid namespace or image."""


class CollectError(NetpolLearnError):
    """The sniffer pods or their logs could not be found or read."""


class ServeError(NetpolLearnError):
    """The learning service cannot start: its store, listen address, tokens or TLS files."""

"""The node's interfaces: which to capture on, whether they are there and up, and the netlink
socket that says when links come and go."""

from __future__ import annotations

import fcntl
import fnmatch
import socket
import struct
from collections.abc import Iterable

#: The node's pod-facing interfaces (veth pairs of bridge CNIs, Calico, Cilium; bridges; tunnels).
DEFAULT_INTERFACES = ("veth*", "cali*", "lxc*", "cni0", "flannel*", "vxlan*", "genev*")

# Linux constants (linux/rtnetlink.h, linux/sockios.h).
RTMGRP_LINK = 1
SIOCGIFFLAGS = 0x8913


def is_pattern(name: str) -> bool:
    """Whether ``name`` is a glob pattern rather than an interface's name."""
    return any(ch in name for ch in "*?[")


def discover(patterns: Iterable[str]) -> dict[str, int]:
    """Interfaces of this network namespace whose names match any of ``patterns``: name -> index."""
    patterns = tuple(patterns)
    return {name: index for index, name in socket.if_nameindex() if any(fnmatch.fnmatchcase(name, p) for p in patterns)}


def is_up(name: str) -> bool:
    """Whether the interface is administratively up (IFF_UP)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            flags = struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH", name.encode()[:15], 0)), 16)[0]
    except OSError:
        return False
    return bool(flags & 1)  # IFF_UP


def ifindex(name: str) -> int | None:
    """The index of the interface, None when there is none of that name."""
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return None


def open_link_events() -> socket.socket | None:
    """A non-blocking netlink socket that becomes readable when links come and go; None when
    there can be none (then interfaces are rescanned every second)."""
    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
        nl.bind((0, RTMGRP_LINK))
    except OSError:
        return None
    return nl


def drain_link_events(nl: socket.socket) -> None:
    """Read what the netlink socket holds: only that something changed matters."""
    try:
        while nl.recv(65536):
            pass
    except (BlockingIOError, InterruptedError):
        pass
    except OSError:  # ENOBUFS: events were lost; the rescan looks at everything anyway
        pass

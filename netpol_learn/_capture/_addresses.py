"""Addresses as the capture stage holds them (128 bits as two uint64 halves) and as text."""

from __future__ import annotations

import ipaddress


class AddressNames:
    """128-bit (hi, lo) addresses to text, IPv4-mapped ones as dotted quads; cached."""

    def __init__(self):
        self.cache: dict[tuple[int, int], str] = {}

    def __call__(self, hi, lo) -> str:
        k = (int(hi), int(lo))
        text = self.cache.get(k)
        if text is None:
            if k[0] == 0 and k[1] >> 32 == 0xFFFF:
                text = str(ipaddress.IPv4Address(k[1] & 0xFFFFFFFF))
            else:
                text = ipaddress.IPv6Address((k[0] << 64) | k[1]).compressed
            self.cache[k] = text
        return text

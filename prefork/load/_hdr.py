"""HdrHistogram's V2 compressed encoding of a latency histogram, both ways.

``Histogram``'s buckets are HdrHistogram's own for 2 significant digits and a lowest
discernible value of 1 (256 sub-buckets; the counts array index of a value is our bucket
index), so the encoding is the counts array as it stands: what every HdrHistogram library, in
any language, decodes (``HdrHistogram.decode``), adds up and plots.

The format (HdrHistogram's ``encodeIntoCompressedByteBuffer``), all integers big-endian:

- compressed: cookie ``0x1c849314``, the length of what follows (int32), then the zlib-deflated
  uncompressed encoding; the whole in base64 (what HdrHistogram's log and tools carry);
- uncompressed: cookie ``0x1c849313``, the payload's length (int32), the normalizing index
  offset (int32, 0), significant digits (int32, 2), lowest discernible value (int64, 1),
  highest trackable value (int64), the integer-to-double ratio (float64, 1.0), then the
  payload: the counts from index 0 to that of the largest value, each a ZigZag LEB128 varint,
  a run of two or more zero counts written as one negative number (minus the run's length).

Pure: bytes and strings in and out. Decoding raises ``ValueError`` on anything else.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from collections.abc import Iterator, Mapping

_COOKIE = 0x1C849303 | 0x10  # V2, LEB128 words
_COMPRESSED_COOKIE = 0x1C849304 | 0x10
_HEADER = struct.Struct(">iiiiqqd")
_DIGITS = 2
#: A histogram of more buckets than this is not a latency histogram (2**63 µs is index 7424).
_MAX_INDEX = 8192
#: What the uncompressed encoding of such a histogram takes at most (a header, and a count of
#: at most 9 bytes per index): a "histogram" inflating to more is refused, not inflated.
_MAX_INFLATED = _HEADER.size + 9 * (_MAX_INDEX + 1)


def encode(counts: Mapping[int, int], highest: int) -> str:
    """The base64 compressed V2 encoding of ``counts`` (bucket index -> count > 0, our
    buckets), tracking values up to ``highest`` (at least the largest recorded)."""
    payload = bytearray()
    limit = max(counts, default=-1) + 1
    index = 0
    while index < limit:
        count = counts.get(index, 0)
        index += 1
        if count == 0:
            zeros = 1
            while counts.get(index, 0) == 0 and index < limit:
                zeros += 1
                index += 1
            _varint(payload, -zeros if zeros > 1 else 0)
        else:
            _varint(payload, count)
    header = _HEADER.pack(_COOKIE, len(payload), 0, _DIGITS, 1, max(highest, 2), 1.0)
    deflated = zlib.compress(header + payload)
    whole = struct.pack(">ii", _COMPRESSED_COOKIE, len(deflated)) + deflated
    return base64.b64encode(whole).decode("ascii")


def decode(text: str) -> dict[int, int]:
    """The counts (bucket index -> count > 0) of a base64 compressed V2 encoding with 2
    significant digits and a lowest discernible value of 1 (``encode``'s, or any library's
    with those settings). Raises ``ValueError`` otherwise."""
    try:
        whole = base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise ValueError("an HdrHistogram encoding is base64") from None
    if len(whole) < 8:
        raise ValueError("an HdrHistogram encoding too short to be one")
    cookie, length = struct.unpack_from(">ii", whole)
    if cookie != _COMPRESSED_COOKIE or length != len(whole) - 8:
        raise ValueError(f"not a compressed V2 HdrHistogram (cookie {cookie:#x})")
    inflater = zlib.decompressobj()
    try:
        inner = inflater.decompress(whole[8:], _MAX_INFLATED)
    except zlib.error as exc:
        raise ValueError(f"an HdrHistogram encoding that does not inflate: {exc}") from None
    if inflater.unconsumed_tail:
        raise ValueError(f"an HdrHistogram encoding inflating beyond {_MAX_INFLATED} bytes")
    if len(inner) < _HEADER.size:
        raise ValueError("an HdrHistogram encoding without its header")
    cookie, length, offset, digits, lowest, _, _ = _HEADER.unpack_from(inner)
    if cookie != _COOKIE or length != len(inner) - _HEADER.size:
        raise ValueError(f"not a V2 HdrHistogram payload (cookie {cookie:#x})")
    if (offset, digits, lowest) != (0, _DIGITS, 1):
        raise ValueError(
            f"an HdrHistogram of {digits} significant digits, lowest value {lowest} and "
            f"index offset {offset}: prefork reads 2, 1 and 0"
        )
    counts: dict[int, int] = {}
    index = 0
    for value in _varints(inner, _HEADER.size):
        if value < 0:
            index -= value
        else:
            if value:
                counts[index] = value
            index += 1
        if index > _MAX_INDEX:
            raise ValueError("an HdrHistogram with values beyond 2**63")
    return counts


def _varint(out: bytearray, n: int) -> None:
    """ZigZag, then LEB128 (HdrHistogram's ``ZigZagEncoding.putLong``: a ninth byte, never
    needed for counts below 2**55, would take 8 bits)."""
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _varints(data: bytes, pos: int) -> Iterator[int]:
    end = len(data)
    while pos < end:
        n = shift = 0
        while True:
            if pos == end:
                raise ValueError("an HdrHistogram payload with a cut number")
            byte = data[pos]
            pos += 1
            if shift == 56:  # the ninth byte holds 8 bits
                n |= byte << 56
                break
            n |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        yield (n >> 1) ^ -(n & 1)

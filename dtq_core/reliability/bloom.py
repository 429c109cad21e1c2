"""Bloom filters for cheap "seen before?" checks, plain and with TTL expiry by rotation."""

from __future__ import annotations

import math
import struct
from hashlib import blake2b
from typing import Final

from dtq_core.errors import ConfigError, SerializationError

#: Marks the start of a serialized :class:`BloomFilter`.
MAGIC: Final = b"DTQB"

#: Version of the :meth:`BloomFilter.to_bytes` layout.
FORMAT_VERSION: Final = 1

#: Header: magic, version, pad, hashes, bits, capacity, items, error rate (little-endian).
_HEADER: Final = struct.Struct("<4sBxHQQQd")

#: Low 64 bits of the 128-bit digest.
_MASK64: Final = (1 << 64) - 1

#: ``ln 2``, from the sizing formulas.
_LN2: Final = math.log(2)


def _check_sizing(capacity: int, error_rate: float) -> None:
    """Raise :class:`ConfigError` unless ``capacity >= 1`` and ``0 < error_rate < 1``."""
    if capacity < 1 or not 0.0 < error_rate < 1.0:
        raise ConfigError(
            f"need capacity >= 1 and 0 < error_rate < 1, got {capacity!r}, {error_rate!r}"
        )


def _hashes(key: str | bytes) -> tuple[int, int]:
    """Two independent 64-bit hashes of ``key`` from one 128-bit BLAKE2b digest."""
    if isinstance(key, str):
        key = key.encode()
    x = int.from_bytes(blake2b(key, digest_size=16).digest(), "little")
    return x & _MASK64, x >> 64


class BloomFilter:
    """A fixed-size set membership filter: no false negatives, tunable false positives.

    Sized with the standard formulas ``m = ceil(-n ln p / (ln 2)**2)`` bits and
    ``k = round(m / n * ln 2)`` hashes for ``n = capacity`` and ``p = error_rate``. Bit
    ``i`` of ``k`` for a key is ``(h1 + i * h2) mod m`` (Kirsch-Mitzenmacher double
    hashing), ``h1`` and ``h2`` being the halves of a 128-bit BLAKE2b digest.

    Past ``capacity`` items the false-positive rate climbs above ``error_rate``; watch
    :attr:`estimated_fp_rate`. Not thread-safe: use under the caller's lock.

    Args:
        capacity: The number of distinct keys the filter is sized for.
        error_rate: The false-positive probability at ``capacity``, in (0, 1).

    Raises:
        ConfigError: If ``capacity < 1`` or ``error_rate`` is not in (0, 1).
    """

    __slots__ = ("_bits", "_bits_set", "_count", "capacity", "error_rate", "num_bits", "num_hashes")

    def __init__(self, capacity: int, error_rate: float) -> None:
        _check_sizing(capacity, error_rate)
        self.capacity = capacity
        self.error_rate = error_rate
        #: Size of the bitset, ``m``.
        self.num_bits = math.ceil(-capacity * math.log(error_rate) / _LN2**2)
        #: Bits set per key, ``k``.
        self.num_hashes = max(1, round(self.num_bits / capacity * _LN2))
        self._bits = bytearray((self.num_bits + 7) // 8)
        self._bits_set = 0
        self._count = 0

    def __repr__(self) -> str:
        return (
            f"BloomFilter(capacity={self.capacity}, error_rate={self.error_rate}, "
            f"len={self._count}, fill_ratio={self.fill_ratio:.3f})"
        )

    def __len__(self) -> int:
        """Keys added that were new to the filter (a key mistaken as present is not counted)."""
        return self._count

    def __contains__(self, key: str | bytes) -> bool:
        """Whether ``key`` was possibly added: False is certain, True may be a false positive."""
        return self._test(*_hashes(key))

    def add(self, key: str | bytes) -> bool:
        """Add ``key``.

        Returns:
            True if the key was possibly present already (all its bits were set).
        """
        return self._set(*_hashes(key))

    def _test(self, h1: int, h2: int) -> bool:
        """Whether all ``k`` bits for the hash pair are set."""
        m = self.num_bits
        bits = self._bits
        j, step = h1 % m, h2 % m
        for _ in range(self.num_hashes):
            if not bits[j >> 3] & (1 << (j & 7)):
                return False
            j += step
            if j >= m:
                j -= m
        return True

    def _set(self, h1: int, h2: int) -> bool:
        """Set the ``k`` bits for the hash pair; True if none was newly set."""
        m = self.num_bits
        bits = self._bits
        j, step = h1 % m, h2 % m
        new = 0
        for _ in range(self.num_hashes):
            byte, mask = j >> 3, 1 << (j & 7)
            if not bits[byte] & mask:
                bits[byte] |= mask
                new += 1
            j += step
            if j >= m:
                j -= m
        if new:
            self._bits_set += new
            self._count += 1
            return False
        return True

    @property
    def fill_ratio(self) -> float:
        """The fraction of bits set, kept up to date by :meth:`add`."""
        return self._bits_set / self.num_bits

    @property
    def estimated_fp_rate(self) -> float:
        """The current false-positive probability, ``fill_ratio ** num_hashes``."""
        return self.fill_ratio**self.num_hashes

    def clear(self) -> None:
        """Forget every key, keeping the size."""
        self._bits[:] = bytes(len(self._bits))
        self._bits_set = 0
        self._count = 0

    def to_bytes(self) -> bytes:
        """The filter as bytes (a versioned header and the bitset), for checkpoints."""
        header = _HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            self.num_hashes,
            self.num_bits,
            self.capacity,
            self._count,
            self.error_rate,
        )
        return header + self._bits

    @classmethod
    def from_bytes(cls, data: bytes) -> BloomFilter:
        """Rebuild a filter from :meth:`to_bytes` output.

        Raises:
            SerializationError: If the data is truncated, of another format or version, or
                inconsistent.
        """
        if len(data) < _HEADER.size:
            raise SerializationError("bloom filter data is truncated")
        magic, version, k, m, capacity, count, error_rate = _HEADER.unpack_from(data)
        if magic != MAGIC or version != FORMAT_VERSION:
            raise SerializationError(f"not a version {FORMAT_VERSION} bloom filter")
        payload = data[_HEADER.size :]
        if m < 1 or k < 1 or len(payload) != (m + 7) // 8:
            raise SerializationError("bloom filter size does not match its header")
        if m % 8 and payload[-1] >> (m % 8):
            raise SerializationError("bloom filter has bits set past its end")
        try:
            _check_sizing(capacity, error_rate)
        except ConfigError as exc:
            raise SerializationError(f"bloom filter header is invalid: {exc}") from exc
        # Not through __init__: the stored m and k win over today's sizing formulas.
        bf = cls.__new__(cls)
        bf.capacity, bf.error_rate = capacity, error_rate
        bf.num_bits, bf.num_hashes = m, k
        bf._bits = bytearray(payload)
        bf._bits_set = int.from_bytes(payload, "little").bit_count()
        bf._count = count
        return bf


class RotatingBloom:
    """A Bloom filter that forgets keys after a TTL, by rotating ``generations`` filters.

    Time is cut into periods of ``P = ttl_s / (generations - 1)`` seconds aligned on the
    epoch; a key added at ``t`` goes into the generation of period ``floor(t / P)``, and a
    query at ``now`` looks at the generations of the last ``generations`` periods. So a key
    added at ``t`` is reported present exactly while
    ``floor(now / P) - floor(t / P) < generations``, which means:

    * it is present at every ``now`` in ``[t, t + ttl_s]`` (no false negatives), and
    * it is forgotten (barring false positives) at every ``now >= t + ttl_s + P``, that is
      ``t + ttl_s * generations / (generations - 1)``.

    The bounds are exact up to the float rounding of ``now / P`` (none when times and
    ``P`` are binary fractions). Time is passed in; a ``now`` earlier than one already seen
    is treated as that latest time, so a key is never lost early. Adding a present key
    refreshes its TTL. Each generation is a :class:`BloomFilter` for ``capacity`` keys at
    ``error_rate / generations``, so a query over all of them stays under ``error_rate``
    while no period brings more than ``capacity`` keys. Not thread-safe.

    Args:
        capacity: Keys expected per period ``P`` (that is ``ttl_s`` for two generations).
        error_rate: The target false-positive probability of a query, in (0, 1).
        ttl_s: Seconds a key is guaranteed to be remembered.
        generations: Filters in the ring, at least 2; more cut the overshoot ``P``.

    Raises:
        ConfigError: If an argument is out of range.
    """

    __slots__ = ("_epochs", "_filters", "_latest", "error_rate", "generations", "period_s", "ttl_s")

    def __init__(
        self, capacity: int, error_rate: float, ttl_s: float, generations: int = 2
    ) -> None:
        _check_sizing(capacity, error_rate)
        if not ttl_s > 0 or generations < 2:
            raise ConfigError(
                f"need ttl_s > 0 and generations >= 2, got {ttl_s!r}, {generations!r}"
            )
        self.error_rate = error_rate
        self.ttl_s = ttl_s
        self.generations = generations
        self.period_s = ttl_s / (generations - 1)
        self._filters = [
            BloomFilter(capacity, error_rate / generations) for _ in range(generations)
        ]
        self._epochs: list[int | None] = [None] * generations
        self._latest: int | None = None

    @property
    def capacity(self) -> int:
        """Keys each generation is sized for."""
        return self._filters[0].capacity

    def _period(self, now: float) -> int:
        """The period of ``now``, never earlier than the latest one seen."""
        p = math.floor(now / self.period_s)
        return p if self._latest is None or p > self._latest else self._latest

    def _live(self, period: int) -> list[BloomFilter]:
        """The generations holding keys of the last ``generations`` periods up to ``period``."""
        oldest = period - self.generations + 1
        return [
            f
            for f, e in zip(self._filters, self._epochs, strict=True)
            if e is not None and oldest <= e <= period
        ]

    def might_contain(self, key: str | bytes, now: float) -> bool:
        """Whether ``key`` was possibly added within the TTL before ``now`` (see the class)."""
        h1, h2 = _hashes(key)
        return any(f._test(h1, h2) for f in self._live(self._period(now)))

    def add(self, key: str | bytes, now: float) -> bool:
        """Add ``key`` at epoch time ``now``, starting (or refreshing) its TTL.

        Returns:
            True if the key was possibly present already, as :meth:`might_contain` says.
        """
        h1, h2 = _hashes(key)
        period = self._period(now)
        present = any(f._test(h1, h2) for f in self._live(period))
        i = period % self.generations
        if self._epochs[i] != period:
            self._filters[i].clear()
            self._epochs[i] = period
        self._latest = period
        self._filters[i]._set(h1, h2)
        return present

    def fill_ratio(self, now: float) -> float:
        """Bits set in the live generations over the bits of all generations."""
        live = self._live(self._period(now))
        return sum(f.fill_ratio for f in live) / self.generations

    def estimated_fp_rate(self, now: float) -> float:
        """The false-positive probability of a query at ``now``, from each fill ratio."""
        miss = 1.0
        for f in self._live(self._period(now)):
            miss *= 1.0 - f.estimated_fp_rate
        return 1.0 - miss

    def clear(self) -> None:
        """Forget every key and the latest time seen."""
        for f in self._filters:
            f.clear()
        self._epochs = [None] * self.generations
        self._latest = None

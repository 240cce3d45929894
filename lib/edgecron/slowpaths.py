"""Per-path times of slow requests in fixed log-scale histograms, memory bounded by paths, not lines.

`LogSummary` keeps, for each path with a request at or above its slow floor, a histogram of those
requests' `$request_time` in buckets 2^(1/16) wide (per-path p95 within 4.4%); at most
SLOW_PATHS_TRACKED paths are tracked (space-saving beyond that, see `SlowPaths`).
"""

from __future__ import annotations

import heapq
import math
import operator
from array import array
from typing import Any

SLOW_PATHS_TRACKED = 4096  # paths with a slow-request histogram (space-saving beyond that)
SLOW_BUCKETS_PER_OCTAVE = 16  # log-scale buckets: each is 2^(1/16) ≈ 4.4% wide
SLOW_OCTAVES = 12  # from the slow floor up to 4096× it (0.5 s → 34 min); slower values go in the last
_SLOW_BUCKETS = SLOW_OCTAVES * SLOW_BUCKETS_PER_OCTAVE


class SlowBuckets(dict[bytes, int]):
    """$request_time value → its `SlowPaths` bucket, or -1 below the slow floor; filled on first sight."""

    def __init__(self, floor: float) -> None:
        super().__init__()
        self.floor = floor

    def __missing__(self, key: bytes) -> int:
        try:
            value = float(key)
        except ValueError:
            value = 0.0
        index = self[key] = SlowPaths.bucket_of(value, self.floor)
        return index


class SlowPaths:
    """Per path, a histogram of its slow requests' times in fixed log-scale buckets.

    Memory is O(paths × buckets) whatever the number of requests: each tracked path costs one
    `array` of SLOW_OCTAVES × SLOW_BUCKETS_PER_OCTAVE counters (768 bytes). At most `capacity`
    paths are tracked, with the space-saving scheme (Metwally et al.) on their slow counts: a path
    seen when the table is full replaces the one with the fewest, inheriting that count as
    `errors[path]`. The figures are exact until then (the usual case: slow requests concentrate
    on a few pages); after it, for N slow requests seen, a path with more than N / capacity of
    them is always kept, and its histogram misses at most `errors[path]` ≤ N / capacity of them
    (counted as fast by `slowest_paths`, so its p95 may read low by that many requests).
    Merging adds up the errors: a path absent from a full table is counted with that table's
    smallest count, so a path's true slow count always lies in [count − error, count].
    """

    def __init__(self, floor: float, *, capacity: int = SLOW_PATHS_TRACKED) -> None:
        self.floor = floor
        self.capacity = capacity
        self.hists: dict[bytes, array[int]] = {}
        self.counts: dict[bytes, int] = {}  # slow requests per path, errors included (an upper bound)
        self.errors: dict[bytes, int] = {}  # only for paths that replaced another
        self._heap: list[tuple[int, bytes]] = []  # (count, path), lazily refreshed: counts only grow

    def __getstate__(self) -> dict[str, Any]:
        """Only the non-zero buckets cross processes (a path has a few of its 192)."""
        state = self.__dict__.copy()
        state["hists"] = {path: [(i, c) for i, c in enumerate(hist) if c] for path, hist in self.hists.items()}
        del state["_heap"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        hists = state.pop("hists")
        self.__dict__.update(state)
        self.hists = {}
        for path, buckets in hists.items():
            hist = self.hists[path] = array("I", bytes(4 * _SLOW_BUCKETS))
            for i, c in buckets:
                hist[i] = c
        self._heap = [(c, p) for p, c in self.counts.items()]
        heapq.heapify(self._heap)

    @staticmethod
    def bucket_of(seconds: float, floor: float) -> int:
        """-1 below `floor`; the last bucket takes everything above the top."""
        if not seconds >= floor:  # NaN too
            return -1
        return int(min(math.log2(seconds / floor) * SLOW_BUCKETS_PER_OCTAVE, _SLOW_BUCKETS - 1))  # inf too

    def upper_edge(self, index: int) -> float:
        return float(self.floor * 2 ** ((index + 1) / SLOW_BUCKETS_PER_OCTAVE))

    def add(self, path: bytes, bucket: int) -> None:
        hist = self.hists.get(path)
        if hist is None:
            hist = self._new(path)
        hist[bucket] += 1
        self.counts[path] += 1

    def _new(self, path: bytes) -> array[int]:
        if len(self.hists) >= self.capacity:
            self.errors[path] = self._pop_smallest()
        hist = self.hists[path] = array("I", bytes(4 * _SLOW_BUCKETS))
        self.counts[path] = self.errors.get(path, 0)
        heapq.heappush(self._heap, (self.counts[path], path))
        return hist

    def _pop_smallest(self) -> int:
        """Drop the path with the fewest slow requests; its count (what a newcomer inherits)."""
        while True:
            count, path = heapq.heappop(self._heap)
            current = self.counts[path]
            if current == count:
                del self.hists[path], self.counts[path]
                self.errors.pop(path, None)
                return count
            heapq.heappush(self._heap, (current, path))  # stale entry: grew since it was pushed

    def smallest(self) -> int:
        """The count a path absent from a full table may have had (0 while not full)."""
        if len(self.hists) < self.capacity:
            return 0
        return min(self.counts.values())

    def merge(self, later: SlowPaths) -> None:
        """Add `later`'s table: exact when neither was full; paths keep their first-seen order."""
        missing_here, missing_there = self.smallest(), later.smallest()
        for path, hist in later.hists.items():
            mine = self.hists.get(path)
            if mine is None:
                self.hists[path] = array("I", hist)
                self.counts[path] = missing_here + later.counts[path]
                error = missing_here + later.errors.get(path, 0)
            else:
                self.hists[path] = array("I", map(operator.add, mine, hist))
                self.counts[path] += later.counts[path]
                error = self.errors.get(path, 0) + later.errors.get(path, 0)
            if error:
                self.errors[path] = error
        if missing_there:
            for path in self.hists.keys() - later.hists.keys():
                self.counts[path] += missing_there
                self.errors[path] = self.errors.get(path, 0) + missing_there
        if len(self.hists) > self.capacity:
            kept = set(sorted(self.counts, key=self.counts.__getitem__, reverse=True)[: self.capacity])
            for path in [p for p in self.hists if p not in kept]:
                del self.hists[path], self.counts[path]
                self.errors.pop(path, None)
        self._heap = [(c, p) for p, c in self.counts.items()]
        heapq.heapify(self._heap)

"""The access-log figures behind `check_logs.py`: one `LogSummary` over the lines fed to it.

`LogSummary.feed()` is the hot loop: lines stay bytes, each line is matched once by the compiled
format (a line it does not describe, or whose time does not parse, is malformed; so is a line over
the reader's cap: lines == requests + outside_window + malformed), timestamps are parsed once per
distinct second, and `$request_time` is kept as counts per
distinct value (exact percentiles, memory bounded by the number of distinct values, not lines).
Memory stays flat as the log grows: per request line and per path only counts are kept, and the
slow paths' times go in fixed log-scale histograms for at most SLOW_PATHS_TRACKED paths
(`SlowPaths`: per-path p95 within 4.4%, and approximate only beyond that many slow paths).
Counts, 5xx rates, the top lists and the overall percentiles are exact. The figures are judged in
`findings.py`; the per-slot figures (`slots`) feed the deploy comparison in `deploys.py`.
"""

from __future__ import annotations

import functools
import gc
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from itertools import accumulate, compress
from typing import Any

from .errors import ConfigError, InputError
from .logformat import LogFormat, display, time_parser, upstream_times
from .loglines import ChunkAt
from .slowpaths import SlowBuckets, SlowPaths

FOLD_AT = 200_000  # distinct request lines kept before folding them into paths
SLOT_SECONDS = 600  # deploy windows are compared in 10-minute slots kept in `log_slots`
MALFORMED_SAMPLES = 5
MALFORMED_PLACES = 100  # malformed lines whose file and position are kept for --json
TOP_PATHS = 10
# Where the cache status comes from, first found: nginx's own cache, else Cloudflare's header
# as nginx saw it (from the upstream, or as sent on).
CACHE_STATUS_VARIABLES = ("upstream_cache_status", "upstream_http_cf_cache_status", "sent_http_cf_cache_status")
STATIC_SUFFIXES = tuple(
    b".css .js .mjs .map .png .jpg .jpeg .gif .svg .webp .avif .ico .woff .woff2 .ttf .otf .eot .mp4 .webm"
    b" .mp3 .pdf .zip .txt .xml".split()
)
CACHED_STATES = frozenset((b"HIT", b"STALE", b"UPDATING", b"REVALIDATED"))
# The variables the figures read (besides the time, the request and the cache status found).
_FIELDS = (
    "status",
    "request_time",
    "upstream_response_time",
    "logged_in",
    "upstream_cache_status",
    "sent_http_cache_control",
)


class LogSummary:
    """Figures over the lines fed to it; `slots` are what `record_slots` adds to the state DB."""

    def __init__(
        self,
        fmt: LogFormat,
        *,
        since: float | None = None,
        until: float | None = None,
        slow_seconds: float = 1.0,
    ) -> None:
        if not fmt.has("status"):
            raise ConfigError("LOG_FORMAT has no $status", got=fmt.text, expected="a log_format with $status")
        self.fmt = fmt
        self._time_var = next((v for v in ("time_local", "time_iso8601", "msec") if fmt.has(v)), None)
        self.since, self.until = since, until
        self.slow_floor = max(slow_seconds / 2, 0.001)  # per-path times are kept from here up (see slowest_paths)
        self.lines = 0  # lines seen, parsed or not
        self.requests = 0  # parsed lines inside --since/--until
        self.outside_window = 0
        self.malformed = 0
        self.malformed_samples: list[str] = []
        self.malformed_at: list[tuple[str, int]] = []  # (file, byte offset) of the first MALFORMED_PLACES
        self.overlong = 0  # of the malformed: lines over the reader's cap
        self.statuses: Counter[bytes] = Counter()
        self.rt_counts: Counter[bytes] = Counter()  # exact $request_time values → count
        # Counted per request line (C speed, no per-line path cutting), folded into paths when
        # read or when there are many distinct ones, so memory stays bounded however long the log.
        self._by_request: Counter[bytes] = Counter()
        self._5xx_by_request: Counter[bytes] = Counter()
        self._404_by_request: Counter[bytes] = Counter()
        self._path_404: Counter[bytes] = Counter()
        self._path_counts: Counter[bytes] = Counter()
        self._path_5xx: Counter[bytes] = Counter()
        self._slow = SlowPaths(self.slow_floor)  # per path: fixed log-scale histogram of slow requests
        self._uri_var = "request_uri" if fmt.has("request_uri") else "request" if fmt.has("request") else None
        self.slots: dict[int, list[Any]] = {}  # slot start → [requests, 5xx, static, {rt[:4]: n}]
        self.cache_var = next((v for v in CACHE_STATUS_VARIABLES if fmt.has(v)), None)
        self.cache_counts: Counter[bytes] = Counter()
        self.urt_counts: Counter[bytes] = Counter()  # exact $upstream_response_time values → count
        self.loggedin_cached = 0
        self.loggedin_examples: list[str] = []
        self._compile()

    def _compile(self) -> None:
        """The parsers and lookup caches: rebuilt, not pickled, when a summary crosses processes."""
        self._time = time_parser(self._time_var) if self._time_var else None
        wanted = (self._time_var, self._uri_var, self.cache_var, *_FIELDS)
        self._parser = self.fmt.column_parser([v for v in wanted if v])
        self._static = _StaticRequests(self._path_of)
        self._slow_bucket = SlowBuckets(self.slow_floor)

    def __getstate__(self) -> dict[str, Any]:
        self._fold()  # per path: a smaller pickle, done in the worker that built it, not in merge()
        state = self.__dict__.copy()
        for name in ("_time", "_parser", "_static", "_slow_bucket"):
            del state[name]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._compile()

    def merge(self, later: LogSummary) -> None:
        """Add the figures of `later`, a summary of the lines that follow this one's.

        Both are folded first so paths keep their order of first appearance (ties in the top
        lists are then broken as in one sequential read), and samples stay the first ones.
        """
        self._fold()
        later._fold()
        self.lines += later.lines
        self.requests += later.requests
        self.outside_window += later.outside_window
        self.malformed += later.malformed
        self.malformed_samples += later.malformed_samples[: MALFORMED_SAMPLES - len(self.malformed_samples)]
        self.malformed_at += later.malformed_at[: MALFORMED_PLACES - len(self.malformed_at)]
        self.overlong += later.overlong
        self.cache_counts.update(later.cache_counts)
        self.urt_counts.update(later.urt_counts)
        self._path_404.update(later._path_404)
        self.loggedin_cached += later.loggedin_cached
        self.loggedin_examples += later.loggedin_examples[: 5 - len(self.loggedin_examples)]
        self.statuses.update(later.statuses)
        self.rt_counts.update(later.rt_counts)
        self._path_counts.update(later._path_counts)
        self._path_5xx.update(later._path_5xx)
        self._slow.merge(later._slow)
        for start, (requests, errors, static, hist) in later.slots.items():
            entry = self.slots.setdefault(start, [0, 0, 0, Counter()])
            entry[0] += requests
            entry[1] += errors
            entry[2] += static
            entry[3].update(hist)

    @property
    def has_request_time(self) -> bool:
        return self.fmt.has("request_time")

    @property
    def can_see_logged_in(self) -> bool:
        return self.fmt.has("logged_in") and (
            self.fmt.has("upstream_cache_status") or self.fmt.has("sent_http_cache_control")
        )

    def feed(self, lines: Sequence[bytes], at: ChunkAt | None = None) -> None:
        """Count a batch of lines (a few thousand at a time: the reader's chunks); `at` says where
        they start in which file, and which lines after them were over the cap (not in `lines`)."""
        enabled = gc.isenabled()
        gc.disable()  # millions of short-lived lists and tuples, no cycles: skip the collector
        try:
            if lines:
                self._feed(lines, at)
            if at is not None and at.overlong:
                self._overlong(at)
        finally:
            if enabled:
                gc.enable()

    def _overlong(self, at: ChunkAt) -> None:
        self.lines += len(at.overlong)
        self.malformed += len(at.overlong)
        self.overlong += len(at.overlong)
        room = MALFORMED_SAMPLES - len(self.malformed_samples)
        self.malformed_samples += ["(a line longer than LOG_MAX_LINE_BYTES)"] * min(room, len(at.overlong))
        self.malformed_at += [(at.path, o) for o in at.overlong[: MALFORMED_PLACES - len(self.malformed_at)]]

    def _malformed(self, lines: Sequence[bytes], bad: list[int], at: ChunkAt | None) -> None:
        self.malformed += len(bad)
        room = MALFORMED_SAMPLES - len(self.malformed_samples)
        self.malformed_samples += [display(lines[i], limit=200) for i in bad[:room]]
        room = MALFORMED_PLACES - len(self.malformed_at)
        if at is not None and room > 0:
            take = bad[:room]
            starts = [0, *accumulate(len(line) + 1 for line in lines[: take[-1]])]
            self.malformed_at += [(at.path, at.offset + starts[i]) for i in take]

    def _feed(self, lines: Sequence[bytes], at: ChunkAt | None) -> None:
        self.lines += len(lines)
        col = self._parser.columns
        rows, bad = self._parser.split(lines)
        times: list[bytes] | None = None
        slot = 0
        if self._time is not None and rows:
            slot = self._one_slot(rows)
            if not slot:
                times = col[self._time_var](rows)  # type: ignore[index]
                parse = self._time
                epochs = {t: parse(t) for t in set(times)}
                if None in epochs.values():  # a time that does not parse: the line is malformed
                    keep = [epochs[t] is not None for t in times]
                    dropped = set(bad)
                    parsed = [i for i in range(len(lines)) if i not in dropped]
                    bad = sorted([*bad, *(i for i, k in zip(parsed, keep, strict=True) if not k)])
                    rows, times = list(compress(rows, keep)), list(compress(times, keep))
                if rows:
                    times, slot, inside = self._window(times, epochs)
                    if inside is not None:
                        rows = list(compress(rows, inside))
                        times = list(compress(times, inside)) if times is not None else None
        if bad:
            self._malformed(lines, bad, at)
        if not rows:
            return
        statuses = col["status"](rows)
        self.requests += len(rows)
        paths = col[self._uri_var](rows) if self._uri_var else [b"-"] * len(rows)  # request lines
        chunk_status = Counter(statuses)
        self.statuses.update(chunk_status)
        self._by_request.update(paths)
        fives = {s for s in chunk_status if s[:1] == b"5"}
        if fives:
            self._5xx_by_request.update(compress(paths, map(fives.__contains__, statuses)))
        if b"404" in chunk_status:
            self._404_by_request.update(compress(paths, map(b"404".__eq__, statuses)))
        if self.cache_var is not None:
            self.cache_counts.update(col[self.cache_var](rows))
        rts: list[bytes] = []
        chunk_rt: Counter[bytes] = Counter()  # per distinct value: cheaper than per line below
        if "request_time" in col:
            rts = col["request_time"](rows)
            chunk_rt = Counter(rts)
            self.rt_counts.update(chunk_rt)
            bucket = self._slow_bucket
            slow_values = {rt for rt in chunk_rt if bucket[rt] >= 0}
            if slow_values:  # a few % of the lines: cut their paths one by one
                slow = list(map(slow_values.__contains__, rts))
                add, path_of = self._slow.add, self._path_of
                for request, rt in zip(compress(paths, slow), compress(rts, slow), strict=True):
                    add(path_of(request), bucket[rt])
        if "upstream_response_time" in col:
            self.urt_counts.update(col["upstream_response_time"](rows))
        if "logged_in" in col:
            flags = col["logged_in"](rows)
            if set(flags) - _NOT_LOGGED_IN:
                picked = [i for i, f in enumerate(flags) if f not in _NOT_LOGGED_IN]
                sub = [rows[i] for i in picked]
                caches = col["upstream_cache_status"](sub) if "upstream_cache_status" in col else None
                ccs = col["sent_http_cache_control"](sub) if "sent_http_cache_control" in col else None
                for n, i in enumerate(picked):
                    self._logged_in(paths[i], caches[n] if caches else None, ccs[n] if ccs else None)
        self._add_slots(times, slot, statuses, paths, rts, chunk_rt, chunk_status)
        if len(self._by_request) > FOLD_AT:
            self._fold()

    def _path_of(self, request: bytes) -> bytes:
        """`GET /a?b HTTP/1.1` (or `/a?b` from $request_uri) → `/a`."""
        if self._uri_var == "request":
            request = request.partition(b" ")[2].rpartition(b" ")[0]
        return request.partition(b"?")[0]

    def _fold(self) -> None:
        path_of = self._path_of
        for request, n in self._by_request.items():
            self._path_counts[path_of(request)] += n
        for request, n in self._5xx_by_request.items():
            self._path_5xx[path_of(request)] += n
        for request, n in self._404_by_request.items():
            self._path_404[path_of(request)] += n
        self._404_by_request.clear()
        self._by_request.clear()
        self._5xx_by_request.clear()
        self._static.clear()

    @property
    def path_counts(self) -> Counter[bytes]:
        self._fold()
        return self._path_counts

    def _one_slot(self, rows: list[Any]) -> int:
        """The chunk's slot when its first and last times fall in one slot (a chunk is a few
        seconds of log, in about time order), so no other time needs parsing; else 0.

        Not with --since/--until: each line is judged by its own time there. Only for $time_local
        and $msec, whose shape in the format's regex makes every value parse; a $time_iso8601 of
        that shape may still be no date (02-30), so each distinct one is parsed.
        """
        if self._time_var == "time_iso8601" or self.since is not None or self.until is not None:
            return 0
        assert self._time is not None and self._time_var is not None
        ends = [self._time(t) for t in self._parser.columns[self._time_var]([rows[0], rows[-1]])]
        if ends[0] is None or ends[1] is None:
            return 0
        first, last = min(ends[0], ends[1]), max(ends[0], ends[1])
        if int(first) // SLOT_SECONDS == int(last) // SLOT_SECONDS:
            return int(first) // SLOT_SECONDS * SLOT_SECONDS
        return 0

    def _window(
        self, times: list[bytes], epochs: Mapping[bytes, float | None]
    ) -> tuple[list[bytes] | None, int, list[bool] | None]:
        """(times or None, the chunk's slot when it has one, rows to keep or None for all)."""
        since, until = self.since, self.until
        values = [e for e in epochs.values() if e is not None]
        first, last = min(values), max(values)
        if (since is None or first >= since) and (until is None or last < until):
            if int(first) // SLOT_SECONDS == int(last) // SLOT_SECONDS:
                return None, int(first) // SLOT_SECONDS * SLOT_SECONDS, None
            return times, 0, None
        ok = {
            t: e is not None and (since is None or e >= since) and (until is None or e < until)
            for t, e in epochs.items()
        }
        keep = [ok[t] for t in times]
        self.outside_window += keep.count(False)
        return times, 0, keep

    def _add_slots(
        self,
        times: list[bytes] | None,
        slot: int,
        statuses: list[bytes],
        paths: list[bytes],
        rts: list[bytes],
        chunk_rt: Counter[bytes],
        chunk_status: Counter[bytes],
    ) -> None:
        if self._time is None:
            return
        if slot:
            groups = [(slot, statuses, paths, chunk_rt, chunk_status)]
        else:
            if times is None:
                return
            to_slot = {t: int(e) // SLOT_SECONDS * SLOT_SECONDS for t in set(times) if (e := self._time(t))}
            keys = [to_slot.get(t, 0) for t in times]
            groups = []
            for key in set(keys) - {0}:
                mask = [k == key for k in keys]
                sub_status = list(compress(statuses, mask))
                sub_paths, sub_rt = list(compress(paths, mask)), Counter(compress(rts, mask))
                groups.append((key, sub_status, sub_paths, sub_rt, Counter(sub_status)))
        for key, sub_status, sub_paths, sub_rt, counts in groups:
            entry = self.slots.get(key)
            if entry is None:
                entry = self.slots[key] = [0, 0, 0, Counter()]
            entry[0] += len(sub_status)
            entry[1] += sum(n for s, n in counts.items() if s[:1] == b"5")
            entry[2] += sum(map(self._static.__getitem__, sub_paths))
            hist = entry[3]
            for rt, n in sub_rt.items():
                hist[rt[:4]] += n  # 10 ms buckets

    def _logged_in(self, request: bytes, cache: bytes | None, cc: bytes | None) -> None:
        if (cache is not None and cache in CACHED_STATES) or (cc is not None and _cacheable(cc)):
            self.loggedin_cached += 1
            if len(self.loggedin_examples) < 5:
                how = f"cache={display(cache)}" if cache in CACHED_STATES else f"cc={display(cc)}"
                self.loggedin_examples.append(f"{display(self._path_of(request))} ({how})")

    # -- figures -----------------------------------------------------------------------------------

    @property
    def upstream_retries(self) -> int:
        """Attempts at another upstream server (each `,` in $upstream_response_time)."""
        return sum(raw.count(b",") * n for raw, n in self.urt_counts.items())

    def upstream_percentiles(self) -> dict[str, Any] | None:
        """p50/p95/p99 of $upstream_response_time: the sum of a request's attempts, and its last."""
        if not self.fmt.has("upstream_response_time"):
            return None
        total: Counter[float] = Counter()
        last: Counter[float] = Counter()
        for raw, n in self.urt_counts.items():
            whole, final = upstream_times(raw)
            if whole is not None:
                total[round(whole, 3)] += n
            if final is not None:
                last[final] += n
        return {
            "sum": percentiles_of({repr(k): n for k, n in total.items()}, exact=True),
            "last": percentiles_of({repr(k): n for k, n in last.items()}, exact=True),
            "requests": sum(total.values()),
        }

    def status_counts(self) -> dict[str, int]:
        return {s.decode("ascii", "replace"): n for s, n in sorted(self.statuses.items())}

    def cache_status_counts(self) -> dict[str, int] | None:
        """Per cache status (`-` or nothing: no cache on that request), or None without the variable."""
        if self.cache_var is None:
            return None
        out: dict[str, int] = {}
        for raw, n in self.cache_counts.most_common():
            key = display(self.fmt.unescape(raw), limit=40) or "-"
            out[key] = out.get(key, 0) + n
        return out

    def top_paths(self, kind: str, n: int = TOP_PATHS) -> list[dict[str, Any]]:
        """The paths (query strings cut) with the most 404s (`kind` "404") or 5xx ("5xx")."""
        self._fold()
        counts = self._path_404 if kind == "404" else self._path_5xx
        return [{"path": display(self.fmt.unescape(p)), "count": c} for p, c in counts.most_common(n)]

    def count_5xx(self) -> int:
        return sum(n for s, n in self.statuses.items() if s[:1] == b"5")

    def status_classes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for status, n in self.statuses.items():  # 499 apart: the client closed, no error of ours
            key = "499" if status == b"499" else status[:1].decode("ascii", "replace") + "xx"
            out[key] = out.get(key, 0) + n
        return dict(sorted(out.items()))

    def percentiles(self) -> dict[str, float]:
        return percentiles_of(self.rt_counts, exact=True)

    def top_5xx_paths(self, n: int = 5) -> list[tuple[str, int]]:
        self._fold()
        return [(display(p), c) for p, c in self._path_5xx.most_common(n)]

    def slowest_paths(self, n: int = 5, *, min_requests: int = 5) -> list[tuple[str, int, float]]:
        """Paths by p95, among those whose p95 is at least `slow_floor` (only their slow
        requests' times are kept: the p95 rank falls among them exactly when it is that high).

        The p95 is the upper edge of its log-scale bucket: at most 4.4% above the true value.
        See `SlowPaths` for the bound once more than SLOW_PATHS_TRACKED paths were slow.
        """
        counts = self.path_counts  # folds
        rows = []
        for path, hist in self._slow.hists.items():
            total = counts[path]
            slow = sum(hist)  # the requests this histogram holds; unknown ones count as fast
            rank = 0.95 * total
            running = total - slow
            if total < min_requests or rank <= running:
                continue
            for index, c in enumerate(hist):
                running += c
                if c and running >= rank:
                    rows.append((display(path), total, round(self._slow.upper_edge(index), 3)))
                    break
        rows.sort(key=lambda r: -r[2])
        return rows[:n]

    def static_origin(self, n: int = 10) -> list[tuple[str, int]]:
        rows = Counter({p: c for p, c in self.path_counts.items() if _is_static(p)})
        return [(display(p), c) for p, c in rows.most_common(n)]

    def check_format(self, fmt_name: str) -> None:
        """Most lines unparsable means LOG_FORMAT is wrong: raise before anything is recorded."""
        if self.lines and self.malformed * 2 > self.lines:
            raise InputError(
                f"LOG_FORMAT does not match the log: {self.malformed} of {self.lines} lines "
                f"did not parse; first bad line: {self.malformed_samples[0]!r}",
                expected=f"lines in the format {fmt_name!r}: {self.fmt.text}",
                hint="Nothing was recorded; set LOG_FORMAT to the log_format your nginx.conf uses "
                "for this access_log (paste it as is), then rerun."
                + "".join(f" Hint: {warning}." for warning in self.fmt.warnings),
            )


class _StaticRequests(dict[bytes, bool]):
    """request line → its path looks like a static asset; filled on first sight, read at C speed."""

    def __init__(self, path_of: Callable[[bytes], bytes]) -> None:
        super().__init__()
        self.path_of = path_of

    def __missing__(self, request: bytes) -> bool:
        value = self[request] = _is_static(self.path_of(request))
        return value


def _is_static(path: bytes) -> bool:
    return path.lower().endswith(STATIC_SUFFIXES)


_NOT_LOGGED_IN = frozenset((b"0", b"-", b""))


@functools.lru_cache(maxsize=4096)  # a site sends a handful of distinct Cache-Control values
def _cacheable(cc: bytes) -> bool:
    value = cc.lower()
    if b"private" in value or b"no-store" in value or b"no-cache" in value:
        return False
    return b"public" in value or b"s-maxage" in value or (b"max-age" in value and b"max-age=0" not in value)


def percentiles_of(counts: Mapping[bytes, int] | Mapping[str, int], *, exact: bool = False) -> dict[str, float]:
    """p50/p95/p99 from value → count. Coarse keys (rt[:4]) are bucket floors, 10 ms wide."""
    values: list[tuple[float, int]] = []
    for raw, n in counts.items():
        try:
            values.append((float(raw), n))
        except ValueError:
            continue  # "-" (no time logged)
    values.sort()
    total = sum(n for _, n in values)
    out = {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    if not total:
        return out
    targets = {"p50": 0.50 * total, "p95": 0.95 * total, "p99": 0.99 * total}
    running = 0
    pending = sorted(targets.items(), key=lambda kv: kv[1])
    for value, n in values:
        running += n
        while pending and running >= pending[0][1]:
            out[pending.pop(0)[0]] = value if exact else round(value + 0.01, 3)
        if not pending:
            break
    return out

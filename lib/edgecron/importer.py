"""One import run: read a feed in batches, classify each item against the store, commit each
batch with its checkpoint, and hand changed URLs to the purge outbox.

Resume: an unfinished run leaves the position of its last committed record in `checkpoints`; the
next run of the same (unchanged) source starts after it. Anything replayed is absorbed by the
upsert, so a kill -9 anywhere ends, after a rerun, in the same rows as an uninterrupted run.

Cursor: a completed run promotes the highest (updated_at, key) it saw. The next run re-checks
items newer than the cursor minus the overlap window (late timestamps), every key the store does
not have, and with `max_age` every stored item whose content is older than that; the rest are
counted unchanged without hashing. The cursor only moves when a run completes, so an unsorted
feed cannot make a resumed run skip items.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import repeat
from typing import Any, Protocol

from .content import Change, Checkpoint, ContentStore, StoredItem
from .errors import EdgecronError, InputError
from .feed import FeedItem, Position, RawRecord, Reject, Validator
from .outbox import PurgeOutbox
from .runs import recent_runs
from .state import StateDB, iso

REJECTS_KEPT = 200  # in the report; all of them are in the `rejects` table


class Source(Protocol):
    name: str

    def fingerprint(self) -> str: ...

    def records(self, resume: Position | None = None) -> Iterable[RawRecord | Reject]: ...


@dataclass(frozen=True)
class ImportOptions:
    batch_size: int = 500
    max_reject_rate: float = 0.05
    overlap: timedelta = timedelta(minutes=5)
    max_age: timedelta | None = None
    dry_run: bool = False


@dataclass
class Committed:
    """What a run has written so far. Each batch commits in one transaction with its checkpoint, so
    this stays true however the run ends: it is what a stopped run reports instead of "nothing was
    changed"."""

    inserted: int = 0
    updated: int = 0
    removed: int = 0
    rejected: int = 0
    purges_queued: int = 0  # URLs this run added to the purge outbox
    checkpoint: str | None = None  # the saved resume position; None once the run completed

    @property
    def rerun_continues(self) -> bool:
        """A rerun of the same source starts after `checkpoint` rather than at the beginning."""
        return self.checkpoint is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "inserted": self.inserted,
            "updated": self.updated,
            "removed": self.removed,
            "rejected": self.rejected,
            "purges_queued": self.purges_queued,
            "checkpoint": self.checkpoint,
            "rerun_continues": self.rerun_continues,
        }


@dataclass
class ImportReport:
    run_id: str
    source: str
    counts: dict[str, int]
    rejects: list[Reject] = field(default_factory=list)
    changed_urls: list[str] = field(default_factory=list)  # old and new URLs: what to purge
    live_urls: list[str] = field(default_factory=list)  # inserted/updated pages: what to re-warm
    resumed_from: str | None = None
    backup: str | None = None
    stopped: str | None = None  # why the run ended early, if it did
    committed: Committed | None = None  # None while this run has written nothing

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "source": self.source,
            "counts": self.counts,
            "resumed_from": self.resumed_from,
            "backup": self.backup,
            "stopped": self.stopped,
            "committed": None if self.committed is None else self.committed.as_dict(),
            "rejects": [r.as_dict() for r in self.rejects],
            "changed_urls": self.changed_urls,
            "warm_urls": self.live_urls,
        }


class Importer:
    """Runs one import. `backup` is called once, right before the run's first write."""

    def __init__(
        self,
        *,
        store: ContentStore,
        source: Source,
        validator: Validator,
        options: ImportOptions,
        run_id: str,
        now: Callable[[], datetime],
        stop: threading.Event | None = None,
        backup: Callable[[], str | None] = lambda: None,
        forward_purges: Callable[[], int] = lambda: 0,
    ) -> None:
        self.store = store
        self.source = source
        self.validator = validator
        self.options = options
        self.run_id = run_id
        self.now = now
        self.stop = stop or threading.Event()
        self.backup = backup
        self.forward_purges = forward_purges
        self.started_at = now()
        self.started_text = iso(self.started_at)
        self.counts = dict.fromkeys(
            ("read", "inserted", "updated", "removed", "unchanged", "rejected", "duplicates", "behind_cursor", "older"),
            0,
        )
        self.report = ImportReport(run_id=run_id, source=source.name, counts=self.counts)
        self.seen: set[str] = set()
        self.remembered: list[str] = []  # tombstoned keys to record with the next commit
        self.revived: list[str] = []  # removed keys a newer copy brought back
        self.overlay: dict[str, StoredItem | None] = {}  # changes not yet committed (all of them in a dry run)
        self.backed_up = False

    def run(self) -> ImportReport:
        saved = self.store.checkpoint(self.source.name)
        fingerprint = self.source.fingerprint()
        resume = saved.resume if saved.fingerprint == fingerprint else None
        self.report.resumed_from = resume.label() if resume else None
        self.cursor_floor = self._floor(saved.cursor)
        self.stale_before = self.now() - self.options.max_age if self.options.max_age is not None else None
        self.progress = Checkpoint(
            saved.source,
            cursor=saved.cursor,
            fingerprint=fingerprint,
            resume=resume,
            high=saved.high if resume else None,
        )
        status = "ok"
        batch: list[RawRecord | Reject] = []
        try:
            for record in self.source.records(resume):
                batch.append(record)
                if len(batch) >= self.options.batch_size:
                    self.handle_batch(batch)
                    batch = []
                    self._check_reject_rate(final=False)
                    if self.stop.is_set():
                        status = self.report.stopped = "interrupted"
                        break
            else:
                self.handle_batch(batch)
                batch = []
                self._check_reject_rate(final=True)
        except EdgecronError as exc:
            status = "stopped" if isinstance(exc, InputError) else "failed"
            self.report.stopped = exc.what
            if batch:  # keep what was read before the feed failed
                self.handle_batch(batch)
            self._finish(status)
            raise
        self._finish(status)
        return self.report

    def handle_batch(self, records: list[RawRecord | Reject]) -> None:
        """Classify a batch, then commit its rows, rejects and checkpoint together."""
        if not records:
            return
        items: list[FeedItem] = []
        rejects: list[Reject] = []
        check = self.validator.check
        for record in records:
            checked = record if isinstance(record, Reject) else check(record)
            (rejects if isinstance(checked, Reject) else items).append(checked)  # type: ignore[arg-type]
        items = self._last_copies(items)
        stored, known = self._lookup(items)
        absent = [i.key for i in items if i.key not in stored and i.key not in known]
        removed = self.store.removed_by_feed(absent) if absent else {}
        classified = map(self._classify, items, repeat(stored), repeat(known), repeat(removed))
        changes = [change for change in classified if change is not None]
        self.counts["rejected"] += len(rejects)
        self.report.rejects.extend(rejects[: max(0, REJECTS_KEPT - len(self.report.rejects))])
        last = records[-1].position
        self.progress.resume = last
        if self.options.dry_run or not (changes or rejects or self.remembered):
            return  # nothing to write: a replay from the previous commit costs only reading
        if not self.backed_up:
            self.report.backup = self.backup()
            self.backed_up = True
        self.store.commit_batch(
            run_id=self.run_id,
            started_at=self.started_at,
            changes=changes,
            rejects=rejects,
            checkpoint=self.progress,
            counts=self.counts,
            now=self.now(),
            removed=self.remembered,
            revived=self.revived,
        )
        committed = self._committed(last)
        self.remembered.clear()
        self.revived.clear()
        self.overlay.clear()
        committed.purges_queued += self.forward_purges()

    def _committed(self, checkpoint: Position | None) -> Committed:
        """Note what the commit just made holds: the counts so far, and the checkpoint saved with it."""
        committed = self.report.committed or Committed()
        counts = self.counts
        committed.inserted, committed.updated = counts["inserted"], counts["updated"]
        committed.removed, committed.rejected = counts["removed"], counts["rejected"]
        committed.checkpoint = checkpoint.label() if checkpoint is not None else None
        self.report.committed = committed
        return committed

    def _last_copies(self, items: list[FeedItem]) -> list[FeedItem]:
        """Collapse a batch's copies of one key into the copy that wins, by the same rule used
        across batches (so where batch boundaries fall never changes the result): a tombstone or a
        later live copy replaces what came before, except that a live copy never replaces a live
        copy with a newer updated_at. Keeps reruns from flipping a row between differing copies."""
        winner: dict[str, int] = {}
        for index, item in enumerate(items):
            kept = winner.get(item.key)
            if kept is None or item.deleted:
                winner[item.key] = index
            elif items[kept].deleted:
                if item.updated_at > self.started_at:  # only an edit made after the removal revives it
                    winner[item.key] = index
            elif item.updated_at >= items[kept].updated_at:
                winner[item.key] = index
        if len(winner) == len(items):
            return items
        self.counts["duplicates"] += len(items) - len(winner)
        return [item for index, item in enumerate(items) if winner[item.key] == index]

    def _lookup(self, items: list[FeedItem]) -> tuple[dict[str, StoredItem], set[str]]:
        """The stored rows a batch needs, in two queries. An item behind the cursor (and not due
        for a `--max-age` re-check) needs only to be known: the key index answers that alone."""
        floor = self.cursor_floor if self.stale_before is None else None
        full: list[str] = []
        behind: list[str] = []
        for item in items:
            if item.key not in self.overlay:
                is_behind = floor is not None and not item.deleted and (item.updated_at, item.key) <= floor
                (behind if is_behind else full).append(item.key)
        return self.store.lookup(full), self.store.present(behind)

    def _classify(
        self, item: FeedItem, stored: dict[str, StoredItem], known: set[str], removed: dict[str, str]
    ) -> Change | None:
        """One item against the store and this run's uncommitted changes: the change to make, or
        None when it is unchanged. It runs for every item, so the common outcomes return first."""
        key, counts, overlay = item.key, self.counts, self.overlay
        if key in self.seen:
            counts["duplicates"] += 1  # the last one wins: it is applied after the earlier
        else:
            self.seen.add(key)
        if key in overlay:
            current = overlay[key]
            exists = current is not None
        else:
            current = stored.get(key)  # None when only `known` (behind the cursor) or not stored
            exists = current is not None or key in known
        if item.deleted:
            if current is None:
                if key not in removed and key not in overlay:  # remembered, so an older copy cannot revive it
                    overlay[key] = None
                    self.remembered.append(key)
                counts["unchanged"] += 1
                return None
            counts["removed"] += 1
            overlay[key] = None
            return self._change("delete", key, None, None, (current.url,))
        counts["read"] += 1
        mark = (item.updated_at, key)
        high = self.progress.high
        if high is None or mark > high:
            self.progress.high = mark
        if not exists:
            # A key a feed removed (a tombstone, in this run or an earlier one) comes back only with
            # an edit newer than the removal: otherwise every rerun of a feed holding both the
            # tombstone and an older copy would delete and re-insert the item.
            removed_at = removed.get(key) or (self.started_text if key in overlay else None)
            if removed_at is not None and item.updated_text <= removed_at:
                counts["unchanged"] += 1
                counts["older"] += 1
                return None
            if key in removed:
                self.revived.append(key)
            digest = item.content_hash()
            counts["inserted"] += 1
            overlay[key] = StoredItem(key, item.url, digest, item.updated_text)
            return self._change("insert", key, item, digest, (item.url,))
        floor = self.cursor_floor
        if floor is not None and mark <= floor and (current is None or not self._stale(current)):
            counts["unchanged"] += 1
            counts["behind_cursor"] += 1
            return None
        assert current is not None  # only items behind the cursor are looked up by key alone
        digest = item.content_hash()
        if digest == current.content_hash:
            counts["unchanged"] += 1
            return None
        if item.updated_text < current.updated_at:  # both ISO 8601 in UTC: text order is time order
            # An older copy (a duplicate earlier in the feed with a newer timestamp, or a stale
            # source) never replaces a newer row: that is what makes reruns and resumes idempotent.
            counts["unchanged"] += 1
            counts["older"] += 1
            return None
        counts["updated"] += 1
        overlay[key] = StoredItem(key, item.url, digest, item.updated_text)
        urls = (current.url, item.url) if current.url != item.url else (item.url,)
        return self._change("update", key, item, digest, urls)

    def _change(
        self, action: str, key: str, item: FeedItem | None, digest: str | None, urls: tuple[str, ...]
    ) -> Change:
        self.report.changed_urls.extend(urls)
        if item is not None:
            self.report.live_urls.append(item.url)
        return Change(action, key, item, digest, urls)

    def _stale(self, current: StoredItem) -> bool:
        """Whether `--max-age` asks to re-check this stored item although it is behind the cursor."""
        return self.stale_before is not None and datetime.fromisoformat(current.updated_at) < self.stale_before

    def _floor(self, cursor: tuple[datetime, str] | None) -> tuple[datetime, str] | None:
        if cursor is None:
            return None
        overlap = self.options.overlap
        return (cursor[0] - overlap, cursor[1] if not overlap else "")

    def _check_reject_rate(self, *, final: bool) -> None:
        rejected = self.counts["rejected"]
        seen = rejected + self.counts["read"] + self.counts["removed"]
        # Judge the rate only over a full batch or the whole feed, not the first few items.
        if not rejected or (not final and seen < self.options.batch_size):
            return
        if rejected / seen > self.options.max_reject_rate:
            reasons = "; ".join(r.reason() for r in self.report.rejects[:3])
            raise InputError(
                f"{rejected} of {seen} items rejected, over the limit of {self.options.max_reject_rate:.0%}"
                f" (first: {reasons})",
                expected=f"at most {self.options.max_reject_rate:.0%} rejected (--max-reject-rate)",
            )

    def _finish(self, status: str) -> None:
        if self.options.dry_run:
            return
        progress = self.progress
        if status == "ok":  # promote the cursor; nothing left to resume
            high = progress.high
            cursor = progress.cursor if high is None or (progress.cursor and progress.cursor >= high) else high
            progress = Checkpoint(progress.source, cursor=cursor)
        wrote = self.store.finish_run(
            run_id=self.run_id,
            started_at=self.started_at,
            status=status,
            counts=self.counts,
            checkpoint=progress,
            now=self.now(),
        )
        if wrote:
            self._committed(progress.resume)


def forward_purges(store: ContentStore, outbox: PurgeOutbox, *, now: datetime) -> int:
    """Move relayed URLs into the state.db outbox (idempotent), then drop them from the relay."""
    pending = store.pending_purges()
    if not pending:
        return 0
    by_run: dict[str, list[str]] = {}
    for _, url, run_id in pending:
        by_run.setdefault(run_id, []).append(url)
    added = sum(outbox.enqueue("url", urls, source=f"import:{run_id}", now=now) for run_id, urls in by_run.items())
    store.clear_purges(pending[-1][0])
    return added


def run_history(store: ContentStore, state: StateDB | None, *, limit: int) -> list[dict[str, Any]]:
    """Import runs, newest first, for `import_stale.py runs`: the job's run records (failed and
    interrupted runs too), then runs only the content store knows (rollbacks, runs whose state
    database is gone); each with its kind, counts and the run that rolled it back."""
    content = {r["run_id"]: r for r in store.runs(limit=1000)}
    listed = recent_runs(state, "import", limit=limit) if state is not None else []
    known = {r["run_id"] for r in listed}
    listed += [r for r in content.values() if r["run_id"] not in known][: max(0, limit - len(listed))]
    history = []
    for row in listed:
        extra = content.get(row["run_id"], {})
        history.append(
            {
                "run_id": row["run_id"],
                "started_at": row["started_at"],
                "status": row["status"],
                "kind": extra.get("kind", "import"),
                "counts": extra.get("counts") or row.get("counts") or {},
                "rolled_back_by": extra.get("rolled_back_by"),
            }
        )
    return history

"""One duration grammar (lib/edgecron/durations.py) behind both `--max-age` options.

`check_logs.py --max-age` and `import_stale.py --max-age` once parsed with different grammars
(`2w` worked in one and exited 2 in the other). Here each value is given to both scripts, run
in-process, and its effect is observed: a job that last succeeded half the duration ago is
healthy and one that succeeded twice the duration ago is not; a stored item half the duration
old stays behind the import cursor and one twice as old is re-checked.
"""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from edgecron.durations import has_units, parse_duration
from edgecron.errors import InputError
from edgecron.state import iso, open_state
from typer.testing import CliRunner

VALUES = {
    "2w": timedelta(weeks=2),
    "36h": timedelta(hours=36),
    "90m": timedelta(minutes=90),
    "45s": timedelta(seconds=45),
    "1d12h": timedelta(hours=36),
}


@pytest.mark.parametrize(
    "text,expected",
    [
        *VALUES.items(),
        ("2W", timedelta(weeks=2)),
        (" 30 d ", timedelta(days=30)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("3600", timedelta(hours=1)),  # a bare number is seconds, as import_stale.py always read it
        ("0s", timedelta(0)),
    ],
)
def test_the_grammar(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "2x", "h", "1.5h", "-2h", "2 weeks", "1d 12", "٣h", "2h ago"])
def test_bad_input_says_what_failed_and_what_is_expected(text: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_duration(text, option="--max-age")
    err = caught.value
    assert err.what == "--max-age is not a duration" and err.got == text
    assert "s, m, h, d or w" in (err.expected or "") and "1d12h" in (err.expected or "")


def test_a_duration_past_what_a_timedelta_holds_is_an_input_error_not_a_traceback() -> None:
    with pytest.raises(InputError, match="--max-age is too long"):
        parse_duration("99999999999w")


def test_since_reads_units_as_time_ago_and_a_bare_number_as_a_date() -> None:
    assert has_units("2h") and has_units("1d12h")
    assert not has_units("20261201")  # ISO basic date, not 234 days ago
    assert not has_units("2026-12-01T14:00")


# --- both scripts, in-process ----------------------------------------------------------------


def invoke(script: str, args: list[str], env_file: Path) -> Any:
    app = importlib.import_module(script).app
    return CliRunner().invoke(app, args, env={"EDGECRON_ENV_FILE": str(env_file)}, catch_exceptions=False)


def write_env(workdir: Path, **keys: object) -> Path:
    env_file = workdir / ".env"
    lines = {"STATE_DIR": workdir / "state", "SITE_URL": "http://www.example.com", **keys}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    env_file.chmod(0o600)
    return env_file


def stale_jobs(workdir: Path, max_age: str, *, succeeded_ago: timedelta) -> list[str]:
    """The job_stale findings of `check_logs.py --max-age` with warm last succeeding `succeeded_ago` ago."""
    (workdir / "state").mkdir(parents=True)
    finished = datetime.now(UTC) - succeeded_ago
    with open_state(workdir / "state" / "state.db") as state:
        state.execute(
            "INSERT INTO runs(run_id, job, started_at, finished_at, status, exit_code, trigger)"
            " VALUES ('w1', 'warm', ?, ?, 'ok', 0, 'cron')",
            (iso(finished - timedelta(seconds=1)), iso(finished)),
        )
    result = invoke("check_logs", ["--max-age", max_age, "--json", "--no-state"], write_env(workdir))
    assert result.exit_code in (0, 1), result.output
    return [f["check"] for f in json.loads(result.stdout)["findings"] if f["check"].startswith("job_stale:")]


@pytest.mark.parametrize("text", VALUES)
def test_check_logs_max_age_means_the_duration(tmp_path: Path, text: str) -> None:
    duration = VALUES[text]
    assert stale_jobs(tmp_path / "recent", text, succeeded_ago=duration / 2) == []
    assert stale_jobs(tmp_path / "old", text, succeeded_ago=duration * 2) == ["job_stale:warm"]


def feed_line(key: str, stamp: datetime, body: str) -> str:
    url = f"http://www.example.com/articles/{key}"
    return json.dumps({"id": key, "url": url, "updated_at": iso(stamp), "title": key, "body": body}) + "\n"


@pytest.mark.parametrize("text", VALUES)
def test_import_max_age_means_the_duration(tmp_path: Path, text: str) -> None:
    duration = VALUES[text]
    now = datetime.now(UTC)
    stamps = {"newest": now, "recent": now - duration / 2, "old": now - duration * 2}
    feed = tmp_path / "feed.jsonl"
    env_file = write_env(tmp_path, IMPORT_SOURCE=feed, IMPORT_OVERLAP=0)  # no late-timestamp window
    (tmp_path / "state").mkdir()
    feed.write_text("".join(feed_line(key, stamp, "first") for key, stamp in stamps.items()))
    assert invoke("import_stale", ["run"], env_file).exit_code == 0
    # Edited without a new timestamp: behind the cursor, seen again only when older than --max-age.
    feed.write_text(
        "".join(feed_line(key, stamp, "edited" if key != "newest" else "first") for key, stamp in stamps.items())
    )
    result = invoke("import_stale", ["--dry-run", "--json", "--max-age", text], env_file)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["changed_urls"] == ["http://www.example.com/articles/old"]  # not the recent one
    assert (doc["counts"]["updated"], doc["counts"]["behind_cursor"]) == (1, 2)


@pytest.mark.parametrize("script", ["check_logs", "import_stale"])
def test_both_scripts_refuse_a_bad_duration_with_the_same_line(tmp_path: Path, script: str) -> None:
    (tmp_path / "state").mkdir()
    env_file = write_env(tmp_path, IMPORT_SOURCE=tmp_path / "feed.jsonl")
    result = invoke(script, ["--max-age", "2x"], env_file)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        "Error: --max-age is not a duration: got '2x', expected a whole number with a unit s, m, h, d or w,"
        " or several run together (45s, 90m, 36h, 2w, 1d12h)."
    )

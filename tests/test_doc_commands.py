"""Every shell command in the README and the runbooks runs as written, from a checkout after the install step.

Commands come from the ```sh / ```bash blocks of README.md and notes/runbooks/*.md. Each line is cut
at `&&`, `||`, `|` and `;`, and a redirection (`> file`) is dropped; every piece is then one of:
- `.venv/bin/python scripts/<x>.py …`: run as written through /bin/sh, from a sandbox that looks like
  a fresh clone after `make venv` (the checkout's files linked in), against the demo site and the
  Cloudflare emulator of `make demo-serve`. A command that can change something runs with `--dry-run`
  added (when it has the option), one that cannot run here at all (a long-running scheduler, a
  placeholder id) with `--help` added, which still rejects an unknown subcommand or option. The
  example site www.example.com is the demo site there. It must exit 0 with no traceback;
- `make <target>`: the target must exist (`make -n`); the safe ones run;
- the SQLite backup one-liner of new-vps.md: run against a real WAL database (its own test below);
- anything else: listed in NOT_RUN with the reason. A piece that is none of these fails the test, so
  a new command cannot be documented without being run or explicitly excused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import start_demo_serve

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "notes" / "runbooks").glob("*.md"))]
FENCE = re.compile(r"^```(?:sh|bash)\n(.*?)^```", re.M | re.S)
SCRIPT_CALL = re.compile(r"^\.venv/bin/python scripts/([a-z_]+\.py)\b")
MENTIONS_SCRIPT = re.compile(r"\bscripts/[a-z_]+\.py\b")
MAKE_CALL = re.compile(r"^make ([a-z-]+)\b")
BACKUP_ONE_LINER = re.compile(r"^\.venv/bin/python -c 'import sqlite3, sys; .*\.backup\(")
LINKED = ("scripts", "lib", ".venv", "notes", "demo", "tools", "bench", "Makefile", "pyproject.toml", ".env.example")
LINKED += ("requirements.lock", "requirements-dev.lock", "requirements-build.lock")  # what `make venv` depends on

# Commands these docs show that this test does not run, and why.
NOT_RUN = {
    r"^sudo ": "needs root and changes the machine (packages, users, directories, systemd)",
    r"^git clone ": "clones over the network; the sandbox is that clone",
    r"^cd ": "the sandbox already is the checkout",
    r"^\$EDITOR ": "interactive",
    r"^crontab -$": "would replace the crontab of whoever runs the tests (the piped jobs.py crontab runs)",
    r"^export EDGECRON_ENV_FILE=": "the sandbox sets EDGECRON_ENV_FILE to the demo-serve settings itself",
    r"^STATE_DIR=": "a shell variable for the backup one-liner, which its own test runs",
    r"^test -s ": "the guard of the backup one-liner, which its own test runs",
    r"^ps -o .* -p 1234$": "an example pid",
    r"^kill -(TERM|KILL) 1234$": "an example pid",
}
# make targets that exist (make -n) but are not run here, and why.
MAKE_NOT_RUN = {
    "demo": "runs the whole demo (tests/test_demo.py runs it)",
    "demo-serve": "keeps servers running until Ctrl-C (tests/test_demo_serve.py runs it)",
    "demo-fleet": "starts PostgreSQL and two nodes (tests/test_demo_fleet.py runs it)",
    "test": "is this test suite",
    "test-fast": "is part of this test suite",
    "coverage": "is this test suite, measured",
    "lint": "runs ruff and mypy (CI runs it as its own step)",
    "fmt": "rewrites the source files",
    "bench": "takes minutes (tests/test_bench_entry.py covers its entry point)",
}
# Script commands that change nothing and are run as written (without --dry-run or --help).
READ_ONLY = (
    ("jobs.py", "status"),
    ("jobs.py", "crontab"),
    ("jobs.py", "next"),
    ("import_stale.py", "runs"),
    ("import_stale.py", "check-db"),
)
# Commands that cannot run here as written: --help still checks the subcommand and every option.
HELP_ONLY = {
    ("jobs.py", "schedule"): "runs until stopped",
    ("import_stale.py", "rollback"): "RUN_ID is a placeholder",
}


@dataclass(frozen=True)
class Documented:
    doc: str
    line: str  # the whole line as written, comment removed
    piece: str  # one command of it

    @property
    def id(self) -> str:
        return f"{self.doc}: {self.piece[:70]}"


def scan(text: str) -> Iterator[tuple[str, str]]:
    """(character, quote state) pairs; the state is the open quote character or ''."""
    quote = ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
                yield char, char
                continue
            yield char, quote
        else:
            if char in "'\"":
                quote = char
            yield char, quote


def strip_comment(line: str) -> str:
    out = []
    previous = " "
    for char, quote in scan(line):
        if char == "#" and not quote and previous.isspace():
            break
        out.append(char)
        previous = char
    return "".join(out).strip()


def pieces(line: str) -> list[str]:
    """Cut at unquoted &&, ||, | and ;, and drop an unquoted redirection with its target."""
    parts, current, chars = [], [], list(scan(line))
    index = 0
    while index < len(chars):
        char, quote = chars[index]
        if not quote and char in "&|;":
            parts.append("".join(current))
            current = []
            index += 2 if index + 1 < len(chars) and chars[index + 1][0] == char else 1
            continue
        current.append(char)
        index += 1
    parts.append("".join(current))
    commands = []
    for part in parts:
        unquoted_gt = next((i for i, (c, q) in enumerate(scan(part)) if c == ">" and not q), None)
        part = part[:unquoted_gt] if unquoted_gt is not None else part
        part = re.sub(r"\s2$", "", part.rstrip()).strip()
        if part:
            commands.append(part)
    return commands


def documented_commands() -> list[Documented]:
    found = []
    for path in DOCS:
        name = path.relative_to(ROOT).as_posix()
        for block in FENCE.findall(path.read_text(encoding="utf-8")):
            for raw in block.replace("\\\n", " ").splitlines():
                line = strip_comment(raw)
                found += [Documented(name, line, piece) for piece in pieces(line)] if line else []
    return found


COMMANDS = documented_commands()


# --- the sandbox: a checkout after `make venv`, the demo servers, fixture files the docs name ----------


@dataclass
class Sandbox:
    checkout: Path
    env: dict[str, str]
    site_url: str

    def localise(self, command: str) -> str:
        """The docs' example site is the demo site here (its host on ALLOWED_HOSTS)."""
        host = self.site_url.split("://", 1)[1]
        return command.replace("https://www.example.com", self.site_url).replace("www.example.com", host)

    def sh(self, command: str, *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/sh", "-c", command],
            cwd=self.checkout,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _write_fixtures(checkout: Path, site_url: str) -> None:
    pages = ["/", "/about", "/blog/post-1"]
    manifest = {"version": 1, "urls": {page: f"sha256:{i}" for i, page in enumerate(pages)}}
    (checkout / "public").mkdir()
    (checkout / "public" / "manifest.json").write_text(json.dumps(manifest))
    (checkout / "releases" / "previous").mkdir(parents=True)
    previous = {"version": 1, "urls": {page: f"sha256:old{i}" for i, page in enumerate(pages)}}
    (checkout / "releases" / "previous" / "manifest.json").write_text(json.dumps(previous))
    (checkout / "changed.txt").write_text("/about\n/blog/post-1\n")
    item = {
        "id": "a1",
        "url": f"{site_url}/articles/a1",
        "updated_at": "2026-11-30T10:00:00+00:00",
        "title": "A",
        "body": "b",
    }
    (checkout / "feed.jsonl").write_text(json.dumps(item) + "\n")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("no .venv in the checkout: the documented commands need the install step (`make venv`)")
    checkout = tmp_path_factory.mktemp("clone")
    for name in LINKED:
        (checkout / name).symlink_to(ROOT / name)
    server, site_url = start_demo_serve(checkout)
    try:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(checkout),
            "LANG": "C.UTF-8",
            "EDGECRON_ENV_FILE": str(checkout / ".env.demo"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        git = shutil.which("git")
        git_dir = (
            subprocess.run([git, "-C", str(ROOT), "rev-parse", "--absolute-git-dir"], capture_output=True, text=True)
            if git
            else None
        )
        if git_dir is not None and git_dir.returncode == 0:  # `--ref "$(git rev-parse --short HEAD)"` reads HEAD
            env["GIT_DIR"] = git_dir.stdout.strip()
        _write_fixtures(checkout, site_url)
        box = Sandbox(checkout, env, site_url)
        # A server that has been running: a recorded deploy and an import run (so check-db has a store).
        for setup in ("purge_cache.py deploy --manifest public/manifest.json --record-only", "import_stale.py run"):
            done = box.sh(f".venv/bin/python scripts/{setup}")
            assert done.returncode == 0, done.stderr
        yield box
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=10)


# --- classification ----------------------------------------------------------------------------


def words(piece: str) -> list[str]:
    return piece.split()


def script_and_subcommand(piece: str) -> tuple[str, str | None]:
    match = SCRIPT_CALL.match(piece)
    assert match
    rest = [w for w in words(piece)[2:] if not w.startswith("-")]
    return match.group(1), (rest[0] if rest else None)


HELP: dict[tuple[str, str | None], str] = {}


def options_of(sandbox: Sandbox, script: str, subcommand: str | None) -> str:
    if (script, subcommand) not in HELP:
        sub = f" {subcommand}" if subcommand else ""
        HELP[script, subcommand] = sandbox.sh(f".venv/bin/python scripts/{script}{sub} --help").stdout
    return HELP[script, subcommand]


def as_run(sandbox: Sandbox, piece: str) -> str:
    """The command as written, plus --dry-run or --help when it must not run as is here."""
    script, subcommand = script_and_subcommand(piece)
    known_subcommands = "Commands:" in options_of(sandbox, script, None)
    key = (script, subcommand if known_subcommands else None)
    if key in HELP_ONLY:
        return f"{piece} --help"
    if key in READ_ONLY or "--dry-run" in words(piece):
        return piece
    if "--dry-run" in options_of(sandbox, script, key[1]):
        return f"{piece} --dry-run"
    return f"{piece} --help"


def check_script_command(sandbox: Sandbox, piece: str) -> None:
    command = sandbox.localise(as_run(sandbox, piece))
    result = sandbox.sh(command)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, f"`{command}` crashed:\n{output[-3000:]}"
    assert result.returncode == 0, f"`{command}` exited {result.returncode}:\n{output[-3000:]}"


def check_make_command(sandbox: Sandbox, piece: str) -> None:
    target = MAKE_CALL.match(piece)
    assert target
    name = target.group(1)
    exists = sandbox.sh(f"make -n {name}")
    assert exists.returncode == 0, f"`{piece}`: {exists.stderr.strip()}"
    if name in MAKE_NOT_RUN:
        return
    stamp = ".venv/.dev-installed" if name == "dev" else ".venv/.installed"
    if sandbox.sh(f"make -q {stamp}").returncode != 0:
        pytest.skip(
            f"`{piece}` would rebuild the checkout's .venv (pyproject.toml or a lock is newer); rerun `make dev`"
        )
    assert name in ("venv", "dev") or "--dry-run" in piece, (
        f"`{piece}` is a make target this test does not know how to run safely: add it to MAKE_NOT_RUN"
    )
    result = sandbox.sh(piece)
    output = result.stdout + result.stderr
    assert "Traceback" not in output and result.returncode == 0, f"`{piece}` exited {result.returncode}:\n{output}"


def check_documented(sandbox: Sandbox, command: Documented) -> None:
    piece = command.piece
    if SCRIPT_CALL.match(piece):
        return check_script_command(sandbox, piece)
    assert not MENTIONS_SCRIPT.search(piece), (
        f"{command.doc}: `{piece}` does not run as written after the install step: "
        "call the script as `.venv/bin/python scripts/<name>.py`"
    )
    if MAKE_CALL.match(piece):
        return check_make_command(sandbox, piece)
    if BACKUP_ONE_LINER.match(piece) or re.fullmatch(r"cp \.env\.example \.env|chmod 600 \.env", piece):
        return None  # the backup has its own test; cp and chmod run in test_install_copies_the_example_settings
    reasons = [reason for pattern, reason in NOT_RUN.items() if re.search(pattern, piece)]
    assert reasons, f"{command.doc}: `{piece}` is neither run by this test nor listed in NOT_RUN with a reason"


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_documented_command_runs_as_written(sandbox: Sandbox, command: Documented) -> None:
    check_documented(sandbox, command)


def test_the_docs_show_commands_of_every_kind() -> None:
    kinds = {
        "script": [c for c in COMMANDS if SCRIPT_CALL.match(c.piece)],
        "make": [c for c in COMMANDS if MAKE_CALL.match(c.piece)],
        "backup": [c for c in COMMANDS if BACKUP_ONE_LINER.match(c.piece)],
    }
    assert len(kinds["script"]) >= 40 and kinds["make"] and len(kinds["backup"]) == 2, {
        k: len(v) for k, v in kinds.items()
    }
    assert {c.doc for c in kinds["script"]} >= {"README.md", "notes/runbooks/new-vps.md", "notes/runbooks/deploy.md"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bogus", "because"),
    [
        (".venv/bin/python scripts/warm_cache.py --no-such-option", "No such option"),  # with --dry-run added
        (".venv/bin/python scripts/import_stale.py rollback 3f2a --forse", "No such option"),  # with --help added
        (".venv/bin/python scripts/purge_cache.py purge-all", "No such command"),
        (".venv/bin/python scripts/warm.py --dry-run", "can't open file"),
        ("scripts/warm_cache.py --dry-run", "does not run as written"),  # not executable; system Python
        ("make warmup", "No rule to make target"),
        ("rm -rf state", "neither run by this test nor listed"),
    ],
)
def test_a_command_that_does_not_exist_fails_the_check(sandbox: Sandbox, bogus: str, because: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(because)):
        check_documented(sandbox, Documented("bogus.md", bogus, bogus))


def test_pieces_cut_pipes_chains_and_redirections_outside_quotes() -> None:
    assert pieces(".venv/bin/python scripts/jobs.py crontab | crontab -") == [
        ".venv/bin/python scripts/jobs.py crontab",
        "crontab -",
    ]
    assert pieces("cp .env.example .env && chmod 600 .env") == ["cp .env.example .env", "chmod 600 .env"]
    assert pieces(".venv/bin/python scripts/check_logs.py --json > checks.json") == [
        ".venv/bin/python scripts/check_logs.py --json"
    ]
    assert pieces("""x --ref "$(a | b)" -c 'p; q > r'""") == ["""x --ref "$(a | b)" -c 'p; q > r'"""]
    assert strip_comment("make demo   # runs # things") == "make demo"
    assert strip_comment("x 'a # b'") == "x 'a # b'"


def test_install_copies_the_example_settings(sandbox: Sandbox) -> None:
    lines = {c.line for c in COMMANDS if c.piece.startswith("cp .env.example")}
    assert lines
    for line in lines:
        result = sandbox.sh(line)
        assert result.returncode == 0, result.stderr
        settings = sandbox.checkout / ".env"
        assert settings.read_text() == (ROOT / ".env.example").read_text()
        assert settings.stat().st_mode & 0o777 == 0o600
        settings.unlink()


# --- the state copy of new-vps.md, run for real ----------------------------------------------------


def test_state_copy_one_liner_copies_what_is_still_in_the_wal(tmp_path: Path) -> None:
    """The backup keeps transactions that are only in the -wal file; copying state.db alone loses them."""
    lines = [c.line for c in COMMANDS if BACKUP_ONE_LINER.match(c.piece)]
    assert len(lines) == 2
    state_dir, out = tmp_path / "state", tmp_path / "out"
    state_dir.mkdir()
    out.mkdir()
    for name in ("state", "content"):
        writer = sqlite3.connect(state_dir / f"{name}.db")
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")  # keep every commit in the -wal file
        writer.execute("CREATE TABLE outbox(url TEXT)")
        writer.executemany("INSERT INTO outbox VALUES (?)", [(f"/page-{i}",) for i in range(100)])
        writer.commit()
        assert (state_dir / f"{name}.db-wal").stat().st_size > 0
        (out / f"{name}-cp.db").write_bytes((state_dir / f"{name}.db").read_bytes())
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "STATE_DIR": str(state_dir)}
        [line] = [line for line in lines if f"{name}.db" in line]
        # the writer is still open, as a running job would be, while the copy is made
        result = subprocess.run(
            ["/bin/sh", "-c", line.replace("/tmp/", f"{out}/")], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        copy = sqlite3.connect(out / f"{name}.db")
        assert copy.execute("SELECT count(*) FROM outbox").fetchone() == (100,)
        copy.close()
        writer.close()
        with pytest.raises(sqlite3.DatabaseError):  # what `cp state.db` alone would have given
            sqlite3.connect(out / f"{name}-cp.db").execute("SELECT count(*) FROM outbox").fetchone()


def test_runbook_log_checks_leave_the_saved_log_position_alone() -> None:
    """A manual check that saves its position makes the next scheduled check skip the lines it read."""
    manual = [c for c in COMMANDS if c.doc.startswith("notes/runbooks/") and "scripts/check_logs.py" in c.piece]
    assert manual
    for command in manual:
        assert {"--no-state", "--dry-run"} & set(words(command.piece)), f"{command.doc}: `{command.piece}`"

"""Config: `.env` plus environment (environment wins), strict parsing, secrets that never show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from edgecron.config import KEYS, Secret, load_settings
from edgecron.errors import ConfigError, ExitCode


def load(env_file: Path, text: str = "", **environ: str):  # type: ignore[no-untyped-def]
    env_file.write_text(text)
    return load_settings(environ=environ, env_file=env_file)


def error_line(proc) -> str:  # type: ignore[no-untyped-def]
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --- in-process parsing ------------------------------------------------------------------------


def test_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path / ".env")
    assert cfg["WARM_CONCURRENCY"] == 8 and cfg["WARM_RATE"] == 20.0
    assert cfg["SITEMAP_MAX_BYTES"] == 52_428_800 and cfg["SITEMAP_MAX_URLS"] == 50_000
    assert "/admin" in cfg["BYPASS_PATHS"]
    assert cfg["SITE_URL"] == "" and cfg.allowed_hosts == ()
    assert not cfg.api_token


def test_environment_wins_over_env_file(tmp_path: Path) -> None:
    cfg = load(tmp_path / ".env", "WARM_CONCURRENCY=4\nWARM_RATE=5\n", WARM_CONCURRENCY="16")
    assert cfg["WARM_CONCURRENCY"] == 16
    assert cfg["WARM_RATE"] == 5.0


def test_site_url_gives_the_default_allowed_host(tmp_path: Path) -> None:
    cfg = load(tmp_path / ".env", "SITE_URL=https://WWW.Example.com/\n")
    assert cfg["SITE_URL"] == "https://WWW.Example.com"
    assert cfg.allowed_hosts == ("www.example.com",)
    explicit = load(
        tmp_path / ".env", "SITE_URL=https://www.example.com\nALLOWED_HOSTS=www.example.com, cdn.example.com:443\n"
    )
    assert explicit.allowed_hosts == ("www.example.com", "cdn.example.com")


def test_relative_state_dir_is_relative_to_the_env_file(tmp_path: Path) -> None:
    cfg = load(tmp_path / ".env", "STATE_DIR=var/state\n")
    assert cfg.state_dir == tmp_path.resolve() / "var" / "state"
    assert cfg.lock_dir == cfg.state_dir / "locks"
    assert cfg.metrics_dir is None


@pytest.mark.parametrize(
    "line,fragment",
    [
        ("WARM_CONCURRENCY=abc", "a whole number ≥ 1 and ≤ 256"),
        ("WARM_CONCURRENCY=0", "a whole number ≥ 1 and ≤ 256"),
        ("WARM_CONCURRENCY=2.5", "a whole number"),
        ("WARM_RATE=-1", "a number ≥ 0"),
        ("WARM_RATE=nan", "a number ≥ 0"),
        ("WARM_MAX_FAILURE_RATE=1.5", "≤ 1"),
        ("SITE_URL=www.example.com", "an absolute http(s) URL"),
        ("SITE_URL=ftp://www.example.com", "an absolute http(s) URL"),
        ("ALLOWED_HOSTS=www.example.com/blog", "host names"),
        ("BYPASS_PATHS=admin", "path prefixes starting with '/'"),
        ("CF_ZONE_ID=example.com", "32 hex characters"),
        ("CF_PLAN=gold", "one of free, pro, business, enterprise"),
        ("SITEMAP_MAX_BYTES=10", "≥ 1024"),
    ],
)
def test_malformed_values_name_the_key(tmp_path: Path, line: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / ".env", line + "\n")
    name, value = line.split("=", 1)
    message = caught.value.message
    assert message.startswith(f"{name} is not valid: got {value!r}, expected ")
    assert fragment in message
    assert caught.value.exit_code == ExitCode.USAGE


def test_malformed_value_in_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WARM_RATE is not valid"):
        load(tmp_path / ".env", "WARM_RATE=5\n", WARM_RATE="fast")


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / ".env", "WARM_CONCURENCY=4\n")
    message = caught.value.message
    assert message.startswith(f"WARM_CONCURENCY in {tmp_path / '.env'} is not a known setting")
    assert "WARM_CONCURRENCY?" in message and "expected" in message


def test_unknown_edgecron_variable_in_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="EDGECRON_STATE_DIR in the environment is not a known setting"):
        load(tmp_path / ".env", EDGECRON_STATE_DIR="/tmp")
    assert load(tmp_path / ".env", HOME="/root", EDITOR="vi")  # unrelated variables are ignored


def test_the_crontabs_own_variables_are_accepted_from_the_environment(tmp_path: Path) -> None:
    """The crontab sets EDGECRON_HOME and EDGECRON_TRIGGER on every line; refusing them made every job
    fail under cron."""
    assert load(tmp_path / ".env", EDGECRON_HOME="/opt/edgecron", EDGECRON_TRIGGER="cron")


def test_process_variables_are_refused_in_env_file_and_typos_suggest_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"EDGECRON_TRIGGER in .+ is read from the environment only"):
        load(tmp_path / ".env", "EDGECRON_TRIGGER=cron\n")
    with pytest.raises(ConfigError, match=r"did you mean EDGECRON_HOME\?"):
        load(tmp_path / ".env", EDGECRON_HOM="/opt/edgecron")


def test_schedule_overrides_are_accepted(tmp_path: Path) -> None:
    cfg = load(tmp_path / ".env", "SCHEDULE_WARM=*/30 * * * *\n", SCHEDULE_CHECK_LOGS="5 * * * *")
    assert cfg.schedules() == {"warm": "*/30 * * * *", "check-logs": "5 * * * *"}


def test_require_names_the_missing_key(tmp_path: Path) -> None:
    cfg = load(tmp_path / ".env")
    with pytest.raises(ConfigError) as caught:
        cfg.require("SITE_URL")
    assert caught.value.message.startswith("SITE_URL is not set: expected canonical site url")


def test_unreadable_env_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(b"SITE_URL=\xff\xfe\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(environ={}, env_file=path)


# --- secrets -----------------------------------------------------------------------------------

TOKEN = "tok_9f8e7d6c5b4a3210fedcba9876543210"


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    cfg = load(tmp_path / ".env", f"CF_API_TOKEN_FILE={token_file}\n")
    assert cfg.api_token.reveal() == TOKEN


@pytest.mark.parametrize("content,fragment", [(None, "cannot be read"), ("\n", "is empty")])
def test_token_file_missing_or_empty(tmp_path: Path, content: str | None, fragment: str) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    with pytest.raises(ConfigError, match=f"CF_API_TOKEN_FILE {fragment}"):
        load(tmp_path / ".env", f"CF_API_TOKEN_FILE={token_file}\n")


def test_token_and_token_file_both_set_is_an_error(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / ".env", f"CF_API_TOKEN_FILE={token_file}\n", CF_API_TOKEN=TOKEN)
    assert "both set" in caught.value.message and "only one of them" in caught.value.message
    assert TOKEN not in caught.value.message


def test_secret_never_shows(tmp_path: Path) -> None:
    cfg = load(tmp_path / ".env", f"CF_API_TOKEN={TOKEN}\n")
    secret = cfg.api_token
    assert isinstance(secret, Secret) and secret.reveal() == TOKEN
    for text in (repr(secret), str(secret), f"{secret}", repr(cfg), str(cfg.parsed)):
        assert TOKEN not in text
    redacted = cfg.redacted()
    assert redacted["CF_API_TOKEN"] == "***"
    assert TOKEN not in json.dumps(redacted, default=str)
    assert [k.name for k in KEYS if k.secret] == ["CF_API_TOKEN", "IMPORT_AUTH_HEADER"]


def test_token_never_reaches_output_logs_or_state(run_script, workdir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from demo.site import DemoSite

    with DemoSite(pages=2) as site:
        proc = run_script(
            "warm_cache.py", "--json", "--verify", env={"SITE_URL": site.url, "WARM_RATE": "0", "CF_API_TOKEN": TOKEN}
        )
    assert proc.returncode == 0, proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr
    for path in (workdir / "state").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


# --- the same errors through the script --------------------------------------------------------


@pytest.mark.parametrize(
    "env,fragments",
    [
        ({"SITE_URL": "www.example.com"}, ["SITE_URL is not valid", "'www.example.com'", "absolute http(s) URL"]),
        ({"SITE_URL": ""}, ["SITE_URL is not set", "expected"]),
        ({"WARM_CONCURRENCY": "abc"}, ["WARM_CONCURRENCY is not valid", "'abc'", "whole number"]),
        ({"WARM_RATE": "-2"}, ["WARM_RATE is not valid", "'-2'", "a number ≥ 0"]),
    ],
    ids=["malformed-site-url", "missing-site-url", "concurrency-abc", "negative-rate"],
)
def test_config_errors_from_the_script(run_cli, env: dict[str, str], fragments: list[str]) -> None:  # type: ignore[no-untyped-def]
    proc = run_cli("warm_cache.py", env=env)
    assert proc.returncode == 2
    line = error_line(proc)
    for fragment in fragments:
        assert fragment in line
    assert proc.stdout == ""
    assert "fix .env" in proc.stderr


def test_unknown_key_in_env_file_from_the_script(run_cli, env_file: Path) -> None:  # type: ignore[no-untyped-def]
    with env_file.open("a") as fh:
        fh.write("WARM_CONCURENCY=4\n")
    proc = run_cli("warm_cache.py", "--dry-run")
    assert proc.returncode == 2
    line = error_line(proc)
    assert line.startswith(f"Error: WARM_CONCURENCY in {env_file} is not a known setting")
    assert "WARM_CONCURRENCY?" in line and "expected" in line

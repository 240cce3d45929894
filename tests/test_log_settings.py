"""LOG_FORMAT / LOG_ESCAPE / LOG_MAX_LINE_BYTES as .env holds them: a log_format directive pasted
over several lines (unquoted, or quoted as python-dotenv reads quoted values)."""

from __future__ import annotations

from pathlib import Path

import pytest
from edgecron.config import load_settings
from edgecron.errors import ConfigError
from edgecron.logformat import COMBINED_FORMAT, resolve_format

DIRECTIVE = """log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                  '$status $body_bytes_sent "$http_referer" '   # as in nginx.conf
                  '"$http_user_agent"';"""


def settings_from(tmp_path: Path, text: str) -> dict[str, object]:
    env = tmp_path / ".env"
    env.write_text(f"STATE_DIR={tmp_path / 'state'}\n{text}SITEMAP_URLS=https://example.com/sitemap.xml\n")
    env.chmod(0o600)
    return dict(load_settings(environ={}, env_file=env))


def test_an_unquoted_directive_over_several_lines(tmp_path: Path) -> None:
    cfg = settings_from(tmp_path, f"LOG_FORMAT={DIRECTIVE}\nLOG_MAX_LINE_BYTES=4096\n")
    assert resolve_format(str(cfg["LOG_FORMAT"])).text == COMBINED_FORMAT
    assert cfg["LOG_MAX_LINE_BYTES"] == 4096
    assert cfg["SITEMAP_URLS"] == ("https://example.com/sitemap.xml",)  # the keys after it are read


def test_a_double_quoted_directive_over_several_lines(tmp_path: Path) -> None:
    quoted = DIRECTIVE.replace('"', '\\"')  # python-dotenv: \" inside a double-quoted value
    cfg = settings_from(tmp_path, f'LOG_FORMAT="{quoted}"\n')
    assert resolve_format(str(cfg["LOG_FORMAT"])).text == COMBINED_FORMAT


def test_log_escape_is_a_choice(tmp_path: Path) -> None:
    assert settings_from(tmp_path, "")["LOG_ESCAPE"] == ""
    assert settings_from(tmp_path, "LOG_ESCAPE=JSON\n")["LOG_ESCAPE"] == "json"
    with pytest.raises(ConfigError) as err:
        settings_from(tmp_path, "LOG_ESCAPE=xml\n")
    assert "LOG_ESCAPE is not valid" in err.value.message


def test_a_directive_cut_short_says_how_to_paste_it(tmp_path: Path) -> None:
    cut = DIRECTIVE.rsplit("\n", 1)[0]  # the last line, with the ';', is missing
    with pytest.raises(ConfigError) as err:
        settings_from(tmp_path, f"LOG_FORMAT={cut}\n")
    assert "(line 2) is a log_format directive without its closing ';'" in err.value.message
    assert "ending with its ';'" in err.value.message

"""Regenerate `.env.example` and the README's config table from `edgecron.configtable.KEYS`.

`python tools/sync_docs.py` writes them; `--check` exits 1 when either is out of date (tests call it).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "lib"))

from edgecron.configtable import render_config_table, render_env_example  # noqa: E402

BEGIN, END = "<!-- config-table:begin -->", "<!-- config-table:end -->"


def expected_readme(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{render_config_table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    readme = ROOT / "README.md"
    env_example = ROOT / ".env.example"
    wanted = {env_example: render_env_example(), readme: expected_readme(readme.read_text(encoding="utf-8"))}
    stale = [
        path.name for path, text in wanted.items() if not path.exists() or path.read_text(encoding="utf-8") != text
    ]
    if "--check" in argv:
        if stale:
            print(f"out of date: {', '.join(stale)}; run `make docs`", file=sys.stderr)
            return 1
        return 0
    for path, text in wanted.items():
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

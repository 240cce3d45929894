"""Issue 12: no library module over ~600 lines, so each holds one concern a newcomer can read whole."""

from __future__ import annotations

from pathlib import Path

LIB = Path(__file__).resolve().parent.parent / "lib" / "edgecron"
MAX_LINES = 600


def module_lines() -> dict[str, int]:
    return {
        str(path.relative_to(LIB)): len(path.read_text(encoding="utf-8").splitlines())
        for path in sorted(LIB.rglob("*.py"))
    }


def test_no_library_module_is_over_the_limit() -> None:
    lines = module_lines()
    assert len(lines) > 40  # the library itself was found, not an empty directory
    over = {name: count for name, count in lines.items() if count > MAX_LINES}
    assert over == {}, f"split these along their concerns, at most {MAX_LINES} lines each: {over}"

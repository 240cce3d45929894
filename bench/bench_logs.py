"""Log bench: check_logs on 1,000,000 generated lines against GoAccess and a mawk one-liner.

Each tool runs as a child process on the same file in the same run; wall time gives lines/s, and
peak memory comes from `/usr/bin/time -v` (or getrusage(RUSAGE_CHILDREN) in a small launcher, so
the parent's own size never leaks into the figure). Memory flatness: 2M lines against 1M.
check_logs reads a big file with a pool of worker processes: `/usr/bin/time` gives the largest
single process, so a separate, untimed run also samples the whole process tree's PSS (shared pages
counted once) and its summed RSS.
Targets (issue 5): ≥ 5× GoAccess's lines/s, ≥ ¼ of mawk's, peak < 150 MB, 2M within 10% of 1M.
Nothing is installed here: a missing GoAccess is reported with the command that installs it.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
if not PYTHON.exists():
    PYTHON = Path(sys.executable)

GOACCESS_FORMAT = '%h %^[%d:%t %^] "%r" %s %b "%R" "%u" rt=%T %^'
MAWK_PROGRAM = '{split($3, a, " "); c[a[1]]++} END {for (k in c) print k, c[k]}'
LAUNCHER = (
    "import resource, subprocess, sys\n"
    "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def generate(path: Path, count: int, *, seed: int = 5) -> None:
    """Lines in the edgecron format: 2,000 pages, a few static assets, some 5xx and slow requests."""
    rng = random.Random(seed)
    pages = [f"/blog/post-{i}" for i in range(2000)] + ["/", "/pricing", "/search"]
    assets = ["/static/app.css", "/static/app.js", "/img/logo.png", "/fonts/a.woff2"]
    agents = ["Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/133.0", "curl/8.5.0", "Googlebot/2.1"]
    start = 1_795_900_000
    with path.open("w", encoding="ascii") as fh:
        batch = []
        for i in range(count):
            t = time.gmtime(start + i // 40)
            stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", t)
            target = rng.choice(assets) if rng.random() < 0.1 else rng.choice(pages)
            roll = rng.random()
            status = (
                500 if roll < 0.004 else 502 if roll < 0.006 else 404 if roll < 0.03 else 304 if roll < 0.1 else 200
            )
            rt = rng.expovariate(8.0) if rng.random() > 0.01 else 2 + rng.random() * 3
            cache = "MISS" if target in assets else "-"
            batch.append(
                f'203.0.113.{i % 250} - - [{stamp}] "GET {target}?v={i % 11} HTTP/1.1" {status} {rng.randrange(200, 90000)} '
                f'"https://www.example.com/" "{rng.choice(agents)}" rt={rt:.3f} urt="{rt * 0.9:.3f}" '
                f"cs={cache} ray=8f{i:012x}-FRA cip=198.51.100.{i % 200} li={int(rng.random() < 0.05)} "
                f'cc="{"private, no-store" if rng.random() < 0.05 else "public, max-age=300"}"\n'
            )
            if len(batch) == 10_000:
                fh.write("".join(batch))
                batch.clear()
        fh.write("".join(batch))


def measured(cmd: list[str], *, env: dict[str, str] | None = None, runs: int = 3) -> tuple[float, float]:
    """Median wall seconds and the largest peak RSS (MB) of `cmd` over `runs` runs (this machine is noisy)."""
    results = sorted(measured_once(cmd, env=env) for _ in range(runs))
    return results[len(results) // 2][0], max(rss for _, rss in results)


def measured_once(cmd: list[str], *, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of `cmd` as a child process."""
    if Path("/usr/bin/time").exists():
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
        return wall, int(match.group(1)) / 1024 if match else float("nan")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    return wall, int(done.stdout.strip() or 0) / 1024


def tree_peak(cmd: list[str], *, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(peak summed PSS, peak summed RSS) in MB of `cmd` and its children, sampled (Linux only)."""

    def field(pid: int, name: str, key: str) -> int:
        try:
            with open(f"/proc/{pid}/{name}") as fh:
                return next((int(line.split()[1]) for line in fh if line.startswith(key)), 0)
        except OSError:
            return 0

    def children(pid: int) -> list[int]:
        try:
            return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        except OSError:
            return []

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pss = rss = 0
    while proc.poll() is None:
        pids = [proc.pid, *children(proc.pid)]
        pss = max(pss, sum(field(p, "smaps_rollup", "Pss:") for p in pids))
        rss = max(rss, sum(field(p, "status", "VmRSS") for p in pids))
        time.sleep(0.005)
    return pss / 1024, rss / 1024


def check_logs_cmd(log: Path, workdir: Path) -> tuple[list[str], dict[str, str]]:
    env_file = workdir / ".env"
    env_file.write_text(f"STATE_DIR={workdir / 'state'}\nACCESS_LOGS={log}\nLOG_FORMAT=edgecron\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "EDGECRON_ENV_FILE": str(env_file), "LANG": "C.UTF-8"}
    return [str(PYTHON), str(ROOT / "scripts" / "check_logs.py"), "--no-state", "--no-jobs", "--json"], env


def sanity(log: Path, workdir: Path, expected: int) -> None:
    """The figures are only worth something if every line was parsed."""
    cmd, env = check_logs_cmd(log, workdir)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    import json

    summary = json.loads(done.stdout)["summary"]
    if summary["requests"] != expected or summary["malformed"]:
        raise SystemExit(f"bench log not fully parsed: {summary}")


def main(lines: int = 1_000_000) -> list[str]:
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgecron-bench-logs-") as tmp:
        workdir = Path(tmp)
        log1, log2 = workdir / "access-1m.log", workdir / "access-2m.log"
        started = time.perf_counter()
        generate(log1, lines)
        with log2.open("wb") as dst:
            for _ in range(2):
                with log1.open("rb") as src:
                    shutil.copyfileobj(src, dst)
        size_mb = log1.stat().st_size / 1e6
        print(f"generated {lines:,} lines ({size_mb:.0f} MB) in {time.perf_counter() - started:.1f} s")
        sanity(log1, workdir, lines)

        rows: list[tuple[str, float, float]] = []
        cmd, env = check_logs_cmd(log1, workdir)
        wall, rss = measured(cmd, env=env)
        ours = lines / wall
        rows.append(("check_logs.py (all checks, --no-state)", ours, rss))
        cmd2, env2 = check_logs_cmd(log2, workdir)
        wall2, rss2 = measured(cmd2, env=env2, runs=1)
        rows.append(("check_logs.py on 2M lines", 2 * lines / wall2, rss2))

        tree = [tree_peak(cmd, env=env), tree_peak(cmd2, env=env2)] if Path("/proc/self/smaps_rollup").exists() else []

        goaccess = shutil.which("goaccess")
        goaccess_rate = None
        if goaccess:
            report = workdir / "goaccess.json"
            g_cmd = [goaccess, str(log1), f"--log-format={GOACCESS_FORMAT}", "--date-format=%d/%b/%Y",
                     "--time-format=%H:%M:%S", "--no-global-config", "-o", str(report)]  # fmt: skip
            g_wall, g_rss = measured(g_cmd)
            goaccess_rate = lines / g_wall
            rows.append(("GoAccess, JSON report", goaccess_rate, g_rss))
        else:
            print("GoAccess is missing: install it with `apt-get install -y goaccess` (Debian package).")

        mawk = shutil.which("mawk")
        mawk_rate = None
        if mawk:
            m_wall, m_rss = measured([mawk, "-F", '"', MAWK_PROGRAM, str(log1)])
            mawk_rate = lines / m_wall
            rows.append(('mawk, split on ", status counts only', mawk_rate, m_rss))
        else:
            print("mawk is missing: install it with `apt-get install -y mawk`.")

        print(f"\n{'tool':44} {'lines/s':>10} {'peak MB':>8}")
        for name, rate, peak in rows:
            print(f"{name:44} {rate:>10,.0f} {peak:>8.1f}")
        if goaccess_rate:
            out.append(f"check_logs {ours:,.0f} lines/s = {ours / goaccess_rate:.1f}× GoAccess (target ≥ 5×)")
        if mawk_rate:
            out.append(f"check_logs = {ours / mawk_rate:.2f}× mawk's lines/s (target ≥ 0.25)")
        out.append(f"check_logs peak {rss:.0f} MB on 1M lines (target < 150 MB)")
        out.append(f"peak memory 2M/1M lines = {rss2 / rss:.2f} (target ≤ 1.10)")
        if tree:
            (pss1, sum1), (pss2, sum2) = tree
            out.append(
                f"check_logs all processes: PSS {pss1:.0f} MB on 1M, {pss2:.0f} MB on 2M "
                f"(summed RSS {sum1:.0f} / {sum2:.0f} MB)"
            )
    for line in out:
        print(line)
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)

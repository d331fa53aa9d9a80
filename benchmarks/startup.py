"""Start-up cost of the package and the command line: ``import siamkit`` and ``siamkit --help``.

For each source tree (this checkout's ``src`` and, with ``--baseline``, another one, such as an
unpacked older commit: ``git archive COMMIT src | tar -x -C /tmp/base``), in fresh interpreters:

  (a) ``import siamkit``: its cumulative time as ``python -X importtime`` reports it, and whether
      Lightning and torch ended up in ``sys.modules``;
  (b) ``siamkit --help``: the wall time of the whole process, as a user waits for it.

The trees' runs alternate (baseline, this checkout, baseline, ...), so a burst of load on a
shared machine hurts neither side more; each figure is the median of ``--runs`` runs.

    python benchmarks/startup.py --baseline /tmp/base/src --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HELP = "import sys; from siamkit.cli import main; sys.argv = ['siamkit', '--help']; main()"
PROBE = "import sys, siamkit; print('lightning' in sys.modules, 'torch' in sys.modules)"


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)}


def import_seconds(src: Path) -> float:
    """Cumulative import time of the ``siamkit`` package, from ``-X importtime`` (seconds)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import siamkit"],
        env=_env(src),
        capture_output=True,
        text=True,
        check=True,
    )
    # Lines: "import time: self [us] | cumulative | imported package"; the package's own line
    # (its name alone, not indented) holds the cumulative time of everything it imported.
    for line in done.stderr.splitlines():
        fields = [f.strip() for f in line.removeprefix("import time:").split("|")]
        if len(fields) == 3 and fields[2] == "siamkit":
            return int(fields[1]) / 1e6
    raise RuntimeError(f"no siamkit line in -X importtime output of {src}")


def help_seconds(src: Path) -> float:
    """Wall time of a whole ``siamkit --help`` process (seconds)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", HELP], env=_env(src), capture_output=True, check=True, timeout=600
    )
    return time.perf_counter() - start


def imports_heavy(src: Path) -> str:
    """Whether ``import siamkit`` imports Lightning and torch."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=_env(src), capture_output=True, text=True, check=True
    ).stdout.split()
    lightning, torch = ("yes" if flag == "True" else "no" for flag in out)
    return f"lightning {lightning}, torch {torch}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="src folder of the tree to compare with")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1] / "src"
    trees = {"baseline": args.baseline, "this checkout": here} if args.baseline else {"this": here}

    from siamkit.runtime import machine_summary  # torch, in this process only

    print(f"{machine_summary()}; load average {os.getloadavg()[0]:.1f} at the start")
    times: dict[str, dict[str, list[float]]] = {t: {"import": [], "help": []} for t in trees}
    for _ in range(args.runs):
        for name, src in trees.items():
            times[name]["import"].append(import_seconds(src))
            times[name]["help"].append(help_seconds(src))
    print(f"median of {args.runs} runs, alternating trees")
    print(f"{'tree':15} {'import siamkit':>15} {'siamkit --help':>15}   import siamkit loads")
    for name, src in trees.items():
        imp = statistics.median(times[name]["import"])
        hlp = statistics.median(times[name]["help"])
        print(f"{name:15} {imp:14.2f}s {hlp:14.2f}s   {imports_heavy(src)}")
    if args.baseline:
        base, now = (statistics.median(times[t]["help"]) for t in trees)
        print(f"siamkit --help: {base / now:.1f}x faster than the baseline")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()

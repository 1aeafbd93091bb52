"""Instructions a benchmark's child process executes, counted by valgrind's callgrind.

CPU time and throughput move by 10-30% between identical runs on a shared 2-core machine; the
number of instructions a process executes does not depend on what else runs beside it. The child
starts under `valgrind --tool=callgrind` with collection off; `counting()` switches it on for
the updates being measured only (not start-up, not warm-up) and dumps that part under a label.
Under valgrind the bot runs ~20x slower: keep measured loads in the hundreds of updates.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from benchmarks.harness import Child


def require_valgrind() -> None:
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind (with callgrind_control) is needed: apt-get install valgrind")


class Callgrind:
    """One child's callgrind output, `out` and its numbered dumps `out.N`."""

    def __init__(self, out: Path, *, host: str) -> None:
        self.out = out
        # vgdb finds the process by a name valgrind built from $HOST, which the bot's env sets.
        self._env = {**os.environ, "HOST": host}

    def prefix(self) -> list[str]:
        return [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={self.out}",
        ]

    def _control(self, child: Child, *args: str) -> None:
        assert child.process is not None
        command = ["callgrind_control", *args, str(child.process.pid)]
        subprocess.run(command, env=self._env, check=True, capture_output=True)

    @contextlib.asynccontextmanager
    async def counting(self, child: Child, label: str) -> AsyncIterator[None]:
        """Count what `child` executes inside the block; `dumped()[label]` is the total."""
        self._control(child, "--zero")
        self._control(child, "--instr=on")
        yield
        self._control(child, "--instr=off")
        self._control(child, f"--dump={label}")

    def dumped(self) -> dict[str, int]:
        """Instructions per label, from the dumps written so far."""
        totals: dict[str, int] = {}
        for part in self.out.parent.glob(f"{self.out.name}.*"):
            text = part.read_text(errors="replace")
            trigger = re.search(r"^desc: Trigger: dump (.+)$", text, re.MULTILINE)
            total = re.search(r"^totals: (\d+)$", text, re.MULTILINE)
            if trigger and total:
                totals[trigger.group(1)] = int(total.group(1))
        if not totals or not all(totals.values()):
            msg = f"callgrind counted nothing in {self.out}.*: was collection switched on?"
            raise RuntimeError(msg)
        return totals

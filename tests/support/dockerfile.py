"""The repository's Dockerfile, parsed into instructions and stages for tests to assert on."""

from __future__ import annotations

from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    buffer = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        text, buffer = buffer + line, ""
        instruction, _, args = text.partition(" ")
        instructions.append((instruction.upper(), args.strip()))
    return instructions


def dockerfile_stages(path: Path = DOCKERFILE) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions, FROM first."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for instruction, args in dockerfile_instructions(path):
        if instruction == "FROM":
            current = [(instruction, args)]
            stages[args.split()[-1]] = current
        else:
            current.append((instruction, args))
    return stages

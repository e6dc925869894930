"""Read the Dockerfile into stages of instructions, as Docker would split them."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.manifests.kube import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        """A JSON-array argument (CMD, ENTRYPOINT); shell form is split as a shell would."""
        text = self.arguments.strip()
        if text.startswith("["):
            value: list[str] = json.loads(text)
            return value
        return shlex.split(text)

    def flags(self) -> tuple[dict[str, str], str]:
        """The `--name=value` flags before the arguments (COPY --from, RUN --mount); the rest."""
        flags: dict[str, str] = {}
        rest = self.arguments.strip()
        while match := re.match(r"--([a-z-]+)=(\S+)\s+", rest):
            flags[match[1]] = match[2]
            rest = rest[match.end() :]
        return flags, rest


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)
    global_args: dict[str, str] = field(default_factory=dict)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def args(self) -> dict[str, str]:
        """The stage's ARGs and their defaults; a bare `ARG NAME` takes the global one's."""
        values: dict[str, str] = {}
        for instruction in self.all("ARG"):
            name, has_default, default = instruction.arguments.partition("=")
            values[name] = default if has_default else self.global_args.get(name, "")
        return values

    def env(self) -> dict[str, str]:
        """The stage's ENV, `KEY=value` pairs in order, with the stage's `${ARG}`s expanded;
        `$NAME` of the environment is left for the caller to expand."""
        args = self.args()
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for pair in shlex.split(instruction.arguments):
                key, _, value = pair.partition("=")
                values[key] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), value)
        return values


def instructions(text: str) -> list[Instruction]:
    """The instructions, with continuation lines joined and comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip()))
    return result


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The build stages in order; ARGs before the first FROM are substituted into FROM lines."""
    result: list[Stage] = []
    args: dict[str, str] = {}
    for instruction in instructions(path.read_text()):
        if instruction.keyword == "ARG" and not result:
            name, _, default = instruction.arguments.partition("=")
            args[name] = default
        elif instruction.keyword == "FROM":
            words = instruction.arguments.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), words[0])
            stage = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(base, stage, global_args=dict(args)))
        elif result:
            result[-1].instructions.append(instruction)
    return result

"""What a stage carries from one instruction to the next, and what its instructions share."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from polyarch.frontend.convert.request import DEFAULT_SHELL
from polyarch.frontend.dockerfile.instructions import Instruction, Stage
from polyarch.graph.model import HistoryStep, Location, PlanStep, StageInstance
from polyarch.oci.config import ImageConfig
from polyarch.platform import Platform


@dataclass
class State:
    """What a stage carries from one instruction to the next (and to `FROM <stage>`)."""

    config: ImageConfig
    env: dict[str, str]  # BuildKit's state env: base Env, ENV and ARG values, in order
    head: str  # the vertex of the filesystem so far
    steps: list[HistoryStep] = field(default_factory=list)
    build_args: list[tuple[str, str | None]] = field(default_factory=list)  # ARGs, for history
    plan: list[PlanStep] = field(default_factory=list)
    cmd_set: bool = False  # CMD was set in this stage (ENTRYPOINT then keeps it)
    declared: dict[str, str | None] = field(default_factory=dict)  # ARGs declared in the stage
    workdir_set: bool = False  # a WORKDIR of this Dockerfile ran (here or in a parent stage)
    # The base image's config is known (resolved): checks that read its variables or SHELL
    # (UndefinedVar, JSONArgsRecommended) say nothing without it.
    base_known: bool = True
    # CMD, ENTRYPOINT, HEALTHCHECK: where this stage last set them (MultipleInstructions...)
    set_at: dict[str, Location] = field(default_factory=dict)

    @property
    def workdir(self) -> str:
        return self.config.working_dir or "/"

    @property
    def user(self) -> str:
        return self.config.user or ""

    @property
    def shell(self) -> tuple[str, ...]:
        return self.config.shell or DEFAULT_SHELL

    def fork(self) -> State:
        return State(self.config, dict(self.env), self.head, list(self.steps),
                     list(self.build_args), workdir_set=self.workdir_set,
                     base_known=self.base_known)  # fmt: skip

    def meta(self, ins: Instruction, created_by: str, shown: str = "") -> None:
        """A step that changes only the config: history without a layer, a plan line."""
        self.steps.append(HistoryStep(created_by))
        self.plan.append(PlanStep(shown or created_by, None, ins.location))

    def stepped(self, head: str, created_by: str, shown: str, ins: Instruction) -> None:
        """A step that made a layer: the stage's filesystem is now `head`."""
        self.head = head
        self.steps.append(HistoryStep(created_by, head))
        self.plan.append(PlanStep(shown, head, ins.location))


def empty_state(platform: Platform, head: str) -> State:
    """A stage on nothing (scratch, a directory): BuildKit's empty image, whose PATH is in the
    stage's variables too (`ENV PATH=$PATH:/x` extends it)."""
    config = ImageConfig.empty(platform)
    return State(config, dict(config.env_map()), head)


@dataclass
class Built:
    instance: StageInstance
    state: State


@dataclass(frozen=True)
class StageContext:
    """What one stage's instructions share."""

    stage: Stage
    target: Platform  # the target platform this instance is for
    platform: Platform  # where its steps run
    glob: Mapping[str, str]
    stack: tuple[int, ...]

"""The build plan: stages x target platforms as content-addressed operations (pure)."""

from polyarch.plan.model import Op, Plan, PlanWarning, StageInstance, op_key
from polyarch.plan.planner import (
    ImageFacts,
    PlanRequest,
    make_plan,
    platform_args,
)
from polyarch.platform import runs_natively

__all__ = [
    "ImageFacts",
    "Op",
    "Plan",
    "PlanRequest",
    "PlanWarning",
    "StageInstance",
    "make_plan",
    "op_key",
    "platform_args",
    "runs_natively",
]

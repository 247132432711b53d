"""`edgex study`: the paper's spectrum and ablations trained with several seeds, with intervals, latency, and
whether the paper's orderings hold on the data at hand.

>>> from edgex.study import StudyConfig, run_study
>>> result = run_study(StudyConfig("activation", seeds=3, epochs=4), "runs/study")   # doctest: +SKIP
>>> print(study_section_markdown(result))                                             # doctest: +SKIP
"""

from __future__ import annotations

from edgex.study.config import STUDIES, Claim, StudyConfig, Variant, register_study
from edgex.study.report import study_section_markdown
from edgex.study.results import Comparison, Latency, SeedRun, StudyResult, VariantResult
from edgex.study.run import run_study

__all__ = [
    "STUDIES",
    "Claim",
    "Comparison",
    "Latency",
    "SeedRun",
    "StudyConfig",
    "StudyResult",
    "Variant",
    "VariantResult",
    "register_study",
    "run_study",
    "study_section_markdown",
]

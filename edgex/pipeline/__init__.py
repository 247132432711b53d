"""`edgex pipeline`: the whole job, from data to a deployable model and a report, in resumable stages.

data -> train (Xception) -> twin (its regular-convolution twin) -> prune -> quantize (int8, QAT) -> convert ->
evaluate -> bench -> separable (model-level A/B and layer sweep) -> deploy (bundle) -> report.

Every stage records a hash of its options and of the contents of what it reads (the dataset's fingerprint, the
files of the stages before it); ``resume`` skips a stage whose outputs exist and whose hash is unchanged, and reruns
what changed (and everything downstream of it).

- ``recipe``: the typed options of every stage (``Recipe``), read from YAML and flags;
- ``stages``: one function per stage, and what each reads;
- ``runner``: hashes, resume, the background process;
- ``runfolder``: where files land, the variants, the best ones, the summary, the reproduce commands.
"""

from edgex.pipeline.recipe import DEFAULT_RECIPE, Recipe, check_recipe, resolve_recipe
from edgex.pipeline.runfolder import SummaryRow, Variant, best_variants, summary_rows, variants
from edgex.pipeline.runner import PipelineResult, StageRecord, run_pipeline
from edgex.pipeline.stages import STAGES

__all__ = [
    "DEFAULT_RECIPE",
    "STAGES",
    "PipelineResult",
    "Recipe",
    "StageRecord",
    "SummaryRow",
    "Variant",
    "best_variants",
    "check_recipe",
    "resolve_recipe",
    "run_pipeline",
    "summary_rows",
    "variants",
]

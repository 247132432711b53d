"""The second process of a background stage: ``python -m edgex.pipeline NAME RUN_FOLDER RESULT_FILE``."""

import sys
from pathlib import Path

from edgex.pipeline.runner import run_background_stage

run_background_stage(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))

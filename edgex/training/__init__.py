"""Training Xception with Keras, from scratch or by fine-tuning: the run (``trainer``), what it is asked to do
(``config``), its named steps (``steps``), transfer learning (``transfer``), starting weights (``weights``) and
where it runs (``distribute``)."""

from edgex.training.config import TrainConfig, transfer_options
from edgex.training.trainer import TrainResult, fine_tune, train

__all__ = ["TrainConfig", "TrainResult", "fine_tune", "train", "transfer_options"]

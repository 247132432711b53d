"""Making a trained model smaller and faster with tensorflow-model-optimization: post-training quantization and
quantization-aware training (``quantize``), magnitude pruning (``prune``), and what both share (``common``)."""

"""SavedModel export: a ``serving_default`` signature taking ``input`` (batch fixed to 1 or dynamic)."""

from __future__ import annotations

from pathlib import Path

from converters.registry import ExportInfo, ExportOptions
from converters.source import SourceModel


def export(source: SourceModel, path: Path, options: ExportOptions) -> ExportInfo:
    from devices.tfkeras import tensorflow

    tf = tensorflow()
    concrete = source.concrete_function(options.batch_size)
    module = tf.Module()
    if source.keras_model is not None:
        module.model = source.keras_model  # tracks the variables the signature uses
    else:
        module.keepalive = concrete._edgex_keepalive
    tf.saved_model.save(module, str(path), signatures={"serving_default": concrete})
    return ExportInfo((), {"signature": "serving_default"})

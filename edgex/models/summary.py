"""Per-block summary of an Xception configuration: shapes, parameters, MACs, and the cost against its twin."""

from __future__ import annotations

from dataclasses import dataclass

from edgex.models.costs import ModelCost, model_cost
from edgex.models.xception import XceptionConfig, build_xception


@dataclass(frozen=True)
class ModelSummary:
    config: XceptionConfig
    cost: ModelCost

    @property
    def comparable_to_twin(self) -> bool:
        config = self.config
        return config.conv == "separable" and config.segments is None and config.intermediate_activation == "none"

    @property
    def twin_ratio(self) -> float | None:
        """MACs of this separable network / MACs of its regular-convolution twin."""
        if not self.comparable_to_twin:
            return None
        return self.cost.macs / self.cost.regular_twin_macs()

    def segments(self) -> dict:
        """The spectrum point: G (segments) for each input channel count of the separable convolutions."""
        from edgex.models.segments import groups_for

        channels = sorted(set(self.config.separable_input_channels()))
        return {
            "value": self.config.segments,
            "groups_by_input_channels": {str(c): groups_for(self.config.segments, c) for c in channels},
        }

    def to_dict(self) -> dict:
        macs = self.cost.macs
        data = {
            "config": self.config.to_dict(),
            "trainable_params": self.cost.trainable_params,
            "total_params": self.cost.total_params,
            "macs": macs,
            "macs_by_kind": self.cost.macs_by_kind(),
            "mac_share_by_kind": {k: v / macs for k, v in self.cost.macs_by_kind().items()} if macs else {},
            "blocks": [{**row, "output_shape": list(row["output_shape"])} for row in self.cost.blocks()],
        }
        if self.config.segments is not None:
            data["segments"] = self.segments()
        if self.comparable_to_twin:
            data["regular_twin"] = {
                "macs": self.cost.regular_twin_macs(),
                "params": self.cost.regular_twin_params(),
                "mac_ratio": self.twin_ratio,
            }
        return data


def summarize(config: XceptionConfig) -> ModelSummary:
    """Build the model of ``config`` and count it (the regular twin is counted analytically, not built)."""
    from devices.tfkeras import keras

    model = build_xception(config)
    try:
        return ModelSummary(config, model_cost(model))
    finally:
        del model
        keras().backend.clear_session()

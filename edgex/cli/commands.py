"""Registration of the commands that live in their own modules."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from edgex.cli import bench, convert, deploy, optimize, pipeline, predict, sepconv, study, train, tune

    train.register(app)
    convert.register(app)
    optimize.register(app)
    bench.register(app)
    sepconv.register(app)
    deploy.register(app)
    pipeline.register(app)
    study.register(app)
    predict.register(app)
    tune.register(app)

"""Deploying to a board: the bundle (``bundle``: the model, its metadata, the ``devices`` package, requirements and a
manifest) and its benchmark and evaluation run on devices over SSH (``remote``)."""

from edgex.deploy.boards import DEPLOY_TARGETS, Bundle, Target
from edgex.deploy.bundle import build_bundle, verify_bundle
from edgex.deploy.remote import HostResult, SshOptions, deploy_remote, read_hosts

__all__ = [
    "DEPLOY_TARGETS",
    "Bundle",
    "HostResult",
    "SshOptions",
    "Target",
    "build_bundle",
    "deploy_remote",
    "read_hosts",
    "verify_bundle",
]

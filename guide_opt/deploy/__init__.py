"""Deployment artifacts: what to run once a plan is chosen.

- :mod:`guide_opt.deploy.tables` -- the data tables in ``hardware_db/deploy/`` (engine CLIs, Kubernetes facts).
- :mod:`guide_opt.deploy.commands` -- engine launch commands and the ``vllm bench serve`` SLO check.
- :mod:`guide_opt.deploy.kubernetes` -- Deployment / StatefulSet manifests.
- :mod:`guide_opt.deploy.artifacts` -- one plan's artifacts, as JSON and as files (``solve --emit DIR``).
- :mod:`guide_opt.deploy.checks` -- commands checked against the documented CLIs, manifests against the Kubernetes schema.
"""

from guide_opt.deploy.artifacts import DeploymentArtifacts, build_artifacts, write_artifacts
from guide_opt.deploy.checks import check_command, check_manifests

__all__ = ["DeploymentArtifacts", "build_artifacts", "write_artifacts", "check_command", "check_manifests"]

"""Build the Bento: import the champion into the BentoML store, then build ``deploy/bentofile.yaml``.

The packed model's tag goes into the Bento's environment (``POPULARITY_SERVING__BENTO_MODEL``) and into
the environment of the ``bentoml build`` child, so the scorer's class-level ``BentoModel`` reference
exists when BentoML collects the service's models and the built Bento loads the champion from inside
itself, with no MLflow server.

    python -m serving.pack [--gpu]      # then: bentoml containerize popularity:latest
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from pipelines.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
BENTOFILE = REPO / "deploy" / "bentofile.yaml"
CONTAINER_TEMPLATE = REPO / "deploy" / "containers" / "bento.Dockerfile.j2"


def import_champion(settings: Settings):
    """Copy ``models:/<name>@champion`` into the BentoML store, its summary kept as metadata."""
    import bentoml

    from pipelines import registry

    summary = registry.champion_summary(settings.task, settings)
    return bentoml.mlflow.import_model(
        summary["name"], f"models:/{summary['name']}@champion",
        labels={"version": str(summary["version"]), "alias": "champion"},
        metadata=json.loads(json.dumps(summary, default=str)),
    )


def build(settings: Settings, gpu: bool = False, base_image: str | None = None) -> tuple[str, Path]:
    """Import the champion and build the Bento in a child ``bentoml build`` whose environment names the
    packed model (the service reads it when BentoML imports it); returns the Bento's tag and path. With
    ``base_image`` (one holding the lock's packages, e.g. popularity-deps:0.1.0 from deploy/containers),
    its image is built FROM it and installs nothing (deploy/containers/bento.Dockerfile.j2)."""
    import bentoml

    model = import_champion(settings)
    envs = {"POPULARITY_SERVING__BENTO_MODEL": str(model.tag), "POPULARITY_SERVING__GPU": str(gpu).lower()}
    options = yaml.safe_load(BENTOFILE.read_text())
    options["envs"] = [*options.get("envs", []), *({"name": k, "value": v} for k, v in envs.items())]
    if gpu:
        # No `cuda_version`: BentoML's CUDA bases stop at 12.8 and the lock's torch is a CUDA 13 build whose
        # wheels (nvidia-* in requirements.lock) carry the CUDA runtime. The Python base serves on a GPU
        # that the NVIDIA container runtime exposes (a driver for CUDA 13 on the node); these ask it to.
        options["envs"] += [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                            {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"}]
    if base_image:
        # BentoML takes the template's path relative to the build context (the repository), never absolute
        options["docker"] = {"base_image": base_image,
                             "dockerfile_template": str(CONTAINER_TEMPLATE.relative_to(REPO))}
    env = {**os.environ, **envs}
    with tempfile.TemporaryDirectory() as tmp:
        bentofile = Path(tmp) / "bentofile.yaml"
        bentofile.write_text(yaml.safe_dump(options))
        tag = _bentoml(["build", str(REPO), "-f", str(bentofile), "--output", "tag"], env).splitlines()[-1]
    tag = tag.removeprefix("__tag__:").strip()
    return tag, Path(bentoml.get(tag).path)


def _bentoml(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "bentoml", *args], env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"bentoml {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true",
                        help="serve on a GPU (CUDA 13 runtime from the locked torch wheels)")
    parser.add_argument("--base-image", help="build the image FROM this one, which holds the lock's packages "
                                             "(popularity-deps:0.1.0 of deploy/containers/build.sh): no downloads")
    args = parser.parse_args()
    tag, path = build(load_settings(), args.gpu, args.base_image)
    print(f"{tag} at {path}")


if __name__ == "__main__":
    main()

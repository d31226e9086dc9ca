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


def build(settings: Settings, gpu: bool = False) -> tuple[str, Path]:
    """Import the champion and build the Bento in a child ``bentoml build`` whose environment names the
    packed model (the service reads it when BentoML imports it); returns the Bento's tag and path."""
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
    tag, path = build(load_settings(), parser.parse_args().gpu)
    print(f"{tag} at {path}")


if __name__ == "__main__":
    main()

"""Build the Bento: import the champion into the BentoML store, then build ``deploy/bentofile.yaml``.

The packed model's tag goes into the Bento's environment (``POPULARITY_SERVING__BENTO_MODEL``), so the
scorer's class-level ``BentoModel`` reference exists when BentoML collects the service's models and the
built Bento loads the champion from inside itself, with no MLflow server.

    python -m serving.pack [--gpu]      # then: bentoml containerize popularity:latest
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import yaml

from pipelines.settings import Settings, get_settings

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


def build(gpu: bool = False):
    """Import the champion and build the Bento; returns the Bento."""
    settings = Settings()
    settings.export_environment()
    model = import_champion(settings)
    envs = {"POPULARITY_SERVING__BENTO_MODEL": str(model.tag), "POPULARITY_SERVING__GPU": str(gpu).lower()}
    os.environ.update(envs)
    get_settings.cache_clear()
    import bentoml

    options = yaml.safe_load(BENTOFILE.read_text())
    options["envs"] = [*options.get("envs", []), *({"name": k, "value": v} for k, v in envs.items())]
    if gpu:
        options.setdefault("docker", {})["cuda_version"] = "12.1"
    with tempfile.TemporaryDirectory() as tmp:
        bentofile = Path(tmp) / "bentofile.yaml"
        bentofile.write_text(yaml.safe_dump(options))
        return bentoml.bentos.build_bentofile(str(bentofile), build_ctx=str(REPO))

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="ask for a GPU and a CUDA base image")
    bento = build(parser.parse_args().gpu)
    print(f"{bento.tag} at {bento.path}")


if __name__ == "__main__":
    main()

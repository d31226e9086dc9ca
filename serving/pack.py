"""Build the Bento: import the champion into the BentoML store, then build ``deploy/bentofile.yaml``.

The packed model's tag goes into the Bento's environment (``POPULARITY_SERVING__BENTO_MODEL``) and into
the environment of the ``bentoml build`` child, so the scorer's class-level ``BentoModel`` reference
exists when BentoML collects the service's models and the built Bento loads the champion from inside
itself, with no MLflow server.

The Bento's image (``bentoml containerize``) installs ``requirements.lock`` into a fresh venv with uv,
which resolves dependencies: a package the lock installs on purpose without its own (the offline
weights, whose metadata asks for torch 1.6) would make that fail. So the requirements file the Bento
carries also serves as uv's override file (``UV_OVERRIDE``): each pin overrides whatever a package asks
for, and a requirement the lock leaves out on purpose is overridden by one that never applies.
``--base-image`` and ``--find-links`` build it with no registry: on the local base with uv in it
(``popularity-bento-base``, ``deploy/containers/build.sh``) from the wheelhouse
(``deploy/containers/wheelhouse.sh``) served over HTTP to ``bentoml containerize --opt network=host``.

    python -m serving.pack [--gpu]      # then: bentoml containerize popularity:latest
    python -m serving.pack --base-image popularity-bento-base:0.1.0 --find-links http://127.0.0.1:8765/
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipelines.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
BENTOFILE = REPO / "deploy" / "bentofile.yaml"
LOCK = REPO / "requirements.lock"
BENTO_PATH = "/home/bentoml/bento"  # where BentoML's image keeps the Bento (its bento__path)
NEVER = 'python_version < "0"'  # a marker no interpreter meets: the override that drops a requirement


def requirements(lock: Path = LOCK) -> str:
    """The lock's pins, then each requirement of a locked package that the lock does not pin (the offline
    weights' ``future``, torch's ``setuptools``: left out on purpose) as a requirement that never applies.
    As uv's override file it keeps the resolution to exactly the lock."""
    pinned = {canonicalize_name(m[1]): line.strip() for line in lock.read_text().splitlines()
              if (m := re.match(r"^([A-Za-z0-9_.\-]+)==", line.strip()))}
    dropped = set()
    for name in pinned:
        try:
            asked = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in asked:
            req = Requirement(text)
            if (not req.marker or req.marker.evaluate({"extra": ""})) and canonicalize_name(req.name) not in pinned:
                dropped.add(canonicalize_name(req.name))
    return "\n".join([*pinned.values(), *(f"{name} ; {NEVER}" for name in sorted(dropped))]) + "\n"


def import_champion(settings: Settings):
    """Copy ``models:/<name>@champion`` into the BentoML store, its summary kept as metadata."""
    import bentoml

    from pipelines import registry

    summary = registry.champion_summary(settings.task, settings)
    return bentoml.mlflow.import_model(
        summary["name"], f"models:/{summary['name']}@champion",
        labels={"version": str(summary["version"]), "alias": "champion"},
        metadata=_without_nulls(json.loads(json.dumps(summary, default=str))),
    )


def _without_nulls(value):
    """BentoML's model metadata takes no None: a field the version does not record (its label scheme, how it
    was selected, …) is left out rather than null."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def build(settings: Settings, gpu: bool = False, base_image: str | None = None,
          find_links: str | None = None) -> tuple[str, Path]:
    """Import the champion and build the Bento in a child ``bentoml build`` whose environment names the
    packed model (the service reads it when BentoML imports it); returns the Bento's tag and path.
    ``base_image`` replaces the image's ``python:3.11-slim`` (it needs Python 3.11); ``find_links`` (a
    wheel folder's URL) replaces PyPI when the image is built."""
    import bentoml

    model = import_champion(settings)
    envs = {"POPULARITY_SERVING__BENTO_MODEL": str(model.tag), "POPULARITY_SERVING__GPU": str(gpu).lower(),
            "UV_OVERRIDE": f"{BENTO_PATH}/env/python/requirements.txt"}
    options = yaml.safe_load(BENTOFILE.read_text())
    options["envs"] = [*options.get("envs", []), *({"name": k, "value": v} for k, v in envs.items())]
    if base_image:
        options["docker"]["base_image"] = base_image
    if find_links:
        options["python"].update(no_index=True, find_links=[find_links])
    if gpu:
        # No `cuda_version`: BentoML's CUDA bases stop at 12.8 and the lock's torch is a CUDA 13 build whose
        # wheels (nvidia-* in requirements.lock) carry the CUDA runtime. The Python base serves on a GPU
        # that the NVIDIA container runtime exposes (a driver for CUDA 13 on the node); these ask it to.
        options["envs"] += [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
                            {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"}]
    env = {**os.environ, **envs}
    (REPO / "build").mkdir(exist_ok=True)  # git ignores it; BentoML reads files under the build context only
    with tempfile.TemporaryDirectory(dir=REPO / "build", prefix="bento-") as tmp:
        (Path(tmp) / "requirements.txt").write_text(requirements())
        options["python"]["requirements_txt"] = str((Path(tmp) / "requirements.txt").relative_to(REPO))
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
    parser.add_argument("--base-image", help="the image's base instead of python:3.11-slim (Python 3.11 and uv "
                                             "in it), e.g. popularity-bento-base:0.1.0 (deploy/containers/build.sh)")
    parser.add_argument("--find-links", help="install the lock's wheels from this URL (a wheel folder) instead "
                                             "of PyPI, e.g. deploy/containers/wheelhouse/ served over HTTP")
    args = parser.parse_args()
    tag, path = build(load_settings(), args.gpu, args.base_image, args.find_links)
    print(f"{tag} at {path}")


if __name__ == "__main__":
    main()

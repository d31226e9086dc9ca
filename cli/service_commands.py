"""Serving and scoring: ``serve`` runs the BentoML service (through :mod:`ops`), ``predict`` scores
photos through a running service or in process, decoded exactly as the service decodes them."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from cli.options import JsonOpt, TaskOpt, check_task
from cli.output import console, emit, fail
from pipelines.settings import Settings, load_settings

app = typer.Typer()


@app.command()
def serve(port: Annotated[int | None, typer.Option(help="Port (default from settings).")] = None,
          host: Annotated[str | None, typer.Option(help="Address to bind (default from settings: 127.0.0.1).")] = None,
          insecure: Annotated[bool, typer.Option(help="Serve off loopback without POPULARITY_API_KEY: anyone who "
                                                      "reaches the address may score and /reload.")] = False,
          ) -> None:
    """Serve the champion with BentoML in the foreground; it follows the registry's champion alias."""
    settings = load_settings()
    port = port or settings.serving.port
    host = host or settings.serving.host
    if settings.api_key is None and not insecure and not loopback(host):
        fail(f"refusing to serve on {host} without an API key: set POPULARITY_API_KEY, or pass --insecure "
             "to serve it open", 2)
    from ops.processes import exec_service

    exec_service(host, port)


def loopback(host: str) -> bool:
    """Whether ``host`` is certainly a loopback address (a host name may resolve to anything)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files.", exists=True, dir_okay=False)],
    url: Annotated[str | None, typer.Option(help="A running service; in process when omitted.")] = None,
    task: TaskOpt = "binary",
    as_json: JsonOpt = False,
) -> None:
    """Score images through a running service, or in process with the champion."""
    check_task(task)
    settings = load_settings()
    results = _through_service(images, url, settings) if url else _in_process(images, task, settings)
    for r in results:
        console.print(f"{r['image']}: " + (f"score {r['score']:.3f} label {r['label']}" if "score" in r
                                           else f"[red]{r.get('error')}[/]"))
    emit({"predictions": results}, as_json)
    if any("score" not in r for r in results):
        raise typer.Exit(1)


def _through_service(images: list[Path], url: str, settings: Settings) -> list[dict]:
    import httpx

    results = []
    key = {"X-API-Key": settings.api_key.get_secret_value()} if settings.api_key is not None else {}
    with httpx.Client(timeout=60, headers=key) as client:
        for path in images:
            try:
                response = client.post(f"{url.rstrip('/')}/predict", files={"image": (path.name, path.read_bytes())})
            except httpx.TransportError as exc:
                fail(f"no service answered at {url}: {exc}; start one with `popularity serve`", kind="unavailable")
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") \
                else {"error": response.text}
            results.append({"image": str(path), "status": response.status_code, **body})
    return results


def _in_process(images: list[Path], task: str, settings: Settings) -> list[dict]:
    """The champion as the service holds it, each image decoded as the service decodes an upload."""
    from pipelines import registry
    from pipelines.data.images import ImageError
    from serving.uploads import decode_upload

    try:
        model, _ = registry.load_model(task, settings)
    except LookupError:
        fail(f"{settings.model_name(task)} has no champion yet; run `popularity run` or `popularity promote`",
             kind="not_found")
    results = []
    for path in images:
        try:
            img = decode_upload(path.read_bytes(), settings)
        except ImageError as exc:
            results.append({"image": str(path), "error": str(exc)})
            continue
        row = model.predict_images([img]).iloc[0]
        results.append({"image": str(path), "score": float(row["score"]), "label": int(row["label"])})
    return results

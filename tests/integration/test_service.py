"""The real BentoML service on loopback: every endpoint, every kind of bad input, the API key, metrics,
schemathesis against its OpenAPI spec, and /reload under load."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from monitoring.request_log import RequestLog
from ops.processes import ServiceProcess
from tests.conftest import encode
from tests.helpers import API_KEY

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
KEY = API_KEY
AUTH = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def client(service):
    with httpx.Client(base_url=service.url, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def jpeg(photographs) -> bytes:
    return encode(photographs["astronaut"])


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _bad_inputs(photo: np.ndarray) -> dict[str, tuple[bytes, str]]:
    """(bytes, expected reason) for every refused input, built here."""
    whole = encode(photo)
    bomb = io.BytesIO()
    Image.new("1", (30000, 30000)).save(bomb, format="PNG")  # a few kB on disk, 900 M pixels
    bmp = io.BytesIO()
    Image.fromarray(photo).save(bmp, format="BMP")
    return {
        "zero_bytes": (b"", "empty"),
        "truncated_jpeg": (whole[: len(whole) // 3], "corrupt"),
        "text_named_jpg": (b"this is not a photo, just text\n" * 20, "not_an_image"),
        "bmp_unknown_format": (bmp.getvalue(), "not_an_image"),
        "decompression_bomb": (bomb.getvalue(), "too_many_pixels"),
        "tiny": (encode(photo[:8, :8]), "too_small"),
    }


def _good_inputs(photo: np.ndarray) -> dict[str, bytes]:
    """Every mode and format the service must accept and convert."""
    rgb = Image.fromarray(photo)
    cmyk = io.BytesIO()
    rgb.convert("CMYK").save(cmyk, format="JPEG")
    gif = io.BytesIO()
    rgb.save(gif, format="GIF", save_all=True, append_images=[rgb.rotate(90)])
    webp = io.BytesIO()
    rgb.save(webp, format="WEBP")
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(rotated, format="JPEG", exif=exif)
    sixteen = Image.fromarray(photo[..., 0].astype(np.uint16) * 257)
    return {
        "cmyk_jpeg": cmyk.getvalue(), "png_16bit": _png(sixteen), "palette_png": _png(rgb.convert("P")),
        "rgba_png": _png(rgb.convert("RGBA")), "greyscale_png": _png(rgb.convert("L")),
        "gif_first_frame": gif.getvalue(), "webp": webp.getvalue(), "exif_rotated_jpeg": rotated.getvalue(),
    }


def test_predict_returns_score_label_and_model(client, jpeg):
    r = client.post("/predict", files={"image": ("a.jpg", jpeg, "image/jpeg")}, data={"followers": "120"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0 <= body["score"] <= 1 and body["label"] in (0, 1)
    assert body["model"] == "popularity-binary" and body["version"] and body["latency_ms"] > 0


def test_predict_takes_seed_002s_user_columns_and_refuses_bad_social_fields(client, jpeg):
    user = {"user_contacts": "40", "user_groups": "3", "user_mean_views": "800", "photo_count": "120"}
    assert client.post("/predict", files={"image": ("a.jpg", jpeg)}, data=user).status_code == 200
    r = client.post("/predict", files={"image": ("a.jpg", jpeg)}, data={"followers": "-5"})
    assert r.status_code == 400
    r = client.post("/predict", files={"image": ("a.jpg", jpeg)}, data={"user_mean_views": "-1"})
    assert r.status_code == 400


def test_predict_takes_the_posts_words_as_text_or_a_tag_count(client, jpeg):
    words = {"tags": "sunset|food|city", "title": "Evening, out", "description": "a walk by the river"}
    assert client.post("/predict", files={"image": ("a.jpg", jpeg)}, data=words).status_code == 200
    assert client.post("/predict", files={"image": ("a.jpg", jpeg)}, data={"tags": "3"}).status_code == 200
    r = client.post("/predict", files={"image": ("a.jpg", jpeg)}, data={"tags": "x" * 2_001})
    assert r.status_code == 400  # capped like every input


def test_predict_batch_keeps_order_and_isolates_bad_images(client, photographs):
    good = [encode(p) for p in photographs.values()]
    files = [("images", (f"{i}.jpg", b, "image/jpeg")) for i, b in enumerate([good[0], b"junk", good[1], good[2]])]
    r = client.post("/predict_batch", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [("error" in x) for x in results] == [False, True, False, False]
    assert results[1]["error"] == "not_an_image" and results[1]["message"]


def test_a_score_does_not_depend_on_its_batch_mates(client, photographs):
    """Adaptive batching puts strangers' photos in one model call: that must not move a score."""
    good = [encode(p) for p in photographs.values()]
    batch = client.post("/predict_batch", files=[("images", (f"{i}.jpg", b)) for i, b in enumerate(good)]).json()
    single = client.post("/predict", files={"image": ("c.jpg", good[2])}).json()
    assert batch["results"][2]["score"] == pytest.approx(single["score"])


def test_predict_batch_caps_the_number_of_images(client):
    files = [("images", (f"{i}.png", b"x", "image/png")) for i in range(65)]
    r = client.post("/predict_batch", files=files)
    assert r.status_code == 400 and "64" in r.json()["message"]


def test_compare_ranks_best_first(client, photographs):
    files = [("images", (f"{n}.jpg", encode(p), "image/jpeg")) for n, p in photographs.items()]
    r = client.post("/compare", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    scores = [x["score"] for x in body["ranking"]]
    assert scores == sorted(scores, reverse=True)
    assert [x["rank"] for x in body["ranking"]] == [1, 2, 3] and body["best"] == body["ranking"][0]["index"]
    one = client.post("/compare", files=files[:1])
    assert one.status_code == 400 and "between 2 and 10" in one.json()["message"]


def test_predictions_carry_ids_stored_with_them_for_joining_outcomes_later(client, champion_home, photographs):
    good = [encode(p) for p in photographs.values()]
    one = client.post("/predict", files={"image": ("a.jpg", good[0])}, data={"post_id": "12345"})
    assert one.status_code == 200, one.text
    assert one.json()["post_id"] == "12345" and len(one.json()["prediction_id"]) == 32
    files = [("images", (f"{i}.jpg", b)) for i, b in enumerate([good[1], b"junk", good[2]])]
    batch = client.post("/predict_batch", files=files, data={"post_ids": json.dumps(["p-1", "p-2", "p-3"])})
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r.get("post_id") for r in results] == ["p-1", None, "p-3"] and "prediction_id" not in results[1]
    ranked = client.post("/compare", files=[files[0], files[2]], data={"post_ids": '["a", "b"]'}).json()["ranking"]
    assert {r["index"]: r["post_id"] for r in ranked} == {0: "a", 1: "b"}
    answered = {r["prediction_id"]: r.get("post_id") for r in [one.json(), results[0], results[2], *ranked]}
    assert len(answered) == 5  # one id per answered image, never reused

    log = RequestLog(champion_home / "monitoring" / "requests", 10 * 1024 * 1024, 5)
    deadline = time.monotonic() + 30
    while not set(answered) <= set(stored := log.read()["prediction_id"].dropna()) and time.monotonic() < deadline:
        time.sleep(0.2)  # the service writes its records in batches, off the request path
    assert set(answered) <= set(stored)
    frame = log.read().set_index("prediction_id")
    assert {p: frame.loc[p, "post_id"] if isinstance(frame.loc[p, "post_id"], str) else None
            for p in answered} == answered

    mismatched = client.post("/predict_batch", files=files, data={"post_ids": '["only-one"]'})
    assert mismatched.status_code == 400 and mismatched.json()["error"] == "post_ids"
    for bad in ("has space", "x" * 129, "1.5"):
        r = client.post("/predict", files={"image": ("a.jpg", good[0])}, data={"post_id": bad})
        assert r.status_code == 400, (bad, r.text)


def test_model_describes_the_champion(client):
    r = client.get("/model")
    assert r.status_code == 200
    body = r.json()
    for key in ("name", "version", "alias", "family", "metrics", "trained_at", "snapshot"):
        assert key in body
    assert body["alias"] == "champion" and "roc_auc" in body["metrics"]


@pytest.mark.parametrize("case", ["zero_bytes", "truncated_jpeg", "text_named_jpg", "bmp_unknown_format",
                                  "decompression_bomb", "tiny"])
def test_bad_input_gets_a_4xx_with_a_reason(client, photographs, case):
    data, reason = _bad_inputs(photographs["chelsea"])[case]
    r = client.post("/predict", files={"image": ("photo.jpg", data, "image/jpeg")})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"] == reason and r.json()["message"]


@pytest.mark.parametrize("case", ["cmyk_jpeg", "png_16bit", "palette_png", "rgba_png", "greyscale_png",
                                  "gif_first_frame", "webp", "exif_rotated_jpeg"])
def test_every_mode_and_format_is_accepted(client, photographs, case):
    data = _good_inputs(photographs["coffee"])[case]
    r = client.post("/predict", files={"image": (f"{case}.img", data)})
    assert r.status_code == 200, r.text


def test_body_cap_refuses_oversized_uploads(client):
    big = np.random.default_rng(0).bytes(21 * 1024 * 1024)
    r = client.post("/predict", files={"image": ("big.jpg", b"\xff\xd8\xff" + big)})
    assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_api_key_guards_everything_but_health_and_metrics(service, jpeg):
    with httpx.Client(base_url=service.url, timeout=30) as anonymous:
        assert anonymous.post("/predict", files={"image": ("a.jpg", jpeg)}).status_code == 401
        assert anonymous.get("/model").status_code == 401
        assert anonymous.post("/reload").status_code == 401
        wrong = anonymous.post("/predict", files={"image": ("a.jpg", jpeg)}, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401
        bearer = anonymous.get("/model", headers={"Authorization": f"Bearer {KEY}"})
        assert bearer.status_code == 200
        for path in ("/livez", "/readyz", "/metrics", "/"):
            assert anonymous.get(path).status_code == 200, path


def test_feedback_records_outcomes_of_answered_predictions_and_rejects_bad_rows_with_reasons(client, jpeg):
    answered = client.post("/predict", files={"image": ("a.jpg", jpeg)}, data={"post_id": "feedback-1"}).json()
    second = client.post("/predict", files={"image": ("b.jpg", jpeg)}).json()
    seen = {"prediction_id": second["prediction_id"], "daily_views": [3, 9, 12], "observed_at": time.time()}
    rows = [{"post_id": "feedback-1", "likes": 40, "followers": 900, "observed_at": "2030-01-01T00:00:00Z"}, seen,
            {"prediction_id": "0" * 32, "likes": 1},
            {"prediction_id": second["prediction_id"], "likes": -5, "observed_at": seen["observed_at"] + 1}]
    recorded = client.post("/feedback", json={"rows": rows})
    assert recorded.status_code == 200, recorded.text
    body = recorded.json()
    assert body["accepted"] == 1 and body["rejected"] == 3
    assert {r["index"]: r["reasons"] for r in body["rejected_rows"]} == {
        0: ["observed_not_in_future"], 2: ["id_known"], 3: ["likes_non_negative"]}
    assert answered["prediction_id"] != second["prediction_id"]

    again = client.post("/feedback", json={"rows": [seen]})
    assert again.status_code == 422 and again.json()["rejected_rows"] == [{"index": 0, "reasons": ["no_duplicate"]}]
    for bad in ({"rows": []}, {"rows": [{"likes": 3}]}, {"rows": [{"post_id": "x", "likes": 1, "shares": 2}]}):
        assert client.post("/feedback", json=bad).status_code == 400, bad
    assert client.get("/livez").status_code == 200


def test_metrics_expose_predictions_scores_rejections_and_drift(client, champion_home, jpeg):
    assert client.post("/predict", files={"image": ("a.jpg", jpeg)}).status_code == 200
    assert client.post("/predict", files={"image": ("a.jpg", b"not an image")}).status_code == 400
    from monitoring.verdicts import open_verdict_store
    from pipelines.settings import Settings

    # the monitor's verdict, in the store the service reads (here the home's SQLite file); the service
    # reads it within its watch interval
    open_verdict_store(Settings(home=champion_home)).save("popularity-binary", "drift", {"drifted_share": 0.4, "drift": True})
    deadline = time.monotonic() + 30
    while "popularity_drift 1.0" not in (text := client.get("/metrics").text) and time.monotonic() < deadline:
        time.sleep(1)
    assert 'popularity_predictions_total{label=' in text
    assert "popularity_score_bucket" in text
    assert 'popularity_rejected_inputs_total{reason="not_an_image"}' in text
    assert "popularity_drifted_share 0.4" in text and "popularity_drift 1.0" in text
    assert "bentoml_service_adaptive_batch_size" in text


def test_schemathesis_finds_no_server_error(service, tmp_path):
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{service.url}/docs.json", "--checks",
           "not_a_server_error", "--max-examples", "5", "--workers", "1", "--phases", "examples,fuzzing",
           "--header", f"X-API-Key: {KEY}", "--request-timeout", "30", "--generation-deterministic"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_reload_under_load_drops_no_request(client, jpeg):
    def one(_):
        return client.post("/predict", files={"image": ("a.jpg", jpeg)}).status_code

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(60)]
        reloaded = client.post("/reload")
        statuses = [f.result() for f in futures]
    assert reloaded.status_code == 200, reloaded.text
    assert reloaded.json()["alias"] == "champion"
    assert statuses == [200] * 60
    assert client.get("/livez").status_code == 200


def test_service_stays_up(client, photographs, jpeg):
    """Every kind of bad upload, an oversized body and a batch of bad images, then a good photo: the service
    refuses each with a 4xx, stays ready and still scores."""
    bad = _bad_inputs(photographs["chelsea"])
    for case, (data, _) in bad.items():
        r = client.post("/predict", files={"image": (f"{case}.jpg", data, "image/jpeg")})
        assert 400 <= r.status_code < 500, (case, r.text)
    big = b"\xff\xd8\xff" + np.random.default_rng(1).bytes(21 * 1024 * 1024)
    assert client.post("/predict", files={"image": ("big.jpg", big)}).status_code == 413
    batch = client.post("/predict_batch", files=[("images", (f"{case}.jpg", data)) for case, (data, _) in bad.items()])
    assert batch.status_code == 200 and all("error" in r for r in batch.json()["results"]), batch.text
    assert client.get("/readyz").status_code == 200
    assert client.post("/predict", files={"image": ("a.jpg", jpeg)}).status_code == 200


def test_in_process_predict_scores_a_photo_as_the_service_does(client, champion_home, tmp_path):
    """`popularity predict IMAGE` without --url loads the champion in process and decodes the photo as the
    service does (shrunk to the model's side): the same real photograph gets the same score both ways.
    The photo is larger than the model's side, so a decode that skipped the shrink would score otherwise."""
    from sklearn.datasets import load_sample_images

    china = load_sample_images().images[0]  # 427 x 640: above images.model_side (512)
    path = tmp_path / "china.jpg"
    path.write_bytes(encode(china, quality=95))
    served = client.post("/predict", files={"image": (path.name, path.read_bytes())})
    assert served.status_code == 200, served.text
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "BENTOML_HOME", "PREFECT_HOME")}
    env["POPULARITY_HOME"] = str(champion_home)
    done = subprocess.run([sys.executable, "-m", "cli", "predict", str(path), "--json"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (local,) = json.loads(done.stdout.strip().splitlines()[-1])["predictions"]
    assert local["score"] == pytest.approx(served.json()["score"], abs=1e-6)
    assert local["label"] == served.json()["label"]



def _sixteen_bit_png(pixels: int) -> bytes:
    """A smooth 16-bit greyscale PNG of about ``pixels`` pixels: a small file, many decoded bytes."""
    side = int(pixels**0.5)
    ramp = np.add.outer(np.arange(side, dtype=np.uint32), np.arange(side, dtype=np.uint32))
    return _png(Image.fromarray((ramp * 65535 // ramp.max()).astype(np.uint16)))


def test_the_serving_pixel_cap_is_below_the_collectors(client):
    """20 MP would be collected (cap 50 MP) but is not served (cap 16 MP): images are shrunk anyway."""
    r = client.post("/predict", files={"image": ("big.png", _sixteen_bit_png(20_000_000))})
    assert r.status_code == 400 and r.json()["error"] == "too_many_pixels" and "16000000" in r.json()["message"]
    assert client.post("/predict", files={"image": ("ok.png", _sixteen_bit_png(12_000_000))}).status_code == 200


def test_a_cameras_24_mp_jpeg_is_scored_and_a_png_as_large_is_not(client):
    """A JPEG decodes at a reduced DCT scale (750×500 for 6000×4000), so it has its own 50 MP cap."""
    ramp = np.add.outer(np.arange(4000, dtype=np.uint16), np.arange(6000, dtype=np.uint16)) // 40
    camera = np.stack([ramp % 256, (ramp * 3) % 256, ramp[::-1] % 256], axis=-1).astype(np.uint8)
    r = client.post("/predict", files={"image": ("camera.jpg", encode(camera, quality=80))})
    assert r.status_code == 200 and 0 <= r.json()["score"] <= 1, r.text
    big = client.post("/predict", files={"image": ("big.png", _sixteen_bit_png(24_000_000))})
    assert big.status_code == 400 and big.json()["error"] == "too_many_pixels"


def _predictions(client) -> float:
    lines = client.get("/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("popularity_predictions_total{"))


def test_a_client_that_leaves_leaves_no_work_behind(client, service):
    """The same batch, once waited for and once abandoned after half a second: the abandoned one is
    cancelled before it is scored, however long one waits after."""
    files = [("images", (f"{i}.png", _sixteen_bit_png(12_000_000))) for i in range(12)]
    before, scored = _predictions(client), 0
    for _ in range(5):  # a loaded machine may shed the batch (503 "overloaded", or some images: retry shortly)
        started = time.monotonic()
        answer = client.post("/predict_batch", files=files)
        took = time.monotonic() - started
        if answer.status_code == 503 and answer.json()["error"] == "overloaded":  # every image shed
            assert answer.headers["retry-after"], answer.headers
            errors = {"overloaded"}
            time.sleep(2)
            continue
        assert answer.status_code == 200, answer.text[:500]
        errors = {r["error"] for r in answer.json()["results"] if "error" in r}
        assert errors <= {"overloaded"}, answer.text[:2000]
        scored += sum("error" not in r for r in answer.json()["results"])
        if not errors:
            break
        time.sleep(2)
    assert not errors, "the scorer shed the batch five times"
    before += scored - 12  # the predictions of shed attempts' scored images
    assert _predictions(client) == before + 12
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{service.url}/predict_batch", files=files, headers=AUTH, timeout=min(0.5, took / 4))
    time.sleep(took * 1.5)
    assert _predictions(client) == before + 12
    assert client.get("/livez").status_code == 200


def test_a_second_service_on_the_same_home_leaves_the_first_ones_metrics_counting(client, champion_home, jpeg,
                                                                                    tmp_path):
    """A replica (or a Bento tried beside the service) started on the same home: BentoML empties its home's
    Prometheus folder at every start, which stopped the first service's counters on CI; each launch now
    counts in a folder of its own."""
    assert client.post("/predict", files={"image": ("a.jpg", jpeg)}).status_code == 200  # its counter file exists
    before = _predictions(client)
    env = {"POPULARITY_HOME": str(champion_home), "POPULARITY_API_KEY": API_KEY}
    with ServiceProcess(port=0, log_path=tmp_path / "second.log", env=env) as second:
        assert httpx.post(f"{second.url}/predict", files={"image": ("a.jpg", jpeg)}, headers=AUTH,
                          timeout=60).status_code == 200
    assert client.post("/predict", files={"image": ("a.jpg", jpeg)}).status_code == 200
    assert _predictions(client) == before + 1


@pytest.mark.parametrize("route", ["/predict", "/predict_batch", "/compare"])
def test_image_routes_answer_other_bodies_415_and_fetch_nothing(client, http_server, route):
    url = http_server.url("/img/1.jpg")
    bodies = [({"data": {"image": url, "images": url}}, None),
              ({"content": f"image={url}".encode()}, "application/x-www-form-urlencoded"),
              ({"content": url.encode()}, "text/plain"), ({"content": b"\xff\xfe\x00bad utf-8 \xc3\x28"}, "text/plain"),
              ({"content": json.dumps({"image": url}).encode()}, "application/json"),
              ({"content": np.random.default_rng(0).bytes(4096)}, "application/octet-stream")]
    for kwargs, kind in bodies:
        r = client.post(route, **kwargs, headers={"Content-Type": kind} if kind else {})
        assert r.status_code == 415 and r.json()["error"] == "unsupported_media_type", (kind, r.text)
    assert http_server.hits["/img/1.jpg"] == 0
    assert client.get("/livez").status_code == 200


def test_under_load_a_sample_is_profiled_for_drift_with_its_rate(client, champion_home, jpeg):
    """Past ``profile_in_flight`` concurrent requests each is profiled with probability 8 / in flight
    and its record says so; every request is still scored."""
    log = RequestLog(champion_home / "monitoring" / "requests", 10**8, 5)
    before = len(log.read())
    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(lambda _: client.post("/predict", files={"image": ("a.jpg", jpeg)}).status_code,
                                 range(96)))
    assert statuses == [200] * 96
    time.sleep(3)  # the request writer flushes every second
    logged = log.read().iloc[before:]
    profiled = logged[logged["profile_rate"].notna()]
    assert len(logged) == 96  # every answer is on record, with its score and version
    assert 0 < len(profiled) < 96 and profiled["profile_rate"].between(0, 1, inclusive="right").all()
    assert (profiled["profile_rate"] < 1).any() and profiled["brightness"].notna().all()


@pytest.mark.parametrize("case", ["unknown_file_field", "non_utf8_field_value", "non_utf8_field_name",
                                  "filename_over_255_bytes", "non_utf8_filename"])
def test_odd_multipart_parts_get_a_4xx_or_a_score_never_a_5xx(client, jpeg, case):
    boundary = "popularityboundary"

    def part(disposition: bytes, body: bytes) -> bytes:
        return b"--" + boundary.encode() + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n" + body + b"\r\n"

    image = part(b'name="image"; filename="a.jpg"', jpeg)
    body = {
        "unknown_file_field": part(b'name="other"; filename="a.jpg"', jpeg),
        "non_utf8_field_value": image + part(b'name="followers"', b"\xff\xfe\xc3\x28"),
        "non_utf8_field_name": image + part(b'name="\xff\xfe"', b"1"),
        "filename_over_255_bytes": part(b'name="image"; filename="' + b"a" * 300 + b'.jpg"', jpeg),
        "non_utf8_filename": part(b'name="image"; filename="\xff\xfe.jpg"', jpeg),
    }[case] + b"--" + boundary.encode() + b"--\r\n"
    r = client.post("/predict", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code < 500, r.text
    if case.startswith(("unknown", "non_utf8_field")):
        assert r.status_code == 400, r.text
    assert client.get("/livez").status_code == 200

"""The real BentoML service with no champion and its request store lost: it starts and answers, and its
guards hold where BentoML would answer 500 or hold a slot (issue 27). No champion is needed for any of it."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ops.processes import ServiceProcess
from tests.helpers import photo

pytestmark = pytest.mark.integration
SLOTS, DEADLINE_S = 4, 3.0


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A service on an empty home (no champion), its request store a PostgreSQL that is not there."""
    root = tmp_path_factory.mktemp("bare")
    env = {"POPULARITY_HOME": str(root / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'home' / 'mlflow.db'}",
           "POPULARITY_STORE__URL": "postgresql+psycopg2://postgres@127.0.0.1:9/nowhere",
           "POPULARITY_SERVING__MAX_CONCURRENCY": str(SLOTS), "POPULARITY_SERVING__BODY_DEADLINE_S": str(DEADLINE_S),
           "POPULARITY_API_KEY": ""}  # empty: no key
    service = ServiceProcess(port=0, log_path=root / "service.log", env=env)
    service.env.pop("PREFECT_API_URL", None)
    super(ServiceProcess, service).start()
    try:
        service.wait_healthy(f"{service.url}/livez", 240)  # not /readyz: there is no champion
        yield service
    finally:
        service.stop()


def test_a_lost_store_neither_stops_the_start_nor_turns_feedback_into_a_500(bare):
    deadline = time.monotonic() + 120
    while "no champion" not in (ready := httpx.get(f"{bare.url}/readyz")).json()["message"]:
        assert time.monotonic() < deadline, ready.text  # the scorer starts, then says why it is not ready
        time.sleep(1)
    assert ready.status_code == 503
    r = httpx.post(f"{bare.url}/feedback", json={"rows": [{"post_id": "p1", "likes": 3}]}, timeout=60)
    assert r.status_code == 503 and r.json()["error"] == "store_unavailable", r.text
    assert "127.0.0.1" in r.json()["message"] or "connect" in r.json()["message"].lower()
    assert r.headers["retry-after"]
    text = httpx.post(f"{bare.url}/feedback", content=json.dumps({"rows": [{"post_id": "p1", "likes": 3}]}),
                      headers={"Content-Type": "text/plain"})
    assert text.status_code == 415


def test_fields_bentoml_cannot_read_are_a_400_on_the_real_service(bare):
    image = ("a.jpg", photo(0), "image/jpeg")
    cases = {
        "5,000-digit followers": ({"image": image}, {"followers": "9" * 5000}),
        "binary post id part": ({"image": image, "post_id": ("p", b"\xff\xfe\x00")}, {}),
        "daily views nested 5,000 deep": ({"image": image}, {"daily_views": "[" * 5000 + "]" * 5000}),
        "250-byte file name": ({"image": ("a" * 246 + ".jpg", photo(0), "image/jpeg")}, {}),
    }
    with httpx.Client(base_url=bare.url, timeout=60) as client:
        for case, (files, data) in cases.items():
            r = client.post("/predict", files=files, data=data)
            assert r.status_code == 400, (case, r.text)
        digits = client.post("/compare", files=[("images", image), ("images", image)],
                             data={"post_ids": "[" + "1" * 5000 + ', "b"]'})
        assert digits.status_code == 400, digits.text
        good = client.post("/predict", files={"image": ("a" * 240 + ".jpg", photo(0), "image/jpeg")})
        assert good.status_code == 503 and good.json()["error"] == "no_champion", good.text  # read, then no model
        assert client.get("/livez").status_code == 200


def _logged_after(service, offset: int, needle: str, timeout_s: float = 20) -> str:
    """What the service logged past ``offset`` once a line with ``needle`` is there (and a moment more)."""
    deadline = time.monotonic() + timeout_s
    while needle not in (text := service.log_path.read_bytes()[offset:].decode(errors="replace")):
        assert time.monotonic() < deadline, f"nothing with {needle!r} logged: {text[-2000:]}"
        time.sleep(0.2)
    time.sleep(1.0)  # the rest of that record (a traceback, if any)
    return service.log_path.read_bytes()[offset:].decode(errors="replace")


def test_a_request_the_client_got_wrong_is_logged_in_one_line_without_a_traceback(bare):
    """A field BentoML's validation refuses (a negative follower count) is answered 400 and logged as the
    client's error: one INFO line with the field and what was wrong, not the ERROR and traceback BentoML
    logs for every exception it answers."""
    offset = bare.log_path.stat().st_size
    r = httpx.post(f"{bare.url}/predict", files={"image": ("a.jpg", photo(0), "image/jpeg")},
                   data={"followers": "-3"}, timeout=60)
    assert r.status_code == 400, r.text
    logged = _logged_after(bare, offset, "Exception on /predict")
    (line,) = [line for line in logged.splitlines() if "Exception on /predict" in line]
    assert "followers" in line and "greater than or equal to 0" in line and "ERROR" not in line, line
    assert "Traceback" not in logged and "ValidationError" not in logged, logged


def _rest(s: socket.socket) -> bytes:
    s.settimeout(5)
    chunks = []
    try:
        while chunk := s.recv(4096):
            chunks.append(chunk)
    except OSError:
        pass
    return b"".join(chunks)


def _trickle(port: int) -> bytes:
    """POST /predict declaring 1,000 bytes and sending one every 0.25 s; returns what the server answered."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 1000\r\n\r\n")
        s.settimeout(0.25)
        for _ in range(int(4 * DEADLINE_S * 4)):
            try:
                s.sendall(b"x")
                if answer := s.recv(4096):
                    return answer + _rest(s)
            except TimeoutError:
                continue
            except OSError:
                break
    return b""


def test_clients_trickling_their_bodies_get_408_and_hold_no_admission_slot(bare):
    port = int(bare.url.rsplit(":", 1)[1])
    with ThreadPoolExecutor(SLOTS + 2) as pool:
        answers = [pool.submit(_trickle, port) for _ in range(SLOTS + 2)]
        time.sleep(1.0)  # every slot's worth of trickling clients is sending
        started = time.monotonic()
        admitted = httpx.get(f"{bare.url}/docs.json", timeout=30)
        assert admitted.status_code == 200, admitted.text  # not 429: trickling bodies are not admitted yet
        assert time.monotonic() - started < DEADLINE_S
        answers = [a.result(timeout=60) for a in answers]
    assert all(a.startswith(b"HTTP/1.1 408") and b"request_timeout" in a for a in answers), answers


def test_the_page_and_the_docs_load_nothing_from_elsewhere_and_cannot_be_framed(bare):
    with httpx.Client(base_url=bare.url, timeout=30) as client:
        for path in ("/", "/docs"):
            r = client.get(path)
            assert r.status_code == 200 and r.headers["x-frame-options"] == "DENY", path
            assert r.headers["x-content-type-options"] == "nosniff"
            assert "script-src 'self'" in r.headers["content-security-policy"]
            scripts = re.findall(r'<script[^>]*src="([^"]+)"', r.text)
            assert scripts and all(s.startswith("/") and not s.startswith("//") for s in scripts), (path, scripts)
            for script in scripts:
                assert client.get(script).status_code == 200, script
        assert "SwaggerUIBundle" in client.get("/swagger-ui/swagger-ui-bundle.js").text


def test_without_a_champion_every_image_route_answers_503_to_retry_not_a_bad_image(bare):
    image = ("a.jpg", photo(0), "image/jpeg")
    with httpx.Client(base_url=bare.url, timeout=60) as client:
        for path, files in (("/predict", {"image": image}), ("/compare", [("images", image), ("images", image)]),
                            ("/predict_batch", [("images", image)] * 3)):  # the whole batch, not 200 with three errors
            r = client.post(path, files=files)
            assert r.status_code == 503 and r.json()["error"] == "no_champion", (path, r.text)
            assert r.headers["retry-after"]


def test_the_process_managers_control_channel_is_no_tcp_port_but_a_private_unix_socket(bare):
    """circus took commands on a loopback TCP port, unauthenticated: any local user could run a command as
    the service's user (``circusctl add --start``). Now the only TCP port the service listens on is its own."""
    import psutil

    port = int(bare.url.rsplit(":", 1)[1])
    main = psutil.Process(bare.pid)
    tree = [main, *main.children(recursive=True)]
    listening = {c.laddr.port for p in tree for c in p.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
    assert listening == {port}, listening
    sockets = [c.laddr for c in main.net_connections(kind="unix") if c.laddr and "popularity-circus-" in c.laddr]
    assert sockets, main.net_connections(kind="unix")
    folder = os.path.dirname(sockets[0])
    assert os.stat(folder).st_mode & 0o077 == 0  # only the service's user may enter

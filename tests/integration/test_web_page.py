"""The web page in headless Chromium (Debian's chromium + chromedriver, driven by Selenium): a real
upload of three photographs, the ranking shown, and a screenshot kept beside the test's files. The
``browser`` fixture is the integration tier's (tests/integration/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import encode
from tests.helpers import API_KEY

pytestmark = pytest.mark.integration


def test_upload_three_photos_and_see_the_ranking(service, browser, photographs, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    paths = []
    for name, array in photographs.items():
        paths.append(tmp_path / f"{name}.jpg")
        paths[-1].write_bytes(encode(array))
    browser.get(service.url + "/")
    assert "Which photo" in browser.title
    browser.find_element(By.ID, "key").send_keys(API_KEY)
    browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))
    browser.find_element(By.ID, "go").click()
    WebDriverWait(browser, 60).until(ec.text_to_be_present_in_element((By.ID, "status"), "Best:"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#results tbody tr")
    assert len(rows) == 3
    scores = [float(r.find_elements(By.TAG_NAME, "td")[3].text) for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert "popularity-binary" in browser.find_element(By.ID, "model").text
    shot = tmp_path / "web_page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_the_page_says_it_is_not_ready_while_there_is_no_champion(browser, tmp_path):
    """A service on a home without a champion: the page shows /readyz's reason and will not send photos."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from ops.processes import ManagedProcess, ServiceProcess

    service = ServiceProcess(port=0, log_path=tmp_path / "service.log", env={"POPULARITY_HOME": str(tmp_path / "home")})
    ManagedProcess.start(service)  # not ServiceProcess.start: that waits for a readiness that never comes
    try:
        service.wait_healthy(f"{service.url}/livez", 180)
        browser.get(service.url + "/")
        WebDriverWait(browser, 60).until(ec.text_to_be_present_in_element((By.ID, "notready"), "no champion yet"))
        assert browser.find_element(By.ID, "notready").is_displayed()
        assert not browser.find_element(By.ID, "go").is_enabled()
    finally:
        service.stop()

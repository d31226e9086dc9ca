"""A person reviewing a version in MLflow's own UI sees its model card: headless Chromium opens the model
version page of the session's champion on an MLflow server over its home's store and finds the card's
headings and numbers rendered there (issue 26)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from tests.integration import stack

pytestmark = pytest.mark.integration
NAME = "popularity-binary"


@pytest.fixture
def mlflow_ui(champion_home, tmp_path):
    """``mlflow server`` on the champion home's store (read only here), as ``popularity ui`` shows it."""
    server, url = stack.mlflow_server(f"sqlite:///{champion_home / 'mlflow.db'}", tmp_path / "artifacts", tmp_path)
    yield url
    server.stop()


def test_the_version_page_shows_the_model_card(champion_home, mlflow_ui, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    version = MlflowClient(f"sqlite:///{champion_home / 'mlflow.db'}").get_model_version_by_alias(NAME, "champion")
    card = version.description
    assert card.startswith(f"# {NAME} v{version.version}")  # the gate wrote the card: what the page should show
    browser.get(f"{mlflow_ui}/#/models/{NAME}/versions/{version.version}")
    body = (By.TAG_NAME, "body")
    try:
        WebDriverWait(browser, 90).until(ec.text_to_be_present_in_element(body, "Promoted to champion"))
    finally:
        browser.save_screenshot(str(tmp_path / "version_page.png"))
    # rendered as markdown: the headings are headings, the tables tables, not the raw text
    headings = {h.text.strip() for h in browser.find_elements(By.CSS_SELECTOR, "h1, h2, h3")}
    assert {"Data", "Metrics", "Gate", "Across versions"} <= headings, headings
    text = browser.find_element(*body).text
    assert f"{NAME} v{version.version}" in text and "## Gate" not in text
    cells = {td.text.strip() for td in browser.find_elements(By.CSS_SELECTOR, "td")}
    assert {"no_nan", "floor", "latency", "jpeg_stability"} <= cells, sorted(cells)[:40]
    assert "versions/roc_auc.png" in text  # where the chart across versions is

"""`/docs` renders in Chromium with every non-local request blocked (the vendored Swagger UI, no
CDN), under the CSP the docs page is meant to be served with (`DOCS_CSP`)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from service.api.routes.docs import DOCS_CSP
from tests.dashboard.conftest import screenshot
from tests.fixtures.servers import run_api_server

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with run_api_server(tmp_path_factory.mktemp("docs") / "data") as server:
        yield server


def offline_page(browser, api):
    """A page that reaches nothing but the API, with DOCS_CSP on the docs pages; returns it with
    the list of outside requests it tried and the console's CSP complaints."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    outside, refused, errors = [], [], []

    def handle(route):
        url = route.request.url
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost") and not url.startswith(("data:", "blob:")):
            outside.append(url)
            return route.abort()
        if urlsplit(url).path == "/docs":
            response = route.fetch()
            return route.fulfill(response=response, headers={**response.headers, "content-security-policy": DOCS_CSP})
        return route.continue_()

    context.route("**/*", handle)
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, outside, refused, errors


def test_swagger_ui_renders_offline(browser, api):
    page, outside, refused, errors = offline_page(browser, api)
    page.goto(api.url + "/docs")
    page.locator(".swagger-ui .info .title", has_text="dcl-service").wait_for(timeout=30_000)
    page.locator(".opblock-summary-path[data-path='/v1/jobs']").first.wait_for()
    assert page.locator(".opblock").count() > 10
    page.locator(".opblock-summary-path[data-path='/healthz']").first.click()  # an operation opens
    page.locator("button.try-out__btn").first.wait_for()
    screenshot(page, "docs")
    assert (outside, refused, errors) == ([], [], [])
    page.context.close()


def test_redoc_sends_you_to_the_docs(api):
    with api.client() as c:
        r = c.get("/redoc")
    assert r.status_code == 308 and r.headers["location"] == "/docs"

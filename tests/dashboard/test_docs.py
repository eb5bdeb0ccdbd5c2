"""`/docs` renders in Chromium with every non-local request blocked (the vendored Swagger UI, no
CDN), under the CSP the server sends with it (the dashboard's, `service.api.headers.CSP`), and
cannot be framed."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from service.api.headers import CSP
from tests.dashboard.conftest import screenshot
from tests.fixtures.servers import run_api_server

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with run_api_server(tmp_path_factory.mktemp("docs") / "data") as server:
        yield server


def offline_page(browser, api):
    """A page that reaches nothing but the API (served with its own headers); returns it with the
    list of outside requests it tried and the console's CSP complaints."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    outside, refused, errors = [], [], []

    def handle(route):
        url = route.request.url
        if urlsplit(url).hostname not in ("127.0.0.1", "localhost") and not url.startswith(("data:", "blob:")):
            outside.append(url)
            return route.abort()
        return route.continue_()

    context.route("**/*", handle)
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, outside, refused, errors


def test_swagger_ui_renders_offline(browser, api):
    page, outside, refused, errors = offline_page(browser, api)
    answer = page.goto(api.url + "/docs")
    assert answer.headers["content-security-policy"] == CSP  # the page runs under the real header
    assert answer.headers["x-frame-options"] == "DENY"
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


def test_docs_cannot_be_framed(browser, api):
    page, _, _, _ = offline_page(browser, api)
    page.set_content(f'<iframe id="f" src="{api.url}/docs"></iframe>')
    frame = page.locator("#f").element_handle().content_frame()
    frame.wait_for_load_state("load")  # a refused frame loads Chromium's error page
    assert frame.locator("#swagger-ui").count() == 0  # frame-ancestors 'none' / X-Frame-Options: DENY
    page.context.close()

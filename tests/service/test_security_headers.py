"""Every answer carries the dashboard's CSP, no framing and no MIME sniffing (issue 21, finding
8): `/docs`, JSON answers (errors too), the dashboard's files, event streams."""

from __future__ import annotations

import pytest

from service.api.headers import CSP

WANTED = {"content-security-policy": CSP, "x-frame-options": "DENY", "x-content-type-options": "nosniff"}


def secure(response) -> dict:
    return {name: response.headers.get(name) for name in WANTED}


@pytest.mark.parametrize("path", ["/docs", "/openapi.json", "/healthz", "/v1/jobs", "/v1/jobs/job_0123abcd", "/",
                                  "/ui/app.js", "/v1/nothing-here"])
def test_every_answer_carries_the_security_headers(alice, path):
    r = alice.get(path)
    assert r.status_code < 500, r.text
    assert secure(r) == WANTED, path
    assert "frame-ancestors 'none'" in CSP and "script-src 'self';" in CSP


def test_an_unauthenticated_refusal_carries_them_too(api):
    with api.client() as anonymous:
        r = anonymous.get("/v1/jobs")
    assert r.status_code == 401 and secure(r) == WANTED

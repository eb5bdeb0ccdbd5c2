"""The dashboard's files: served at / by the API with a strict CSP, and the vendored uPlot is
byte for byte the npm package's (sha256 pinned here)."""

from __future__ import annotations

import hashlib

from service.api.routes.dashboard import STATIC_DIR

UPLOT = {  # npm pack uplot@1.6.32 (service/static/vendor/uplot/SOURCE.md)
    "uPlot.iife.min.js": "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f",
    "uPlot.min.css": "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04",
    "LICENSE": "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd",
}


SWAGGER_UI = {  # npm pack swagger-ui-dist@5.35.0 (service/static/vendor/swagger-ui/SOURCE.md)
    "swagger-ui-bundle.js": "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2",
    "swagger-ui-bundle.js.LICENSE.txt": "37eb6e7e59aed57b2c1acf076574b818ea07b74265717e0bd67b59e0baf9abbb",
    "swagger-ui.css": "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
    "LICENSE": "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
    "NOTICE": "0d20d1adef18aee3f40dd258172155521ce702ac445cb5f7b7d60ed32dad2fb2",
}


def test_vendored_uplot_matches_its_pinned_sha256():
    folder = STATIC_DIR / "vendor" / "uplot"
    for name, digest in UPLOT.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert "MIT License" in (folder / "LICENSE").read_text()


def test_vendored_swagger_ui_matches_its_pinned_sha256():
    folder = STATIC_DIR / "vendor" / "swagger-ui"
    assert {p.name for p in folder.iterdir()} == {*SWAGGER_UI, "SOURCE.md"}
    for name, digest in SWAGGER_UI.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    assert "Apache License" in (folder / "LICENSE").read_text()


def test_docs_page_loads_only_vendored_files():
    html = (STATIC_DIR / "docs" / "swagger.html").read_text()
    assert "<script>" not in html and "http" not in html  # no inline script, no outside URL
    for src in ("/ui/vendor/swagger-ui/swagger-ui-bundle.js", "/ui/vendor/swagger-ui/swagger-ui.css", "/ui/docs/swagger-init.js"):
        assert src in html and (STATIC_DIR / src.removeprefix("/ui/")).is_file()


def test_every_script_the_page_loads_is_in_the_package():
    html = (STATIC_DIR / "index.html").read_text()
    assert '/ui/vendor/uplot/uPlot.iife.min.js' in html and '/ui/js/app.js' in html
    for module in (STATIC_DIR / "js").rglob("*.js"):
        for line in module.read_text().splitlines():
            if line.startswith("import ") and " from " in line:
                target = line.split(" from ")[1].strip(' ";')
                assert (module.parent / target).resolve().is_file(), f"{module}: {target}"


def test_api_serves_the_dashboard_with_a_strict_csp(api):
    with api.client() as c:  # no key: the page itself holds no data
        r = c.get("/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert "unsafe-inline" not in r.headers["content-security-policy"]
        js = c.get("/ui/js/app.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert c.get("/ui/vendor/uplot/uPlot.iife.min.js").content == (STATIC_DIR / "vendor/uplot/uPlot.iife.min.js").read_bytes()
        assert c.get("/ui/../settings.py").status_code == 404
        assert c.get("/v1/jobs").status_code == 401  # the data still needs a key

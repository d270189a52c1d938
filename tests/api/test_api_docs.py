"""The APIs' pages and answers a newcomer meets first: /docs, seed errors, summary ids."""

from __future__ import annotations

import re

import pytest

from helpers import seed_log

ASSET = re.compile(r"(?:src|href)=([^ >]+)")


@pytest.mark.parametrize("app", ["producer", "consumer"])
def test_docs_is_swagger_ui_from_package_files_with_bearer_auth(
        app: str, request: pytest.FixtureRequest) -> None:
    client = request.getfixturevalue(app)
    r = client.get("/docs")
    assert r.status_code == 200 and b'id=swagger-ui' in r.data
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    refs = ASSET.findall(r.data.decode())
    assert "/docs/static/swagger-ui-bundle.js" in refs and "/docs/init.js" in refs
    for ref in refs:  # every asset is served here: the page works offline
        assert ref.startswith("/"), ref
        asset = client.get(ref)
        assert asset.status_code == 200 and asset.data, ref
    assert len(client.get("/docs/static/swagger-ui-bundle.js").data) > 100_000
    assert client.get("/docs/static/oauth2-redirect.html").status_code == 404  # not listed
    assert client.get("/docs/static/..%2f__init__.py").status_code == 404
    spec = client.get("/openapi.json").json
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http",
                                                              "scheme": "bearer"}
    assert spec["security"] == [{"bearer": []}]
    assert any("requestBody" in op for ops in spec["paths"].values() for op in ops.values())


def test_log_activity_errors_keep_the_seeds_error_and_add_a_message(producer,
                                                                    ingest_headers) -> None:
    r = producer.post("/log_activity", data=b"{not json", headers=ingest_headers,
                      content_type="application/json")
    assert r.status_code == 400 and r.json["error"] == "Invalid JSON"
    assert r.json["message"].startswith("malformed JSON")
    doc = seed_log()
    del doc["heart_rate"], doc["location"]
    r = producer.post("/log_activity", json=doc, headers=ingest_headers)
    assert r.status_code == 400
    assert r.json == {"error": "Missing fields: heart_rate, location",
                      "message": "missing fields: heart_rate, location", "field": "heart_rate"}


def test_summary_returns_user_id_as_sent(producer, consumer, ingest_headers,
                                         reader_headers) -> None:
    for uid in (7, "u-7", "007"):
        producer.post("/v1/activities", json=seed_log(user_id=uid), headers=ingest_headers)
        path = f"/v1/users/{uid}/summary"
        doc = consumer.get(path, headers=reader_headers).json
        assert doc["user_id"] == uid and doc["total"]["count"] == 1, doc

"""GATEWAY_LOG_FORMAT=json: one JSON object per log line, naming the request it was logged for."""

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway_project.logs import JsonFormatter

ROOT = Path(__file__).resolve().parent.parent


def test_the_setting_makes_every_line_json():
    script = (
        "import django, logging; django.setup(); "
        "logging.getLogger('proxy').warning('answered %s', 'fast', extra={'provider': 'openai', 'output_tokens': 7})"
    )
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "gateway_project.settings", "GATEWAY_LOG_FORMAT": "json"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    [logged] = [line for line in lines if line["logger"] == "proxy"]
    assert logged["time"].endswith("Z")
    assert logged | {"time": None} == {
        "time": None,
        "level": "WARNING",
        "logger": "proxy",
        "msg": "answered fast",
        "provider": "openai",
        "output_tokens": 7,
    }


def test_an_unknown_format_is_refused_by_name():
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "gateway_project.settings", "GATEWAY_LOG_FORMAT": "yaml"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "GATEWAY_LOG_FORMAT must be text or json, got 'yaml'" in result.stderr


@pytest.mark.django_db(transaction=True)
def test_a_line_logged_while_serving_a_request_carries_its_ids(caller, published):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        response = httpx.post(
            caller.openai_base_url + "/chat/completions",
            json={"model": "status-503", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": f"Bearer {caller.key}"},
        )
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 503
    record = published.wait_for(response.headers["x-request-id"])["attributes"]
    [line] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert line["msg"] == "Service Unavailable: /v1/chat/completions"
    assert line["level"] == "ERROR" and line["status_code"] == 503
    assert (line["request_id"], line["trace_id"], line["span_id"]) == (
        record["id"],
        record["trace_id"],
        record["span_id"],
    )

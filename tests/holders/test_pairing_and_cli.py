"""The holder's half of pairing, against a fake Tiers, and the command line that serves the
holders for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from examples.holders.__main__ import main, parser
from examples.holders.pairing import Pairing, PairingError, TiersClient
from tests.holders.conftest import CLIENT_ID, CLIENT_SECRET, PAIRING_CODE, FakeTiers

ROOT = Path(__file__).resolve().parents[2]


def test_pairing_posts_the_code_and_subject_with_a_client_credentials_token(
    tiers: FakeTiers,
) -> None:
    client = TiersClient(tiers.url, CLIENT_ID, CLIENT_SECRET)
    try:
        result = client.pair(Pairing(PAIRING_CODE, "09876543210987", "ds-electricity-daily"))
    finally:
        client.close()
    assert result == {"status": "paired", "dataset": "ds-electricity-daily"}
    assert tiers.pairings == [
        {"code": PAIRING_CODE, "subject": "09876543210987", "dataset": "ds-electricity-daily"}
    ]


def test_pairing_refusals_are_said_plainly(tiers: FakeTiers) -> None:
    wrong_secret = TiersClient(tiers.url, CLIENT_ID, "nope")
    with pytest.raises(PairingError, match="invalid_client"):
        wrong_secret.pair(Pairing(PAIRING_CODE, "1", "d"))
    wrong_secret.close()
    client = TiersClient(tiers.url, CLIENT_ID, CLIENT_SECRET)
    with pytest.raises(PairingError, match="Unknown or expired pairing code"):
        client.pair(Pairing("AAAA-BBBB", "1", "d"))
    client.close()
    elsewhere = TiersClient(tiers.url + "/", CLIENT_ID, CLIENT_SECRET)  # same issuer, trimmed
    assert elsewhere.access_token()
    elsewhere.close()
    nobody = TiersClient("http://127.0.0.1:9", CLIENT_ID, CLIENT_SECRET)
    with pytest.raises(PairingError, match="does not answer"):
        nobody.pair(Pairing(PAIRING_CODE, "1", "d"))
    nobody.close()
    assert tiers.pairings == []


def test_the_pair_command_exits_0_on_success_and_1_on_refusal(
    tiers: FakeTiers, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["pair", "--tiers-url", tiers.url, "--client-id", CLIENT_ID, "--client-secret"]
    assert main([*common, CLIENT_SECRET, PAIRING_CODE, "12345678901234", "ds-1"]) == 0
    assert '"status": "paired"' in capsys.readouterr().out
    assert main([*common, CLIENT_SECRET, "WRONG-CODE", "12345678901234", "ds-1"]) == 1
    assert "pairing failed" in capsys.readouterr().err


def test_the_pair_command_reads_its_client_from_a_credentials_file(
    tiers: FakeTiers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HOLDER_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("HOLDER_CLIENT_SECRET", "stale")  # the file wins over the environment
    path = tmp_path / "demo-holder-brevanne-reseaux-api.json"
    path.write_text(json.dumps({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}))
    common = ["pair", "--tiers-url", tiers.url, "--credentials"]
    assert main([*common, str(path), PAIRING_CODE, "12345678901234", "ds-1"]) == 0
    assert '"status": "paired"' in capsys.readouterr().out
    assert tiers.pairings == [
        {"code": PAIRING_CODE, "subject": "12345678901234", "dataset": "ds-1"}
    ]

    for content, said in (
        (None, "cannot read"),
        ("{not json", "is not JSON"),
        ('["a", "b"]', "is not a JSON object"),
        ('{"client_id": "holder-electricity"}', "has no client_id and client_secret"),
    ):
        path.unlink(missing_ok=True)
        if content is not None:
            path.write_text(content)
        assert main([*common, str(path), PAIRING_CODE, "12345678901234", "ds-1"]) == 2
        assert said in capsys.readouterr().err
    assert len(tiers.pairings) == 1


def test_the_command_line_knows_every_holder_and_its_port() -> None:
    args = parser().parse_args(["gas", "--port", "6000", "--resource-uri", "https://gas.example"])
    assert (args.command, args.port, args.resource_uri) == ("gas", 6000, "https://gas.example")
    assert parser().parse_args(["all"]).base_port == 5101
    assert main(["transit", "--fault", "sideways"]) == 2


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_python_m_examples_holders_serves_a_holder_for_real(tiers: FakeTiers) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.holders", "buildings", "--port", str(port),
         "--tiers-url", tiers.url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert health.json() == {"status": "ok"}
        described = requests.get(f"http://127.0.0.1:{port}/datasets", timeout=5).json()
        assert described["resource_uri"] == f"http://127.0.0.1:{port}"
        assert described["issuer"] == tiers.url
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)  # closes the pipe
    assert process.returncode == 0, output
    assert f"buildings    http://127.0.0.1:{port}/datasets" in output

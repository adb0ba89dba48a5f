"""ServerConfig: flags over FACERECON_* environment variables over defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from facerecon.server import ServerConfig


def test_defaults():
    config = ServerConfig.from_args([], environ={})
    assert config == ServerConfig()
    assert config.max_receive_message_bytes == 64 << 20 and config.metrics_port == 9464


def test_environment_then_flags():
    environ = {
        "FACERECON_MAX_INFLIGHT": "3",
        "FACERECON_WARMUP": "false",
        "FACERECON_METRICS_PORT": "",
        "FACERECON_WEIGHTS": "/models/a.pt",
        "FACERECON_BATCH_MAX_WAIT_MS": "0.5",
    }
    config = ServerConfig.from_args(["--max-inflight", "5", "--auth-tokens", "a, b,"], environ)
    assert config.max_inflight == 5  # the flag wins
    assert config.warmup is False and config.metrics_port is None
    assert config.weights == Path("/models/a.pt") and config.batch_max_wait_ms == 0.5
    assert config.tokens() == {"a", "b"}
    assert ServerConfig.from_args(["--no-warmup"], {}).warmup is False
    assert ServerConfig.from_args([], {}).mirror_average is True
    assert ServerConfig.from_args(["--no-mirror-average"], {}).mirror_average is False


def test_tokens_from_a_file(tmp_path):
    (tmp_path / "tokens").write_text("one\n  two  \n\n")
    config = ServerConfig.from_args(["--auth-tokens-file", str(tmp_path / "tokens")], {})
    assert config.tokens() == {"one", "two"}


@pytest.mark.parametrize(
    "argv",
    [
        ["--tls-cert", "c.pem"],
        ["--tls-client-ca", "ca.pem"],
        ["--max-inflight", "0"],
        ["--batch-max-wait-ms", "-1"],
    ],
)
def test_inconsistent_settings_are_refused(argv):
    with pytest.raises(ValueError):
        ServerConfig.from_args(argv, {})


def test_bad_values_are_refused():
    with pytest.raises(SystemExit):
        ServerConfig.from_args([], {"FACERECON_WARMUP": "maybe"})

"""Server settings: one dataclass, filled from command-line flags over FACERECON_* variables.

Every field `some_name` is the flag `--some-name` and the environment variable
`FACERECON_SOME_NAME` (12-factor: containers configure the server through the environment,
flags win for local runs).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

MiB = 1 << 20


def option(default: object, help: str) -> Any:
    """A config field with its --help text."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerConfig:
    address: str = option("[::]:50051", "gRPC listen address (port 0 picks one)")
    weights: Path | None = option(
        None, "checkpoint (default: $FACERECON_WEIGHTS or weights/facerecon.pt)"
    )
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    detector: str | None = option(
        "default",
        "face detector for photos sent without a face box: 'default' (the shipped YuNet, "
        "weights/yunet_n_dynamic.onnx), a YuNet or SCRFD .onnx file, or 'none' to take each "
        "photo whole as the face crop",
    )
    threads: int | None = option(None, "torch CPU threads (default: torch's choice)")
    # the variable is face_model.py's own: the server and the CLI find the same model
    face_model: Path | None = option(
        None,
        "ICT face model .npz, enables registration (default: "
        "~/.local/share/facerecon/ict_face_light.npz if present; `facerecon import-face-model`)",
    )
    # A 40-megapixel JPEG is ~10-25 MB; 64 MiB leaves room for PNGs of that size and landmarks.
    max_receive_message_bytes: int = option(64 * MiB, "largest request")
    # Full-detail meshes in four encodings (~2-10 MB each) plus 16 PNG views at 1024 px
    # (~1-3 MB each) fit in 128 MiB; clients asking for less get far smaller replies.
    max_send_message_bytes: int = option(128 * MiB, "largest response")
    max_inflight: int = option(32, "requests in progress at once; beyond it RESOURCE_EXHAUSTED")
    memory_budget_mb: int | None = option(
        None,
        "memory the requests in progress may take together, by each one's estimated cost; "
        "beyond it RESOURCE_EXHAUSTED (default: --memory-fraction of the container's memory "
        "limit, or of the machine's memory, less what the loaded model takes)",
    )
    memory_fraction: float = option(
        0.8, "share of the memory limit the process may reach when the budget is derived"
    )
    max_stream_inflight: int = option(8, "requests of one stream in progress at once")
    max_batch_size: int = option(8, "faces per forward pass")
    # Small on purpose: on a CPU a lone request should not wait for company.
    batch_max_wait_ms: float = option(2.0, "longest wait to fill a batch")
    workers: int = option(
        min(4, os.cpu_count() or 1), "threads for decoding, meshing, rendering and encoding"
    )
    metrics_port: int | None = option(
        9464, "Prometheus /metrics port (0 picks one; empty disables)"
    )
    metrics_address: str = option(
        "127.0.0.1", "Prometheus /metrics bind address (0.0.0.0 or [::] to be scraped from outside)"
    )
    # Kubelet's gRPC probes speak plaintext only; with TLS on, they need a port of their own.
    health_port: int | None = option(
        None, "plaintext port serving only grpc.health.v1, for probes (0 picks one; empty: none)"
    )
    tls_cert: Path | None = option(None, "PEM server certificate chain (enables TLS)")
    tls_key: Path | None = option(None, "PEM private key of --tls-cert")
    tls_client_ca: Path | None = option(
        None, "PEM CA bundle: require client certificates it signed (mutual TLS)"
    )
    auth_tokens: str | None = option(
        None, "comma-separated bearer tokens clients must send (prefer --auth-tokens-file)"
    )
    auth_tokens_file: Path | None = option(None, "file of bearer tokens, one per line")
    grace_period_s: float = option(
        20.0, "on SIGTERM, how long in-flight calls may finish; the process exits within it"
    )
    drain_notice_s: float = option(
        2.0,
        "on SIGTERM, health answers NOT_SERVING at least this long (within the grace period) "
        "before the port closes, so that polling probes see it",
    )
    warmup: bool = option(True, "run one forward pass before reporting SERVING")
    mirror_average: bool = option(
        True,
        "average each face's volume and landmarks with its mirror image's (better profile "
        "poses; twice the network's work)",
    )
    log_level: str = option("INFO", "DEBUG, INFO, WARNING or ERROR")

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key")
        for name in ("max_inflight", "max_stream_inflight", "max_batch_size", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.batch_max_wait_ms < 0 or self.grace_period_s < 0 or self.drain_notice_s < 0:
            raise ValueError(
                "batch_max_wait_ms, grace_period_s and drain_notice_s must not be negative"
            )
        if self.memory_budget_mb is not None and self.memory_budget_mb < 1:
            raise ValueError("memory_budget_mb must be at least 1")
        if not 0 < self.memory_fraction <= 1:
            raise ValueError("memory_fraction must be in (0, 1]")
        if self.auth_tokens is not None and not _split_tokens(self.auth_tokens.split(",")):
            raise ValueError(
                "--auth-tokens / $FACERECON_AUTH_TOKENS is set but holds no token: refusing to "
                "start without authentication (unset it to run without tokens)"
            )

    def auth_configured(self) -> bool:
        """Whether a token source is set: the server then never runs without a token check."""
        return self.auth_tokens is not None or self.auth_tokens_file is not None

    def tokens(self) -> frozenset[str]:
        """Bearer tokens accepted (empty: no token source is set, no token check).

        ValueError when a token source is set but holds no token (an empty or blank file, an
        empty Kubernetes Secret, "," or " "): a server configured with authentication never
        runs without it."""
        found = (self.auth_tokens or "").split(",")
        if self.auth_tokens_file is not None:
            try:
                found += self.auth_tokens_file.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(
                    f"cannot read --auth-tokens-file {self.auth_tokens_file}: {error}"
                ) from None
        tokens = _split_tokens(found)
        if self.auth_configured() and not tokens:
            raise ValueError(
                "the bearer-token source (--auth-tokens / --auth-tokens-file) holds no token: "
                "refusing to start without authentication"
            )
        return tokens

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> ServerConfig:
        """Flags over FACERECON_* variables over defaults."""
        environ = os.environ if environ is None else environ
        parser = argparse.ArgumentParser(
            prog="facerecon serve", description="Serve face reconstruction over gRPC."
        )
        hints = get_type_hints(cls)
        for f in fields(cls):
            env = f"FACERECON_{f.name.upper()}"
            parse = _parser_for(hints[f.name], keep_empty=f.name in KEEP_EMPTY)
            default = f.default
            if env in environ:
                try:
                    default = parse(environ[env])
                except (ValueError, argparse.ArgumentTypeError) as error:
                    parser.error(f"${env}: {error}")
            flag = "--" + f.name.replace("_", "-")
            if hints[f.name] is bool:
                parser.add_argument(
                    flag,
                    action=argparse.BooleanOptionalAction,
                    default=default,
                    help=f"{f.metadata['help']} (${env})",
                )
            else:
                parser.add_argument(
                    flag,
                    type=parse,
                    default=default,
                    metavar=f.name.upper(),
                    help=f"{f.metadata['help']} (${env}, default: %(default)s)",
                )
        return cls(**vars(parser.parse_args(argv)))


def _split_tokens(values: Sequence[str]) -> frozenset[str]:
    return frozenset(t.strip() for t in values if t.strip())


# Settings where an empty value is a value, not "unset": an empty token list set on purpose
# (an empty Secret, a template gone wrong) must stop the server, not switch authentication off.
KEEP_EMPTY = frozenset({"auth_tokens", "auth_tokens_file"})


def _parser_for(hint: object, keep_empty: bool = False):
    """A str -> value converter for a field's type; '' means None for optional fields (except
    those in KEEP_EMPTY)."""
    optional = hint in (Path | None, int | None, str | None)
    base = {Path | None: Path, int | None: int, str | None: str}.get(hint, hint)
    if base is bool:
        return _parse_bool

    def parse(text: str):
        if optional and text.strip() == "":
            if keep_empty and base is str:
                return text
            if keep_empty:  # an empty path: no file to read, which is refused
                raise argparse.ArgumentTypeError("an empty path is set")
            return None
        return base(text)

    return parse


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")

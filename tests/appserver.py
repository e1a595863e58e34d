"""Running `python app.py` as a separate process on loopback, for the tests and the benchmarks alike."""
from __future__ import annotations

import os
import socket
import subprocess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def app_env(port: int, **extra: str) -> dict[str, str]:
    """The app's environment: loopback only, no telemetry, no Hub traffic (plus `extra`). Who the app trusts as
    a proxy comes only from `extra`: an in-process test of app.main() sets FORWARDED_ALLOW_IPS in this process."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("FORWARDED_ALLOW_IPS", "SPACE_ID")}
    return {**inherited, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
            "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra}


def stop(proc: subprocess.Popen) -> None:
    """Terminate politely, kill if it does not go within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

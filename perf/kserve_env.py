"""The separate Python environment the KServe reference predictor runs in.

KServe 0.21 pins the CloudEvents SDK v1 (``cloudevents.http``); this project uses v2 (``cloudevents.core``), and
one environment cannot hold both. So the reference gets a virtual environment of its own, next to ``.venv``:
``.venv-kserve``, with KServe and what the model package and the naive step import (torch at the project's pin,
safetensors, the Valkey client). The project itself is not installed there: the server runs with the repository
on ``PYTHONPATH``, and ``perf.baselines.kserve_predictor`` imports nothing that needs SDK v2.

``ensure_kserve_env()`` builds it once (about a minute: pip, and torch's CPU build from the local index) and
reuses it while its requirements are unchanged; a stamp file records them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import venv
from pathlib import Path

log = logging.getLogger("perf.kserve_env")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATH = ROOT / ".venv-kserve"
KSERVE_VERSION = "0.21.0"
# The pins the model needs to behave as in the project's environment: the same torch, the same Valkey client.
REQUIREMENTS = (f"kserve=={KSERVE_VERSION}", "torch==2.13.0", "valkey>=6.1", "libvalkey>=4.2", "safetensors>=0.4",
                "numpy>=1.26")
STAMP = ".hiddenstate-requirements"


class KServeEnvError(RuntimeError):
    """The environment could not be built; the message carries pip's last lines."""


def python_of(path: Path) -> Path:
    return path / "bin" / "python"


def _stamp_text() -> str:
    return hashlib.sha256("\n".join(REQUIREMENTS).encode()).hexdigest()


def is_current(path: Path) -> bool:
    stamp = path / STAMP
    return python_of(path).is_file() and stamp.is_file() and stamp.read_text().strip() == _stamp_text()


def ensure_kserve_env(path: Path | None = None) -> Path:
    """The environment's interpreter, building the environment first unless it is current. Set
    ``HIDDENSTATE_KSERVE_ENV`` to keep it elsewhere."""
    path = path or Path(os.environ.get("HIDDENSTATE_KSERVE_ENV") or DEFAULT_PATH)
    if is_current(path):
        return python_of(path)
    print(f"==> building the KServe reference environment in {path} (kserve {KSERVE_VERSION}, ~1 min)",
          file=sys.stderr, flush=True)
    venv.create(path, with_pip=True, clear=True)
    result = subprocess.run([str(python_of(path)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                             *REQUIREMENTS], capture_output=True, text=True)
    if result.returncode != 0:
        raise KServeEnvError(f"pip could not install {' '.join(REQUIREMENTS)} into {path}:\n{result.stderr[-2000:]}")
    (path / STAMP).write_text(_stamp_text() + "\n")
    log.info("kserve environment ready", extra={"path": str(path), "requirements": list(REQUIREMENTS)})
    return python_of(path)


def server_env() -> dict[str, str]:
    """What the reference server needs in its environment besides the scorer's settings: the repository on the
    path, since the project is not installed there."""
    return {"PYTHONPATH": str(ROOT)}


if __name__ == "__main__":
    print(ensure_kserve_env())

# Shared by scripts/test and scripts/demo: create .venv once and install the project into it.
# Idempotent: a stamp file records the hash of pyproject.toml, so a second run skips pip entirely.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python_bin="${PYTHON:-python3}"
extras="${1:-test}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $("$python_bin" --version)"
  "$python_bin" -m venv .venv
fi
stamp=".venv/.hiddenstate-installed-$extras"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing hiddenstate[$extras] into .venv (torch==2.13.0 CPU build comes from local disk)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
  echo "$want" > "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"

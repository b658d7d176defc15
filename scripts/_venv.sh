# Sourced by scripts/demo and scripts/test: make (or reuse) the virtual environment and install
# imggen with the given extras. IMGGEN_VENV picks its folder (default .venv).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="${IMGGEN_VENV:-.venv}"
extras="$1"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
venv="$(cd "$venv" && pwd)"
# Pin torch before the project asks for its range (torch>=2.4): without it pip picks a multi-GB
# CUDA build. Where a torch is already installed (a GPU build, say), it is kept.
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "$venv/bin/pip" install -q "torch==${IMGGEN_TORCH_VERSION:-2.13.0}"
fi
"$venv/bin/pip" install -q -e ".[$extras]"
export PATH="$venv/bin:$PATH"
export HF_HUB_OFFLINE=1

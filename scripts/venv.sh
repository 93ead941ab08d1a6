# Sourced by the scripts here: create .venv if missing and install the
# project with its dev extra. Set PYTHON to choose the interpreter.
python="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    echo "$(basename "$0"): creating .venv with $("$python" --version)"
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'

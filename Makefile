# Entry points for developers and CI. See docs/local-stack.md.
.PHONY: test demo stack-up stack-down stack-status lint

PYTHON ?= .venv/bin/python

# Whole suite against the local stack, which is stopped afterwards.
test:
	bash scripts/test.sh

# The main job end to end on the local stack: executions in, events out.
demo:
	bash scripts/demo.sh

stack-up:
	$(PYTHON) -m local_stack up

stack-down:
	$(PYTHON) -m local_stack down

stack-status:
	$(PYTHON) -m local_stack status

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

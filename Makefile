# The two set-up commands of the README: `make run` (the app on the demo workspace) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sessrec-installed

.PHONY: run test demo bench clean

run: $(STAMP)
	$(VENV)/bin/sessrec-tui --workspace $(or $(SESSREC_HOME),workspace)

# The import contract first (the layers written down in pyproject.toml: a few seconds), then two
# pytest workers (one test file each at a time, one core each): the suite takes about 60% of the
# time of one process on the 2-core CI machine. TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# Non-interactive main job: generate the small demo, build it, train, recommend.
demo: $(STAMP)
	$(VENV)/bin/sessrec --workspace $(or $(SESSREC_HOME),workspace) quickstart

bench: $(STAMP)
	$(VENV)/bin/sessrec bench pipeline

$(STAMP): pyproject.toml scripts/install.sh
	./scripts/install.sh
	touch $(STAMP)

clean:
	rm -rf $(VENV) *.egg-info

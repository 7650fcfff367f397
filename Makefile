# Two commands: `make run` (set up and start on SQLite, no Redis) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
BIND   ?= 127.0.0.1:8000

.PHONY: run test install lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python manage.py migrate --noinput -v0
	@TOKEN=$$($(BIN)/python manage.py create_api_token admin --admin) && \
	 printf '\nCrunch is starting on http://%s\n' '$(BIND)' && \
	 printf '  admin token:  %s\n' "$$TOKEN" && \
	 printf '  try:          curl -s -H "Authorization: Bearer %s" http://%s/arvados/v1/users/current\n' "$$TOKEN" '$(BIND)' && \
	 printf '  more:         see README.md, "A first session"\n\n'
	$(BIN)/crunch dev --bind $(BIND)

test: install
	$(BIN)/ruff check -q .
	$(BIN)/ruff format --check -q .
	$(BIN)/lint-imports
	$(BIN)/mypy jobs crunch
	$(BIN)/python manage.py makemigrations --check --dry-run -v0
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy jobs crunch

clean:
	rm -rf $(VENV) var

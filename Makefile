# `make demo` and `make test` are the only commands a new user types: each creates .venv
# and installs handover into it when missing (or when pyproject.toml changed).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-all typecheck docs clean

# The real FHIR server the load tests start (Medplum's FHIR router, from the npm registry).
FHIR_SERVER := tests/fhir_server
NODE_STAMP := $(FHIR_SERVER)/node_modules/.installed

$(NODE_STAMP): $(FHIR_SERVER)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix $(FHIR_SERVER) --no-audit --no-fund --loglevel=error && touch $(NODE_STAMP); \
	else echo "npm not found: tests/load will fail until Node >= 20.19 and npm are installed"; fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/handover demo

# In parallel, one worker per core (pytest-xdist); a module's tests stay on one worker, so
# its module-scoped fixtures (built run folders) are built once. Session fixtures (runs,
# the FHIR server on a free loopback port) are each worker's own.
# mypy first (strict, ~20 s): a type error fails the suite as a failing test does.
test: $(STAMP) $(NODE_STAMP)
	$(BIN)/mypy
	$(BIN)/python -m pytest -n auto --dist loadscope

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

# Every stage's benchmark at full size (long: synthesises 1M patients; see benchmarks/README.md).
bench-all: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/identity_febrl.py febrl --repeat 3
	$(BIN)/python benchmarks/identity_febrl.py febrl --dataset 3
	$(BIN)/python benchmarks/identity_febrl.py scale --patients 1000000 --splink
	$(BIN)/python benchmarks/fhir_bench.py --patients 1000000
	$(BIN)/python benchmarks/hl7_bench.py --sizes 100000,1000000
	$(BIN)/python benchmarks/roundtrip_bench.py roundtrip --patients 1000000
	$(BIN)/python benchmarks/roundtrip_bench.py load --patients 2000
	# the whole batch per stage (issue #18): 1M local and on a local Dask cluster, the FHIR stage
	# alone on each, then 5M with FHIR as gzipped NDJSON only (--fhir-form ndjson: no transaction
	# bundles; --fhir-compression gzip: about a tenth of the NDJSON's disk; the extract is 7.1 GB, its
	# synthesis peaks at 13.6 GB of memory, and the round trip stages ~15 GB of buckets in $TMPDIR)
	$(BIN)/python -m pip install --quiet -e '.[dask]'
	$(BIN)/python benchmarks/batch.py .bench/extract-1000000 .bench/batch-1m --json .bench/batch.jsonl
	$(BIN)/python benchmarks/batch.py .bench/extract-1000000 .bench/batch-1m-dask --executor dask --json .bench/batch.jsonl
	$(BIN)/python benchmarks/fhir_bench.py --patients 1000000 --executor dask
	test -f .bench/extract-5000000/truth/summary.json || $(BIN)/handover synth --quiet --out .bench/extract-5000000 --patients 5000000
	$(BIN)/python benchmarks/batch.py .bench/extract-5000000 .bench/batch-5m --fhir-form ndjson --fhir-compression gzip --json .bench/batch.jsonl

# The Documented Data Extract of each shipped profile (docs/dde/); tests/test_dde.py keeps them current.
docs: $(STAMP)
	for m in mappings/*.yaml; do $(BIN)/handover describe -q -m $$(basename $$m .yaml) --out docs/dde; done

clean:
	rm -rf $(VENV) demo-out bench-out .pytest_cache .mypy_cache

#!/bin/sh
# Draw Benchmarks/results/latest.md and latest.png again from these inputs (run from the repository root).
exec "${PYTHON:-.venv-bench/bin/python}" scripts/bench_report.py full --meta Benchmarks/results/raw/meta.json --peers Benchmarks/results/raw/peers.out --hz 100 --md Benchmarks/results/latest.md --png Benchmarks/results/latest.png --tls-out Benchmarks/results/raw/tls.out --tls Benchmarks/results/raw/tls.tsv --auth Benchmarks/results/raw/auth.tsv

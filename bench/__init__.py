"""Leyline benchmarks: each figure beside a ceiling measured in the same run, as a ratio.

`python -m bench <name>` runs one, `python -m bench all` runs every one registered in
`bench/__main__.py`. A benchmark is a module with `run() -> dict`; it reports progress on
stderr through `bench._harness.progress`, and the runner prints its figures as one JSON
line on stdout. Times come from `bench._harness.measure`. See BENCHMARKS.md.
"""

# Orchestra recipes. `pip install -e '.[dev]'` brings `just` (rust-just) into the venv.

venv := ".venv"
py := venv / "bin/python"

# create the venv and install the project with its dev tools
install:
    python3 -m venv {{venv}}
    {{venv}}/bin/pip install -q -e '.[dev,bench]'

# run the whole test suite (opt-in soaks: just test -m soak)
test *ARGS:
    {{venv}}/bin/pytest -q {{ARGS}}

# run the server on the default port with a data dir under the user's data folder
serve *ARGS:
    {{venv}}/bin/orchestra serve {{ARGS}}

# the fleet demo: a server, a generated code base and 119 agents (orchestra demo --help)
demo *ARGS:
    {{venv}}/bin/orchestra demo {{ARGS}}

# the live dashboard of a running server (orchestra dashboard --help; --once: one snapshot)
dashboard *ARGS:
    {{venv}}/bin/orchestra dashboard {{ARGS}}

# benchmarks: every figure next to the bare limit measured in the same run, one table, JSON and
# a plot under bench/results/ (--quick: the small profile; --readme: rewrite bench/README.md's table)
# (the reference clients and the plot need the bench extra: just install brings it)
bench *ARGS:
    {{py}} -m bench {{ARGS}}

# context engine speed: a generated 5,000-file repository through a real server
bench-context:
    {{py}} -m bench.context_speed --server

# context engine quality on pinned public repositories (bench/README.md): just bench-quality --repos flask,chi
bench-quality *ARGS:
    {{py}} -m bench.context_quality {{ARGS}}

# ruff over everything, mypy --strict over the whole package (as installed: orchestra.actors, orchestra.transport)
lint:
    {{venv}}/bin/ruff check actors transport tests bench
    {{py}} -m tests.typecheck

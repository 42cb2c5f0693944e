# wrapcrypt — top-level entry points. Every target installs what it needs.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: deps build deb demo fleet-demo test bench fuzz lint clean

deps:
	bash scripts/install-deps.sh

build: deps
	$(CARGO) build --release --workspace --bins

# target/debian/wrapcrypt_VERSION_ARCH.deb (docs/packaging.md).
deb: build
	bash scripts/build-deb.sh

demo: build
	bash scripts/demo.sh

# FLEET_HOSTS, FLEET_VOLUMES, FLEET_DIR (docs/fleet.md, "Demo").
fleet-demo: build
	bash scripts/fleet-demo.sh

test: build
	bash scripts/test.sh

bench: build
	bash scripts/bench.sh

fuzz: deps
	bash scripts/fuzz.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean

.PHONY: run test bench lint ci

run:
	cargo run --release -- run

test:
	cargo test --workspace --all-features

bench:
	cargo bench --bench bus
	cargo bench --bench cold_start

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --all-features -- -D warnings

ci:
	bash .ci/run

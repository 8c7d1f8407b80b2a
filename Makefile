.PHONY: run test bench fuzz lint ci

run:
	cargo run --release -- run

test:
	cargo test --workspace --all-features

bench:
	cargo bench --bench bus
	cargo bench --bench cold_start
	cargo bench --bench stores
	cargo bench --bench registry
	cargo bench --bench overlay
	cargo bench --bench metrics
	cargo bench -p ron-oap --bench codec

# OAP/1 decoder fuzzing; needs `cargo install cargo-fuzz`. FUZZ_SECS=600 default.
fuzz:
	./fuzz/run.sh $${FUZZ_SECS:-600}

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --all-features -- -D warnings

ci:
	bash .ci/run

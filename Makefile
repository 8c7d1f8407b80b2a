.PHONY: run test bench fuzz lint ci aarch64 images

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
	cargo clippy --workspace --all-targets --all-features -- -D warnings

ci:
	bash .ci/run

# macronode and micronode for ARM edge boxes (release), checked under qemu;
# binaries in target/aarch64-unknown-linux-gnu/release. Tools: packaging/tools.sh.
aarch64:
	bash packaging/tools.sh
	PROFILE=release bash packaging/edge/check.sh

# The Docker images as docker-archive tarballs in target/images.
images:
	bash packaging/tools.sh
	bash packaging/docker/build.sh target/images

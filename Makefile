.PHONY: e2e image

# End-to-end tests on real engines (Docker, Slurm); installs the Debian packages first (root).
e2e:
	scripts/e2e

# The one gymfleet image (needs a Docker engine and network access to the package index).
image:
	docker build -f docker/Dockerfile -t gymfleet:latest .

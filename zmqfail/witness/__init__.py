"""The witness: an optional third voter that grants epochs and leases."""

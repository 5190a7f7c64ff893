"""Model-free unit tests of the pure modules. A package, so that its module
names (test_call, test_constants, ...) do not clash with those of tests/."""

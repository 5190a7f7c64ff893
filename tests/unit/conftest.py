"""The unit layer: aoti_cy's pure modules on inputs built in the tests
(call specs, constant tables, extern-node files, wrapper sources, tiny ELF
files). Nothing here compiles or loads a model: the fixture below makes
every way of doing so fail the test that tries."""

import pytest
import torch

import aoti_cy.testing


def _no_models(*args, **kwargs):
    raise AssertionError("a unit test compiled or loaded a model; those belong in tests/")


@pytest.fixture(autouse=True)
def no_models(monkeypatch):
    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", _no_models)
    monkeypatch.setattr(torch._inductor, "aoti_load_package", _no_models)
    for name in ("compile_package", "compile_multi_package"):
        monkeypatch.setattr(aoti_cy.testing, name, _no_models)
    monkeypatch.setattr(aoti_cy, "load", _no_models)
    monkeypatch.setattr(aoti_cy, "ModelContainer", _no_models)
    monkeypatch.setattr(aoti_cy, "Model", _no_models)
    monkeypatch.setattr(aoti_cy, "aoti_load_package", _no_models)

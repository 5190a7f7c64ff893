"""Real architectures (random-initialised `transformers` models, see
real_models.py) through aoti_cy: parity with eager through ``run`` and
``model(...)``, the same package through torch's own loader, weights from
the module's own ``state_dict()``, dynamic batch 1, packages that keep their
weights outside the `.so` or hold none, two models in one package, and a
static KV cache the model updates in place."""

import os
import re
import subprocess
import sys

import pytest
import torch
import torch.utils._pytree as pytree

import aoti_cy
from real_models import (DYNAMIC_SEQ, KV_CACHE_MODEL, REAL_MODELS, UNUSED_PARAMETER_MODEL,
                         UPDATABLE, gpt2_and_vit_package, perturbed_state_dict)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs a CUDA GPU")]),
]


@pytest.fixture(autouse=True, scope="module")
def exact_cuda_math():
    """Eager and compiled CUDA runs compared in full float32, not TF32."""
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


PICKLED = {"aot_inductor.package_constants_in_so": False,
           "aot_inductor.package_constants_on_disk_format": "pickle_weights"}
WEIGHTLESS = {"aot_inductor.package_constants_in_so": False}


def assert_close(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def flat_tensors(args, kwargs):
    """What ``run`` takes for a call: its tensors in pytree order."""
    return [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]


def eager_output(real, module, args, kwargs):
    with torch.no_grad():
        return real.output(module(*args, **kwargs))


def check_parity(real, model, eager, device="cpu"):
    for shape in real.calls:
        args, kwargs = real.call(device=device, **shape)
        want = eager_output(real, eager, args, kwargs)
        assert_close(real.output(model(*args, **kwargs)), want)
        assert_close(model.run(flat_tensors(args, kwargs)), want)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_parity_with_eager_and_torchs_loader(name, device):
    real = REAL_MODELS[name]
    path = real.package(device, **UPDATABLE)
    eager = real.eager(device)
    theirs = torch._inductor.aoti_load_package(path)
    with aoti_cy.load(path) as model:
        assert model.device.type == device
        check_parity(real, model, eager, device)
        for shape in real.calls:
            args, kwargs = real.call(device=device, **dict(shape, seed=11))
            assert_close(real.output(model(*args, **kwargs)),
                         real.output(theirs(*args, **kwargs)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_load_weights_from_the_modules_own_state_dict(name, device):
    real = REAL_MODELS[name]
    eager = real.eager(device)
    with aoti_cy.load(real.package(device, **UPDATABLE)) as model:
        model.load_weights(eager.state_dict())          # strict, as the module gives it
        check_parity(real, model, eager, device)
        model.load_weights(perturbed_state_dict(eager))  # tied weights stay tied
        check_parity(real, model, eager, device)


def test_checkpoint_keeping_one_name_of_tied_weights_says_how_to_load_it():
    # inductor keeps one constant for GPT-2's tied embeddings; a checkpoint
    # that keeps only the other name (save_pretrained drops one of them) is
    # refused, saying which name to give it under too.
    real = REAL_MODELS["gpt2"]
    eager = real.eager()
    with aoti_cy.load(real.package(**UPDATABLE)) as model:
        fqns = {c.original_fqn for c in model.constants}
        state = perturbed_state_dict(eager)
        alias, = [k for k in state if k not in fqns]
        kept, = [k for k in fqns & set(state) if state[k].data_ptr() == state[alias].data_ptr()]
        checkpoint = {k: v for k, v in state.items() if k != kept}
        hint = (rf"missing constants \['{re.escape(kept)}'\].*if '{re.escape(alias)}' is tied "
                rf"to '{re.escape(kept)}'.*state_dict\['{re.escape(kept)}'\] = "
                rf"state_dict\['{re.escape(alias)}'\]")
        with pytest.raises(ValueError, match=hint):
            model.load_weights(checkpoint)
        checkpoint[kept] = checkpoint[alias]
        model.load_weights(checkpoint)
        check_parity(real, model, eager)


def test_strict_load_names_weights_compiled_into_the_kernels():
    # By default inductor inlines small tensors (ViT's 5-class bias): they
    # cannot be updated, and a strict load says so and changes nothing.
    real = REAL_MODELS["vit"]
    eager = real.eager()
    args, kwargs = real.call()
    with aoti_cy.load(real.package()) as model:
        before = real.output(model(*args, **kwargs))
        state = perturbed_state_dict(eager)
        with pytest.raises(ValueError, match=r"unknown keys \['classifier.bias'\].*"
                                             r"always_keep_tensor_constants=True"):
            model.load_weights(state)
        assert_close(real.output(model(*args, **kwargs)), before)
        model.load_weights(state, strict=False)   # everything but the inlined bias
        changed = real.output(model(*args, **kwargs))
        assert not torch.allclose(changed[0], before[0])


def test_strict_load_explains_a_parameter_the_exported_call_never_reads():
    # DINOv2's mask_token is read only with bool_masked_pos (pre-training), so
    # the package has no constant for it: a strict load of the module's own
    # state_dict() names it and says strict=False is safe; that loads the rest.
    real = UNUSED_PARAMETER_MODEL
    eager = real.eager()
    with aoti_cy.load(real.package(**UPDATABLE)) as model:
        assert "embeddings.mask_token" not in {c.original_fqn for c in model.constants}
        with pytest.raises(ValueError, match=r"unknown keys \['embeddings.mask_token'\].*never "
                                             r"reads it.*strict=False loads the rest"):
            model.load_weights(eager.state_dict())
        model.load_weights(perturbed_state_dict(eager), strict=False)
        check_parity(real, model, eager)


def test_batch_one_and_other_sizes_of_a_dynamic_model():
    real = REAL_MODELS["llama"]
    eager = real.eager()
    with aoti_cy.load(real.package(**UPDATABLE)) as model:
        sizes = [(1, 1), (1, 2), (2, 1), (5, 17), (8, 32)] if DYNAMIC_SEQ else [(1, 7), (8, 7)]
        for batch, seq in sizes:
            args, kwargs = real.call(seed=batch * 100 + seq, batch=batch, seq=seq)
            assert_close(real.output(model(*args, **kwargs)),
                         eager_output(real, eager, args, kwargs))
        outside = [(9, 4), (2, 33), (0, 4)] if DYNAMIC_SEQ else [(9, 7), (0, 7)]
        for batch, seq in outside:   # outside the exported ranges
            args, _ = real.call(batch=batch, seq=seq)
            with pytest.raises(ValueError, match="does not fit the model"):
                model.run(list(args))


@pytest.mark.parametrize("name", ["bert", "gpt2", "llama"])
def test_single_instance_model_describes_and_calls_like_the_container(name):
    # One description per library: the same names, spec and constants, and
    # the same call as the exported module (pytree in and out).
    real = REAL_MODELS[name]
    path = real.package(**UPDATABLE)
    theirs = torch._inductor.aoti_load_package(path)
    with aoti_cy.load(path) as container, aoti_cy.Model(path) as single:
        for attribute in ("input_names", "output_names", "num_inputs", "num_outputs",
                          "call_spec", "device", "constants", "constant_fqns"):
            assert getattr(single, attribute) == getattr(container, attribute), attribute
        assert single.device == torch.device("cpu") and single.num_inputs >= 1
        for seed in (1, 7):
            args, kwargs = real.call(seed=seed)
            want = eager_output(real, real.eager(), args, kwargs)
            assert_close(real.output(single(*args, **kwargs)), want)
            assert_close(real.output(single(*args, **kwargs)),
                         real.output(theirs(*args, **kwargs)))
            assert_close(single.run(flat_tensors(args, kwargs)), want)
    with pytest.raises(RuntimeError, match="this Model is closed"):
        single(*real.call()[0], **real.call()[1])


def test_pickle_weights_package():
    real = REAL_MODELS["vit"]
    path = real.package(**UPDATABLE, **PICKLED)
    eager = real.eager()
    with aoti_cy.load(path) as model:
        check_parity(real, model, eager)
        model.load_weights(perturbed_state_dict(eager))
        check_parity(real, model, eager)
    args, kwargs = real.call()
    with aoti_cy.Model(path) as single:
        assert_close(single.run(flat_tensors(args, kwargs)),
                     eager_output(real, real.eager(), args, kwargs))


def test_package_without_weights_refuses_to_run_until_given_them():
    real = REAL_MODELS["llama"]
    path = real.package(**UPDATABLE, **WEIGHTLESS)
    eager = real.eager()
    args, kwargs = real.call()
    everything = dict(eager.state_dict(), **dict(eager.named_buffers()))
    with aoti_cy.load(path) as model:
        with pytest.raises(RuntimeError, match=r"no value yet for 22 constants \('model.embed_tokens.weight'"):
            model(*args, **kwargs)
        with pytest.raises(RuntimeError, match="no value yet"):
            model.run(flat_tensors(args, kwargs))
        # A non-persistent buffer (rotary inv_freq) is no part of state_dict().
        with pytest.raises(ValueError, match="inv_freq.*named_buffers"):
            model.load_weights(eager.state_dict())
        model.load_weights(everything)
        check_parity(real, model, eager)
    with aoti_cy.Model(path) as single:
        with pytest.raises(RuntimeError, match="no value yet"):
            single.run(flat_tensors(args, kwargs))
        fqns = {c.original_fqn for c in single.constants}
        single.update_constants_map({k: v for k, v in everything.items() if k in fqns})
        assert_close(single.run(flat_tensors(args, kwargs)),
                     eager_output(real, eager, args, kwargs))


def test_two_models_in_one_package():
    gpt2, vit = REAL_MODELS["gpt2"], REAL_MODELS["vit"]
    path = gpt2_and_vit_package()
    for name, real in (("gpt2", gpt2), ("vit", vit)):
        args, kwargs = real.call(seed=5)
        want = eager_output(real, real.eager(), args, kwargs)
        with aoti_cy.load(path, model_name=name) as model:
            assert_close(real.output(model(*args, **kwargs)), want)
        theirs = torch._inductor.package.load_package(path, model_name=name)
        assert_close(real.output(theirs(*args, **kwargs)), want)
    with pytest.raises(aoti_cy.PackageError, match="'gpt2', 'vit'"):
        aoti_cy.load(path, model_name="bert")


def test_static_kv_cache_updated_in_place_step_by_step():
    real = KV_CACHE_MODEL
    path = real.package(**UPDATABLE)
    eager = real.eager()
    theirs = torch._inductor.aoti_load_package(path)
    with aoti_cy.load(path) as model:
        for step in range(6):
            args, _ = real.call(seed=step, step=step)
            want = eager_output(real, eager, args, {})
            assert_close([model(*args)], want)
            assert_close([theirs(*args)], want)


def test_positional_tensors_for_keyword_exported_inputs_are_refused():
    # BERT exported with keyword tensors only. Positional tensors would be
    # matched to the export's keyword order, not forward()'s: with a
    # tokenizer's order (input_ids, token_type_ids, attention_mask), BERT's
    # positional call (input_ids, attention_mask, token_type_ids) gave wrong
    # numbers silently. So they are refused, as torch's loader refuses them.
    real = REAL_MODELS["bert"]
    _, kwargs = real.call()
    want = eager_output(real, real.eager(), (), kwargs)
    with aoti_cy.load(real.package(**UPDATABLE)) as model:
        assert_close(real.output(model(**dict(reversed(list(kwargs.items()))))), want)
        with pytest.raises(TypeError, match=r"exported with 0 positional argument\(s\) and "
                                            r"keyword arguments \['input_ids', 'attention_mask', "
                                            r"'token_type_ids'\]; got 3 positional"):
            model(*kwargs.values())
        with pytest.raises(TypeError, match="got 1 positional"):
            model(kwargs["input_ids"], attention_mask=kwargs["attention_mask"],
                  token_type_ids=kwargs["token_type_ids"])
        assert_close(real.output(model(**kwargs)), want)   # still usable


def test_output_type_from_another_module_says_what_to_import():
    # A fresh interpreter, where transformers is not imported yet.
    path = REAL_MODELS["llama"].package(**UPDATABLE)
    script = f"""
import torch, aoti_cy
model = aoti_cy.load({path!r})
ids = torch.zeros(1, 7, dtype=torch.long)
try:
    model(ids)
except TypeError as e:
    print("ERROR", e)
import transformers.modeling_outputs
print("AFTER", type(model(ids)).__name__)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert result.returncode == 0, result.stderr
    assert "ERROR" in result.stdout and "import transformers.modeling_outputs" in result.stdout
    assert "AFTER CausalLMOutputWithPast" in result.stdout

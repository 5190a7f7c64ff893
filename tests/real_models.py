"""Architectures nobody here wrote: random-initialised `transformers` models
from small configs (nothing is downloaded), compiled once per session into
the cache of aoti_cy.testing and shared by the tests.

Each ``RealModel`` knows how to build the eager module (fixed seed), the
example call it is exported with, and fresh calls to compare on.
"""

import torch
from torch.export import Dim

from aoti_cy.testing import ModelSpec, compile_multi_package, compile_package, make_model

transformers = __import__("pytest").importorskip("transformers")
transformers.logging.set_verbosity_error()


# torch 2.11's export cannot prove a guard of Llama's attention for a dynamic
# sequence length (min(8*seq, 16*seq) == 8*seq); there the length is fixed.
DYNAMIC_SEQ = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 13)


def _ids(generator, batch, seq, vocab):
    return torch.randint(0, vocab, (batch, seq), generator=generator)


class RealModel:
    """A `transformers` architecture, its config and how to call it."""

    def __init__(self, name, model_cls, config, make_call, *, dynamic_shapes=None,
                 features=(), output=lambda out: out, calls=None, strict=False):
        self.name = name
        self.model_cls = model_cls
        self.config = config
        self.make_call = make_call      # generator -> (args, kwargs)
        self.dynamic_shapes = dynamic_shapes
        self.features = features
        self.output = output            # the tensors of a module's output
        self.calls = calls or [dict(seed=1)]
        self.strict = strict            # export the way the model's authors do

    def call(self, seed=1, device="cpu", **shape):
        args, kwargs = self.make_call(torch.Generator().manual_seed(seed), **shape)
        move = lambda v: v.to(device) if isinstance(v, torch.Tensor) else v  # noqa: E731
        return tuple(map(move, args)), {k: move(v) for k, v in kwargs.items()}

    def package(self, device="cpu", **inductor_configs):
        args, kwargs = self.call(device=device)
        return compile_package(self.model_cls, args, kwargs=kwargs, device=device,
                               init_args=(self.config,), inductor_configs=inductor_configs,
                               dynamic_shapes=self.dynamic_shapes, strict=self.strict)

    def eager(self, device="cpu"):
        return make_model(self.model_cls, (self.config,), device)


def _resnet():
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 12], depths=[1, 1], num_labels=1000,
        layer_type="basic")
    return RealModel(
        "resnet", transformers.ResNetForImageClassification, config,
        lambda g: ((torch.randn(2, 3, 32, 32, generator=g),), {}),
        features=("CNN", "batch norm folded into the kernels", "1000-class head"),
        output=lambda out: [out.logits])


def _vit():
    config = transformers.ViTConfig(
        hidden_size=36, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        image_size=16, patch_size=4, num_labels=5)
    return RealModel(
        "vit", transformers.ViTForImageClassification, config,
        lambda g: ((torch.randn(1, 3, 16, 16, generator=g),), {}),
        features=("vision transformer", "odd sizes (36, 37, 5)"),
        output=lambda out: [out.logits])


def _llama():
    # Eager attention: on CUDA, SDPA pads its mask to a multiple of 8, which
    # constrains a dynamic sequence length to 8k - 1 at export (torch 2.11).
    config = transformers.LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=44, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        use_cache=False, attn_implementation="eager")
    batch, seq = Dim("batch", min=1, max=8), Dim("seq", min=1, max=32)
    fixed_seq = None if DYNAMIC_SEQ else 7
    return RealModel(
        "llama", transformers.LlamaForCausalLM, config,
        lambda g, batch=2, seq=7: ((_ids(g, batch, fixed_seq or seq, 97),), {}),
        dynamic_shapes=({0: batch, 1: seq} if DYNAMIC_SEQ else {0: batch},),
        features=("decoder LLM", "dynamic batch and sequence (batch 1)",
                  "grouped-query attention", "ModelOutput"),
        output=lambda out: [out.logits],
        calls=[dict(seed=1, batch=1, seq=1), dict(seed=2, batch=1, seq=9),
               dict(seed=3, batch=3, seq=5), dict(seed=4, batch=8, seq=32)])


def _bert():
    config = transformers.BertConfig(
        vocab_size=101, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=40, max_position_embeddings=32)

    def call(g):
        ids = _ids(g, 2, 6, 101)
        mask = torch.ones(2, 6, dtype=torch.long)
        mask[1, 4:] = 0
        return (), {"input_ids": ids, "attention_mask": mask,
                    "token_type_ids": torch.zeros(2, 6, dtype=torch.long)}
    return RealModel(
        "bert", transformers.BertModel, config, call,
        features=("encoder called with **batch", "non-persistent buffers"),
        output=lambda out: [out.last_hidden_state, out.pooler_output])


def _gpt2():
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64, use_cache=False,
        bos_token_id=0, eos_token_id=0)
    return RealModel(
        "gpt2", transformers.GPT2LMHeadModel, config,
        lambda g: ((_ids(g, 2, 8, 100),), {"return_dict": False}),
        features=("tied input/output embeddings", "non-tensor argument (return_dict=False)"),
        output=lambda out: [out[0]])


class LlamaWithStaticCache(torch.nn.Module):
    """transformers' own export wrapper of a decoder with a static KV cache
    (exported strictly, as its ``export`` does): the cache tensors become
    constants the compiled model updates in place each step."""

    def __init__(self, config, max_cache_len=12):
        super().__init__()
        from transformers.integrations.executorch import TorchExportableModuleWithStaticCache
        model = transformers.LlamaForCausalLM(config)
        model.generation_config.use_cache = True
        model.generation_config.cache_implementation = "static"
        self.inner = TorchExportableModuleWithStaticCache(
            model, batch_size=1, max_cache_len=max_cache_len)

    def forward(self, input_ids, cache_position):
        return self.inner(input_ids=input_ids, cache_position=cache_position)


def _kv_cache():
    config = transformers.LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=44, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        use_cache=True)
    return RealModel(
        "llama_static_cache", LlamaWithStaticCache, config,
        lambda g, step=0: ((_ids(g, 1, 1, 97), torch.tensor([step])), {}),
        features=("static KV cache mutated in place", "one token a step"),
        output=lambda out: [out], strict=True)


@torch.library.custom_op("aoti_cy_real::gelu_tanh", mutates_args=())
def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's activation as a Python custom op: run through the proxy executor."""
    return torch.nn.functional.gelu(x, approximate="tanh")


@gelu_tanh.register_fake
def _(x):
    return torch.empty_like(x)


class CustomActivation(torch.nn.Module):
    def forward(self, x):
        return gelu_tanh(x)


class GPT2WithCustomOp(torch.nn.Module):
    """GPT-2 whose MLP activation in every block is a custom op."""

    def __init__(self, config):
        super().__init__()
        self.inner = transformers.GPT2LMHeadModel(config)
        for block in self.inner.transformer.h:
            block.mlp.act = CustomActivation()

    def forward(self, input_ids):
        return self.inner(input_ids, return_dict=False)[0]


def _gpt2_custom_op():
    real = _gpt2()
    return RealModel(
        "gpt2_custom_op", GPT2WithCustomOp, real.config,
        lambda g: ((_ids(g, 2, 8, 100),), {}),
        features=("a Python custom op in every block (proxy executor)",),
        output=lambda out: [out])


def _dinov2():
    config = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2,
        image_size=32, patch_size=8)
    return RealModel(
        "dinov2", transformers.Dinov2Model, config,
        lambda g: ((torch.randn(2, 3, 32, 32, generator=g),), {}),
        features=("a parameter the exported call never reads (mask_token)",),
        output=lambda out: [out.last_hidden_state, out.pooler_output])


REAL_MODELS = {m.name: m for m in (_resnet(), _vit(), _llama(), _bert(), _gpt2(),
                                   _gpt2_custom_op())}
KV_CACHE_MODEL = _kv_cache()
# Not in REAL_MODELS: a strict load of its own state_dict() is refused.
UNUSED_PARAMETER_MODEL = _dinov2()
# Small tensors stay updatable constants instead of being inlined.
UPDATABLE = {"always_keep_tensor_constants": True}


def perturbed_state_dict(module, seed=7):
    """The module's state_dict after moving every parameter a little, in
    place, so tied parameters stay tied (as fine-tuning leaves them)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.add_(0.05 * noise.to(parameter.device))
    return module.state_dict()


def gpt2_and_vit_package():
    """A package of two models, "gpt2" and "vit" (updatable constants)."""
    specs = {name: ModelSpec(REAL_MODELS[name].model_cls, *REAL_MODELS[name].call(),
                             init_args=(REAL_MODELS[name].config,))
             for name in ("gpt2", "vit")}
    return compile_multi_package(specs, inductor_configs=UPDATABLE)

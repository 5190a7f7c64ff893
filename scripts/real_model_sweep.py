"""Sweep of random-initialised `transformers` architectures through aoti_cy
on CPU, to find failures that are aoti_cy's own before real models do.

For each architecture (tiny hand-made config, nothing downloaded):

1. export (non-strict; strict only if every non-strict try fails) with a
   dynamic batch (min 1) and sequence where the model allows, falling back to
   batch only, then static; compile with ``always_keep_tensor_constants``
   (cached by ``aoti_cy.testing``);
2. ``aoti_cy.load`` -> ``model(*args, **kwargs)`` and ``run`` against eager
   and against torch's ``aoti_load_package`` on the same package (output
   pytree structure too), at the export shape, batch 1 and another batch;
3. ``load_weights(state_dict())`` strict, then a perturbed state dict (tied
   parameters moved together): parity with the perturbed eager module and
   with torch's loader given the same constants;
4. ``aoti_cy.Model`` (single-instance API): ``run`` and
   ``update_constants_map``;
5. ``aoti_cy.aoti_load_package`` (torch's API served by aoti_cy): the same
   constant FQNs, calls and ``load_constants`` as torch's loader.

Every failure is classified: ``export`` / ``compile`` (torch's), ``torch``
(torch's loader fails or disagrees with eager where aoti_cy agrees with
torch), or ``aoti_cy`` (aoti_cy raises, crashes, or disagrees with torch's
loader on the same package). Each architecture runs in its own process, so a
crash is recorded, not fatal.

    PYTHONPATH=. .venv/bin/python scripts/real_model_sweep.py [NAME ...] \\
        [--json results.json] [--markdown docs/real-model-sweep.md]

Results accumulate in the JSON file (a later run of some names replaces
theirs); ``--markdown`` rewrites the table between the markers of that file.
"""

import argparse
import inspect
import json
import os
import re
import subprocess
import sys
import time
import traceback
import warnings

import torch
import torch.utils._pytree as pytree
from torch.export import Dim

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import transformers  # noqa: E402
from real_models import RealModel, perturbed_state_dict  # noqa: E402

transformers.logging.set_verbosity_error()
warnings.filterwarnings("ignore")

UPDATABLE = {"always_keep_tensor_constants": True}
TOKENS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
VOCAB = 99


# ---- how each architecture is called ----------------------------------------------


def _ids(g, batch, seq, vocab=VOCAB):
    return torch.randint(3, vocab, (batch, seq), generator=g)


def _mask(batch, seq):
    """Ones, with the last two positions of the last row padded (batch > 1)."""
    mask = torch.ones(batch, seq, dtype=torch.long)
    if batch > 1 and seq > 2:
        mask[-1, -2:] = 0
    return mask


def text_call(mask=True, token_types=False, **extra):
    def make(g, batch=2, seq=7):
        kwargs = {"input_ids": _ids(g, batch, seq)}
        if mask:
            kwargs["attention_mask"] = _mask(batch, seq)
        if token_types:
            kwargs["token_type_ids"] = torch.zeros(batch, seq, dtype=torch.long)
        return (), dict(kwargs, **extra)
    return make


def image_call(size=32, channels=3):
    return lambda g, batch=2: ((torch.randn(batch, channels, size, size, generator=g),), {})


def audio_call(g, batch=2, seq=1600):
    return (torch.randn(batch, seq, generator=g),), {}


def seq2seq_call(g, batch=2, seq=7):
    dec = max(1, seq - 2)
    return (), {"input_ids": _ids(g, batch, seq), "attention_mask": _mask(batch, seq),
                "decoder_input_ids": _ids(g, batch, dec)}


def clip_call(g, batch=2, seq=7, images=None):
    images = batch + 1 if images is None else images
    return (), {"input_ids": _ids(g, batch, seq), "attention_mask": _mask(batch, seq),
                "pixel_values": torch.randn(images, 3, 16, 16, generator=g)}


# ---- dynamic shapes ---------------------------------------------------------------


def _batch():
    return Dim("batch", min=1, max=8)


def _seq(max=32):
    return Dim("seq", min=1, max=max)


def kwarg_dims(make_call, dims):
    """dynamic_shapes for a keyword call: ``dims`` maps a tensor kwarg to its
    dims; every other kwarg of the call gets None."""
    _, kwargs = make_call(torch.Generator().manual_seed(0))
    return {k: dims.get(k) for k in kwargs}


def text_levels(make_call, names=("input_ids", "attention_mask", "token_type_ids"),
                seq_min=None):
    b, s = _batch(), _seq()
    full = kwarg_dims(make_call, {n: {0: b, 1: s} for n in names})
    levels = [("batch+seq", full, True, True)]
    if seq_min:   # where the model's code needs a longer sequence
        s = Dim("seq", min=seq_min, max=32)
        levels.append((f"batch+seq>={seq_min}",
                       kwarg_dims(make_call, {n: {0: b, 1: s} for n in names}), True, True))
    only = kwarg_dims(make_call, {n: {0: b} for n in names})
    return levels + [("batch", only, True, False), ("static", None, False, False)]


def positional_levels(batch_seq_dims=None):
    b = _batch()
    levels = []
    if batch_seq_dims:
        levels.append(("batch+seq", ({0: b, 1: batch_seq_dims},), True, True))
    return levels + [("batch", ({0: b},), True, False), ("static", None, False, False)]


def seq2seq_levels(make_call):
    b, s, d = _batch(), _seq(), Dim("dec_seq", min=1, max=32)
    full = kwarg_dims(make_call, {"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s},
                                  "decoder_input_ids": {0: b, 1: d}})
    only = kwarg_dims(make_call, {k: {0: b} for k in
                                  ("input_ids", "attention_mask", "decoder_input_ids")})
    return [("batch+seq", full, True, True), ("batch", only, True, False),
            ("static", None, False, False)]


def clip_levels(make_call):
    b, s, n = _batch(), _seq(), Dim("images", min=1, max=8)
    full = kwarg_dims(make_call, {"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s},
                                  "pixel_values": {0: n}})
    only = kwarg_dims(make_call, {"input_ids": {0: b}, "attention_mask": {0: b},
                                  "pixel_values": {0: n}})
    return [("batch+seq", full, True, True), ("batch", only, True, False),
            ("static", None, False, False)]


class Arch:
    """One architecture of the sweep: its module class, config, call, the
    dynamic-shape levels to try (best first) and extra calls."""

    def __init__(self, name, model_cls, config, make_call, levels, *, features="",
                 tol=1e-4, extra_calls=(), batch_calls=None, seq_calls=None):
        self.name, self.model_cls, self.config = name, model_cls, config
        self.make_call, self.levels, self.features = make_call, levels, features
        self.tol, self.extra_calls = tol, list(extra_calls)
        self.batch_calls = batch_calls or [dict(batch=1), dict(batch=3)]
        self.seq_calls = seq_calls or [dict(batch=1, seq=1), dict(batch=4, seq=12)]

    def real(self, dynamic_shapes, strict):
        return RealModel(self.name, self.model_cls, self.config, self.make_call,
                         dynamic_shapes=self._by_signature(dynamic_shapes), strict=strict)

    def _by_signature(self, dynamic_shapes):
        """Keyword dims as export matches them: a keyword that forward()
        takes through ``**kwargs`` goes under that name."""
        if not isinstance(dynamic_shapes, dict):
            return dynamic_shapes
        params = inspect.signature(self.model_cls.forward).parameters
        var = next((n for n, p in params.items() if p.kind is p.VAR_KEYWORD), None)
        named = {k: v for k, v in dynamic_shapes.items() if k in params or var is None}
        rest = {k: v for k, v in dynamic_shapes.items() if k not in named}
        # torch 2.13: a bool under **kwargs fails export with either form
        # ({name: None}: "Must provide a tree_name"; None: structure mismatch).
        return dict(named, **{var: rest}) if rest else named


class OPTForCausalLMBf16(transformers.OPTForCausalLM):
    """OPT in bfloat16."""

    def __init__(self, config):
        super().__init__(config)
        self.to(torch.bfloat16)


class GPTNeoXForCausalLMF16(transformers.GPTNeoXForCausalLM):
    """GPT-NeoX in float16."""

    def __init__(self, config):
        super().__init__(config)
        self.to(torch.float16)


def _add_noise(module, seed=0):
    """Move every parameter a little (fixed seed) and let batch norms amplify:
    at this size and init, some architectures lose the input on the way
    (outputs that do not depend on it, or ~1e-23), which makes any comparison
    pass."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.add_(0.1 * noise.to(parameter.dtype))
        for norm in module.modules():
            if isinstance(norm, torch.nn.BatchNorm2d):
                norm.running_var.fill_(1e-3)


# What _add_noise does, in the config (so in the compile cache's key: the key
# holds the class's own source, not this function's). Change it with it.
NOISE = "parameters + 0.1 randn (seed 0), batch-norm running_var 1e-3"


class MobileViTNoisy(transformers.MobileViTForImageClassification):
    """MobileViT whose random init does not give all-zero logits."""

    def __init__(self, config):
        super().__init__(config)
        _add_noise(self)


class EfficientNetNoisy(transformers.EfficientNetForImageClassification):
    """EfficientNet whose random init does not give ~1e-23 logits."""

    def __init__(self, config):
        super().__init__(config)
        _add_noise(self)


def _decoder(name, model_cls, config_cls, features, tol=1e-4, **config):
    call = text_call()
    cfg = config_cls(vocab_size=VOCAB, use_cache=False, **dict(TOKENS, **config))
    return Arch(name, model_cls, cfg, call, text_levels(call), features=features, tol=tol)


def architectures():
    T = transformers
    archs = []
    add = archs.append

    call = text_call(token_types=True)
    add(Arch("albert", T.AlbertForMaskedLM, T.AlbertConfig(
        vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=37, num_hidden_groups=1,
        max_position_embeddings=64, **TOKENS), call, text_levels(call),
        features="one layer shared by 2, tied MLM decoder, embedding projection"))

    add(Arch("bart", T.BartForConditionalGeneration, T.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37,
        decoder_ffn_dim=37, max_position_embeddings=64, use_cache=False,
        decoder_start_token_id=2, forced_eos_token_id=None, **TOKENS),
        seq2seq_call, seq2seq_levels(seq2seq_call),
        features="encoder-decoder, 4-way tied embeddings, final_logits_bias buffer"))

    add(_decoder("opt", T.OPTForCausalLM, T.OPTConfig, "learned positions from the mask",
                 hidden_size=32, ffn_dim=37, num_hidden_layers=2, num_attention_heads=2,
                 max_position_embeddings=64, word_embed_proj_dim=32))
    add(_decoder("bloom", T.BloomForCausalLM, T.BloomConfig, "alibi", hidden_size=32,
                 n_layer=2, n_head=4))
    add(_decoder("falcon", T.FalconForCausalLM, T.FalconConfig, "multi-query, rotary",
                 hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=64))
    add(_decoder("gpt_neox", T.GPTNeoXForCausalLM, T.GPTNeoXConfig, "partial rotary",
                 hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=37, rotary_pct=0.25, max_position_embeddings=64))
    add(_decoder("gptj", T.GPTJForCausalLM, T.GPTJConfig, "rotary sin/cos buffer",
                 n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=64))
    add(_decoder("gemma", T.GemmaForCausalLM, T.GemmaConfig, "tied embeddings, MQA",
                 hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                 max_position_embeddings=64))
    add(_decoder("gemma2", T.Gemma2ForCausalLM, T.Gemma2Config,
                 "sliding window 4 + softcapping, tied embeddings", hidden_size=32,
                 intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                 sliding_window=4))
    add(_decoder("qwen3", T.Qwen3ForCausalLM, T.Qwen3Config, "q/k norm, GQA",
                 hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                 max_position_embeddings=64))
    add(_decoder("phi3", T.Phi3ForCausalLM, T.Phi3Config, "fused qkv / gate_up",
                 hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    add(_decoder("stablelm", T.StableLmForCausalLM, T.StableLmConfig,
                 "partial rotary, qkv bias", hidden_size=32, intermediate_size=37,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 partial_rotary_factor=0.25, use_qkv_bias=True, max_position_embeddings=64))
    add(_decoder("mixtral", T.MixtralForCausalLM, T.MixtralConfig, "MoE top-2 of 4 (grouped_mm)",
                 hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                 num_local_experts=4, num_experts_per_tok=2))
    add(_decoder("qwen2_moe", T.Qwen2MoeForCausalLM, T.Qwen2MoeConfig,
                 "MoE + shared expert", hidden_size=32, intermediate_size=37,
                 moe_intermediate_size=16, shared_expert_intermediate_size=24,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 max_position_embeddings=64, num_experts=4, num_experts_per_tok=2))

    call = text_call(token_types=True)
    add(Arch("deberta_v2", T.DebertaV2Model, T.DebertaV2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64, relative_attention=True,
        position_buckets=16, max_relative_positions=32, pos_att_type=["p2c", "c2p"],
        type_vocab_size=2, **TOKENS), call, text_levels(call),
        features="disentangled relative attention"))
    call = text_call(token_types=True)
    add(Arch("electra", T.ElectraForPreTraining, T.ElectraConfig(
        vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64, **TOKENS),
        call, text_levels(call), features="discriminator head, embedding projection"))
    call = text_call()
    add(Arch("electra_all_outputs", T.ElectraModel, T.ElectraConfig(
        vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64,
        attn_implementation="eager", output_hidden_states=True, output_attentions=True,
        **TOKENS), call, text_levels(call),
        features="output_hidden_states + output_attentions (last_hidden_state is "
                 "hidden_states[-1]: one tensor twice), token_type_ids from a buffer"))
    call = text_call(token_types=True)
    add(Arch("mobilebert", T.MobileBertModel, T.MobileBertConfig(
        vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=37, true_hidden_size=16,
        intra_bottleneck_size=16, num_feedforward_networks=2, max_position_embeddings=64,
        **TOKENS), call, text_levels(call, seq_min=3),
        features="bottlenecks, NoNorm, trigram input embedding (export guards seq != 2)",
        seq_calls=[dict(batch=1, seq=3), dict(batch=4, seq=12)]))
    # Output flags in the config: as call keywords (through **kwargs) they
    # fail export with dynamic shapes (see _by_signature).
    call = text_call()
    add(Arch("xlm_roberta", T.XLMRobertaForMaskedLM, T.XLMRobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, output_hidden_states=True), call, text_levels(call),
        features="tied MLM decoder, positions from padding, output_hidden_states "
                 "(tuple of 3 in the output)"))

    add(Arch("clip", T.CLIPModel, T.CLIPConfig(
        text_config=dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=37,
                         num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=64, **TOKENS),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                           num_attention_heads=2, image_size=16, patch_size=4),
        projection_dim=16), clip_call, clip_levels(clip_call),
        features="text + vision inputs, separate batch dims, nested ModelOutputs out",
        extra_calls=[dict(batch=1, images=1), dict(batch=3, images=1)]))

    add(Arch("segformer", T.SegformerForSemanticSegmentation, T.SegformerConfig(
        num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
        hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
        num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32,
        num_labels=3), image_call(), positional_levels(),
        features="efficient attention (sr conv), upsampling decode head"))
    add(Arch("dinov2", T.Dinov2Model, T.Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
        image_size=32, patch_size=8), image_call(), positional_levels(),
        features="layer scale, bicubic pos-embedding interpolation"))
    add(Arch("swinv2", T.Swinv2ForImageClassification, T.Swinv2Config(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2],
        window_size=4, num_labels=3), image_call(), positional_levels(),
        features="continuous position bias MLP, cosine attention; layer 0's "
                 "one-head logit_scale is folded by inductor (see the findings)"))
    add(Arch("regnet", T.RegNetForImageClassification, T.RegNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8,
        num_labels=3), image_call(), positional_levels(),
        features="grouped convs, squeeze-excite, BatchNorm"))
    add(Arch("efficientnet", EfficientNetNoisy, T.EfficientNetConfig(
        image_size=32, width_coefficient=1.0, depth_coefficient=1.0, kernel_sizes=[3, 5],
        in_channels=[32, 16], out_channels=[16, 24], depthwise_padding=[], strides=[1, 2],
        num_block_repeats=[1, 1], expand_ratios=[1, 2], hidden_dim=1280, num_labels=3,
        sweep_init=NOISE),
        image_call(), positional_levels(), features="depthwise convs, SE, swish"))
    add(Arch("mobilevit", MobileViTNoisy, T.MobileViTConfig(
        image_size=32, patch_size=2, hidden_sizes=[16, 24, 32],
        neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64], num_attention_heads=2,
        num_labels=3, sweep_init=NOISE), image_call(), positional_levels(),
        features="unfold/fold patches around a transformer"))

    audio = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=37, conv_dim=(16, 16), conv_stride=(5, 2),
                 conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                 num_conv_pos_embedding_groups=2, vocab_size=32)
    audio_calls = dict(seq_calls=[dict(batch=1, seq=800), dict(batch=3, seq=2400)])
    add(Arch("wav2vec2", T.Wav2Vec2ForCTC, T.Wav2Vec2Config(**audio), audio_call,
             positional_levels(Dim("samples", min=400, max=4000)),
             features="conv feature encoder, weight-norm pos conv (parametrizations)",
             **audio_calls))
    add(Arch("hubert", T.HubertModel, T.HubertConfig(**audio), audio_call,
             positional_levels(Dim("samples", min=400, max=4000)),
             features="conv feature encoder, weight-norm pos conv", **audio_calls))

    add(_decoder("opt_bf16", OPTForCausalLMBf16, T.OPTConfig, "OPT in bfloat16",
                 tol=3e-2, hidden_size=32, ffn_dim=37, num_hidden_layers=2,
                 num_attention_heads=2, max_position_embeddings=64, word_embed_proj_dim=32))
    add(_decoder("gpt_neox_f16", GPTNeoXForCausalLMF16, T.GPTNeoXConfig,
                 "GPT-NeoX in float16", tol=3e-2, hidden_size=32, num_hidden_layers=2,
                 num_attention_heads=4, intermediate_size=37, rotary_pct=0.25,
                 max_position_embeddings=64))
    return {a.name: a for a in archs}


# ---- checks -------------------------------------------------------------------------


class Mismatch(AssertionError):
    pass


def compare(got, want, tol, what):
    """Same pytree structure and values; returns the largest difference."""
    got_leaves, got_spec = pytree.tree_flatten(got)
    want_leaves, want_spec = pytree.tree_flatten(want)
    if got_spec != want_spec:
        raise Mismatch(f"{what}: output structure differs:\n got  {got_spec}\n want {want_spec}")
    worst = 0.0
    for i, (a, b) in enumerate(zip(got_leaves, want_leaves)):
        if not isinstance(b, torch.Tensor):
            if a != b:
                raise Mismatch(f"{what}: leaf {i}: {a!r} != {b!r}")
            continue
        if not isinstance(a, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
            raise Mismatch(f"{what}: leaf {i}: got {_desc(a)}, want {_desc(b)}")
        try:
            torch.testing.assert_close(a, b, rtol=tol, atol=tol, equal_nan=True)
        except AssertionError as e:
            raise Mismatch(f"{what}: leaf {i}: {str(e).splitlines()[1:4]}") from None
        if a.numel():
            worst = max(worst, (a.double() - b.double()).abs().nan_to_num().max().item())
    return worst


def _desc(t):
    return f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else repr(t)


def flat_tensors(args, kwargs):
    return [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]


def tensor_leaves(out):
    return [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]


class Sweep:
    """Runs the checks of one architecture, recording every outcome."""

    def __init__(self, arch):
        self.arch = arch
        self.result = {"name": arch.name, "class": arch.model_cls.__name__,
                       "features": arch.features, "export": None, "checks": {},
                       "failures": [], "max_diff": {}}

    def fail(self, check, kind, message, tb=None, batch1=False):
        self.result["checks"][check] = f"FAIL({kind})"
        if batch1 and check == "parity":
            self.result["checks"]["batch1"] = f"FAIL({kind})"
        self.result["failures"].append({"check": check, "kind": kind, "message": message,
                                        "traceback": tb})

    def ok(self, check, note="ok"):
        self.result["checks"].setdefault(check, note)

    # 1. export and compile

    def compile(self):
        attempts = []
        for strict in (False, True):
            for label, dynamic, batch_dyn, seq_dyn in self.arch.levels:
                real = self.arch.real(dynamic, strict)
                start = time.time()
                try:
                    path = real.package(**UPDATABLE)
                except Exception as e:  # noqa: BLE001 - torch's failure, recorded
                    stage = "compile" if _raised_in(e, "aoti_compile_and_package") else "export"
                    attempts.append({"strict": strict, "dynamic": label, "stage": stage,
                                     "reason": _one_line(e)})
                    continue
                self.result["export"] = {
                    "ok": True, "strict": strict, "dynamic": label, "attempts": attempts,
                    "seconds": round(time.time() - start, 1)}
                return real, path, batch_dyn, seq_dyn
        self.result["export"] = {"ok": False, "attempts": attempts}
        return None

    def calls(self, batch_dyn, seq_dyn):
        calls = [dict(seed=1)]
        if batch_dyn:
            calls += [dict(seed=2, **c) for c in self.arch.batch_calls]
            calls += [dict(seed=5, **c) for c in self.arch.extra_calls]
        if seq_dyn:
            calls += [dict(seed=3, **c) for c in self.arch.seq_calls]
        return calls

    def run(self):
        compiled = self.compile()
        if compiled is None:
            return self.result
        real, path, batch_dyn, seq_dyn = compiled
        self.result["package"] = path
        calls = self.calls(batch_dyn, seq_dyn)
        self.result["calls"] = calls
        eager = real.eager()
        self.sanity(real, eager)
        import aoti_cy
        try:
            theirs = torch._inductor.aoti_load_package(path)
        except Exception as e:  # noqa: BLE001
            theirs = None
            self.fail("torch_parity", "torch", "load: " + _one_line(e), traceback.format_exc())
        try:
            model = aoti_cy.load(path)
        except Exception as e:  # noqa: BLE001
            self.fail("parity", "aoti_cy", "load: " + _one_line(e), traceback.format_exc())
            return self.result
        with model:
            self.parity(real, model, theirs, eager, calls, "parity")
            self.weights(real, model, theirs, eager, calls)
        self.single(real, path, real.eager(), calls)   # weights() perturbed `eager`
        self.compat(real, path, calls)
        return self.result

    # 5. torch's API served by aoti_cy (aoti_cy.aoti_load_package)

    def compat(self, real, path, calls):
        import aoti_cy
        check = "torch_api"
        try:
            ours = aoti_cy.aoti_load_package(path)
            theirs = torch._inductor.aoti_load_package(path)
        except Exception as e:  # noqa: BLE001
            return self.fail(check, "aoti_cy", _one_line(e), traceback.format_exc())
        try:
            if sorted(ours.get_constant_fqns()) != sorted(theirs.get_constant_fqns()):
                raise Mismatch("get_constant_fqns differs from torch's")
            for shape in calls[:2]:
                args, kwargs = real.call(**dict(shape, seed=shape["seed"] + 80))
                compare(ours(*args, **kwargs), theirs(*args, **kwargs), 1e-5,
                        f"aoti_load_package {shape} vs torch's")
            eager = real.eager()
            state = dict(dict(eager.named_buffers()), **perturbed_state_dict(eager, seed=11))
            mapping = {k: state[k] for k in theirs.get_constant_fqns() if k in state}
            ours.load_constants(mapping, check_full_update=False)
            theirs.load_constants(mapping, check_full_update=False)
            args, kwargs = real.call(seed=90)
            compare(ours(*args, **kwargs), theirs(*args, **kwargs), 1e-5,
                    "after load_constants vs torch's")
            self.ok(check)
        except Exception as e:  # noqa: BLE001
            self.fail(check, "aoti_cy", _one_line(e), traceback.format_exc())

    def sanity(self, real, eager):
        """Eager outputs that depend on the input and are not ~0: otherwise
        every comparison passes and proves nothing."""
        outs = []
        for seed in (1, 2):
            args, kwargs = real.call(seed=seed)
            with torch.no_grad():
                outs.append(tensor_leaves(eager(*args, **kwargs)))
        floats = [(a, b) for a, b in zip(*outs) if a.is_floating_point() and a.numel()]
        if not floats or all(torch.equal(a, b) or a.abs().max() < 1e-6 for a, b in floats):
            self.fail("parity", "vacuous", "eager outputs do not depend on the input or are ~0")

    # 2. parity

    def parity(self, real, model, theirs, eager, calls, check, seed_shift=0):
        tol = self.arch.tol
        for shape in calls:
            shape = dict(shape, seed=shape["seed"] + seed_shift)
            args, kwargs = real.call(**shape)
            label = f"{check} {shape}"
            batch1 = shape.get("batch") == 1 or shape.get("images") == 1
            with torch.no_grad():
                want = eager(*args, **kwargs)
            ours = self._attempt(check, label, lambda: model(*args, **kwargs), batch1)
            ran = self._attempt(check, label + " run",
                                lambda: model.run(flat_tensors(args, kwargs)), batch1)
            theirs_out = None
            if theirs is not None:
                try:
                    theirs_out = theirs(*args, **kwargs)
                except Exception as e:  # noqa: BLE001
                    self.fail("torch_parity", "torch", f"{label}: {_one_line(e)}",
                              traceback.format_exc())
            self._judge(check, label, ours, ran, theirs_out, want, tol, batch1)

    def _attempt(self, check, label, fn, batch1):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            self.fail(check, "aoti_cy", f"{label}: {_one_line(e)}", traceback.format_exc(),
                      batch1)
            return _FAILED

    def _judge(self, check, label, ours, ran, theirs_out, want, tol, batch1):
        # torch's loader against eager: a disagreement there is torch's.
        torch_ok = theirs_out is not None
        if theirs_out is not None:
            try:
                d = compare(theirs_out, want, tol, label + " torch vs eager")
                self._diff("torch_vs_eager", d)
                if check == "parity":
                    self.ok("torch_parity")
            except Mismatch as e:
                torch_ok = False
                if check == "parity":
                    self.fail("torch_parity", "torch", str(e))
        if ours is _FAILED:
            return
        # aoti_cy against torch's loader on the same package: any difference is ours.
        if theirs_out is not None:
            try:
                self._diff("aoti_cy_vs_torch", compare(ours, theirs_out, 1e-5,
                                                       label + " aoti_cy vs torch"))
            except Mismatch as e:
                self.fail(check, "aoti_cy", str(e), batch1=batch1)
                return
        try:
            self._diff("aoti_cy_vs_eager", compare(ours, want, tol, label + " aoti_cy vs eager"))
            if ran is not _FAILED:
                compare(ran, tensor_leaves(want), tol, label + " run vs eager leaves")
        except Mismatch as e:
            # If torch's loader agrees with aoti_cy, the compiled model is off: torch's.
            self.fail(check, "torch" if (theirs_out is not None and not torch_ok) else "aoti_cy",
                      str(e), batch1=batch1)
            return
        self.ok(check)
        if batch1:
            self.ok("batch1")

    def _diff(self, key, d):
        self.result["max_diff"][key] = max(self.result["max_diff"].get(key, 0.0), d)

    # 3. weights

    def weights(self, real, model, theirs, eager, calls):
        folded = compiled_in(model, eager)
        strict = not folded
        known_to_torch = sorted(set(folded) & set(theirs.get_constant_fqns() if theirs else ()))
        if known_to_torch:
            self.fail("load_weights", "aoti_cy", f"constants torch's loader has and aoti_cy "
                      f"does not list: {known_to_torch}")
            return
        if folded:
            # Parameters in no package constant (torch's loader has none of
            # them either): the exported call never reads them, or inductor
            # compiled them into the kernels even with always_keep_tensor_constants.
            # A strict load refuses them, as documented; load the rest.
            unused = unused_parameters(real, eager, folded)
            inlined = sorted(set(folded) - set(unused))
            kind = "torch" if inlined else "strict refuses unused"
            why = "; ".join(part for part in (
                unused and f"{unused} never read by the exported call",
                inlined and f"{inlined} folded into the kernels by inductor") if part)
            self.fail("load_weights", kind, f"no constant in the package (none in torch's "
                      f"loader either): {why}. A strict load refuses them, as documented; "
                      f"the rest loaded with strict=False")
            try:   # the documented refusal, naming every such key
                model.load_weights(eager.state_dict())
                self.fail("load_weights", "aoti_cy", f"strict load took {folded} silently")
            except ValueError as e:
                if not all(repr(k) in str(e) for k in folded):
                    self.fail("load_weights", "aoti_cy", f"strict refusal names not all of "
                              f"{folded}: {_one_line(e)}")
        try:
            model.load_weights(eager.state_dict(), strict=strict)
        except Exception as e:  # noqa: BLE001
            self.fail("load_weights", "aoti_cy", "own state_dict: " + _one_line(e),
                      traceback.format_exc())
            return
        self.parity(real, model, theirs, eager, calls[:2], "load_weights", seed_shift=20)
        kept = {k: v.clone() for k, v in eager.state_dict().items() if k in folded}
        state = perturbed_state_dict(eager)
        with torch.no_grad():   # what cannot change stays as compiled
            for k, v in kept.items():
                eager.get_parameter(k).copy_(v)
        try:
            model.load_weights(state, strict=strict)
        except Exception as e:  # noqa: BLE001
            self.fail("load_weights", "aoti_cy", "perturbed: " + _one_line(e),
                      traceback.format_exc())
            return
        if theirs is not None:   # torch's loader given the same constants, for reference
            try:
                everything = dict(dict(eager.named_buffers()), **state)
                fqns = theirs.get_constant_fqns()
                theirs.load_constants({k: everything[k] for k in fqns if k in everything},
                                      check_full_update=False)
            except Exception as e:  # noqa: BLE001
                self.result["notes_torch_load_constants"] = _one_line(e)
                theirs = None
        self.parity(real, model, theirs, eager, calls, "load_weights", seed_shift=40)
        self.result["compiled_in"] = folded

    # 4. aoti_cy.Model

    def single(self, real, path, eager, calls):
        import aoti_cy
        check = "model_api"
        try:
            with aoti_cy.Model(path) as single:
                for shape in calls[:2]:
                    args, kwargs = real.call(**dict(shape, seed=shape["seed"] + 60))
                    with torch.no_grad():
                        want = tensor_leaves(eager(*args, **kwargs))
                    compare(single.run(flat_tensors(args, kwargs)), want, self.arch.tol,
                            f"Model.run {shape}")
                folded = compiled_in(single, eager)
                kept = {k: v.clone() for k, v in eager.state_dict().items() if k in folded}
                state = perturbed_state_dict(eager, seed=9)
                with torch.no_grad():
                    for k, v in kept.items():
                        eager.get_parameter(k).copy_(v)
                everything = dict(dict(eager.named_buffers()), **state)
                fqns = {c.original_fqn for c in single.constants}
                mapping = {k: v for k, v in everything.items() if k in fqns}
                lifted = sorted(fqns - set(mapping))
                if lifted:
                    # Lifted tensor constants are in no state_dict() nor
                    # named_buffers(), and Model cannot read its own: a full
                    # update needs them from a container of the same package.
                    self.result["model_api_note"] = (
                        f"update_constants_map needs {len(lifted)} constants no module "
                        f"gives ({', '.join(lifted[:3])}...): taken from "
                        f"ModelContainer.extract_constants_map()")
                    with aoti_cy.load(path) as probe:
                        current = probe.extract_constants_map()
                    mapping.update({k: current[k] for k in lifted if k in current})
                single.update_constants_map(mapping)
                args, kwargs = real.call(seed=70)
                with torch.no_grad():
                    want = tensor_leaves(eager(*args, **kwargs))
                got = single.run(flat_tensors(args, kwargs))
                try:
                    compare(got, want, self.arch.tol, "Model.run after update_constants_map")
                except Mismatch as e:
                    # torch's loader given the same constants: the same numbers
                    # mean the compiled model ignores a constant (torch's).
                    theirs = torch._inductor.aoti_load_package(path)
                    theirs.load_constants(mapping, check_full_update=False)
                    compare(got, tensor_leaves(theirs(*args, **kwargs)), 1e-5,
                            "Model.run vs torch's loader after the same update")
                    self.fail(check, "torch", f"{e} (torch's loader given the same "
                              f"constants gives the same numbers)")
            self.ok(check)
        except Exception as e:  # noqa: BLE001
            if isinstance(e, aoti_cy.PackageError) and "proxy executor" in str(e):
                # Documented: the single-instance entry point takes no proxy executor.
                self.ok(check, "n/a (fallback ops)")
                self.result["model_api_note"] = _one_line(e)
            else:
                self.fail(check, "aoti_cy", _one_line(e), traceback.format_exc())


_FAILED = object()


def unused_parameters(real, eager, names):
    """Which of ``names`` the module's forward never reads (no gradient)."""
    args, kwargs = real.call()
    eager.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = tensor_leaves(eager(*args, **kwargs))
        sum(o.float().sum() for o in out if o.is_floating_point()).backward()
    unused = [n for n in names if eager.get_parameter(n).grad is None]
    eager.zero_grad(set_to_none=True)
    return unused


def compiled_in(model, eager):
    """Floating parameters of ``eager`` that are no constant of the package,
    neither by name nor as a tied alias of one (same memory)."""
    fqns = {c.original_fqn for c in model.constants}
    kept = {p.data_ptr() for k, p in eager.named_parameters(remove_duplicate=False)
            if k in fqns}
    return sorted(k for k, p in eager.named_parameters(remove_duplicate=False)
                  if k not in fqns and p.data_ptr() not in kept)


def _raised_in(exc, function):
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function:
            return True
        tb = tb.tb_next
    return False


def _one_line(e):
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    if text.startswith("Constraints violated") and len(lines) > 1:
        text += " " + lines[1]   # the guard that failed
    return f"{type(e).__name__}: {text}"[:400]


# ---- driver -------------------------------------------------------------------------


def run_one(name, out_path):
    torch.manual_seed(0)
    result = Sweep(architectures()[name]).run()
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1, default=str)


def run_isolated(name, timeout):
    """One architecture in a fresh process: a crash or hang is recorded."""
    out = f"/tmp/real_model_sweep.{os.getpid()}.{name}.json"
    start = time.time()
    try:
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--out", out],
                              capture_output=True, text=True, timeout=timeout)
        rc, tail = proc.returncode, (proc.stdout + proc.stderr)[-3000:]
    except subprocess.TimeoutExpired:
        rc, tail = "timeout", ""
    if rc == 0 and os.path.exists(out):
        with open(out) as f:
            result = json.load(f)
        os.unlink(out)
    else:
        result = {"name": name, "export": None, "checks": {"process": f"FAIL(crash rc={rc})"},
                  "failures": [{"check": "process", "kind": "aoti_cy?",
                                "message": f"process ended with {rc}", "traceback": tail}]}
    result["wall_s"] = round(time.time() - start, 1)
    return result


COLUMNS = [("parity", "aoti_cy parity"), ("torch_parity", "torch loader parity"),
           ("load_weights", "load_weights"), ("batch1", "dynamic batch 1"),
           ("model_api", "aoti_cy.Model"), ("torch_api", "aoti_cy.aoti_load_package")]


def markdown(results):
    lines = ["| architecture | export | " + " | ".join(c for _, c in COLUMNS) + " | notes |",
             "|" + "---|" * (len(COLUMNS) + 3)]
    for r in results:
        exp = r.get("export")
        if exp is None:
            export = "—"
        elif exp["ok"]:
            export = f"ok ({exp['dynamic']}{', strict' if exp['strict'] else ''})"
        else:
            export = "FAIL"
        cells = [r["checks"].get(k, "—") for k, _ in COLUMNS]
        if exp and exp.get("ok") and exp["dynamic"] == "static" and cells[3] == "—":
            cells[3] = "n/a (static)"
        notes = [r.get("features", "")]
        for a in (exp or {}).get("attempts", []):
            notes.append(f"{a['dynamic']}{' strict' if a['strict'] else ''} {a['stage']} "
                         f"failed: {a['reason']}")
        seen = {}
        for f in r["failures"]:   # the first of each check and kind, and how many more
            seen.setdefault((f["check"], f["kind"]), []).append(f["message"])
        for (check, kind), messages in seen.items():
            more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
            notes.append(f"{check} [{kind}]: {messages[0]}{more}")
        for key in ("model_api_note", "notes_torch_load_constants"):
            if r.get(key):
                notes.append(f"{key.split('_note')[0]}: {r[key]}")
        notes = "; ".join(re.sub(r"/\S*/([^/\s]+\.pt2)", r"\1", n).replace("|", "\\|")
                          .replace("\n", " ") for n in notes if n)
        name = f"{r['name']} (`{r.get('class', '?')}`)"
        lines.append(f"| {name} | {export} | " + " | ".join(cells) + f" | {notes} |")
    return "\n".join(lines) + "\n"


TABLE_START, TABLE_END = "<!-- sweep table -->\n", "<!-- end of sweep table -->\n"


def write_table(path, table):
    """The table between the markers of ``path`` (the whole file if it has none)."""
    text = open(path).read() if os.path.exists(path) else ""
    if TABLE_START in text and TABLE_END in text:
        head, _, rest = text.partition(TABLE_START)
        _, _, tail = rest.partition(TABLE_END)
        text = head + TABLE_START + table + TABLE_END + tail
    else:
        text = TABLE_START + table + TABLE_END
    with open(path, "w") as f:
        f.write(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="architectures (default: all)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--json", default="real_model_sweep.json")
    parser.add_argument("--markdown")
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--list", action="store_true")
    opts = parser.parse_args()
    if opts.one:
        return run_one(opts.one, opts.out)
    names = opts.names or list(architectures())
    if opts.list:
        return print("\n".join(names))
    previous = {}
    if os.path.exists(opts.json):
        with open(opts.json) as f:
            previous = {r["name"]: r for r in json.load(f)}
    for name in names:
        result = run_isolated(name, opts.timeout)
        previous[name] = result
        print(f"{name}: export={result.get('export', {}) and result['export'].get('dynamic')} "
              f"{result['checks']} ({result['wall_s']} s)", flush=True)
        for f in result["failures"]:
            print(f"   {f['check']} [{f['kind']}] {f['message']}", flush=True)
        ordered = [previous[n] for n in architectures() if n in previous]
        with open(opts.json, "w") as f:
            json.dump(ordered, f, indent=1, default=str)
        if opts.markdown:
            write_table(opts.markdown, markdown(ordered))


if __name__ == "__main__":
    main()

"""Models whose inputs share size symbols, for the shape-contract tests:
toy relations (tied dims, derived dims) and `transformers` architectures
exported with dynamic batch and sequence, each compiled once into the cache
of aoti_cy.testing."""

import torch
from torch.export import Dim

from aoti_cy.testing import compile_package


class TiedPair(torch.nn.Module):
    """``a`` and ``b`` of one shape ``[batch, seq]``."""

    def forward(self, a, b):
        return a * 2 + b


class DerivedDims(torch.nn.Module):
    """``x [batch, 8*k]``, ``y [batch, k, 8]``, ``z [batch, k + 1]``."""

    def forward(self, x, y, z):
        return x.reshape(x.shape[0], -1, 8) + y, z[:, 1:] * 2


class OnlyDerived(torch.nn.Module):
    """``x [8*k]``: a symbol that no input holds plainly."""

    def forward(self, x):
        return x.reshape(-1, 8).sum(dim=1)


def tied_pair(**inductor_configs):
    batch, seq = Dim("batch", min=1, max=64), Dim("seq", min=1, max=512)
    shapes = {"a": {0: batch, 1: seq}, "b": {0: batch, 1: seq}}
    return compile_package(TiedPair, (torch.randn(2, 9), torch.randn(2, 9)),
                           dynamic_shapes=shapes, inductor_configs=inductor_configs or None)


def derived_dims():
    batch, k = Dim("batch", min=1, max=64), Dim("k", min=1, max=32)
    shapes = {"x": {0: batch, 1: 8 * k}, "y": {0: batch, 1: k}, "z": {0: batch, 1: k + 1}}
    return compile_package(DerivedDims, (torch.randn(2, 24), torch.randn(2, 3, 8),
                                         torch.randn(2, 4)), dynamic_shapes=shapes)


def only_derived():
    k = Dim("k", min=1, max=32)
    return compile_package(OnlyDerived, (torch.randn(24),), dynamic_shapes={"x": {0: 8 * k}})


class Relations(torch.nn.Module):
    """One output per input, each reading every element: the contract comes
    from the export's dynamic shapes alone (``structure`` only keys the
    cache)."""

    def __init__(self, structure):
        super().__init__()
        self.structure = structure

    def forward(self, *inputs):
        return tuple(x * (i + 1.0) + 1.0 for i, x in enumerate(inputs))


def relations(structure):
    """A package of :class:`Relations` for ``structure``: per input, per dim,
    ``("static", n)`` or ``("sym", name, multiplier, offset)`` (the dim is
    ``multiplier * name + offset``), exported with those dims."""
    dims = {}
    for spec in structure:
        for entry in spec:
            if entry[0] == "sym":
                dims.setdefault(entry[1], Dim(entry[1], min=1, max=40))
    args, shapes = [], []
    for spec in structure:
        sizes, dynamic = [], {}
        for d, entry in enumerate(spec):
            if entry[0] == "static":
                sizes.append(entry[1])
                continue
            _, name, multiplier, offset = entry
            sizes.append(multiplier * 3 + offset)
            dim = dims[name]
            if multiplier != 1:
                dim = multiplier * dim
            if offset:
                dim = dim + offset
            dynamic[d] = dim
        args.append(torch.randn(*sizes))
        shapes.append(dynamic)
    return compile_package(Relations, tuple(args), init_args=(structure,),
                           dynamic_shapes=(tuple(shapes),))


def sizes_for(structure, values, static_shift=None):
    """The input shapes of ``structure`` with symbol values ``values``."""
    shapes = []
    for spec in structure:
        shapes.append(tuple(entry[1] if entry[0] == "static" else
                            entry[2] * values[entry[1]] + entry[3] for entry in spec))
    return shapes


# ---- transformers -------------------------------------------------------------

def _transformers():
    import pytest
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    return transformers


def _ids(generator, batch, seq, vocab=99):
    return torch.randint(3, vocab, (batch, seq), generator=generator)


def _mask(batch, seq):
    mask = torch.ones(batch, seq, dtype=torch.long)
    if batch > 1 and seq > 2:
        mask[-1, -2:] = 0
    return mask


class TextModel:
    """A `transformers` model exported with dynamic batch and sequence on
    every text input; ``make(generator, **sizes)`` -> kwargs."""

    def __init__(self, model_cls, config, make, dynamic_shapes, output):
        self.model_cls, self.config, self.make = model_cls, config, make
        self.dynamic_shapes, self.output = dynamic_shapes, output

    def call(self, seed=1, **sizes):
        return self.make(torch.Generator().manual_seed(seed), **sizes)

    def package(self, device="cpu"):
        kwargs = {name: value.to(device) for name, value in self.call().items()}
        return compile_package(self.model_cls, (), kwargs=kwargs, device=device,
                               init_args=(self.config,), dynamic_shapes=self.dynamic_shapes)

    def eager(self, device="cpu"):
        from aoti_cy.testing import make_model
        return make_model(self.model_cls, (self.config,), device)


def gpt2_with_mask():
    t = _transformers()
    # Eager attention: on CUDA, SDPA pads its mask to a multiple of 8, which
    # constrains a dynamic sequence length at export (torch 2.11).
    config = t.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=99, n_positions=64,
                          use_cache=False, bos_token_id=1, eos_token_id=2,
                          attn_implementation="eager")
    batch, seq = Dim("batch", min=1, max=8), Dim("seq", min=1, max=32)

    def make(g, batch=2, seq=9):
        return {"input_ids": _ids(g, batch, seq), "attention_mask": _mask(batch, seq)}
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    return TextModel(t.GPT2LMHeadModel, config, make, shapes, lambda out: [out.logits])


def bert_with_token_types():
    t = _transformers()
    config = t.BertConfig(vocab_size=99, hidden_size=24, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=40,
                          max_position_embeddings=64)
    batch, seq = Dim("batch", min=1, max=8), Dim("seq", min=1, max=32)

    def make(g, batch=2, seq=9):
        return {"input_ids": _ids(g, batch, seq), "attention_mask": _mask(batch, seq),
                "token_type_ids": torch.zeros(batch, seq, dtype=torch.long)}
    shapes = {name: {0: batch, 1: seq}
              for name in ("input_ids", "attention_mask", "token_type_ids")}
    return TextModel(t.BertModel, config, make, shapes,
                     lambda out: [out.last_hidden_state, out.pooler_output])


def bart_encoder_decoder():
    t = _transformers()
    config = t.BartConfig(
        vocab_size=99, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37,
        decoder_ffn_dim=37, max_position_embeddings=64, use_cache=False,
        decoder_start_token_id=2, forced_eos_token_id=None, pad_token_id=0,
        bos_token_id=1, eos_token_id=2)
    batch = Dim("batch", min=1, max=8)
    seq, dec = Dim("seq", min=1, max=32), Dim("dec_seq", min=1, max=32)

    def make(g, batch=2, seq=9, dec=5):
        return {"input_ids": _ids(g, batch, seq), "attention_mask": _mask(batch, seq),
                "decoder_input_ids": _ids(g, batch, dec)}
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq},
              "decoder_input_ids": {0: batch, 1: dec}}
    return TextModel(t.BartForConditionalGeneration, config, make, shapes,
                     lambda out: [out.logits])

"""Attention rows without giving up the fast attention kernel, and head masking.

    with capture.attention(model, rows="answer", tokenizer=processor.tokenizer) as att:
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    att.rows                       # float32 [batch, layers, heads, keys]: the row that predicts the
                                   # answer's first content token (first_content_index), per sample

    with capture.mask_heads(model, [(3, 7), (5, 0)], mode="uniform"):
        out = model.generate(**inputs, max_new_tokens=8)

    with capture.head_means(model) as ref:          # mean ablation: first the heads' mean outputs
        model(**reference_inputs)                   # over a reference set (one or more calls)
    with capture.mask_heads(model, heads, mode="mean", means=ref.means):
        out = model.generate(**inputs, max_new_tokens=8)

How it works. Each context registers one attention function and its mask function under a key
of its own in transformers' registries (``transformers.AttentionInterface`` and
``transformers.masking_utils.AttentionMaskInterface``), switches the *language model only* to
that key with ``set_attn_implementation`` (the CLIP vision tower keeps its kernel), and on exit,
exception or not, switches back and removes the key. No forward method is patched.

The registered function first calls the model's own kernel (sdpa; eager if the model was in
eager; any other kernel is replaced by sdpa), so the model's output is the kernel's output. For
capture it then recomputes, in float32, only the query rows asked for:
``softmax(q_row K^T * scale + mask_row)``, which keeps ``O(heads * keys)`` per layer and step
(transiently also a float32 copy of that layer's keys, the size of its cache entry); the full
``[queries, keys]`` matrix is never built. Grouped-query attention is handled by grouping query
heads over their key/value head (no ``repeat_kv`` copy). Head masking with ``"uniform"`` builds the
``[queries, keys]`` visibility weights of the masked layers in the prefill (like sdpa's own mask).

Contexts nest (``with attention(...), mask_heads(...):``, in either order): an inner context
builds its plan from the outer one's and adds to it; on exit the outer plan is active again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

ROW_CHOICES = ("answer", "first_generated", "prompt_end", "generated")


# ---------------------------------------------------------------------------------------------
# The analysed row: one rule for every notebook


def is_whitespace_token(token_id: int, tokenizer: Any) -> bool:
    """Whether ``token_id`` decodes to whitespace only (SentencePiece's lone ``"▁"``, GPT-2's ``"Ġ"``, ``"\\n"``).

    Special tokens (``</s>``, ``<|im_end|>``, padding) are not whitespace: an answer that ends at once is
    analysed at the row that predicts its end."""
    return tokenizer.decode([int(token_id)], skip_special_tokens=False).strip() == ""


def first_content_index(token_ids: Iterable[int], tokenizer: Any) -> int:
    """Index of the answer's first content token in the generated ``token_ids``: the first token that does not
    decode to whitespace only (:func:`is_whitespace_token`). ``len(token_ids)`` when every token is whitespace.

    THE ANALYSED ROW (``rows="answer"``) is the row that predicts this token: generation step ``t`` for
    token ``t`` (step 0 = the last prompt position, step ``t >= 1`` = the row of generated token ``t - 1``).
    With a tokenizer that writes "3" as one token, ``t = 0`` and the row is the last prompt position; with a
    Llama tokenizer that writes ``"▁", "3"``, ``t = 1`` and the row is the first generated token's (the
    row the paper's released code records, ``rows="first_generated"``).
    """
    ids = [int(t) for t in token_ids]
    for i, t in enumerate(ids):
        if not is_whitespace_token(t, tokenizer):
            return i
    return len(ids)
MASK_MODES = ("uniform", "zero", "mean")
BASE_KERNELS = ("sdpa", "eager")


class CaptureError(RuntimeError):
    """Raised when the captured rows cannot be what was asked for (wrong call pattern)."""


# ---------------------------------------------------------------------------------------------
# Masks: what each query row may see


def _is_allowed(mask: torch.Tensor) -> torch.Tensor:
    """Boolean ``[B|1, 1, Q, K]`` from a bool mask (True = attend) or an additive float mask."""
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2


def _last_row_bias(mask: torch.Tensor | None, keys: int) -> torch.Tensor | None:
    """Additive float32 bias ``[B|1, 1, 1, keys]`` for the last query row (``None``: it sees every key).

    sdpa's mask function returns ``None`` for a causal batch without padding; the last query row
    then sees all keys (causal masks are aligned bottom-right: the last query is the newest token).
    """
    if mask is None:
        return None
    row = mask[:, :, -1:, :keys]
    if row.dtype == torch.bool:
        return torch.zeros(row.shape, dtype=torch.float32, device=row.device).masked_fill(~row, float("-inf"))
    return row.float()


def _allowed_all(mask: torch.Tensor | None, queries: int, keys: int, device: torch.device) -> torch.Tensor:
    """Boolean ``[B|1, 1, queries, keys]``: which keys each query may see (causal bottom-right if ``None``)."""
    if mask is not None:
        return _is_allowed(mask[:, :, :, :keys])
    q = torch.arange(queries, device=device)[:, None] + (keys - queries)
    return (torch.arange(keys, device=device)[None, :] <= q)[None, None]


def last_row_probabilities(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                           scaling: float) -> torch.Tensor:
    """Float32 attention probabilities of the last query row, ``[batch, heads, keys]``.

    ``query`` is ``[B, H, Q, D]``, ``key`` ``[B, KV, K, D]`` (before ``repeat_kv``); head ``h``
    uses key/value head ``h // (H // KV)``, as in transformers. ``mask`` is the kernel's mask
    (bool, additive float, or ``None``).
    """
    b, h, _, d = query.shape
    kv, keys = key.shape[1], key.shape[2]
    q = query[:, :, -1, :].float().reshape(b, kv, h // kv, d)
    scores = torch.matmul(q, key.float().transpose(-1, -2)).reshape(b, h, keys) * scaling
    bias = _last_row_bias(mask, keys)
    if bias is not None:
        scores = scores + bias[:, :, 0, :]
    return torch.softmax(scores, dim=-1)


# ---------------------------------------------------------------------------------------------
# The recorder of one attention() context


class _Recorder:
    """Keeps the last query row of the forward calls that ``rows`` asks for.

    Call ``s`` of a layer is step ``s``: 0 is the prefill (its last row is the last prompt
    position), 1 the first decoding step (its row is the first generated token's), and so on.
    Every call after the first must add exactly one key (one generated token).
    """

    def __init__(self, rows: str, n_layers: int, tokenizer: Any = None):
        self.rows = rows
        self.n_layers = n_layers
        self.tokenizer = tokenizer
        self.batch: int | None = None
        self.fed: list[torch.Tensor] = []
        self.calls = [0] * n_layers
        self.last_keys: list[int | None] = [None] * n_layers
        self.steps: list[dict[int, torch.Tensor]] = []

    def wants(self, step: int) -> bool:
        return self.rows in ("generated", "answer") or step == {"prompt_end": 0, "first_generated": 1}[self.rows]

    def observe(self, layer: int, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                scaling: float, uniform: torch.Tensor | None) -> None:
        keys = key.shape[2]
        step = self.calls[layer]
        previous = self.last_keys[layer]
        if step > 0 and keys != previous + 1:
            raise CaptureError(
                f"attention(rows={self.rows!r}): layer {layer} saw {keys} keys after {previous}. One context "
                "records one model(...) or model.generate(...) call with a dynamic cache (the default): open a "
                "new `with capture.attention(...)` for each batch.")
        self.calls[layer] += 1
        self.last_keys[layer] = keys
        if step == 0 and mask is not None and not bool(_is_allowed(mask[:, :, -1:, keys - 1:keys]).all()):
            raise CaptureError(
                f"attention(rows={self.rows!r}): the last position of a sample in the batch is padding (a "
                "right-padded batch); the recorded row must be a real token's. Pad on the left: "
                "processor.tokenizer.padding_side = 'left' (helpers.models.load sets it).")
        if not self.wants(step):
            return
        row = last_row_probabilities(query, key, mask, scaling)
        if uniform is not None and uniform.numel():
            seen = _allowed_all(mask, query.shape[2], keys, query.device)[:, :, -1, :].float()  # [B|1, 1, K]
            flat = (seen / seen.sum(-1, keepdim=True).clamp_min(1)).expand(row.shape[0], 1, keys)
            row = row.index_copy(1, uniform.to(row.device), flat.expand(-1, uniform.numel(), -1).contiguous())
        while len(self.steps) <= step:
            self.steps.append({})
        self.steps[step][layer] = row.detach().to("cpu")

    def result(self) -> torch.Tensor:
        need = {"prompt_end": "a model(...) or model.generate(...) call",
                "first_generated": "model.generate(..., max_new_tokens=2 or more) (the first decoding step is the "
                                   "forward call after the prefill; with max_new_tokens=1 there is none, and if every "
                                   "sequence ended at its first token, add min_new_tokens=2). For a single forward "
                                   "use rows='prompt_end'",
                "answer": "model.generate(...) (or a model(...) call)",
                "generated": "a model(...) or model.generate(...) call"}[self.rows]
        first = {"prompt_end": 0, "first_generated": 1, "generated": 0, "answer": 0}[self.rows]
        if len(self.steps) <= first or len(self.steps[first]) < self.n_layers:
            raise CaptureError(f"attention(rows={self.rows!r}) recorded nothing: run {need} inside the context.")

        def stack(step: dict[int, torch.Tensor]) -> torch.Tensor:
            return torch.stack([step[layer] for layer in range(self.n_layers)], dim=1)

        if self.rows not in ("generated", "answer"):
            return stack(self.steps[first])
        stacked = [stack(s) for s in self.steps if len(s) == self.n_layers]
        width = stacked[-1].shape[-1]
        padded = [torch.nn.functional.pad(s, (0, width - s.shape[-1])) for s in stacked]
        if self.rows == "generated":
            return torch.stack(padded, dim=1)
        steps = self.answer_steps(len(stacked), stacked[0].shape[0])
        width = stacked[int(steps.max())].shape[-1]
        return torch.stack([padded[int(t)][b, ..., :width] for b, t in enumerate(steps)])

    def answer_steps(self, n_steps: int, batch: int) -> torch.Tensor:
        """Per sample, the step whose row predicts the answer's first content token (:func:`first_content_index`).

        Token ``i`` is known once it is fed back (step ``i + 1``); the last generated token never is, so
        when every fed token is whitespace the last recorded step is taken."""
        fed = torch.cat(self.fed, dim=1) if self.fed else torch.zeros(0, 0, dtype=torch.long)
        out = []
        for b in range(batch):
            ids = fed[b, : n_steps - 1].tolist() if fed.numel() else []
            out.append(min(first_content_index(ids, self.tokenizer), n_steps - 1))
        return torch.tensor(out, dtype=torch.long)

    def observe_input(self, ids: torch.Tensor) -> None:
        """The token ids fed to the language model: after the prefill, one generated token per sample and step."""
        if ids.dim() != 2:
            return
        if self.batch is None:
            self.batch = ids.shape[0]  # the prefill
        elif ids.shape[1] == 1:
            self.fed.append(ids.detach().to("cpu").long())


class _MeanCollector:
    """Sums each layer's per-head attention outputs ``[B, Q, H, D]`` over the real query positions."""

    def __init__(self, n_layers: int, positions: str):
        self.positions = positions
        self.sums: dict[int, torch.Tensor] = {}
        self.counts: dict[int, int] = {}
        self.n_layers = n_layers

    def observe(self, layer: int, out: torch.Tensor, mask: torch.Tensor | None, keys: int) -> None:
        queries = out.shape[1]
        real = _allowed_all(mask, queries, keys, out.device).any(-1)[:, 0]  # [B|1, Q]: padding queries see nothing
        real = real.expand(out.shape[0], queries)
        if self.positions == "last":
            real = real & (torch.arange(queries, device=out.device) == queries - 1)[None]
        w = real.to(torch.float64)
        total = torch.einsum("bq,bqhd->hd", w, out.detach().to(torch.float64)).cpu()
        self.sums[layer] = self.sums.get(layer, 0) + total
        self.counts[layer] = self.counts.get(layer, 0) + int(real.sum())

    def result(self) -> torch.Tensor:
        if len(self.sums) < self.n_layers or not all(self.counts.values()):
            raise CaptureError("head_means recorded nothing: run model(...) on the reference inputs inside the context")
        return torch.stack([self.sums[layer] / self.counts[layer] for layer in range(self.n_layers)]).float()


# ---------------------------------------------------------------------------------------------
# The plan: one registered attention function


@dataclass(frozen=True)
class _Plan:
    """What the registered attention function does: the base kernel, then masks, then capture.

    ``masks`` maps a layer to ``{head: mode}``; ``means`` a layer to the ``[heads, head_dim]`` outputs that
    ``"mean"``-masked heads emit; ``collectors`` accumulate head outputs (:class:`head_means`).
    """

    base: str
    masks: dict[int, dict[int, str]] = field(default_factory=dict)
    recorders: tuple[_Recorder, ...] = ()
    means: dict[int, torch.Tensor] = field(default_factory=dict)
    collectors: tuple[_MeanCollector, ...] = ()

    def __call__(self, module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                 **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
        kernel = _eager_forward(module) if self.base == "eager" else ALL_ATTENTION_FUNCTIONS[self.base]
        out, weights = kernel(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
        layer = module.layer_idx
        uniform = None
        if heads := self.masks.get(layer):  # layers without masked heads pay nothing here
            uniform = _heads_with(heads, "uniform", query.device)
            zero = _heads_with(heads, "zero", query.device)
            if uniform.numel():
                out = _uniform_heads(out, value, attention_mask, uniform)
            if zero.numel():
                out = out.index_fill(2, zero, 0.0)
            mean = _heads_with(heads, "mean", query.device)
            if mean.numel():
                fill = self.means[layer].to(out.device, out.dtype)[mean]  # [n, D]
                out = out.index_copy(2, mean, fill[None, None].expand(out.shape[0], out.shape[1], -1, -1).contiguous())
        for collector in self.collectors:
            collector.observe(layer, out, attention_mask, key.shape[2])
        for recorder in self.recorders:
            recorder.observe(layer, query, key, attention_mask, scaling, uniform)
        return out, weights


def _eager_forward(module: Any) -> Any:
    """The eager attention function of ``module``'s modeling file (the fallback of ``get_interface``)."""
    import sys

    return sys.modules[type(module).__module__].eager_attention_forward


def _heads_with(heads: dict[int, str], mode: str, device: torch.device) -> torch.Tensor:
    return torch.tensor(sorted(h for h, m in heads.items() if m == mode), dtype=torch.long, device=device)


def _uniform_heads(out: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                   heads: torch.Tensor) -> torch.Tensor:
    """Replace ``heads`` of ``out`` ``[B, Q, H, D]`` by the mean of the values each query may see.

    ``value`` is ``[B, KV, K, D]``; a query that may see no key (a padding query) gets zeros.
    """
    queries, keys, n_heads = out.shape[1], value.shape[2], out.shape[2]
    seen = _allowed_all(mask, queries, keys, out.device).float()  # [B|1, 1, Q, K]
    weights = seen / seen.sum(-1, keepdim=True).clamp_min(1)
    groups = n_heads // value.shape[1]
    v = value[:, heads // groups].float()  # [B, n, K, D]
    mixed = torch.matmul(weights, v)  # [B, n, Q, D]
    return out.index_copy(2, heads, mixed.transpose(1, 2).to(out.dtype))


# ---------------------------------------------------------------------------------------------
# Switching the language model to a plan


def language_model(model: Any) -> Any:
    """The decoder-only language model inside a LLaVA-family model (``model.model.language_model``)."""
    inner = getattr(model, "model", model)
    lm = getattr(inner, "language_model", None)
    if lm is None:
        raise TypeError(f"{type(model).__name__} has no .model.language_model: pass a LLaVA-family model")
    return lm


class _PlanContext:
    """Registers ``plan`` under a fresh key, switches the language model to it, undoes both on exit."""

    def __init__(self, model: Any):
        self.model = model
        self.lm = language_model(model)
        self.key = f"visual_heads_{uuid.uuid4().hex[:12]}"
        self.previous: str | None = None

    def extend(self, current: _Plan) -> _Plan:
        raise NotImplementedError

    def __enter__(self) -> _PlanContext:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        self.previous = self.lm.config._attn_implementation
        current = ALL_ATTENTION_FUNCTIONS._global_mapping.get(self.previous)
        if not isinstance(current, _Plan):
            current = _Plan(base=self.previous if self.previous in BASE_KERNELS else "sdpa")
        plan = self.extend(current)
        AttentionInterface.register(self.key, plan)
        AttentionMaskInterface.register(self.key, ALL_MASK_ATTENTION_FUNCTIONS[plan.base])
        try:
            self.lm.set_attn_implementation(self.key)
        except BaseException:
            self._unregister()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        previous = self.previous
        registered = previous in ("eager", *ALL_ATTENTION_FUNCTIONS.valid_keys())
        try:
            self.lm.set_attn_implementation(previous if registered else "sdpa")
        finally:
            self._unregister()

    def _unregister(self) -> None:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface._global_mapping.pop(self.key, None)
        AttentionMaskInterface._global_mapping.pop(self.key, None)


class attention(_PlanContext):  # noqa: N801 (a context manager used like a function)
    """Record every decoder layer's and head's attention row of one query position.

    Args:
        model: a LLaVA-family model (LLaVA, LLaVA-NeXT, ViP-LLaVA), any dtype, 4-bit included.
        rows: which query row to keep.

            - ``"answer"`` (default): THE ANALYSED ROW of every notebook, the row that predicts the answer's
              first content token (whitespace-only tokens skipped, :func:`first_content_index`), per sample.
              Needs ``tokenizer`` and a ``model.generate(..., max_new_tokens>=2)`` call (a first token that
              is whitespace is only known once it is fed back); with one-token answers ("3", "A", "yes") it
              is the last prompt position, with a Llama tokenizer's ``"▁", "3"`` the first generated token's
              row. ``.answer_steps`` says which step each sample used.
            - ``"first_generated"``: the first generated token's row at the first decoding step, over the
              prompt plus that token (what the released code of the paper records, whatever that token is:
              on a one-token answer it is the row that predicts the end of the sequence).
            - ``"prompt_end"``: the last prompt position in the prefill, the row that predicts the first
              generated token; works with a single ``model(...)`` call.
            - ``"generated"``: one row per generation step: step 0 = ``"prompt_end"``, step 1 =
              ``"first_generated"``, step ``s`` = the row of generated token ``s - 1``.
        tokenizer: the processor's tokenizer (``processor.tokenizer``), for ``rows="answer"``.

    After the context, ``.rows`` is a float32 CPU tensor:

    - ``"answer"``, ``"first_generated"``, ``"prompt_end"``: ``[batch, layers, heads, keys]``; keys are the
      positions of the padded batch (prompt, plus the generated tokens a row sees); padding keys and keys
      after a sample's own row get 0; each row sums to 1.
    - ``"generated"``: ``[batch, steps, layers, heads, keys]`` with ``keys`` = prompt length +
      steps - 1; step ``s``'s row is zero beyond the ``prompt + s`` keys it could see.

    A head masked with ``mask_heads(..., mode="uniform")`` in the same forward shows the uniform
    row it actually used; a head masked with ``mode="zero"`` or ``"mean"`` shows the probabilities it
    computed (its output, not its attention, is replaced).

    One context records one ``model(...)`` or ``model.generate(...)`` call (dynamic cache, the
    default); a second call raises :class:`CaptureError`: open a context per batch. Batches must
    be left-padded (a right-padded batch, whose last position is padding, raises :class:`CaptureError`).
    """

    def __init__(self, model: Any, rows: str = "answer", tokenizer: Any = None):
        if rows not in ROW_CHOICES:
            raise ValueError(f"attention(rows={rows!r}): rows must be one of {ROW_CHOICES}")
        if rows == "answer" and tokenizer is None:
            raise ValueError("attention(rows='answer') needs tokenizer=processor.tokenizer: the analysed row is the "
                             "one that predicts the answer's first content token, and telling whitespace tokens apart "
                             "takes the tokenizer. rows='first_generated' is the paper's code's row")
        super().__init__(model)
        self._recorder = _Recorder(rows, len(self.lm.layers), tokenizer)
        self._hook = None

    def extend(self, current: _Plan) -> _Plan:
        return replace(current, recorders=(*current.recorders, self._recorder))

    def __enter__(self) -> attention:
        super().__enter__()
        if self._recorder.rows == "answer":
            recorder = self._recorder
            self._hook = self.lm.get_input_embeddings().register_forward_pre_hook(
                lambda module, args: recorder.observe_input(args[0]) if args else None)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        super().__exit__(*exc)

    @property
    def rows(self) -> torch.Tensor:
        """The captured rows (see the class docstring for the shape)."""
        return self._recorder.result()

    @property
    def answer_steps(self) -> torch.Tensor:
        """``rows="answer"``: per sample, the generation step of its row (0 = the last prompt position; ``t`` =
        ``t`` whitespace-only tokens skipped). LongTensor ``[batch]``."""
        if self._recorder.rows != "answer":
            raise ValueError(f"answer_steps is defined for rows='answer', not {self._recorder.rows!r}")
        n = sum(1 for s in self._recorder.steps if len(s) == self._recorder.n_layers)
        if n == 0:
            raise CaptureError("attention(rows='answer') recorded nothing")
        return self._recorder.answer_steps(n, next(iter(self._recorder.steps[0].values())).shape[0])


class mask_heads(_PlanContext):  # noqa: N801 (a context manager used like a function)
    """Ablate ``(layer, head)`` pairs in every forward pass inside the context (prefill and decoding).

    Args:
        model: a LLaVA-family model.
        heads: ``(layer, head)`` pairs (ints); an empty collection changes nothing.
        mode:
            - ``"uniform"`` (default): the head attends uniformly to the keys its query may see,
              i.e. respecting the causal and the padding mask; its output is the mean of those
              values.
            - ``"zero"``: the head's output is removed before the output projection ``o_proj``.
            - ``"mean"``: the head's output is replaced by its mean over a reference set of samples
              (``means``, ``[layers, heads, head_dim]``, from :class:`head_means`): mean ablation, which
              removes what the head says about *this* input but keeps its average contribution.
        means: for ``mode="mean"`` only (required there).

    Difference from the released code of the paper: it sets the chosen heads' pre-softmax scores
    to 0 *after* the causal mask was added, so in the prompt (prefill) pass a masked head also
    attended uniformly to *future* positions, and, in a left-padded batch, to padding. Our
    ``"uniform"`` keeps both masks, so the masked model is still causal; in decoding steps (one
    query that may see every earlier key) the two agree on unpadded samples. ``"zero"`` is not in
    the released code; it removes the head's contribution entirely instead of replacing it by an
    average.

    Combine with capture in either order: ``with mask_heads(m, hs), attention(m) as att: ...``.
    """

    def __init__(self, model: Any, heads: Iterable[tuple[int, int]], mode: str = "uniform",
                 means: torch.Tensor | None = None):
        if mode not in MASK_MODES:
            raise ValueError(f"mask_heads(mode={mode!r}): mode must be one of {MASK_MODES}")
        super().__init__(model)
        self.mode = mode
        self.heads = _validate_heads(heads, len(self.lm.layers), self.lm.config.num_attention_heads)
        self.means: torch.Tensor | None = None
        if mode == "mean" and self.heads:
            if means is None:
                raise ValueError("mask_heads(mode='mean') needs means=: the heads' mean outputs over a reference set, "
                                 "[layers, heads, head_dim] from `with capture.head_means(model) as ref: model(...)` "
                                 "(ref.means), or helpers.extract.reference_means(...)")
            means = torch.as_tensor(means)
            want = (len(self.lm.layers), self.lm.config.num_attention_heads)
            if means.dim() != 3 or tuple(means.shape[:2]) != want:
                raise ValueError(f"mask_heads: means must be [layers, heads, head_dim] = [{want[0]}, {want[1]}, D], "
                                 f"got {tuple(means.shape)}")
            self.means = means

    def extend(self, current: _Plan) -> _Plan:
        masks = {layer: dict(h) for layer, h in current.masks.items()}
        for layer, head in self.heads:
            masks.setdefault(layer, {})[head] = self.mode
        means = dict(current.means)
        if self.means is not None:
            for layer in {layer for layer, _ in self.heads}:
                previous = means.get(layer)
                new = self.means[layer].float()
                if previous is not None:  # an outer mean mask keeps its own heads' vectors
                    keep = torch.tensor([h for h, m in current.masks.get(layer, {}).items() if m == "mean"],
                                        dtype=torch.long)
                    new = new.clone()
                    new[keep] = previous[keep]
                means[layer] = new
        return replace(current, masks=masks, means=means)


class head_means(_PlanContext):  # noqa: N801 (a context manager used like a function)
    """Record every head's mean output over the forward calls inside the context (the reference set of mean ablation).

    ``positions="all"`` (default): the mean over every real (non-padding) query position of every call;
    ``"last"``: over each call's last position only (in a prefill, the row that predicts the answer).
    Afterwards ``.means`` is float32 ``[layers, heads, head_dim]``: each head's attention output before the
    output projection ``o_proj``, what ``mask_heads(..., mode="mean", means=...)`` puts in its place.
    """

    def __init__(self, model: Any, positions: str = "all"):
        if positions not in ("all", "last"):
            raise ValueError(f"head_means(positions={positions!r}): positions must be 'all' or 'last'")
        super().__init__(model)
        self._collector = _MeanCollector(len(self.lm.layers), positions)

    def extend(self, current: _Plan) -> _Plan:
        return replace(current, collectors=(*current.collectors, self._collector))

    def __enter__(self) -> head_means:
        super().__enter__()
        return self

    @property
    def means(self) -> torch.Tensor:
        """``[layers, heads, head_dim]`` float32 (raises :class:`CaptureError` if nothing was run)."""
        return self._collector.result()


def _validate_heads(heads: Iterable[tuple[int, int]], n_layers: int, n_heads: int) -> list[tuple[int, int]]:
    """``heads`` as a sorted list of int pairs; a clear error for a malformed or out-of-range pair."""
    out = set()
    for pair in heads:
        try:
            layer, head = (int(x) for x in pair)
        except (TypeError, ValueError):
            raise ValueError(f"mask_heads: {pair!r} is not a (layer, head) pair of integers") from None
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ValueError(
                f"mask_heads: (layer {layer}, head {head}) is out of range: this model has {n_layers} decoder "
                f"layers (0-{n_layers - 1}) and {n_heads} heads per layer (0-{n_heads - 1})")
        out.add((layer, head))
    return sorted(out)

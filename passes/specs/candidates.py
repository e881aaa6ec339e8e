"""Candidate compression specs: small strings naming one way to compress one weight matrix.

    c = parse_candidate("2:4+w8")
    w_hat = c.apply(weight, hessian)     # fake-compressed float weight, same shape as weight [N, K]
    c.storage_bytes((N, K))              # bytes the compressed weight takes in fxc's formats
    c.supports((N, K))                   # False where apply would refuse the shape; c.problem((N, K)) says why
    c.to_plan("mixed-precision")         # the meta.LayerPlan that asks the rewrites for it
    unfit(c, N, K)                       # why the passes cannot carry c out on a weight [N, K], or None

Grammar: parts joined by "+", at most one structure part and one quantization part.
    dense         keep the weight as it is (fp32)
    w8 w4         weight-only RTN quantization, symmetric, per output channel (fxc.ir.qformat)
    w4g64 w4g128  ... per group of 64 / 128 input columns
    w8a8          int8 weights (per channel) and int8 activations (per token); apply() only models
                  the weight part
    s0.5          unstructured sparsity: that fraction of each row set to zero
    2:4 4:8       N:M sparsity: N weights kept in every M consecutive input columns
    r0.8          low rank keeping 80% of the weight's parameters: rank floor(0.8*N*K/(N+K))
Combos: "2:4+w8", "s0.5+w4g128", "r0.5+w8" (each low-rank factor quantized per channel; group-wise
quantization of low-rank factors is refused).

Shapes: `problem(shape)` names why a weight cannot take a candidate (None if it can), `supports(shape)`
is its boolean: N:M needs M | K, low rank a rank below min(N, K), and every matrix the quantization
part stores (the weight, or both low-rank factors [r, K] and [N, r]) must fit quantize's format
(passes/specs/scheme.py's Scheme.unfit_reason: the group size divides its columns; int4, two columns per
byte, needs an even number). `apply` refuses such shapes with CandidateError; the sensitivity analysis skips
them (score inf) and planners offer a candidate only to the layers it supports. `unfit(candidate, n, k)`
adds what carrying it out with the passes needs: a low-rank split at the rank the low-rank pass rounds to
(`split_rank`) of at least 1, and even int4 factors; `KEEP` is the planners' "leave the weight dense"
option, which always fits.

With a Hessian H [K, K] (2XᵀX/n of the layer's input), apply() minimizes the layer-output error
tr(ΔW H ΔWᵀ) where a method can: sparsity scores are |W|·sqrt(diag H) (Wanda's |W|·||x||), low rank
is the whitened SVD (optimal for that error). Without one it falls back to magnitudes / plain SVD.
Quantization is RTN, or with quantizer="gptq" and a Hessian (weight-only candidates without a
structure part) GPTQ's error-compensated rounding (passes/algorithms/gptq.py's gptq_quantize, act order on, damp 0.01,
as quantize{method=gptq} runs it), so a planner for a GPTQ quantize sees the errors GPTQ will leave.

storage_bytes counts the weight only (no bias): fp32 values 4 bytes, int8 1, int4 half; scales
float32; N:M keeps values plus one uint8 index per kept value (torch.ops.fxc.sparse_nm_linear);
unstructured sparsity is counted as a bitmask (1 bit per weight) plus the kept values (no op stores
it yet; the graph keeps such weights dense). Reads and writes nothing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from fxc.errors import FxcError, OptionError
from fxc.ir import meta, qformat
from fxc.passes.algorithms.gptq import gptq_quantize
from fxc.passes.algorithms.low_rank_math import rank_for_ratio
from fxc.passes.algorithms.prune_scores import as_matrix, nm_mask, unstructured_mask
from fxc.passes.specs.scheme import Scheme

GRAMMAR = "dense, w8, w4, w4g64, w4g128, w8a8, s0.5, 2:4, 4:8, r0.8, and combos like 2:4+w8 or r0.5+w8"
QUANTIZERS = ("rtn", "gptq")  # how apply() rounds a weight-only candidate
_QUANT = re.compile(r"w(\d+)(?:g(\d+))?(?:a(\d+))?")


class CandidateError(FxcError, ValueError):
    """A candidate spec that does not parse, or a weight shape it cannot be applied to."""


@dataclass(frozen=True)
class Candidate:
    text: str
    bits: int | None = None  # None: fp32
    group_size: int | None = None  # None: per output channel
    act_bits: int | None = None
    sparsity: float | None = None  # unstructured fraction zero
    nm: tuple[int, int] | None = None  # N kept of every M
    rank_ratio: float | None = None  # fraction of parameters kept by a low-rank split

    # -- what it is ------------------------------------------------------------------------------------------

    @property
    def pattern(self) -> str | None:
        if self.nm:
            return f"{self.nm[0]}:{self.nm[1]}"
        return "unstructured" if self.sparsity is not None else None

    @property
    def zero_fraction(self) -> float:
        if self.nm:
            return 1.0 - self.nm[0] / self.nm[1]
        return self.sparsity or 0.0

    def rank(self, shape: tuple[int, ...]) -> int:
        n, k = _matrix_shape(shape)
        return max(1, math.floor(self.rank_ratio * n * k / (n + k)))

    def problem(self, shape: tuple[int, ...]) -> str | None:
        """Why a weight of this shape cannot take this candidate, or None if it can."""
        n, k = _matrix_shape(shape)
        if self.nm and k % self.nm[1]:
            return f"{self.text}: the input dimension {k} is not divisible by M={self.nm[1]}"
        stored = [("", n, k)]  # the matrices quantization stores: the weight, or the two low-rank factors
        if self.rank_ratio is not None:
            r = self.rank(shape)
            if r >= min(n, k):
                return f"{self.text}: rank {r} is not below min({n}, {k}); low rank saves nothing"
            stored = [(f"rank-{r} factor [{rows}, {cols}]: ", rows, cols) for rows, cols in ((r, k), (n, r))]
        if self.bits is not None:  # the same rule quantize stores by (passes/specs/scheme.py)
            scheme = Scheme(self.bits, self.group_size, act_bits=self.act_bits)
            for what, rows, cols in stored:
                if reason := scheme.unfit_reason(rows, cols):
                    return f"{self.text}: {what}{reason}"
        return None

    @property
    def gptq_applies(self) -> bool:
        """Whether quantizer="gptq" changes this candidate: weight-only quantization with no structure part."""
        return self.bits is not None and self.act_bits is None and self.rank_ratio is None and self.pattern is None

    def supports(self, shape: tuple[int, ...]) -> bool:
        """Whether `apply` and the storage formats can take a weight of this shape (see `problem`)."""
        return self.problem(shape) is None

    # -- applying it ---------------------------------------------------------------------------------------

    def apply(self, weight: torch.Tensor, hessian: torch.Tensor | None = None, quantizer: str = "rtn") -> torch.Tensor:
        """The fake-compressed float weight (same shape and dtype as `weight`). quantizer="gptq" (with a
        Hessian) quantizes a weight-only candidate as quantize{method=gptq} would (act order, damp 0.01);
        other parts, and every other candidate, are unchanged."""
        reason = self.problem(tuple(weight.shape))
        if reason:
            raise CandidateError(reason)
        if quantizer not in QUANTIZERS:
            raise CandidateError(f"{self.text}: quantizer {quantizer!r} is not one of {', '.join(QUANTIZERS)}")
        w = as_matrix(weight).detach().to(torch.float32)
        if hessian is not None and hessian.shape != (w.shape[1], w.shape[1]):
            raise CandidateError(
                f"{self.text}: Hessian of shape {tuple(hessian.shape)} does not match {w.shape[1]} input columns"
            )
        if quantizer == "gptq" and hessian is not None and self.gptq_applies:
            q = gptq_quantize(w, hessian.to(torch.float32), self.bits, self.group_size, act_order=True, layer=self.text)
            out = qformat.dequantize(q.qweight, q.scale, q.zero_point, q.bits)
        elif self.rank_ratio is not None:
            out = self._low_rank(w, hessian)
        else:
            if self.sparsity is not None or self.nm:
                w = w.masked_fill(self._pruned(w, hessian), 0.0)
            out = self._quantize(w, self.group_size)
        return out.to(weight.dtype).view_as(weight)

    def _pruned(self, w: torch.Tensor, hessian: torch.Tensor | None) -> torch.Tensor:
        scores = w.abs()
        if hessian is not None:
            scores = scores * torch.diagonal(hessian).clamp(min=0).sqrt().to(torch.float32).unsqueeze(0)
        if self.nm:
            return nm_mask(scores, *self.nm)
        return unstructured_mask(scores, self.sparsity, per_row=True)

    def _quantize(self, w: torch.Tensor, group_size: int | None) -> torch.Tensor:
        if self.bits is None:
            return w
        q = qformat.quantize_rtn(w, self.bits, group_size, full_range=qformat.weights_full_range(self.act_bits))
        return qformat.dequantize(q.qweight, q.scale, q.zero_point, q.bits)

    def _low_rank(self, w: torch.Tensor, hessian: torch.Tensor | None) -> torch.Tensor:
        r = self.rank(tuple(w.shape))
        if hessian is None:
            u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
            left, right = u[:, :r] * s[:r], vh[:r]
        else:  # min ||(W - W') L||_F with H = L Lᵀ: truncate the SVD of W L, map back with L^-1
            h = hessian.double()
            h = h + 0.01 * torch.diagonal(h).mean().clamp(min=1e-12) * torch.eye(h.shape[0], dtype=h.dtype)
            lower = torch.linalg.cholesky(h)
            u, s, vh = torch.linalg.svd(w.double() @ lower, full_matrices=False)
            left = u[:, :r] * s[:r]
            right = torch.linalg.solve_triangular(lower, vh[:r], upper=False, left=False)  # Vh_r L^-1
        return self._quantize(left.float(), None) @ self._quantize(right.float(), None)

    # -- what it costs ---------------------------------------------------------------------------------------

    def storage_bytes(self, shape: tuple[int, ...]) -> int:
        """Bytes of the compressed weight (no bias) in fxc's storage formats."""
        n, k = _matrix_shape(shape)
        if self.rank_ratio is not None:
            r = self.rank(shape)
            return self._dense_bytes(n, r, None) + self._dense_bytes(r, k, None)
        if self.nm:
            kept = n * k * self.nm[0] // self.nm[1]
            values = kept * 4 if self.bits is None else math.ceil(kept * self.bits / 8) + n * 4
            return values + kept  # one uint8 index per kept value
        if self.sparsity is not None:
            kept = n * k - int(round(self.sparsity * k)) * n
            values = kept * 4 if self.bits is None else math.ceil(kept * self.bits / 8)
            return values + math.ceil(n * k / 8) + self._scale_bytes(n, k, self.group_size)
        return self._dense_bytes(n, k, self.group_size)

    def _dense_bytes(self, n: int, k: int, group_size: int | None) -> int:
        if self.bits is None:
            return n * k * 4
        return math.ceil(n * k * self.bits / 8) + self._scale_bytes(n, k, group_size)

    def _scale_bytes(self, n: int, k: int, group_size: int | None) -> int:
        if self.bits is None:
            return 0
        return n * (k // group_size if group_size else 1) * 4

    def to_plan(self, source: str = "") -> meta.LayerPlan:
        return meta.LayerPlan(
            bits=self.bits,
            group_size=self.group_size,
            act_bits=self.act_bits,
            sparsity=self.zero_fraction if self.pattern else None,
            pattern=self.pattern,
            rank_ratio=self.rank_ratio,
            source=source,
        )

    def __str__(self) -> str:
        return self.text


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        raise CandidateError(f"candidates apply to weight matrices, got shape {tuple(shape)}")
    return shape[0], math.prod(shape[1:])


def parse_candidate(text: str) -> Candidate:
    """Parse a spec like "w4g128", "2:4+w8" or "r0.5+w8"; CandidateError names the bad part."""
    if not isinstance(text, str) or not text.strip():
        raise CandidateError(f"a candidate is a non-empty string ({GRAMMAR}), got {text!r}")
    fields: dict = {}
    structure = quant = None
    for part in text.strip().split("+"):
        if part == "dense":
            continue
        if m := _QUANT.fullmatch(part):
            if quant:
                raise CandidateError(f"candidate {text!r} quantizes twice ({quant}, {part})")
            quant = part
            fields.update(_quant_fields(text, *m.groups()))
            continue
        if structure:
            raise CandidateError(f"candidate {text!r} has two structure parts ({structure}, {part})")
        structure = part
        fields.update(_structure_fields(text, part))
    if fields.get("rank_ratio") is not None and fields.get("group_size"):
        raise CandidateError(f"candidate {text!r}: group-wise quantization of low-rank factors is not supported")
    return Candidate(text.strip(), **fields)


def _quant_fields(text: str, bits: str, group: str | None, act: str | None) -> dict:
    b = int(bits)
    if b not in qformat.SUPPORTED_BITS:
        raise CandidateError(f"candidate {text!r}: bits must be one of {qformat.SUPPORTED_BITS}, got {b}")
    if group is not None and int(group) <= 0:
        raise CandidateError(f"candidate {text!r}: group size must be positive")
    if act is not None and int(act) != 8:
        raise CandidateError(f"candidate {text!r}: activations quantize to 8 bits only (a8)")
    return {"bits": b, "group_size": int(group) if group else None, "act_bits": int(act) if act else None}


def _structure_fields(text: str, part: str) -> dict:
    if m := re.fullmatch(r"(\d+):(\d+)", part):
        n, mm = int(m.group(1)), int(m.group(2))
        if not 0 < n < mm:
            raise CandidateError(f"candidate {text!r}: N:M sparsity needs 0 < N < M (N kept of every M)")
        return {"nm": (n, mm)}
    if m := re.fullmatch(r"([sr])(\d*\.?\d+)", part):
        value = float(m.group(2))
        if m.group(1) == "s":
            if not 0.0 <= value < 1.0:
                raise CandidateError(f"candidate {text!r}: sparsity must be in [0, 1), got {value}")
            return {"sparsity": value}
        if not 0.0 < value < 1.0:
            raise CandidateError(f"candidate {text!r}: low-rank ratio must be in (0, 1), got {value}")
        return {"rank_ratio": value}
    raise CandidateError(f"candidate {text!r}: cannot read {part!r}; candidates are {GRAMMAR}")


def parse_candidates(texts, owner: str) -> tuple[Candidate, ...]:
    """Parse a tuple of specs for an option, raising OptionError that names the owner."""
    out = []
    for text in texts:
        try:
            out.append(parse_candidate(text))
        except CandidateError as error:
            raise OptionError(f"{owner}: option 'candidates': {error}") from error
    return tuple(out)


# --- what the passes can carry out ----------------------------------------------------------------------

KEEP = Candidate("keep")  # the planners' "leave the weight dense" option


def unfit(candidate: Candidate, n: int, k: int) -> str | None:
    """Why a weight [n, k] cannot take the candidate, or None."""
    if candidate is KEEP:
        return None
    reason = candidate.problem((n, k))
    if reason:
        return reason
    if candidate.rank_ratio is not None:
        r = split_rank(candidate, n, k)
        if r < 1:
            return f"{candidate.text}: keeps less than rank 1 of a {n}x{k} weight"
        if candidate.bits == 4 and (r % 2 or k % 2):
            return f"{candidate.text}: int4 factors need even inputs, got rank {r} and {k} columns"
        return None
    if candidate.bits is not None:
        return Scheme(candidate.bits, candidate.group_size, True, candidate.act_bits).unfit_reason(n, k)
    return None


def split_rank(candidate: Candidate, n: int, k: int) -> int:
    """The rank the low-rank pass splits a [n, k] weight at for the candidate's ratio."""
    return rank_for_ratio(n, k, candidate.rank_ratio)

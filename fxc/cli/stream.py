"""What `fxc generate` prints while tokens come: text decoded incrementally, or token ids, and the timings.

    printer = TextPrinter(tokenizer, prompt_ids)   # or IdPrinter() when the folder keeps no tokenizer
    clock = TokenClock(printer)
    clock.start(); cm.generate(ids, ..., streamer=clock); clock.finish()
    clock.prefill_ms, clock.decode_tokens_per_s, clock.new_tokens

Incremental decoding (TextPrinter): one token alone does not always decode to its own text: a byte-level BPE
token may hold part of a UTF-8 character (decoded as U+FFFD until the rest comes), and a SentencePiece token's
leading space shows only after another token. So each step decodes a short window (a few tokens before the last
text printed, then the new ones) and prints the part of its text beyond the window's already printed prefix, and
nothing while the text ends in U+FFFD; `finish` prints whatever is left. Special tokens (end of sequence) are
skipped. The printed pieces concatenated equal the decoding of all the new tokens whenever the tokenizer decodes
a window as the tail of the whole text (every tokenizer transformers ships does, past its first token).

Timing (TokenClock): prefill is the time from `start` to the first token (the prompt's forward pass and the first
choice); decode speed is (new tokens - 1) over the time from the first token to the last. Reads nothing; writes
stdout (flushed after each piece); keeps no state between runs.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import torch

CONTEXT = 5  # tokens of the prompt (or of what was printed) each window starts with


class TextPrinter:
    """Prints the text of the new tokens as they come (see the module docstring)."""

    def __init__(self, tokenizer: Any, prompt_ids: list[int], out: Any = None) -> None:
        self.tokenizer, self.out = tokenizer, out or sys.stdout
        self.ids = list(prompt_ids)
        self.prefix = max(len(self.ids) - CONTEXT, 0)  # the window's start
        self.read = len(self.ids)  # the end of what was printed
        self.printed: list[str] = []

    def __call__(self, token: int) -> None:
        self.ids.append(token)
        piece = self._piece(final=False)
        if piece:
            self._print(piece)

    def finish(self) -> None:
        piece = self._piece(final=True)
        if piece:
            self._print(piece)

    @property
    def text(self) -> str:
        return "".join(self.printed)

    def _piece(self, final: bool) -> str:
        if self.read == len(self.ids):
            return ""
        done = self._decode(self.ids[self.prefix:self.read])
        now = self._decode(self.ids[self.prefix:])
        if len(now) <= len(done) or (now.endswith("\ufffd") and not final):
            return ""  # no new text yet: a partial character, or a token that decodes to nothing so far
        self.prefix, self.read = self.read, len(self.ids)
        return now[len(done):]

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _print(self, piece: str) -> None:
        self.printed.append(piece)
        self.out.write(piece)
        self.out.flush()


class IdPrinter:
    """Prints each new token id as it comes, separated by spaces (for a folder without a tokenizer)."""

    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout
        self.count = 0

    def __call__(self, token: int) -> None:
        self.out.write(("" if self.count == 0 else " ") + str(token))
        self.out.flush()
        self.count += 1

    def finish(self) -> None:
        pass


class TokenClock:
    """The streamer given to cm.generate: times each new token and hands it to the printer (batch of one; None:
    time only)."""

    def __init__(self, printer: Any = None) -> None:
        self.printer = printer
        self.times: list[float] = []
        self.started = 0.0

    def start(self) -> None:
        self.times, self.started = [], time.perf_counter()

    def __call__(self, tokens: torch.Tensor) -> None:
        self.times.append(time.perf_counter())
        if self.printer is not None:
            self.printer(int(torch.as_tensor(tokens).reshape(-1)[0]))

    def finish(self) -> None:
        if self.printer is not None:
            self.printer.finish()

    @property
    def new_tokens(self) -> int:
        return len(self.times)

    @property
    def prefill_ms(self) -> float:
        return (self.times[0] - self.started) * 1e3 if self.times else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return float("nan")
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])

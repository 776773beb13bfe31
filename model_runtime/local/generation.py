"""The local backend's decode loop: prefill with prefix reuse, then token by token.

Every step checks the stop criteria, so a cancel or a deadline lands within one step; the
first steps of an answer are held to the healed lead (see `model_runtime/healing.py`).

`LocalBackend`, in its order: the tokenizer's helpers (`encode`, `decode`, `_prompt_ids`),
`generate` (`_prefill` in chunks ending at `chunk_ends`, from where `_reuse` starts it: the
kept prompt's cache or a copy from the document's, see `documents.py`; `_run` appends
positions; then `_decode`: `_take` each step's tokens into the rows, `_advance` to the next
pass), the idle work on kept caches (`prefill`: the document's cache, or `_prefill_prompt`
through transformers' forward), `speed` for `wisp bench --speed`, `forget`, `_check_draft`
(a draft checked in one pass, for `_decode`), `continuation_logprobs` and `_fit` for ranking,
then the helpers of the loop (`_forward`, the healing constraints `_held_to_lead` and
`_allowed_ids`, `_keep_prompt`, `_choose` for sampling, `_visible`/`_append`/`_candidate` for
text). Last, outside the class, `chunk_ends` (where a prompt's prefill chunks end) and `_Rows`
(the candidates decoded together).
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch

from model_runtime.backend import (
    Candidate,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    common_prefix_length,
)
from model_runtime.healing import TokenTable, remaining_lead
from model_runtime.local.decoder import Decoder
from model_runtime.local.documents import DOCUMENTS, IDLE_PREFILL_CHUNK, DocumentCaches
from model_runtime.local.kv_cache import KvSlots, crop_to, croppable
from model_runtime.lookahead import DraftIndex, accepted_length
from model_runtime.stopping import (
    DecodeState,
    StopCriterion,
    StopReason,
    cancelled,
    cut_settled,
    deadline,
    eos,
    fim_end,
    first_reason,
    looping_line,
    max_tokens,
    single_line,
    stop_strings,
    suffix_line,
)
from model_runtime.templates import FimTemplate

# Prompts are prefilled in chunks of this many tokens so that a cancel lands between chunks;
# a last piece of up to PREFILL_TAIL tokens joins the chunk before it (`chunk_ends`).
PREFILL_CHUNK = 256
PREFILL_TAIL = 64
# Tokens of the code after an answer that `continuation_logprobs` scores.
CONTINUATION_TOKENS = 24


class LocalBackend:
    """Runs one request at a time with an own decode loop: cancellable at every step.

    It keeps the key/value cache of the last prompt of up to `kv_slots` documents. A new prompt
    reuses the longest token prefix it shares with any of them and only computes the rest: after
    a keystroke at the cursor that is a handful of tokens (prompts put the code before the cursor
    last for that reason; see `templates.py`).
    """

    def __init__(
        self,
        name: str,
        model,
        tokenizer,
        template: FimTemplate,
        device: str,
        kv_slots: int = 4,
        healing: TokenTable | None = None,
        fast: Decoder | None = None,
        context_window: int | None = None,
    ) -> None:
        if model is None and fast is None:
            raise ValueError("a backend needs transformers' model or the lean forward pass")
        self.name = name
        self.model = model  # None for a GGUF file run from its blocks
        self.tokenizer = tokenizer
        self.template = template
        self.device = device
        forward = inspect.signature(model.forward).parameters if model is not None else {}
        self._cache_name = "cache" if "cache" in forward else "past_key_values"
        self.healing = healing
        self.fast = fast
        if context_window is None and model is not None:
            context_window = getattr(model.config, "max_position_embeddings", None)
        self.context_window = context_window
        # A FIM marker in the answer means the model lost its place: end the candidate there.
        markers = (template.prefix_token, template.suffix_token, template.middle_token)
        self._end_ids = self._token_ids((*template.stop_tokens, *markers))
        if tokenizer.eos_token_id is not None:
            self._end_ids.add(int(tokenizer.eos_token_id))
        self._fim_end_ids = self._end_ids - {tokenizer.eos_token_id}
        self.slots = KvSlots(kv_slots)
        self.documents = (
            DocumentCaches(DOCUMENTS, fast, self._run) if fast is not None and kv_slots else None
        )
        self._allowed: dict[bytes, torch.Tensor] = {}

    def _token_ids(self, tokens: Sequence[str]) -> set[int]:
        vocab = self.tokenizer.get_vocab()
        return {vocab[t.strip()] for t in tokens if t.strip() in vocab}

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))

    def _prompt_ids(self, prompt: str) -> list[int]:
        ids = self.encode(prompt)
        if self.template.add_bos and self.tokenizer.bos_token_id is not None:
            ids = [int(self.tokenizer.bos_token_id), *ids]
        return ids

    def generate(self, request: GenerationRequest, cancel: threading.Event) -> GenerationResult:
        ids = self._prompt_ids(request.prompt)
        params = request.params
        criteria = [
            cancelled(cancel),
            eos(
                {int(self.tokenizer.eos_token_id)}
                if self.tokenizer.eos_token_id is not None
                else set()
            ),
            fim_end(self._fim_end_ids),
            stop_strings(request.stop_strings),
            *([single_line()] if request.single_line else []),
            suffix_line(request.suffix_line),
            cut_settled(request.block_cut),
            looping_line(),
            max_tokens(params.max_new_tokens),
        ]
        started = time.perf_counter()
        if request.time_budget_ms is not None:
            criteria.insert(1, deadline(started + request.time_budget_ms / 1000))
        lead = request.lead if self.healing is not None else ""
        with torch.inference_mode():
            return self._decode(ids, params, criteria, cancel, request.cache_key, started, lead)

    def _prefill(
        self, ids: list[int], key: str, cancel: threading.Event
    ) -> tuple[Any, torch.Tensor | None, int]:
        """Run the prompt through the model, reusing a kept cache; logits None when cancelled.
        Returns the cache, the last position's logits and how many positions were taken."""
        cache, start, reused = self._reuse(ids, key, cancel)
        logits = None
        for end in chunk_ends(start, len(ids)):
            if cancel.is_set():
                if cache is not None:
                    self.slots.keep(key, ids[:start], cache)  # what is done stays useful
                return cache, None, reused
            chunk = torch.tensor([ids[start:end]], device=self.device)
            cache, logits = self._forward(chunk, cache, logits_to_keep=1)
            start = end
            logits = logits[:, -1, :]
        return cache, logits, reused

    def _reuse(self, ids: list[int], key: str, cancel: threading.Event) -> tuple[Any, int, int]:
        """Where the prefill of `ids` starts: the kept prompt's cache cut to the prefix it shares
        with them, or a copy of what the document's cache or the kept prompt holds of them
        (moved: a window that starts elsewhere), whichever leaves less to compute. Returns the
        cache, the positions it holds and how many were taken."""
        shared = min(self.slots.shared(ids, key), len(ids) - 1) if self.slots.size else 0
        if self.documents is not None:
            kept = self.slots.peek(key)
            found = self.documents.take(ids, key, len(ids) - shared, cancel, PREFILL_CHUNK, kept)
            if found is not None:
                cache, taken = found
                return cache, cache.length, taken
        if not self.slots.size:
            return None, 0, 0
        cache, reused = self.slots.take(ids, key)
        return cache, reused, reused

    def _run(self, ids: Sequence[int], cache: Any) -> Any:
        """Positions `ids` appended to `cache` (the logits are not wanted)."""
        return self._forward(torch.tensor([list(ids)], device=self.device), cache, logits_to_keep=1)

    def _decode(
        self,
        ids: list[int],
        params: SamplingParams,
        criteria: list[StopCriterion],
        cancel: threading.Event,
        key: str,
        started: float,
        lead: str,
    ) -> GenerationResult:
        """Prefill, then a step at a time for `num_candidates` rows (see `_Rows`), each step's
        tokens taken (`_take`) before the next pass (`_advance`)."""
        n = params.num_candidates
        generator = torch.Generator(device=self.device)
        if params.seed is not None:
            generator.manual_seed(params.seed)
        cache, logits, reused = self._prefill(ids, key, cancel)
        timings = {"prefill": (time.perf_counter() - started) * 1000, "reused_tokens": reused}
        if logits is None:
            return GenerationResult([], prompt_tokens=len(ids), timings_ms=timings)
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.expand(n, -1)
        rows = _Rows(n, lead)
        drafts = DraftIndex(ids) if n == 1 and params.draft_tokens else None
        while not cancel.is_set():
            logprobs = torch.log_softmax(self._held_to_lead(logits.float(), rows.pending), dim=-1)
            chosen = self._choose(logprobs, params, generator)
            self._take(rows, chosen, logprobs, criteria)
            rows.steps += 1
            if rows.done:
                break
            rows.passes += 1
            cache, logits = self._advance(rows, chosen, cache, drafts, params, criteria)
            if rows.done:
                break
        self._keep_prompt(key, ids, cache, n)
        candidates = [
            self._candidate(state, lps, reason or "cancelled", lead)
            for state, lps, reason in zip(rows.states, rows.logprobs, rows.reasons, strict=True)
        ]
        total_ms = (time.perf_counter() - started) * 1000
        return GenerationResult(
            candidates,
            prompt_tokens=len(ids),
            timings_ms={
                **timings,
                "decode": total_ms - timings["prefill"],
                "steps": rows.steps,
                "forward_passes": rows.passes,
                "drafted": rows.drafted,
                "accepted": rows.accepted,
                "prompt_tokens": len(ids),
                "healed_chars": len(lead),
            },
        )

    def _take(
        self,
        rows: _Rows,
        chosen: torch.Tensor,
        logprobs: torch.Tensor,
        criteria: list[StopCriterion],
    ) -> None:
        """Each running row's chosen token appended, its lead paid down, its stop checked."""
        for i, state in enumerate(rows.states):
            if rows.reasons[i] is not None:
                continue
            token = int(chosen[i])
            if rows.pending[i] and self.healing is not None:
                rows.pending[i] = remaining_lead(rows.pending[i], self.healing.piece(token))
                state.lead_tokens += 1
            self._append(state, rows.logprobs[i], token, float(logprobs[i, token]), rows.lead)
            rows.reasons[i] = first_reason(criteria, state)

    def _advance(
        self,
        rows: _Rows,
        chosen: torch.Tensor,
        cache: Any,
        drafts: DraftIndex | None,
        params: SamplingParams,
        criteria: list[StopCriterion],
    ) -> tuple[Any, torch.Tensor]:
        """The next pass: the chosen tokens alone, or (one row, not healing) with a draft after
        them, whose kept tokens are taken here. Returns the cache and the next logits."""
        draft: list[int] = []
        if drafts is not None:
            drafts.extend([int(chosen[0])])
            if not rows.pending[0]:  # while healing, the lead decides, not the draft
                draft = drafts.propose(params.draft_tokens)
        if drafts is None or not draft:
            cache, logits = self._forward(chosen.view(-1, 1), cache)
            return cache, logits[:, -1, :]
        rows.drafted += len(draft)
        state = rows.states[0]
        cache, logits, kept = self._check_draft(
            chosen, draft, cache, state, rows.logprobs[0], rows.lead, criteria
        )
        rows.accepted += kept
        rows.steps += kept
        drafts.extend(draft[:kept])
        if kept:
            rows.reasons[0] = first_reason(criteria, state)
        return cache, logits

    def prefill(self, request: GenerationRequest, cancel: threading.Event) -> int:
        """Compute and keep the cache of `request`'s prompt before it is asked (the document's
        prompt, `engine.document_request`); returns the positions computed.

        With the lean forward pass the cache is the document's (see `documents`): built from its
        earlier version, then made exact. Through transformers' forward it is the kept prompt's,
        extended `IDLE_PREFILL_CHUNK` positions at a time. Either way it stops at a cancel
        between chunks keeping what was done, and leaves out the last position: a request
        recomputes its own last one anyway, for the logits that start its answer.
        """
        ids = self._prompt_ids(request.prompt)
        with torch.inference_mode():
            if self.documents is not None:
                start = self.slots.peek(request.cache_key)
                return self.documents.prefill(ids, request.cache_key, cancel, start)
            return self._prefill_prompt(ids, request.cache_key, cancel)

    def _prefill_prompt(self, ids: list[int], key: str, cancel: threading.Event) -> int:
        if not self.slots.size or self.slots.shared(ids, key) >= len(ids) - 1:
            return 0
        cache, done = self.slots.take(ids, key)
        start = done
        while done < len(ids) - 1 and not cancel.is_set():
            chunk = ids[done : min(done + IDLE_PREFILL_CHUNK, len(ids) - 1)]
            cache = self._run(chunk, cache)[0]
            done += len(chunk)
            if not croppable(cache):
                return done - start  # a sliding window cannot be reused: keep nothing
        if cache is not None:
            self.slots.keep(key, ids[:done], cache)
        return done - start

    def speed(self, ids: list[int], steps: int, rows: int = 1) -> tuple[float, float]:
        """Seconds to prefill `ids` from an empty cache in one pass, and to decode `steps`
        greedy tokens after them in `rows` rows (as `num_candidates` does), nothing stopping
        early (for `wisp bench --speed`)."""
        with torch.inference_mode():
            started = time.perf_counter()
            cache, logits = self._forward(
                torch.tensor([ids], device=self.device), None, logits_to_keep=1
            )
            prefilled = time.perf_counter()
            if rows > 1:
                cache.batch_repeat_interleave(rows)
                logits = logits.expand(rows, -1, -1)
            for _ in range(steps):
                token = logits[:, -1].argmax(-1).view(rows, 1)
                cache, logits = self._forward(token, cache, logits_to_keep=1)
            return prefilled - started, time.perf_counter() - prefilled

    def forget(self, key: str) -> None:
        """Drop the document's kept caches: 20-50 MB each for the bundled model."""
        self.slots.forget(key)
        if self.documents is not None:
            self.documents.forget(key)

    def _check_draft(
        self,
        chosen: torch.Tensor,
        draft: list[int],
        cache: Any,
        state: DecodeState,
        logprobs: list[float],
        lead: str,
        criteria: list[StopCriterion],
    ) -> tuple[Any, torch.Tensor, int]:
        """Run the chosen token and a draft after it in one pass; keep what greedy agrees with.

        Returns the cache cut back to the kept tokens, the logits after the last of them and
        how many draft tokens were kept (appended to `state`, stopping where a criterion fires).
        """
        start = cache.get_seq_length()
        ids = torch.tensor([[int(chosen[0]), *draft]], device=self.device)
        cache, logits = self._forward(ids, cache)
        rows = torch.log_softmax(logits[0].float(), dim=-1)
        predicted = rows.argmax(dim=-1).tolist()
        kept = 0
        for token in draft[: accepted_length(draft, predicted)]:
            self._append(state, logprobs, token, float(rows[kept, token]), lead)
            kept += 1
            if first_reason(criteria, state) is not None:
                break
        crop_to(cache, start + 1 + kept)
        return cache, logits[:, kept, :], kept

    def continuation_logprobs(
        self, request: GenerationRequest, answers: Sequence[str], continuation: str
    ) -> list[float]:
        """For each answer, the mean log-probability of `continuation` right after it.

        Runs from the cached state of the request's prompt (kept by `generate`), one short
        forward pass per answer, and leaves that state as it found it.
        """
        ids = self._prompt_ids(request.prompt)
        with torch.inference_mode():
            cache, reused = self.slots.take(ids, request.cache_key)
            rest = torch.tensor([ids[reused:]], device=self.device)
            cache, _ = self._forward(rest, cache, logits_to_keep=1)
            fits = [self._fit(cache, len(ids), request.lead + a, continuation) for a in answers]
        self.slots.keep(request.cache_key, ids, cache)
        return fits

    def _fit(self, cache: Any, prompt_len: int, answer: str, continuation: str) -> float:
        head = self.encode(answer)
        whole = self.encode(answer + continuation)
        start = max(1, common_prefix_length(head, whole))  # the first token of what follows
        whole = whole[: start + CONTINUATION_TOKENS]
        if start >= len(whole):
            return 0.0
        cache, logits = self._forward(torch.tensor([whole], device=self.device), cache)
        crop_to(cache, prompt_len)
        logprobs = torch.log_softmax(logits[0, start - 1 : len(whole) - 1].float(), dim=-1)
        targets = torch.tensor(whole[start:], device=self.device)
        return float(logprobs.gather(1, targets[:, None]).mean())

    def _forward(self, ids: torch.Tensor, cache: Any, **options: Any) -> tuple[Any, torch.Tensor]:
        """One forward pass from `cache`: the extended cache and the logits.

        The lean forward pass runs it when the loader chose one; otherwise transformers does.
        transformers renamed `past_key_values` to `cache` (5.2x); the old name still works there
        but warns on every call, so each model is called with the name its `forward` takes.
        """
        if self.fast is not None:
            return self.fast.forward(ids, cache, options.get("logits_to_keep", 0))
        out = self.model(ids, **{self._cache_name: cache}, use_cache=True, **options)
        return out[self._cache_name], out.logits

    def _held_to_lead(self, logits: torch.Tensor, pending: list[bytes]) -> torch.Tensor:
        """Logits with every token that strays from a row's pending lead masked out."""
        if self.healing is None or not any(pending):
            return logits
        logits = logits.clone()
        for row, owed in enumerate(pending):
            if owed and (allowed := self._allowed_ids(owed)).numel():
                kept = logits[row, allowed]
                logits[row].fill_(-torch.inf)
                logits[row, allowed] = kept
        return logits

    def _allowed_ids(self, owed: bytes) -> torch.Tensor:
        if (ids := self._allowed.get(owed)) is None:
            assert self.healing is not None
            ids = torch.tensor(self.healing.allowed(owed), dtype=torch.long, device=self.device)
            if len(self._allowed) >= 256:
                self._allowed.pop(next(iter(self._allowed)))
            self._allowed[owed] = ids
        return ids

    def _keep_prompt(self, key: str, ids: list[int], cache: Any, batch: int) -> None:
        """Keep the cache of the prompt alone (one row, no answer tokens) for the next request."""
        if not self.slots.size or not croppable(cache):
            return
        if batch > 1:
            cache.batch_select_indices(torch.tensor([0], device=self.device))
        crop_to(cache, len(ids))
        self.slots.keep(key, ids, cache)

    def _choose(
        self, logprobs: torch.Tensor, params: SamplingParams, generator: torch.Generator
    ) -> torch.Tensor:
        greedy = logprobs.argmax(dim=-1)
        if logprobs.shape[0] == 1 or params.temperature == 0:
            return greedy
        probs = torch.softmax(logprobs / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs > params.top_p
            probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
        sampled = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        sampled[0] = greedy[0]
        return sampled

    def _visible(self, ids: Sequence[int], lead: str) -> str:
        """The text of `ids` without the lead they re-type."""
        text = self.decode(ids)
        if not lead:
            return text
        return text[len(lead) :] if text.startswith(lead) else ""

    def _append(
        self, state: DecodeState, logprobs: list[float], token: int, logprob: float, lead: str
    ) -> None:
        state.token_ids.append(token)
        logprobs.append(logprob)
        if token not in self._end_ids:
            state.text = self._visible(state.token_ids, lead)

    def _candidate(
        self, state: DecodeState, logprobs: list[float], reason: StopReason, lead: str
    ) -> Candidate:
        ids = state.token_ids
        if ids and ids[-1] in self._end_ids:
            ids, logprobs = ids[:-1], logprobs[:-1]
        return Candidate(self._visible(ids, lead), list(ids), logprobs, reason, lead)


def chunk_ends(start: int, end: int) -> list[int]:
    """Where the prefill chunks of positions start..end end: every PREFILL_CHUNK tokens, with a
    last piece of up to PREFILL_TAIL tokens joined to the chunk before it. A chunk of a few
    tokens costs nearly what a whole one does (every matrix in blocks widened, every layer's
    operations): on the Intel Xeon a 551-token prompt took 287–300 ms as 256 + 295 tokens
    against 330–351 ms as 256 + 256 + 39."""
    if end <= start:
        return []
    ends = [*range(start + PREFILL_CHUNK, end, PREFILL_CHUNK), end]
    if len(ends) > 1 and ends[-1] - ends[-2] <= PREFILL_TAIL:
        del ends[-2]
    return ends


class _Rows:
    """The candidates one request decodes together, a row of the batch each: their texts so far,
    stop reasons, token log-probabilities and what of the healed lead each still owes, and the
    counts the request reports."""

    def __init__(self, n: int, lead: str) -> None:
        self.lead = lead
        self.states = [DecodeState() for _ in range(n)]
        self.reasons: list[StopReason | None] = [None] * n
        self.logprobs: list[list[float]] = [[] for _ in range(n)]
        self.pending = [lead.encode("utf-8")] * n
        self.steps = self.passes = self.drafted = self.accepted = 0

    @property
    def done(self) -> bool:
        return all(reason is not None for reason in self.reasons)

"""Turn raw candidates into suggestions: cut, clean, check, rank, gate.

Each candidate goes through the named filters of `trimming.py`, then the syntax check of
`syntax.py`; `ranking.py` scores what is left. `Policy(raw=True)` skips all of it: the first
candidate, cut at stop strings only, is the answer (`wisp eval --raw`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

from model_runtime import gate, habits, ranking, trimming
from model_runtime.backend import Candidate
from model_runtime.context import CursorContext, MultilineMode
from model_runtime.stopping import cut_at_stops
from model_runtime.syntax import SyntaxCheck, syntax_check


@dataclass(frozen=True)
class Suggestion:
    """Text to insert at the cursor, replacing `replace` characters right of it on its line:
    `score` ranks it, `confidence` is the gate's P(accept) of it (`gate.py`)."""

    text: str
    score: float
    replace: int = 0
    confidence: float = 1.0
    features: Mapping[str, float] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Policy:
    """How candidates become suggestions."""

    multiline: MultilineMode = "auto"
    min_confidence: float = 0.0  # the gate: suggestions less likely accepted are not shown
    raw: bool = False  # ranking and trimming off
    judge: gate.Gate | None = None  # what gives P(accept); None: the shipped gate


@dataclass(frozen=True)
class Draft:
    """A candidate after trimming: what it inserts and replaces, and what the checks found."""

    candidate: Candidate
    text: str
    replace: int = 0
    kept: int = 0  # characters of the model's text it keeps
    flags: tuple[str, ...] = ()
    rejected: str = ""  # the check that rejected it; its text is then as it was before that


Cut = Callable[[str], str]


def cuts(ctx: CursorContext, one_line: bool, policy: Policy) -> list[tuple[str, Cut]]:
    """The cuts that apply here, by the name of the check each answers to."""
    chosen: list[tuple[str, Cut]] = [
        ("chat_habit", habits.cut_chat_habits),
        ("repetition", trimming.cut_looping_line),
        ("repetition", trimming.cut_repeated_lines),
        ("suffix_copy", partial(trimming.cut_suffix_copy, ctx=ctx)),
    ]
    if not one_line:
        chosen.append(("scope", partial(trimming.cut_at_scope, ctx=ctx)))
        if policy.multiline == "auto":
            chosen.append(("statement", partial(trimming.cut_to_statement, ctx=ctx)))
    chosen.append(("line_suffix", lambda text: trimming.fit_line_suffix(text, ctx)[0]))
    return chosen


def block_cut(ctx: CursorContext, policy: Policy) -> Cut:
    """The cuts `trim` makes of a block by whole lines (scope, statement), as one: decoding may
    stop once they can no longer change (`stopping.cut_settled`)."""
    by_lines = [cut for name, cut in cuts(ctx, False, policy) if name in ("scope", "statement")]

    def cut(text: str) -> str:
        for each in by_lines:
            text = each(text)
        return text

    return cut


def tidy(text: str, ctx: CursorContext) -> str:
    """Whitespace: none at line ends or after the text, indentation as the document's."""
    text = trimming.join_spacing(trimming.strip_trailing_whitespace(text), ctx)
    return trimming.match_indentation(trimming.drop_doubled_indent(text, ctx), ctx)


def trim(
    candidate: Candidate,
    ctx: CursorContext,
    stops: tuple[str, ...],
    one_line: bool,
    policy: Policy,
    check: SyntaxCheck | None = None,
) -> Draft:
    """One candidate through the cuts, the whitespace rewrites and the syntax check.

    A cut that would leave nothing rejects the candidate instead; so does a syntax error that
    no prefix of whole lines avoids. A text that would change nothing comes back empty.
    """
    text = cut_at_stops(candidate.text, stops, one_line)
    flags: list[str] = []
    for name, cut in cuts(ctx, one_line, policy):
        shorter = cut(text)
        if shorter.strip() or not text.strip():
            if shorter != text and name not in flags:
                flags.append(name)
            text = shorter
            continue
        return Draft(candidate, tidy(text, ctx), kept=len(text), rejected=name)
    cut_text = text
    kept = len(text.rstrip())
    ran_out = candidate.stop_reason in ("max_tokens", "deadline")
    unfinished = ran_out and kept == len(cut_at_stops(candidate.text, stops, one_line).rstrip())
    text, replace = tidy(text, ctx), trimming.fit_line_suffix(text, ctx)[1]
    if not text.strip() or trimming.is_no_op(text, replace, ctx):
        return Draft(candidate, "")
    if check is not None:
        clean = check.longest_clean(text, replace)
        if clean is None:
            return Draft(candidate, text, replace, kept, tuple(flags), "syntax")
        if clean != text:
            lines = clean.count("\n") + 1
            kept = len("\n".join(cut_text.split("\n")[:lines]))
            text, replace = trimming.strip_trailing_whitespace(clean), 0
            flags.append("syntax")
    if unfinished:
        flags.append("unfinished")
    if ranking.copies_previous_line(text, ctx):
        flags.append("copies_previous_line")
    return Draft(candidate, text, replace, kept, tuple(flags))


def judged(
    draft: Draft, ctx: CursorContext, decode: ranking.Decode | None, judge: gate.Gate
) -> tuple[float, float, dict[str, float]]:
    """A draft's score (the ranking's), its P(accept) (the gate's; 0 when rejected) and the
    features it was judged on."""
    penalised = [f for f in draft.flags if f in ranking.PENALTIES]
    rejected = bool(draft.rejected)
    if draft.candidate.scored:
        logprobs = ranking.kept_logprobs(draft.candidate, draft.kept, decode)
        value = ranking.score(logprobs, penalised, rejected=rejected)
    else:
        logprobs, value = None, ranking.unscored(penalised, rejected=rejected)
    share = draft.kept / max(len(draft.candidate.text.rstrip()), 1)
    values = gate.features(logprobs, draft.text, draft.replace, draft.flags, ctx, share)
    return value, 0.0 if rejected else judge.probability(values), values


def raw_suggestions(
    candidates: list[Candidate], stops: tuple[str, ...], one_line: bool
) -> list[Suggestion]:
    """The first candidate as the model wrote it, cut only at stop strings (and the line end)."""
    if not candidates:
        return []
    text = cut_at_stops(candidates[0].text, stops, one_line)
    return [Suggestion(text, candidates[0].mean_logprob)] if text else []


def to_suggestions(
    candidates: list[Candidate],
    ctx: CursorContext,
    stops: tuple[str, ...],
    one_line: bool,
    policy: Policy | None = None,
    decode: ranking.Decode | None = None,
) -> list[Suggestion]:
    """Trimmed, checked, de-duplicated suggestions that pass the gate, best first.

    `decode` (the backend's) lets a trimmed suggestion be scored on the tokens it kept.
    """
    policy = policy or Policy()
    if policy.raw:
        return raw_suggestions(candidates, stops, one_line)
    check = syntax_check(ctx) if candidates else None
    drafts = [trim(c, ctx, stops, one_line, policy, check) for c in candidates]
    judge = policy.judge or gate.shipped()
    scored = [(*judged(d, ctx, decode, judge), d) for d in drafts if d.text.strip()]
    scored.sort(key=lambda each: (each[0], each[3].candidate.mean_logprob), reverse=True)
    seen: set[str] = set()
    out: list[Suggestion] = []
    for value, p_accept, values, draft in scored:
        key = trimming.normalised(draft.text + ctx.line_suffix[draft.replace :])
        if key in seen:
            continue
        seen.add(key)
        if p_accept >= policy.min_confidence:
            out.append(Suggestion(draft.text, value, draft.replace, p_accept, values))
    return out

"""From documents to fixed-length blocks of token ids: chunking, FIM examples, packing."""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerFast

from .corpus import Document
from .fim import FimConfig, make_example

IGNORE = -100  # label of padding: no loss
HEADER_ROOM = 48  # tokens kept free in a block for the path, the sentinels and split words


@dataclass(frozen=True)
class Block:
    """One training sequence: token ids and their labels (padding labelled IGNORE)."""

    ids: list[int]
    labels: list[int]


def line_chunk_spans(text: str, token_starts: Sequence[int], budget: int) -> list[tuple[int, int]]:
    """Character spans of at most `budget` tokens, each cut just after a newline where one is near.

    `token_starts` are the character offsets where the tokens of `text` begin.
    """
    spans = []
    start = 0
    while start < len(text):
        first = bisect.bisect_left(token_starts, start)
        limit_token = first + budget
        if limit_token >= len(token_starts):
            spans.append((start, len(text)))
            break
        end = token_starts[limit_token]
        newline = text.rfind("\n", start, end)
        # Keep whole lines unless that would waste more than half the chunk.
        if newline >= 0 and newline + 1 - start > (end - start) // 2:
            end = newline + 1
        spans.append((start, end))
        start = end
    return spans


def chunk_documents(
    documents: Sequence[Document], tokenizer: PreTrainedTokenizerFast, budget: int
) -> list[Document]:
    """Documents cut into pieces of about `budget` tokens, each keeping its file's path."""
    encoded = tokenizer(
        [d.text for d in documents], add_special_tokens=False, return_offsets_mapping=True
    )
    chunks = []
    for document, offsets in zip(documents, encoded["offset_mapping"], strict=True):
        starts = [start for start, _ in offsets]
        for start, end in line_chunk_spans(document.text, starts, budget):
            chunks.append(Document(document.path, document.text[start:end]))
    return chunks


def pack(
    examples: Sequence[list[int]], seq_len: int, pad_id: int, open_blocks: int = 8
) -> list[Block]:
    """Whole examples packed first-fit into blocks of `seq_len`, the rest padded.

    An example never straddles two blocks (a FIM middle must see its prompt), unless it alone is
    longer than a block.
    """
    blocks: list[list[int]] = []
    done: list[list[int]] = []
    for example in examples:
        for start in range(0, len(example), seq_len):
            piece = example[start : start + seq_len]
            target = next((b for b in blocks if len(b) + len(piece) <= seq_len), None)
            if target is None:
                if len(blocks) == open_blocks:
                    fullest = max(blocks, key=len)
                    blocks.remove(fullest)
                    done.append(fullest)
                target = []
                blocks.append(target)
            target.extend(piece)
    return [_padded(b, seq_len, pad_id) for b in done + blocks]


def _padded(ids: list[int], seq_len: int, pad_id: int) -> Block:
    padding = seq_len - len(ids)
    return Block(ids + [pad_id] * padding, ids + [IGNORE] * padding)


def blocks_of(
    chunks: Sequence[Document],
    tokenizer: PreTrainedTokenizerFast,
    seq_len: int,
    rng: random.Random,
    fim: FimConfig,
) -> list[Block]:
    """Packed blocks of FIM examples made from `chunks`."""
    texts = [make_example(c.path, c.text, rng, fim) for c in chunks]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return pack(ids, seq_len, tokenizer.pad_token_id)


@dataclass(frozen=True)
class Position:
    """Where a pass over the data stands: epoch, group of chunks, block within the group."""

    epoch: int = 0
    group: int = 0
    block: int = 0


def stream(
    chunks: Sequence[Document],
    tokenizer: PreTrainedTokenizerFast,
    seq_len: int,
    seed: int,
    fim: FimConfig,
    start: Position = Position(),
    group_size: int = 128,
) -> Iterator[tuple[Position, Block]]:
    """Blocks forever, each with the position just after it; a position resumes exactly.

    Each epoch shuffles the chunks and draws fresh FIM splits; randomness depends only on the seed
    and the position, so resuming needs no saved generator state.
    """
    epoch, group, skip = start.epoch, start.group, start.block
    while True:
        order = list(range(len(chunks)))
        random.Random(f"{seed}/order/{epoch}").shuffle(order)
        groups = range(0, len(order), group_size)
        for number in range(group, len(groups)):
            members = [chunks[i] for i in order[groups[number] : groups[number] + group_size]]
            rng = random.Random(f"{seed}/fim/{epoch}/{number}")
            blocks = blocks_of(members, tokenizer, seq_len, rng, fim)
            for index in range(skip, len(blocks)):
                following = (
                    Position(epoch, number, index + 1)
                    if index + 1 < len(blocks)
                    else Position(epoch, number + 1, 0)
                )
                yield following, blocks[index]
            skip = 0
        epoch, group = epoch + 1, 0

"""Prompts of Piano et al.'s Algorithm 1, in readable English and within CLIP's token limit.

positive = "closeup portrait photo of a {ethnicity} {age} man|woman, " + the attributes with p > 0.5
negative = the attributes with p <= 0.5

CelebA names become phrases ("5_o_Clock_Shadow" -> "5 o'clock shadow", "Wearing_Hat" -> "wearing a
hat"). ``No_Beard`` is turned around so no prompt holds a double negative: "beard" goes to the positive
prompt when p(No_Beard) <= 0.5 and to the negative one otherwise. ``Male`` picks man/woman and is not
repeated; ``Young`` is dropped when an age is known.

CLIP's text encoder reads 77 tokens (75 between its start and end tokens). All 40 attributes need
about 121, so attributes are ordered by certainty |p - 0.5| (most certain first) and either the least
certain are left out until the prompt fits (``long_prompts="truncate"``, listed in ``dropped``) or the
whole prompt is kept for chunked encoding (``"chunk"``, with compel). Nothing is cut silently.
"""
from __future__ import annotations

import re

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

PREFIX = "closeup portrait photo of a "
#: Tokens CLIP's text encoder reads between its start and end tokens.
CLIP_CONTENT_TOKENS = 75

CELEBA_PHRASES: dict[str, str] = {
    "5_o_Clock_Shadow": "5 o'clock shadow", "Arched_Eyebrows": "arched eyebrows", "Attractive": "attractive",
    "Bags_Under_Eyes": "bags under eyes", "Bald": "bald", "Bangs": "bangs", "Big_Lips": "big lips",
    "Big_Nose": "big nose", "Black_Hair": "black hair", "Blond_Hair": "blond hair", "Blurry": "blurry",
    "Brown_Hair": "brown hair", "Bushy_Eyebrows": "bushy eyebrows", "Chubby": "chubby", "Double_Chin": "double chin",
    "Eyeglasses": "eyeglasses", "Goatee": "goatee", "Gray_Hair": "gray hair", "Heavy_Makeup": "heavy makeup",
    "High_Cheekbones": "high cheekbones", "Mouth_Slightly_Open": "mouth slightly open", "Mustache": "mustache",
    "Narrow_Eyes": "narrow eyes", "Oval_Face": "oval face", "Pale_Skin": "pale skin", "Pointy_Nose": "pointy nose",
    "Receding_Hairline": "receding hairline", "Rosy_Cheeks": "rosy cheeks", "Sideburns": "sideburns",
    "Smiling": "smiling", "Straight_Hair": "straight hair", "Wavy_Hair": "wavy hair",
    "Wearing_Earrings": "wearing earrings", "Wearing_Hat": "wearing a hat", "Wearing_Lipstick": "wearing lipstick",
    "Wearing_Necklace": "wearing a necklace", "Wearing_Necktie": "wearing a necktie", "Young": "young",
}
#: Attributes stated as an absence: (phrase of the presence, so p(presence) = 1 - p).
NEGATED: dict[str, str] = {"No_Beard": "beard"}

ETHNICITY_KEYS = ("ethnicity", "Ethnic", "ethnic", "race")
AGE_KEYS = ("age", "Age")
_NUMERIC_AGE = re.compile(r"\d+(\.\d+)?(\s*[-–]\s*\d+(\.\d+)?)?")
_FAIRFACE_AGE_WORDS = {"0-2": "baby", "3-9": "child", "10-19": "teenage", "more than 70": "elderly"}


def attribute_phrase(name: str) -> str:
    return CELEBA_PHRASES.get(name) or NEGATED.get(name) or name.replace("_", " ").lower()


def ethnicity_phrase(value: Any) -> str:
    """``"Latino_Hispanic"`` -> ``"latino hispanic"``; a ``{class: p}`` map -> its most likely class."""
    if isinstance(value, Mapping):
        value = max(value, key=value.get)
    return str(value).replace("_", " ").lower()


def age_phrase(value: Any) -> str:
    """An age in years (``34`` -> ``"34 year old"``), a FairFace group (``"20-29"`` -> ``"20-29 year old"``,
    ``"more than 70"`` -> ``"elderly"``) or a ``{group: p}`` map (its most likely group)."""
    if isinstance(value, Mapping):
        value = max(value, key=value.get)
    if isinstance(value, (int, float)):
        return f"{int(round(value))} year old"
    text = str(value).strip()
    if text in _FAIRFACE_AGE_WORDS:
        return _FAIRFACE_AGE_WORDS[text]
    # "year old" only after a number or a numeric range ("34", "20-29", "20 - 29"); words stay as they are
    return f"{text} year old" if _NUMERIC_AGE.fullmatch(text) else text


@dataclass
class Prompts:
    positive: str
    negative: str
    dropped: list[str] = field(default_factory=list)          # attribute names left out to fit the limit
    positive_tokens: Optional[int] = None
    negative_tokens: Optional[int] = None


def _first(attrs: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    return next((attrs[k] for k in keys if k in attrs and attrs[k] is not None), None)


def _subject(attrs: Mapping[str, Any]) -> str:
    words = [PREFIX.rstrip()]
    ethnicity, age = _first(attrs, ETHNICITY_KEYS), _first(attrs, AGE_KEYS)
    if ethnicity is not None:
        words.append(ethnicity_phrase(ethnicity))
    if age is not None:
        words.append(age_phrase(age))
    male = attrs.get("Male")
    words.append("person" if male is None else ("man" if float(male) > 0.5 else "woman"))
    return " ".join(words)


def ranked_attributes(attrs: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """``(name, phrase, p(phrase true))`` of the binary attributes, most certain first (stable)."""
    skip = {"Male", *ETHNICITY_KEYS, *AGE_KEYS}
    if _first(attrs, AGE_KEYS) is not None:
        skip.add("Young")
    out = []
    for name, value in attrs.items():
        if name in skip or not isinstance(value, (int, float)):
            continue
        p = float(value)
        out.append((name, attribute_phrase(name), 1.0 - p if name in NEGATED else p))
    return sorted(out, key=lambda item: -abs(item[2] - 0.5))


def build_prompts(attributes: Mapping[str, Any], count_tokens: Optional[Callable[[str], int]] = None,
                  max_tokens: int = CLIP_CONTENT_TOKENS, long_prompts: str = "truncate") -> Prompts:
    """Algorithm 1's positive and negative prompts for one face's attributes.

    ``attributes``: ``{CelebA name: p, "Male": p, "age": years | group | {group: p},
    "ethnicity": name | {name: p}}``. ``count_tokens(text)`` counts content tokens (no start/end);
    with it and ``long_prompts="truncate"`` the least certain attributes are dropped until both
    prompts fit ``max_tokens``; ``"chunk"`` keeps everything (the encoder must chunk).

    Args:
        attributes: one face's attribute probabilities, age and ethnicity.
        count_tokens: counts a text's content tokens (CLIP's tokenizer); ``None``: no limit.
        max_tokens: the token budget of each prompt.
        long_prompts: ``truncate`` or ``chunk``.

    Returns:
        A :class:`Prompts` with the ``positive`` and ``negative`` prompt.

    Example:
        >>> from facefd.anonymize import build_prompts
        >>> prompts = build_prompts({"Male": 0.9, "Blond_Hair": 0.8, "Eyeglasses": 0.1, "age": 30})
        >>> "blond hair" in prompts.positive, "eyeglasses" in prompts.negative
        (True, True)
    """
    if long_prompts not in ("truncate", "chunk"):
        raise ValueError(f"long_prompts must be 'truncate' or 'chunk', got {long_prompts!r}")
    subject = _subject(attributes)
    ranked = ranked_attributes(attributes)

    def compose(kept: list[tuple[str, str, float]]) -> tuple[str, str]:
        pos = [phrase for _, phrase, p in kept if p > 0.5]
        neg = [phrase for _, phrase, p in kept if p <= 0.5]
        return ", ".join([subject, *pos]), ", ".join(neg)

    kept = list(ranked)
    dropped: list[str] = []
    positive, negative = compose(kept)
    if count_tokens is not None and long_prompts == "truncate":
        while kept and max(count_tokens(positive), count_tokens(negative)) > max_tokens:
            dropped.append(kept.pop()[0])  # the least certain attribute
            positive, negative = compose(kept)
        if count_tokens(positive) > max_tokens:
            raise ValueError(f"the prompt subject alone has more than {max_tokens} tokens: {subject!r}")
    prompts = Prompts(positive, negative, dropped)
    if count_tokens is not None:
        prompts.positive_tokens, prompts.negative_tokens = count_tokens(positive), count_tokens(negative)
    return prompts


def clip_token_counter(tokenizer: Any) -> Callable[[str], int]:
    """Content-token count with a Hugging Face CLIP tokenizer (start/end tokens not counted)."""
    def count(text: str) -> int:
        return len(tokenizer(text, truncation=False, add_special_tokens=False).input_ids)
    return count

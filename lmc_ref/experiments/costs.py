"""Where the context-mixing model spends its bits on enwik8 (a table of chapter 3b).

Codes the text with ``cm`` and keeps the cost of every byte (-log2 of the
probabilities of its 8 bits, ``ContextMixingPredictor.byte_costs``), then sums
the costs by the kind of text each byte belongs to.  Two views:

* *regions* of the Wikipedia dump: the XML page headers (everything outside
  ``<text ...>`` elements), and inside articles the wiki links ``[[...]]``,
  templates ``{{...}}``, table rows (lines that start with ``{|``, ``|`` or
  ``!``), list items and headings (lines that start with ``*``, ``#``, ``:``
  or ``=``) and the rest, prose;
* *characters* of the article text: the first letter of a word, its later
  letters, spaces, digits and everything else.

The model codes plain bytes here (no word codes; those are the compressor's
transform), so the total is the model's ideal code length of the text.

    python -m lmc_ref.experiments.costs [--bytes N] [--mem N] [--out MD]
"""

import argparse
import re
from pathlib import Path

import numpy as np

from .. import data
from ..predictors.context_mixing import ContextMixingPredictor

REGIONS = ("page headers (XML)", "links [[...]]", "templates {{...}}", "table rows", "lists and headings", "prose")
CHARACTERS = ("first letter of a word", "later letters", "spaces", "digits", "other")


def _mark(labels, inside, text, pattern, label):
    """Give ``label`` to the bytes of every match of ``pattern`` that lie inside articles."""
    for m in re.finditer(pattern, text):
        span = slice(m.start(), m.end())
        labels[span] = np.where(inside[span], label, labels[span])


def classify(text):
    """``(regions, characters)``: for every byte of ``text`` its index in ``REGIONS`` and, for article
    bytes, in ``CHARACTERS`` (-1 for header bytes).  Later patterns win where they overlap."""
    n = len(text)
    inside = np.zeros(n, bool)
    for m in re.finditer(rb"<text[^>]*>(.*?)</text>", text, re.DOTALL):
        inside[m.start(1):m.end(1)] = True
    regions = np.where(inside, REGIONS.index("prose"), REGIONS.index("page headers (XML)")).astype(np.int8)
    _mark(regions, inside, text, rb"(?m)^[*#:=].*$", REGIONS.index("lists and headings"))
    _mark(regions, inside, text, rb"(?m)^(?:\{\||\||!).*$", REGIONS.index("table rows"))
    _mark(regions, inside, text, rb"\{\{[^{}]*\}\}", REGIONS.index("templates {{...}}"))
    _mark(regions, inside, text, rb"\[\[[^\[\]]*\]\]", REGIONS.index("links [[...]]"))
    b = np.frombuffer(text, np.uint8)
    letter = ((b | 32) >= ord("a")) & ((b | 32) <= ord("z"))
    after_letter = np.concatenate([[False], letter[:-1]])
    digit = (b >= ord("0")) & (b <= ord("9"))
    characters = np.full(n, CHARACTERS.index("other"), np.int8)
    characters[letter & ~after_letter] = CHARACTERS.index("first letter of a word")
    characters[letter & after_letter] = CHARACTERS.index("later letters")
    characters[b == ord(" ")] = CHARACTERS.index("spaces")
    characters[digit] = CHARACTERS.index("digits")
    characters[~inside] = -1
    return regions, characters


def table(costs, labels, names):
    """Markdown rows: per label, bytes, share of the text, bits per byte and share of all bits."""
    total_bits, total_bytes = costs.sum(), len(costs)
    rows = ["| kind | bytes | % of text | bits per byte | % of all bits |", "| --- | --- | --- | --- | --- |"]
    for i, name in enumerate(names):
        sel = labels == i
        if sel.any():
            rows.append(f"| {name} | {int(sel.sum()):,} | {100 * sel.sum() / total_bytes:.1f} | "
                        f"{costs[sel].mean():.2f} | {100 * costs[sel].sum() / total_bits:.1f} |")
    return "\n".join(rows)


def report(text, mem=22):
    """The two tables for ``text`` (bytes) as Markdown, with the model's total."""
    costs = ContextMixingPredictor(mem).byte_costs(np.frombuffer(text, np.uint8))
    regions, characters = classify(text)
    article = characters >= 0
    return (f"`cm:mem={mem}` on {len(text):,} bytes: {costs.sum() / 8:,.0f} bytes of ideal code, "
            f"{100 * costs.sum() / 8 / len(text):.2f} % (plain bytes, no word codes).\n\n"
            f"{table(costs, regions, REGIONS)}\n\nArticle text only:\n\n"
            f"{table(costs[article], characters[article], CHARACTERS)}\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", type=int, default=None, help="code only the first N bytes of the text (default: all)")
    ap.add_argument("--mem", type=int, default=22, help="cm's tables: 2**N counters per model (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help="also write the tables to this Markdown file")
    args = ap.parse_args(argv)
    found = data.find_enwik("enwik8")
    text = Path(found.path).read_bytes()[: args.bytes]
    md = f"Text: {found.describe()}.\n\n" + report(text, args.mem)
    print(md)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

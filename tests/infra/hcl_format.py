"""What `terraform fmt` would write, for the HCL these Terraform files use (no terraform binary offline).

A small re-implementation of the three passes of HashiCorp's hclwrite formatter (``format.go``), which
``terraform fmt`` runs:

- spaces between tokens (``spaceAfterToken``): one space by default; none before ``,`` or a closing
  ``]``/``)``, after an opening ``[``/``(``, around ``.``, between a function name and ``(``; braces keep a
  space inside (``{ a = 1 }``) except ``{}``;
- indentation (``formatIndent``): two spaces per level, one level per line with a net opening of brackets;
- alignment (``formatCells``): the ``=`` of consecutive attribute lines lines up one space after the
  longest name (a blank line, a comment-only line, a block or a multi-line value ends the run), and so do
  consecutive trailing comments.

Quoted strings are single tokens (these files have no template directives or nested quotes inside ``${}``).
Heredocs and ``/* */`` comments raise: extend this before using them. Where it differs from terraform fmt
is only in what it does not cover (the raise), so a file this accepts unchanged is fmt-clean for those rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TOKEN = re.compile(
    r"""
    (?P<comment>\#.*|//.*)
    |(?P<string>"(?:[^"\\]|\\.)*")
    |(?P<heredoc><<-?[A-Za-z_])
    |(?P<block_comment>/\*)
    |(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    |(?P<ident>[A-Za-z_][\w-]*)
    |(?P<op>\.\.\.|==|!=|<=|>=|&&|\|\||=>|[=<>?:.,+\-*/%!\[\](){}])
    """,
    re.X,
)
OPEN, CLOSE = "{[(", "}])"


@dataclass
class Line:
    tokens: list[tuple[str, str]]  # (kind, text)
    lead: list[tuple[str, str]] = field(default_factory=list)
    assign: list[tuple[str, str]] = field(default_factory=list)
    comment: list[tuple[str, str]] = field(default_factory=list)
    indent: int = 0


def tokenize(line: str) -> list[tuple[str, str]]:
    tokens, pos, text = [], 0, line.strip()
    while pos < len(text):
        if text[pos] in " \t":
            pos += 1
            continue
        m = TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot tokenize {text[pos:]!r}")
        kind = m.lastgroup
        if kind in ("heredoc", "block_comment"):
            raise ValueError(f"{kind} not supported by this checker: {line!r}")
        tokens.append((kind, m.group()))
        pos = m.end()
    return tokens


def _bracket_change(token: tuple[str, str]) -> int:
    kind, text = token
    if kind != "op":
        return 0
    return 1 if text in OPEN else -1 if text in CLOSE else 0


def _space_between(before: tuple[str, str] | None, subject: tuple[str, str], after: tuple[str, str]) -> bool:
    """hclwrite's spaceAfterToken for the token kinds above."""
    s, a = subject[1], after[1]
    if subject[0] == "ident" and a == "(":
        return False
    if s == "." or a == ".":
        return False
    if a in (",", "..."):
        return False
    if s == ",":
        return True
    if a == "[" and (subject[0] in ("ident", "number") or _bracket_change(subject) < 0):
        return False
    if s == "-" and subject[0] == "op":
        # negation (after an operator, an opening bracket, `=` or a comma, or first) takes no space
        return not (before is None or (before[0] == "op" and before[1] not in CLOSE))
    if s == "{" or a == "}":
        return not (s == "{" and a == "}")
    if _bracket_change(subject) > 0:
        return False
    if _bracket_change(after) < 0:
        return False
    return True


def _render(tokens: list[tuple[str, str]], before: tuple[str, str] | None = None) -> str:
    out = ""
    for i, tok in enumerate(tokens):
        if i:
            prev_before = tokens[i - 2] if i >= 2 else before
            out += " " if _space_between(prev_before, tokens[i - 1], tok) else ""
        out += tok[1]
    return out


def _runs(flags: list[bool]) -> list[list[int]]:
    """Indices of consecutive true flags, one list per run (hclwrite's "chains")."""
    runs: list[list[int]] = []
    for i, flag in enumerate(flags):
        if flag and runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        elif flag:
            runs.append([i])
    return runs


def format_hcl(text: str) -> str:
    """``text`` as hclwrite would format it (for the supported subset)."""
    lines = [Line(tokenize(raw)) for raw in text.split("\n")]
    for line in lines:
        line.lead = list(line.tokens)
        if len(line.lead) > 1 and line.lead[-1][0] == "comment":
            line.comment, line.lead = line.lead[-1:], line.lead[:-1]
        for i, tok in enumerate(line.lead):
            if i > 0 and tok == ("op", "="):
                if sum(_bracket_change(t) for t in line.lead[i:]) == 0:
                    line.assign, line.lead = line.lead[i:], line.lead[:i]
                break
    # indentation
    indents: list[int] = []
    for line in lines:
        if not line.tokens:
            continue
        net = sum(_bracket_change(t) for t in line.lead + line.assign)
        if net > 0:
            line.indent = 2 * len(indents)
            indents.append(net)
        elif net < 0:
            closed = -net
            while closed > 0 and indents:
                if closed > indents[-1]:
                    closed -= indents.pop()
                elif closed < indents[-1]:
                    indents[-1] -= closed
                    closed = 0
                else:
                    indents.pop()
                    closed = 0
            line.indent = 2 * len(indents)
        else:
            line.indent = 2 * len(indents)
    # cells: `=` alignment, then trailing-comment alignment, each over runs of consecutive lines
    lead_text = [line.indent * " " + _render(line.lead) for line in lines]
    body = list(lead_text)
    for run in _runs([bool(line.assign) for line in lines]):
        width = max(len(lead_text[j]) for j in run)
        for j in run:
            value = _render(lines[j].assign[1:], before=lines[j].assign[0])
            body[j] += " " * (width - len(lead_text[j]) + 1) + "=" + (" " + value if value else "")
    for run in _runs([bool(line.comment) for line in lines]):
        width = max(len(body[j]) for j in run)
        for j in run:
            body[j] += " " * (width - len(body[j]) + 1) + lines[j].comment[0][1]
    return "\n".join(body)

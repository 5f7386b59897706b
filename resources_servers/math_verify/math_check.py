"""Symbolic answer checking for math_verify: pure functions, run in a Ray task or a local pool worker.

``check(candidate, expected)`` answers whether two final answers are mathematically equal: exact text after
normalisation, then numerically (both are numbers), then symbolically (``simplify(a - b) == 0``).
Model output is untrusted: a character whitelist and a name table keep ``parse_expr`` (which evaluates) to
arithmetic, and a size guard refuses number towers before they are evaluated. What the guard does not
foresee (a ``simplify`` that runs for minutes) is cut off by the caller's hard timeout.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["check", "extract_answer", "normalize", "warm_up"]

MAX_ANSWER_CHARS = 2000
MAX_EXPONENT = 10_000
MAX_FACTORIAL = 1_000
_ALLOWED = re.compile(r"^[0-9A-Za-z+\-*/^().,=\s_!]*$")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_LINE = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d])")


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the ``{...}`` opening at ``start`` and the index after its closing brace."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def extract_answer(text: str) -> str | None:
    """The final answer of a model's text: the last ``\\boxed{...}``, else an "answer: ..." line, else
    the last number; None when there is none."""
    boxed = None
    for match in _BOXED.finditer(text):
        found = _braced(text, match.end() - 1)
        if found is not None:
            boxed = found[0]
    if boxed is not None:
        return boxed.strip()
    lines = [m.group(1) for m in _ANSWER_LINE.finditer(text)]
    if lines:
        return lines[-1].strip().rstrip(".").strip("$ ")
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def _replace_command(text: str, command: str, arity: int, template: str) -> str:
    while True:
        index = text.find(command)
        if index < 0:
            return text
        cursor = index + len(command)
        args = []
        for _ in range(arity):
            while cursor < len(text) and text[cursor] == " ":
                cursor += 1
            if cursor < len(text) and text[cursor] == "{":
                found = _braced(text, cursor)
                if found is None:
                    return text
                args.append(found[0])
                cursor = found[1]
            elif cursor < len(text):
                args.append(text[cursor])  # \frac12
                cursor += 1
            else:
                return text
        text = text[:index] + template.format(*args) + text[cursor:]


def normalize(answer: str) -> str:
    """LaTeX-ish answer text to sympy-parsable text (best effort; exact-text comparison uses it too)."""
    text = answer.strip().strip("$").strip()
    text = re.sub(r"\\text\{([^{}]*)\}|\\mathrm\{([^{}]*)\}", lambda m: m.group(1) or m.group(2) or "", text)
    for noise in (
        "\\left",
        "\\right",
        "\\!",
        "\\,",
        "\\;",
        "\\:",
        "\\displaystyle",
        "^\\circ",
        "^{\\circ}",
        "\\%",
        "%",
        "\\$",
    ):
        text = text.replace(noise, "")
    if "=" in text:
        text = text.rsplit("=", 1)[1]  # "x = 5" -> "5"
    for command in ("\\dfrac", "\\tfrac", "\\frac"):
        text = _replace_command(text, command, 2, "(({0})/({1}))")
    text = re.sub(r"\\sqrt\s*\[([^\]]*)\]\s*\{", r"\\rootN{\1}{", text)
    text = _replace_command(text, "\\rootN", 2, "(({1})**(1/({0})))")
    text = _replace_command(text, "\\sqrt", 1, "sqrt({0})")
    replacements = {
        "\\cdot": "*",
        "\\times": "*",
        "\\div": "/",
        "\\pi": " pi ",
        "\\infty": "oo",
        "\\ln": "log",
        "^": "**",
        "{": "(",
        "}": ")",
        "\\": "",
    }
    for old, new in replacements.items():
        text = text.replace(old, new)
    text = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), text)
    return re.sub(r"\s+", " ", text).strip().rstrip(".")


def _namespace() -> dict[str, Any]:
    import sympy

    names = {
        "Integer": sympy.Integer,
        "Float": sympy.Float,
        "Rational": sympy.Rational,
        "Symbol": sympy.Symbol,
        "Function": sympy.Function,
        "sqrt": sympy.sqrt,
        "pi": sympy.pi,
        "E": sympy.E,
        "e": sympy.E,
        "I": sympy.I,
        "oo": sympy.oo,
        "sin": sympy.sin,
        "cos": sympy.cos,
        "tan": sympy.tan,
        "log": sympy.log,
        "exp": sympy.exp,
        "Abs": sympy.Abs,
        "abs": sympy.Abs,
        "factorial": sympy.factorial,
        "binomial": sympy.binomial,
        "Add": sympy.Add,
        "Mul": sympy.Mul,
        "Pow": sympy.Pow,
    }
    return {"__builtins__": {}, **names}


def _guard(expr: Any) -> str | None:
    """Why ``expr`` (parsed unevaluated) is too big to evaluate safely, or None."""
    import sympy

    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow) and node.exp.is_number and node.base.is_number:
            magnitude = abs(sympy.N(node.exp, 5))
            if magnitude.is_finite is False or magnitude > MAX_EXPONENT:
                return f"exponent {node.exp} is too large"
        if isinstance(node, sympy.factorial) and node.args[0].is_number:
            if abs(sympy.N(node.args[0], 5)) > MAX_FACTORIAL:
                return f"factorial of {node.args[0]} is too large"
    return None


def _parse(text: str) -> tuple[Any, str | None]:
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    if len(text) > MAX_ANSWER_CHARS:
        return None, "answer is too long"
    if not _ALLOWED.match(text) or "__" in text or re.search(r"[A-Za-z_)]\s*\.", text):
        return None, "answer has characters that are not arithmetic"
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    try:
        raw = parse_expr(
            text, local_dict={}, global_dict=_namespace(), transformations=transformations, evaluate=False
        )
        reason = _guard(raw)
        if reason is not None:
            return None, reason
        return parse_expr(
            text, local_dict={}, global_dict=_namespace(), transformations=transformations
        ), None
    except Exception as exc:  # any parse failure means "not an expression we can compare"
        return None, f"cannot parse: {type(exc).__name__}"


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _strip_outer(text: str) -> str:
    text = text.strip()
    if len(text) > 1 and text[0] in "([" and text[-1] in ")]" and _braced_span(text) == len(text):
        return text[1:-1]
    return text


def _braced_span(text: str) -> int:
    depth = 0
    for i, char in enumerate(text):
        depth += char in "(["
        depth -= char in ")]"
        if depth == 0:
            return i + 1
    return -1


def _equal_expressions(a_text: str, b_text: str) -> tuple[bool, str, str]:
    import sympy

    a, why_a = _parse(a_text)
    if a is None:
        return False, "unparseable", f"candidate: {why_a}"
    b, why_b = _parse(b_text)
    if b is None:
        return False, "unparseable", f"expected: {why_b}"
    difference = a - b
    if difference == 0:
        return True, "symbolic", ""
    if not difference.free_symbols:
        value = complex(sympy.N(difference, 30))
        scale = max(1.0, abs(complex(sympy.N(b, 30))))
        return abs(value) <= 1e-9 * scale, "numeric", ""
    if sympy.simplify(difference) == 0:
        return True, "symbolic", ""
    return bool(difference.equals(0)), "symbolic", ""


def check(candidate: str, expected: str) -> dict[str, Any]:
    """Compare two final answers. Returns ``{"equal": bool, "method": str, "reason": str}``.

    ``method`` is ``exact`` (same text after normalisation), ``numeric``, ``symbolic`` or ``unparseable``.
    Tuples (``1, 2``) compare element by element, in order.
    """
    a, b = normalize(candidate), normalize(expected)
    if a == b:
        return {"equal": True, "method": "exact", "reason": ""}
    a_parts, b_parts = _split_top_level(_strip_outer(a)), _split_top_level(_strip_outer(b))
    if len(a_parts) != len(b_parts):
        return {"equal": False, "method": "symbolic", "reason": f"{len(a_parts)} parts vs {len(b_parts)}"}
    method, reason = "symbolic", ""
    for part_a, part_b in zip(a_parts, b_parts, strict=True):
        equal, method, reason = _equal_expressions(part_a.strip(), part_b.strip())
        if not equal:
            return {"equal": False, "method": method, "reason": reason}
    return {"equal": True, "method": method, "reason": reason}


def warm_up() -> None:
    """Import sympy and run one symbolic check: the first one in a process costs a second or more."""
    check("(x+1)^2", "x^2+2x+1")

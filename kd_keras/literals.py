"""``NAME=VALUE`` text: one rule for reading a VALUE, wherever a user writes one
(``--student_args``, ``--start_points`` changes, bench ``--points``)."""

import ast


def literal(text):
    """``'10'`` -> 10, ``'0.1'`` -> 0.1, ``'True'`` -> True; text that is no
    Python literal (``'strided_stem'``) stays text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text

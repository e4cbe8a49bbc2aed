"""Contextual tasks on Python source: contexts pinned on hand-written snippets, and their coverage on the stdlib."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monosemantic.data import StdlibSource
from monosemantic.errors import MonosemanticError
from monosemantic.evaluation.contexts import (
    PYTHON_CONTEXTS,
    RARE_PYTHON_CONTEXTS,
    context_coverage,
    context_labels_all,
    context_token_labels,
    python_context_chars,
)
from monosemantic.evaluation.labels import _label_tokens

pytestmark = pytest.mark.usefixtures("one_thread")


def _runs(text: str, task: str) -> list[str]:
    """The maximal runs of positive characters, as text: what a task marks, readably.

    Spaces between tokens are invalid (neither in nor out), so runs are found among valid
    characters and bridge the invalid ones between them.
    """
    valid_C, mask_C = python_context_chars(text)[task]
    at_V = np.flatnonzero(valid_C)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask_C[at_V].astype(np.int8), [0]])))
    return [text[at_V[start]:at_V[end - 1] + 1] for start, end in zip(edges[::2], edges[1::2])]


def _label_at(tokenizer, text: str, needle: str, task: str, occurrence: int = 0) -> int:
    """The label of the LM token holding the first character of the ``occurrence``-th ``needle``."""
    at = -1
    for _ in range(occurrence + 1):
        at = text.index(needle, at + 1)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    index = next(i for i, (start, end) in enumerate(offsets) if start <= at < end)
    return int(context_token_labels(tokenizer, text, task)[1][index])


SOURCE = '''"""Module doc."""
import os  # why
from a import (b,
    c)


class Shape(Base, metaclass=Meta):
    """Class doc."""
    size = 3

    def area(self, r, scale=2):
        "Method doc."
        for i in range(r):
            if i > 2 and check(i, key=r):
                # nested note
                return [j * 2 for j in table[i] if j]
        elif_like, y = {1: 2}, (1, 2)
        try:
            raise ValueError("bad")
        except (ValueError, KeyError) as e:
            y[0] += d[1:2]
        while y: pass
'''


def test_statement_contexts_of_known_source():
    assert _runs(SOURCE, "in_docstring") == ['"""Module doc."""', '"""Class doc."""', '"Method doc."']
    assert _runs(SOURCE, "in_string") == ['"bad"']
    assert _runs(SOURCE, "in_comment") == ["# why", "# nested note"]
    assert _runs(SOURCE, "in_import") == ["import os", "from a import (b,\n    c)"]
    assert _runs(SOURCE, "in_class_header") == ["class Shape(Base, metaclass=Meta):"]
    assert _runs(SOURCE, "in_def_signature") == ["def area(self, r, scale=2):"]
    assert _runs(SOURCE, "in_return_statement") == ["return [j * 2 for j in table[i] if j]"]
    assert _runs(SOURCE, "in_raise_statement") == ['raise ValueError("bad")']
    assert _runs(SOURCE, "in_loop_header") == ["for i in range(r):", "while y:"]
    assert _runs(SOURCE, "in_if_condition") == ["i > 2 and check(i, key=r)"]
    assert _runs(SOURCE, "in_try_body") == ['raise ValueError("bad")']
    assert _runs(SOURCE, "in_except_header") == ["except (ValueError, KeyError) as e:"]
    assert _runs(SOURCE, "in_except_body") == ["y[0] += d[1:2]"]
    assert _runs(SOURCE, "in_assignment_target") == ["size", "elif_like, y", "y[0]"]
    assert _runs(SOURCE, "in_assignment_value") == ["3", "{1: 2}, (1, 2)", "d[1:2]"]


def test_expression_contexts_of_known_source():
    assert _runs(SOURCE, "in_call_args") == ["r", "i, key=r", '"bad"']
    assert _runs(SOURCE, "in_keyword_argument_value") == ["Meta", "r"]
    assert _runs(SOURCE, "in_subscript") == ["i", "0", "1:2"]
    assert _runs(SOURCE, "in_comprehension") == ["[j * 2 for j in table[i] if j]"]
    assert _runs(SOURCE, "in_dict_literal") == ["{1: 2}"]
    assert _runs(SOURCE, "in_list_or_tuple_literal") == ["{1: 2}, (1, 2)", "(ValueError, KeyError)"]
    assert _runs(SOURCE, "in_comparison") == ["i > 2"]


def test_scopes_and_nesting_of_known_source():
    assert _runs(SOURCE, "at_module_level") == [SOURCE[:SOURCE.index('    """Class')].rstrip()]
    # Method signatures are class-level code; method bodies are not.
    assert _runs(SOURCE, "in_class_body") == ['"""Class doc."""\n    size = 3\n\n    def area(self, r, scale=2):']
    assert _runs(SOURCE, "in_function_body") == [SOURCE[SOURCE.index('"Method'):].rstrip()]
    assert _runs(SOURCE, "nesting_depth_ge2") == _runs(SOURCE, "in_function_body")  # a method body: two blocks deep
    # A comment-only line takes the level its column says, not the next statement's.
    assert _runs(SOURCE, "nesting_depth_ge3") == [
        "if i > 2 and check(i, key=r):\n                # nested note\n"
        "                return [j * 2 for j in table[i] if j]",
        'raise ValueError("bad")', "y[0] += d[1:2]"]
    text = "def f():\n    if x:\n        y()\n        # after y\n    # before z\n    z()\n# end\n"
    assert _runs(text, "nesting_depth_ge2") == ["y()\n        # after y"]


def test_token_labels_follow_the_first_non_space_character(smol_tokenizer):
    text = SOURCE
    assert _label_at(smol_tokenizer, text, "Class doc", "in_docstring") == 1
    assert _label_at(smol_tokenizer, text, "Class doc", "in_string") == 0
    assert _label_at(smol_tokenizer, text, "scale", "in_def_signature") == 1
    assert _label_at(smol_tokenizer, text, "scale", "in_call_args") == 0
    assert _label_at(smol_tokenizer, text, "key", "in_call_args") == 1
    assert _label_at(smol_tokenizer, text, "table", "in_comprehension") == 1
    assert _label_at(smol_tokenizer, text, "while", "in_loop_header") == 1
    assert _label_at(smol_tokenizer, text, "\n    size", "in_class_body") == -1  # a token of spaces only
    # The same first-character rule as labels._label_tokens, checked on every token of every task.
    every = [task.name for task in PYTHON_CONTEXTS + RARE_PYTHON_CONTEXTS]
    for text in (SOURCE, 'é = "ü\u3000☃"  # ñ\u00a0x\n\tf(\u2003ß)\n'):
        ids_T, labels = context_labels_all(smol_tokenizer, text, every)
        for name, (valid_C, mask_C) in python_context_chars(text).items():
            want_ids_T, want_T = _label_tokens(smol_tokenizer, text, np.where(valid_C, mask_C.astype(np.int64), -1))
            assert torch.equal(ids_T, want_ids_T) and torch.equal(labels[name], want_T), name


def test_non_ascii_before_a_node_keeps_offsets_right(smol_tokenizer):
    # ast columns are UTF-8 bytes: é is 2, ☃ 3 and 🐍 4 bytes before the call on the same line.
    text = 'café = "naïve ☃ 🐍"; größe(ünï, k=ß)  # ☃ note\nx = [ñ for ñ in "é"]\n'
    assert _runs(text, "in_call_args") == ["ünï, k=ß"]
    assert _runs(text, "in_keyword_argument_value") == ["ß"]
    assert _runs(text, "in_string") == ['"naïve ☃ 🐍"', '"é"']
    assert _runs(text, "in_comment") == ["# ☃ note"]
    assert _runs(text, "in_comprehension") == ['[ñ for ñ in "é"]']
    assert _label_at(smol_tokenizer, text, "k=", "in_call_args") == 1


def test_windows_line_endings_tabs_and_form_feeds():
    text = 'def f(a):\r\n\t"doc"\r\n\tif a:\r\n\t\treturn g(a)\r\n\x0cx = 1\r\n'
    assert _runs(text, "in_docstring") == ['"doc"']
    assert _runs(text, "in_call_args") == ["a"]
    assert _runs(text, "nesting_depth_ge2") == ["return g(a)"]
    assert _runs(text, "at_module_level") == ["def f(a):", "x = 1"]


def test_nested_comprehension_lambda_decorator_and_annotation():
    text = ('@cache(size=2)\ndef f(a: int = 1, *, b: "List[str]" = g(x)) -> dict[str, int]:\n'
            '    with open(p) as h, lock:\n        return {k: [v for v in w] for k, w in h}\n'
            'key = lambda z: z + 1\n')
    assert _runs(text, "in_comprehension") == ["{k: [v for v in w] for k, w in h}"]
    assert _runs(text, "in_dict_literal") == []  # a dict comprehension is not a dict display
    assert _runs(text, "in_decorator") == ["@cache(size=2)"]
    assert _runs(text, "in_type_annotation") == ["int", '"List[str]"', "dict[str, int]"]
    assert _runs(text, "in_default_value") == ["1", "g(x)"]
    assert _runs(text, "in_with_header") == ["with open(p) as h, lock:"]
    assert _runs(text, "in_lambda") == ["lambda z: z + 1"]
    assert _runs(text, "in_fstring") == []


def test_fstrings_count_whole_and_elif_conditions():
    text = 'if a:\n    pass\nelif b == 2:\n    s = f"{call(x)!r:>{w}}" + "plain"\n'
    assert _runs(text, "in_fstring") == ['f"{call(x)!r:>{w}}"']
    assert _runs(text, "in_string") == ['f"{call(x)!r:>{w}}"', '"plain"']
    assert _runs(text, "in_call_args") == []  # code inside an f-string is string only
    assert _runs(text, "in_if_condition") == ["a", "b == 2"]


def test_syntax_error_leaves_only_tokenize_tasks(smol_tokenizer):
    text = '# python 2\nprint "hello"  # old\nx = 1\n'
    chars = python_context_chars(text)
    assert _runs(text, "in_comment") == ["# python 2", "# old"]
    for task in PYTHON_CONTEXTS:
        valid_C, mask_C = chars[task.name]
        assert valid_C.any() != task.uses_ast and not (mask_C & ~valid_C).any(), task.name
    assert _label_at(smol_tokenizer, text, "old", "in_comment") == 1
    assert _label_at(smol_tokenizer, text, "hello", "in_string") == -1


def test_tokenize_error_keeps_what_came_before(smol_tokenizer):
    text = 'x = 1  # before\ns = """never closed\n# inside\n'
    valid_C, mask_C = python_context_chars(text)["in_comment"]
    stop = text.index('"""')
    assert valid_C[:stop].any() and not valid_C[stop:].any()
    assert _runs(text, "in_comment") == ["# before"]
    assert _label_at(smol_tokenizer, text, "inside", "in_comment") == -1
    assert python_context_chars("")["in_docstring"][0].shape == (0,)


def test_registry_and_bad_task_names(smol_tokenizer):
    names = [task.name for task in PYTHON_CONTEXTS + RARE_PYTHON_CONTEXTS]
    assert len(set(names)) == len(names) and len(PYTHON_CONTEXTS) >= 22
    assert all(task.description and "\n" not in task.description for task in PYTHON_CONTEXTS)
    assert list(python_context_chars("x = 1\n")) == names
    with pytest.raises(MonosemanticError, match="unknown context task"):
        context_token_labels(smol_tokenizer, "x = 1\n", "in_nowhere")


def test_coverage_on_a_stdlib_slice(smol_tokenizer):
    files = StdlibSource().files()
    texts = [path.read_text(encoding="utf-8", errors="replace") for path in files[::max(1, len(files) // 30)][:30]]
    coverage = context_coverage(smol_tokenizer, texts)
    assert list(coverage) == [task.name for task in PYTHON_CONTEXTS]
    print(f"\n{'task':28s} {'positive %':>10s} {'labelled':>9s}")
    for name, (positives, labelled) in coverage.items():
        print(f"{name:28s} {100 * positives / max(labelled, 1):10.2f} {labelled:9d}")
    usable = [name for name, (positives, labelled) in coverage.items() if 0.005 <= positives / labelled <= 0.95]
    assert len(usable) >= 20, coverage

"""Contextual binary tasks on Python source: is an LM token *in* a docstring, a call, a loop header...

The labels of :mod:`.labels` say what a token *is* (its ``tokenize`` category); these say where
it *is*: in which syntactic context, which the token's own text rarely tells. Each document is
read once by ``tokenize`` (comments, strings, indentation) and once by ``ast`` (everything
else), giving per task a boolean per character; each LM token then takes the value at its first
non-space character, as :func:`.labels.python_token_labels` does.

:data:`PYTHON_CONTEXTS` lists the tasks with enough positives to probe on the stdlib corpus
(0.5% to 60% of its tokens); :data:`RARE_PYTHON_CONTEXTS` those rarer there (decorators, type
annotations, lambdas...), labelled when asked for by name. :func:`context_labels_all` labels
every task from one tokenization (the path for whole corpora), :func:`context_token_labels` one
task, :func:`context_coverage` counts positives per task.

Validity. :func:`python_context_chars` returns, per task, ``(valid_C, mask_C)``:

- characters outside every ``tokenize`` token (spaces between tokens, newlines, indentation,
  line-continuation backslashes) are invalid for every task: a context is a property of code,
  and a token made only of spaces has no code to have it (spaces inside a string or comment
  are part of that token, so they stay valid);
- a tokenize error (an unclosed bracket or string) invalidates every character from the error on;
  what was read before it keeps its labels, as in :mod:`.labels`;
- the tasks built from ``ast`` (``ContextTask.uses_ast``) are invalid for the whole document when
  ``ast.parse`` fails (a syntax error, Python 2 source): only ``tokenize`` tasks survive.

``mask_C`` is False wherever ``valid_C`` is. Contexts nest freely (a token can be in a call
argument inside a comprehension inside a return statement). Code inside an f-string's
``{expressions}`` counts as string only: f-strings are one token before Python 3.12 and their
inner ``ast`` positions are unreliable there, so the labels do not depend on the Python version.
"""

from __future__ import annotations

import ast
import re
import sys
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import MonosemanticError
from .labels import _STRING_ENDS, _STRING_STARTS, _line_starts, _python_tokens, first_characters


@dataclass(frozen=True)
class ContextTask:
    """One binary context task: positives are the LM tokens in that context."""

    name: str  # short snake_case key, e.g. "in_docstring"
    description: str  # one line a human (or an explainer) can read
    uses_ast: bool = True  # False: built from tokenize alone, so it survives syntax errors


def _t(name: str, description: str, uses_ast: bool = True) -> ContextTask:
    return ContextTask(name, description, uses_ast)


PYTHON_CONTEXTS: tuple[ContextTask, ...] = (
    _t("in_comment", "inside a # comment", uses_ast=False),
    _t("in_fstring", "inside an f-string literal, its {expressions} included", uses_ast=False),
    _t("nesting_depth_ge2", "in a line indented two or more blocks deep (e.g. a method body, an if in a function)",
       uses_ast=False),
    _t("nesting_depth_ge3", "in a line indented three or more blocks deep", uses_ast=False),
    _t("in_docstring", "inside a docstring (a string statement first in a module, class or function body)"),
    _t("in_string", "inside a string literal that is not a docstring (f-strings included)"),
    _t("at_module_level", "in module-level code, outside every class and function body"),
    _t("in_class_body", "directly in a class body, outside its methods' bodies (method signatures count)"),
    _t("in_function_body", "inside the body of a function or method"),
    _t("in_import", "in an import or from-import statement"),
    _t("in_def_signature", "in a function signature, from def to the colon (decorators excluded)"),
    _t("in_class_header", "in a class header, from class to the colon"),
    _t("in_call_args", "inside the parentheses of a call (the parentheses themselves excluded)"),
    _t("in_keyword_argument_value", "in the value of a keyword argument (after name=)"),
    _t("in_subscript", "inside the brackets of a subscript or slice (the brackets themselves excluded)"),
    _t("in_comprehension", "in a list, set or dict comprehension or a generator expression"),
    _t("in_dict_literal", "in a dict display {k: v}"),
    _t("in_list_or_tuple_literal", "in a list or tuple display that is read, not assigned to"),
    _t("in_comparison", "in a comparison (==, <, in, is, ...)"),
    _t("in_assignment_target", "left of = in an assignment (plain, augmented or annotated)"),
    _t("in_assignment_value", "right of = in an assignment (plain, augmented or annotated)"),
    _t("in_return_statement", "in a return statement"),
    _t("in_raise_statement", "in a raise statement"),
    _t("in_if_condition", "in the condition of an if or elif"),
    _t("in_loop_header", "in a for or while header, from the keyword to the colon"),
    _t("in_loop_body", "inside the body of a for or while loop"),
    _t("in_try_body", "inside the body of a try block (before its except/else/finally)"),
    _t("in_except_header", "in an except clause header, from except to the colon"),
    _t("in_except_body", "inside the body of an except clause"),
)
# Below 0.5% of the stdlib's tokens (too few positives to probe on that corpus), but cheap and
# meaningful on annotated or more functional code: computed always, labelled when asked by name.
RARE_PYTHON_CONTEXTS: tuple[ContextTask, ...] = (
    _t("in_decorator", "in a decorator line, from the @ to the end of its expression"),
    _t("in_type_annotation", "in a type annotation of a parameter, a return or an annotated assignment"),
    _t("in_default_value", "in the default value of a function or lambda parameter"),
    _t("in_lambda", "in a lambda expression"),
    _t("in_with_header", "in a with header, from with to the colon"),
)
_DEFAULT_TASKS = tuple(task.name for task in PYTHON_CONTEXTS)
_TASK_NAMES = _DEFAULT_TASKS + tuple(task.name for task in RARE_PYTHON_CONTEXTS)
_AST_TASKS = tuple(task.name for task in PYTHON_CONTEXTS + RARE_PYTHON_CONTEXTS if task.uses_ast)
_SCOPES = {"at_module_level": 0, "in_class_body": 1, "in_function_body": 2}
_SPAN_TASKS = tuple(name for name in _AST_TASKS if name not in _SCOPES)
_LONE_CR = re.compile(r"\r(?!\n)")
_PREFIX = re.compile(r"[A-Za-z]*")


# ----- per character -----------------------------------------------------------------------------

def python_context_chars(text: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{task name: (valid_C, mask_C)}``, bool ``[len(text)]`` each, for every task of
    :data:`PYTHON_CONTEXTS` then :data:`RARE_PYTHON_CONTEXTS`.

    ``valid_C``: the character could be labelled (see the module docstring); ``mask_C``: it is
    in the task's context (always False where invalid). Tasks of one kind share one ``valid_C``.
    """
    line_starts = _line_starts(text)
    scan = _TokenScan(text, line_starts)
    for tok in _python_tokens(text):
        scan.feed(tok)
    scan.finish()
    valid_C = scan.covered_C.copy()
    valid_C[scan.reached:] = False
    valid_C.flags.writeable = False  # shared by every task of a kind
    out = {name: (valid_C, mask_C & valid_C) for name, mask_C in _tokenize_masks(len(text), scan).items()}
    ast_masks = _ast_masks(text, line_starts, scan)
    ast_valid_C = valid_C if ast_masks is not None else np.zeros(len(text), dtype=bool)
    ast_valid_C.flags.writeable = False
    for name in _AST_TASKS:
        mask_C = ast_masks[name] & ast_valid_C if ast_masks is not None else ast_valid_C
        out[name] = (ast_valid_C, mask_C)
    return {name: out[name] for name in _TASK_NAMES}


def _tokenize_masks(n_chars: int, scan: _TokenScan) -> dict[str, np.ndarray]:
    masks = {name: np.zeros(n_chars, dtype=bool) for name in ("in_comment", "in_fstring", "nesting_depth_ge2",
                                                             "nesting_depth_ge3")}
    for start, end in scan.comments:
        masks["in_comment"][start:end] = True
    for start, end, is_f in scan.strings:
        if is_f:
            masks["in_fstring"][start:end] = True
    for start, end, depth in scan.depths:
        if depth >= 2:
            masks["nesting_depth_ge2"][start:end] = True
            masks["nesting_depth_ge3"][start:end] = depth >= 3
    return masks


class _TokenScan:
    """One pass over tokenize's tokens: what tokens cover, comments, strings, indentation depth,
    and the significant tokens that header scans walk (f-strings collapsed to one token)."""

    def __init__(self, text: str, line_starts: list[int]) -> None:
        self.text, self.line_starts = text, line_starts
        self.covered_C = np.zeros(len(text), dtype=bool)
        self.reached = 0
        self.comments: list[tuple[int, int]] = []
        self.strings: list[tuple[int, int, bool]] = []
        self.depths: list[tuple[int, int, int]] = []
        self.heads: list[tuple[int, str]] = []  # (start, OP text, "\n" for NEWLINE, "" otherwise)
        self.indents: list[int] = []  # column of every open indentation level
        self.pending: list[tuple[int, int, int, tuple[int, ...]]] = []  # comment-only lines
        self.fstring_depth, self.fstring_start = 0, 0

    def feed(self, tok: tokenize.TokenInfo) -> None:
        start = self.line_starts[tok.start[0] - 1] + tok.start[1]
        end = self.line_starts[tok.end[0] - 1] + tok.end[1]
        if tok.string and self.text[start:end] != tok.string and self.text.startswith(tok.string, start):
            end = start + len(tok.string)  # 3.12.1 counts some multi-line strings' last line in bytes
        self.reached = max(self.reached, end)
        if tok.type in _STRING_STARTS:
            self.fstring_depth += 1
            self.fstring_start = start if self.fstring_depth == 1 else self.fstring_start
        elif tok.type in _STRING_ENDS:
            self.fstring_depth -= 1
            if self.fstring_depth == 0:
                self._code(self.fstring_start, end, "", string=True)
        elif self.fstring_depth:
            pass  # inside an f-string, taken whole at its end
        elif tok.type == tokenize.INDENT:
            self.indents.append(tok.end[1])
        elif tok.type == tokenize.DEDENT:
            self.indents.pop()
        elif tok.type == tokenize.NEWLINE:
            self.heads.append((start, "\n"))
        elif end <= start or self.text[start:end] != tok.string or tok.type == tokenize.NL or tok.string.isspace():
            pass  # zero-width, offsets we cannot trust, or whitespace
        elif tok.type == tokenize.COMMENT:
            self._comment(tok, start, end)
        else:
            self._code(start, end, tok.string if tok.type == tokenize.OP else "", string=tok.type == tokenize.STRING)

    def _code(self, start: int, end: int, op: str, string: bool) -> None:
        self._resolve_pending()
        self.covered_C[start:end] = True
        self.depths.append((start, end, len(self.indents)))
        self.heads.append((start, op))
        if string:
            match = _PREFIX.match(self.text, start)
            assert match is not None  # [A-Za-z]* matches anywhere, if only the empty string
            prefix = match.group().lower()
            self.strings.append((start, end, "f" in prefix or "t" in prefix))

    def _comment(self, tok: tokenize.TokenInfo, start: int, end: int) -> None:
        self.covered_C[start:end] = True
        self.comments.append((start, end))
        if tok.line[:tok.start[1]].strip():
            self.depths.append((start, end, len(self.indents)))  # after code: that line's depth
        else:
            self.pending.append((start, end, tok.start[1], tuple(self.indents)))

    def _resolve_pending(self) -> None:
        # A comment-only line comes before the INDENT or DEDENT of the next statement, so its
        # level is read from its column against the levels open around it (before and after).
        for start, end, column, before in self.pending:
            levels = set(before) | set(self.indents)
            self.depths.append((start, end, sum(level <= column for level in levels)))
        self.pending.clear()

    def finish(self) -> None:
        self._resolve_pending()
        self.head_starts = np.array([start for start, _ in self.heads], dtype=np.int64)


# ----- ast ---------------------------------------------------------------------------------------

def _ast_masks(text: str, line_starts: list[int], scan: _TokenScan) -> dict[str, np.ndarray] | None:
    """Per ast task, a bool mask over characters; None when the source does not parse."""
    try:
        # CPython's parser also ends lines at a lone "\r", which tokenize (and _line_starts) do
        # not; a space in its place keeps both line numberings and every offset the same.
        tree = ast.parse(_LONE_CR.sub(" ", text))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    spans = _AstSpans(text, line_starts, scan)
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        handler = _HANDLERS.get(type(node))
        if handler is not None:
            handler(spans, node)
        if not isinstance(node, ast.JoinedStr) and type(node).__name__ != "TemplateStr":
            stack.extend(reversed(list(ast.iter_child_nodes(node))))  # pre-order: parents first
    return spans.masks()


class _AstSpans:
    """Character spans per task, gathered in one walk of the tree."""

    def __init__(self, text: str, line_starts: list[int], scan: _TokenScan) -> None:
        self.text, self.line_starts, self.scan = text, line_starts, scan
        self.spans: dict[str, list[tuple[int, int]]] = {name: [] for name in _SPAN_TASKS}
        self.scopes: list[tuple[int, int, int]] = []  # (start, end, scope), outer before inner
        self.byte_maps: dict[int, np.ndarray | None] = {}
        self.ascii = text.isascii()

    def char(self, lineno: int, col: int) -> int:
        """The character offset of ast's (line, UTF-8 byte column)."""
        start = self.line_starts[min(lineno, len(self.line_starts)) - 1]
        if self.ascii:
            return min(start + col, len(self.text))
        if lineno not in self.byte_maps:
            line = self.text[start:self.line_starts[min(lineno, len(self.line_starts) - 1)]]
            sizes = [len(c.encode("utf-8", "surrogatepass")) for c in line] if not line.isascii() else None
            self.byte_maps[lineno] = None if sizes is None else np.concatenate([[0], np.cumsum(sizes)])
        offsets = self.byte_maps[lineno]
        return min(start + (col if offsets is None else int(np.searchsorted(offsets, col))), len(self.text))

    def span(self, node) -> tuple[int, int]:
        return self.char(node.lineno, node.col_offset), self.char(node.end_lineno, node.end_col_offset)

    def add(self, task: str, node_or_span) -> None:
        start, end = node_or_span if isinstance(node_or_span, tuple) else self.span(node_or_span)
        if start < end:
            self.spans[task].append((start, end))

    def stmt_start(self, stmt) -> int:
        """Where a statement starts, its decorators' @ included."""
        starts = [self.decorator_span(d)[0] for d in getattr(stmt, "decorator_list", ())]
        return min([self.span(stmt)[0], *starts])

    def decorator_span(self, expr) -> tuple[int, int]:
        start, end = self.span(expr)
        at = self.text.rfind("@", max(0, start - 80), start)  # only spaces may separate them
        return (at if at >= 0 and not self.text[at + 1:start].strip() else start), end

    def body_span(self, stmts) -> tuple[int, int]:
        return (self.stmt_start(stmts[0]), self.span(stmts[-1])[1]) if stmts else (0, 0)

    def header_span(self, node) -> tuple[int, int]:
        """From a compound statement's keyword to the colon that ends its header."""
        start = self.span(node)[0]
        heads, depth = self.scan.heads, 0
        for index in range(int(np.searchsorted(self.scan.head_starts, start)), len(heads)):
            position, op = heads[index]
            if op == "\n" or (op == ":" and depth == 0):
                return start, position + (op == ":")
            depth += (op in "([{") - (op in ")]}") if len(op) == 1 else 0
        return start, start

    def inside(self, node, opener: str, after) -> tuple[int, int]:
        """Inside a node's brackets, opened by the first ``opener`` after ``after`` (a child node)."""
        start, end = self.span(node)
        bracket = self.text.find(opener, self.span(after)[1], end)
        return (bracket + 1, end - 1) if bracket >= 0 else (end, end)

    def masks(self) -> dict[str, np.ndarray]:
        masks = {}
        for task, spans in self.spans.items():
            mask_C = np.zeros(len(self.text), dtype=bool)
            for start, end in spans:
                mask_C[start:end] = True
            masks[task] = mask_C
        scope_C = np.zeros(len(self.text), dtype=np.int8)
        for start, end, scope in self.scopes:
            scope_C[start:end] = scope
        masks.update({task: scope_C == scope for task, scope in _SCOPES.items()})
        masks["in_string"] &= ~masks["in_docstring"]
        return masks


# ----- ast node handlers: each adds the spans its node type opens -----------------------------------

def _docstring(spans: _AstSpans, body: list) -> None:
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        spans.add("in_docstring", first)


def _on_module(spans: _AstSpans, node: ast.Module) -> None:
    _docstring(spans, node.body)


def _on_def(spans: _AstSpans, node) -> None:
    _docstring(spans, node.body)
    for decorator in node.decorator_list:
        spans.add("in_decorator", spans.decorator_span(decorator))
    spans.add("in_def_signature", spans.header_span(node))
    arguments = node.args
    for arg in [*arguments.posonlyargs, *arguments.args, arguments.vararg, *arguments.kwonlyargs, arguments.kwarg]:
        if arg is not None and arg.annotation is not None:
            spans.add("in_type_annotation", arg.annotation)
    if node.returns is not None:
        spans.add("in_type_annotation", node.returns)
    spans.scopes.append((*spans.body_span(node.body), _SCOPES["in_function_body"]))


def _on_arguments(spans: _AstSpans, node: ast.arguments) -> None:
    for default in [*node.defaults, *node.kw_defaults]:
        if default is not None:
            spans.add("in_default_value", default)


def _on_class(spans: _AstSpans, node: ast.ClassDef) -> None:
    _docstring(spans, node.body)
    for decorator in node.decorator_list:
        spans.add("in_decorator", spans.decorator_span(decorator))
    spans.add("in_class_header", spans.header_span(node))
    spans.scopes.append((*spans.body_span(node.body), _SCOPES["in_class_body"]))


def _on_string(spans: _AstSpans, node) -> None:
    # Docstrings are Constants too; masks() takes them out of in_string.
    if isinstance(node, ast.JoinedStr) or isinstance(node.value, (str, bytes)):
        spans.add("in_string", node)


def _on_call(spans: _AstSpans, node: ast.Call) -> None:
    spans.add("in_call_args", spans.inside(node, "(", node.func))


def _on_keyword(spans: _AstSpans, node: ast.keyword) -> None:
    if node.arg is not None:  # **mapping is unpacking, not a keyword argument
        spans.add("in_keyword_argument_value", node.value)


def _on_subscript(spans: _AstSpans, node: ast.Subscript) -> None:
    spans.add("in_subscript", spans.inside(node, "[", node.value))


def _on_sequence(spans: _AstSpans, node) -> None:
    if isinstance(node.ctx, ast.Load):
        spans.add("in_list_or_tuple_literal", node)


def _on_assign(spans: _AstSpans, node) -> None:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    for target in targets:
        spans.add("in_assignment_target", target)
    if node.value is not None:
        spans.add("in_assignment_value", node.value)
    if isinstance(node, ast.AnnAssign):
        spans.add("in_type_annotation", node.annotation)


def _on_loop(spans: _AstSpans, node) -> None:
    spans.add("in_loop_header", spans.header_span(node))
    spans.add("in_loop_body", spans.body_span(node.body))


def _on_try(spans: _AstSpans, node) -> None:
    spans.add("in_try_body", spans.body_span(node.body))


def _on_handler(spans: _AstSpans, node: ast.ExceptHandler) -> None:
    spans.add("in_except_header", spans.header_span(node))
    spans.add("in_except_body", spans.body_span(node.body))


def _whole(task: str):
    return lambda spans, node: spans.add(task, node)


def _header(task: str):
    return lambda spans, node: spans.add(task, spans.header_span(node))


_HANDLERS = {
    ast.Module: _on_module, ast.FunctionDef: _on_def, ast.AsyncFunctionDef: _on_def, ast.ClassDef: _on_class,
    ast.arguments: _on_arguments, ast.Constant: _on_string, ast.JoinedStr: _on_string, ast.Call: _on_call,
    ast.keyword: _on_keyword, ast.Subscript: _on_subscript, ast.List: _on_sequence, ast.Tuple: _on_sequence,
    ast.Assign: _on_assign, ast.AugAssign: _on_assign, ast.AnnAssign: _on_assign,
    ast.For: _on_loop, ast.AsyncFor: _on_loop, ast.While: _on_loop, ast.Try: _on_try,
    ast.ExceptHandler: _on_handler, ast.Import: _whole("in_import"), ast.ImportFrom: _whole("in_import"),
    ast.ListComp: _whole("in_comprehension"), ast.SetComp: _whole("in_comprehension"),
    ast.DictComp: _whole("in_comprehension"), ast.GeneratorExp: _whole("in_comprehension"),
    ast.Lambda: _whole("in_lambda"), ast.Dict: _whole("in_dict_literal"), ast.Compare: _whole("in_comparison"),
    ast.Return: _whole("in_return_statement"), ast.Raise: _whole("in_raise_statement"),
    ast.With: _header("in_with_header"), ast.AsyncWith: _header("in_with_header"),
    ast.If: lambda spans, node: spans.add("in_if_condition", node.test),
}
if sys.version_info >= (3, 11):  # try/except* (ast.TryStar) is new in 3.11
    _HANDLERS[ast.TryStar] = _on_try


# ----- per LM token ------------------------------------------------------------------------------

def context_labels_all(tokenizer, text: str, tasks: Sequence[str] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """``(token_ids_T, {task name: labels_T})``: one tokenization of ``text``, labels for every task.

    ``tasks``: names to label, :data:`PYTHON_CONTEXTS` by default (rare ones by name). Labels are
    int64: 1 in the context, 0 not, -1 where the token's first non-space character (its first
    character if all spaces) is invalid for the task.
    """
    tasks = _check_tasks(tasks)
    ids_T, first_T = _first_characters(tokenizer, text)
    chars = python_context_chars(text)
    labels = {}
    for name in tasks:
        valid_C, mask_C = chars[name]
        labels_T = np.full(len(first_T), -1, dtype=np.int64)
        inside_T = first_T < len(text)
        at_T = first_T[inside_T]
        labels_T[inside_T] = np.where(valid_C[at_T], mask_C[at_T].astype(np.int64), -1)
        labels[name] = torch.from_numpy(labels_T)
    return ids_T, labels


def context_token_labels(tokenizer, text: str, task: str) -> tuple[Tensor, Tensor]:
    """``(token_ids_T, labels_T)`` for one task of :data:`PYTHON_CONTEXTS`: 1, 0, or -1 where unlabelled."""
    ids_T, labels = context_labels_all(tokenizer, text, [task])
    return ids_T, labels[task]


def context_coverage(tokenizer, texts: Iterable[str], tasks: Sequence[str] | None = None) -> dict[str, tuple[int, int]]:
    """``{task name: (positive tokens, labelled tokens)}`` summed over ``texts``.

    ``tasks`` as in :func:`context_labels_all`.
    """
    tasks = _check_tasks(tasks)
    counts = {name: [0, 0] for name in tasks}
    for text in texts:
        _, labels = context_labels_all(tokenizer, text, tasks)
        for name, labels_T in labels.items():
            counts[name][0] += int((labels_T == 1).sum())
            counts[name][1] += int((labels_T >= 0).sum())
    return {name: (positives, labelled) for name, (positives, labelled) in counts.items()}


def _first_characters(tokenizer, text: str) -> tuple[Tensor, np.ndarray]:
    """Token ids, and per token the index of its first non-space character (its first, if all
    spaces): the character that labels it, exactly as labels._label_tokens picks it."""
    if not getattr(tokenizer, "is_fast", False):
        raise MonosemanticError(f"labelling tokens needs character offsets, which {type(tokenizer).__name__} does "
                                "not give; load the model's fast tokenizer (AutoTokenizer, use_fast=True)")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    return torch.tensor(encoded["input_ids"], dtype=torch.int64), first_characters(text, encoded["offset_mapping"])


def _check_tasks(tasks: Sequence[str] | None) -> tuple[str, ...]:
    if tasks is None:
        return _DEFAULT_TASKS
    tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
    for task in tasks:
        if task not in _TASK_NAMES:
            raise MonosemanticError(f"unknown context task {task!r}; expected one of {list(_TASK_NAMES)} "
                                    "(the names in PYTHON_CONTEXTS and RARE_PYTHON_CONTEXTS)")
    return tasks

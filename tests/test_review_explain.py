"""Explanations: the model chooses among sentences built from the tool's result under a JSON schema (or writes
bounded ones), a reply out of schema or a failed request falls back to the first candidates, the code under review
reaches the prompt bounded, and every comment sits on a finding with its tool and rule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from apps.code_review import explain as explain_module
from apps.code_review.analyzers import Finding
from apps.code_review.explain import (
    MAX_EXPLANATION_CHARS,
    Candidates,
    doc_passages,
    explain,
    explain_findings,
    finding_candidates,
    patch_candidates,
    schema,
    snippet,
)
from apps.code_review.inputs import from_code
from apps.code_review.report import markdown
from apps.code_review.review import review
from core import ScriptedModel

RUFF_DOC = """## What it does
Checks for unused imports.

## Why is this bad?
Unused imports add a performance overhead at runtime, and risk creating
import cycles. See [PEP 8].

## Example
```python
import os
```

[PEP 8]: https://peps.python.org/pep-0008/
"""
UNUSED = Finding("m.py", 1, 1, "F401", "warning", "`os` imported but unused", "ruff", 8,
                 "https://docs.astral.sh/ruff/rules/unused-import")
CODE = "import os\nimport subprocess\n\n\ndef run(command):\n    return subprocess.call(command, shell=True)\n"


def test_passages_come_from_the_rules_documentation_why_first():
    assert doc_passages(RUFF_DOC) == ["Unused imports add a performance overhead at runtime, and risk creating import "
                                      "cycles. See PEP 8.", "Checks for unused imports."]
    bandit = ("**B602: Test**\n\n    Shell injection is dangerous. This plugin test looks for:\n\n    - a\n\n"
              "    .. code-block:: none\n\n        x\n")
    assert doc_passages(bandit) == ["Shell injection is dangerous."]


def test_candidates_hold_the_tools_fix_and_the_prompt_holds_the_finding():
    fixed = Finding("m.py", 1, 1, "F401", "warning", "`os` imported but unused (fix: Remove unused import: `os`)",
                    "ruff")
    candidates = finding_candidates(fixed, RUFF_DOC, "    1 | import os")
    assert candidates.explanations[1] == "Checks for unused imports."
    assert candidates.hints == ["Remove unused import: `os`."]  # the tool's own fix: nothing to choose
    assert "Tool: ruff\nRule: F401" in candidates.prompt and "```python\n    1 | import os\n```" in candidates.prompt
    unfixed = finding_candidates(UNUSED, RUFF_DOC, "")
    assert unfixed.hints == ["The rule's page shows an example and its correct form: "
                             "https://docs.astral.sh/ruff/rules/unused-import", "If it is deliberate, mark the line "
                             "with `# noqa: F401`."]
    undocumented = finding_candidates(Finding("m.py", 3, 3, "X9", "error", "boom", "ruff"), "", "")
    assert undocumented.explanations == ["ruff X9 reports: boom"]


def test_the_model_chooses_by_number_under_the_schema():
    candidates = finding_candidates(UNUSED, RUFF_DOC, "")
    model = ScriptedModel([{"explanation": 2, "fix_hint": 2}])
    [comment] = explain(model, [candidates])
    assert (comment.explanation, comment.fix_hint, comment.source) == (
        "Checks for unused imports.", "If it is deliberate, mark the line with `# noqa: F401`.", "model-chosen")
    sent = model.calls[0].options["json_schema"]
    assert sent == schema(candidates, "choose")
    assert sent["properties"] == {"explanation": {"enum": [1, 2]}, "fix_hint": {"enum": [1, 2]}}
    assert sent["additionalProperties"] is False and sent["required"] == ["explanation", "fix_hint"]


@pytest.mark.parametrize("reply", ['{"explanation": 3, "fix_hint": 1}', "Unused imports are bad, I think.",
                                   '{"explanation": true, "fix_hint": 1}', '{"explanation": 1}',
                                   '{"explanation": 1, "fix_hint": 1, "extra": "invented"}'])
def test_a_reply_out_of_schema_falls_back_to_the_first_candidates(reply):
    candidates = finding_candidates(UNUSED, RUFF_DOC, "")
    [comment] = explain(ScriptedModel([reply]), [candidates])
    assert (comment.explanation, comment.fix_hint, comment.source) == (
        candidates.explanations[0], candidates.hints[0], "template")


def test_a_single_candidate_each_needs_no_model_call():
    model = ScriptedModel([])
    [comment] = explain(model, [Candidates(["Only one."], ["Only hint."], "p")])
    assert comment.source == "template" and model.calls == []


def test_writing_is_bounded_by_the_schema_and_cut():
    candidates = finding_candidates(UNUSED, RUFF_DOC, "")
    long = "x" * 1000
    [comment] = explain(ScriptedModel([{"explanation": long, "fix_hint": "Delete it."}]), [candidates], "write")
    assert comment.source == "model-written" and len(comment.explanation) == MAX_EXPLANATION_CHARS
    assert schema(candidates, "write")["properties"]["explanation"]["maxLength"] == MAX_EXPLANATION_CHARS


def test_a_failed_request_stays_with_its_item():
    big = Candidates(["a.", "b."], ["h."], "word " * 500)
    small = Candidates(["a.", "b."], ["h."], "short prompt")
    model = ScriptedModel([{"explanation": 2, "fix_hint": 1}], context_length=200)  # the big prompt overflows
    first, second = explain(model, [big, small])
    assert first.source == "template" and (second.explanation, second.source) == ("b.", "model-chosen")


def test_the_code_reaches_the_prompt_bounded(tmp_path):
    (tmp_path / "m.py").write_text("\n".join(["ok = 1"] * 5 + ["x = '" + "A" * 5000 + "'"] + ["ok = 2"] * 40))
    text = snippet(tmp_path, Finding("m.py", 6, 40, "E501", "warning", "long", "ruff"))
    lines = text.splitlines()
    assert len(lines) == explain_module.MAX_SNIPPET_LINES and lines[0].startswith("    4 | ok = 1")
    assert max(len(line) for line in lines) <= explain_module.MAX_SNIPPET_LINE_CHARS + 8
    assert snippet(tmp_path, Finding("gone.py", 1, 1, "X", "note", "m", "ruff")) == ""


def test_every_comment_of_a_review_sits_on_a_finding_with_its_tool_and_rule():
    with from_code(CODE) as target:
        model = ScriptedModel([{"explanation": 1, "fix_hint": 1}] * 10)
        result = review(target, llm=model, tools=("ruff", "bandit"))
    assert {(f.tool, f.rule) for f in result.findings} == {("ruff", "F401"), ("bandit", "B404"), ("bandit", "B602")}
    assert all(e is not None for e in result.explanations)
    text = markdown(result)
    comments = re.findall(r"^  - \*Why \((\w+) ([\w-]+)\):\*", text, re.M)
    findings = re.findall(r"— (\w+) `([\w-]+)`$", text, re.M)
    assert comments == findings and len(comments) == 3
    for call in model.calls:  # each prompt: one finding, its tool and rule, its code as data
        user = call.prompt[1]["content"]
        assert re.search(r"^Tool: (ruff|bandit)\nRule: \w+", user) and "```python\n" in user


def test_findings_past_the_limit_get_no_explanation(tmp_path):
    (tmp_path / "m.py").write_text("import os\nimport sys\nimport re\n")
    findings = [Finding("m.py", n, n, "F401", "warning", "unused", "ruff") for n in (1, 2, 3)]
    comments = explain_findings(ScriptedModel([{"explanation": 1, "fix_hint": 1}] * 2), tmp_path, findings, limit=2)
    assert [c is not None for c in comments] == [True, True, False]
    with from_code(CODE) as target:
        result = review(target, llm=ScriptedModel([{"explanation": 1, "fix_hint": 1}] * 3), max_explained=1)
    assert "explained: the first 1 of 3 findings (--max-explained)" in markdown(result)


def test_a_patch_is_explained_from_its_diff_and_the_tests_it_made_pass():
    patch = {"file": "calc.py", "line": 3, "size": 1, "source": "mutation", "fixed_tests": ["test_calc.py::test_add"],
             "diff": "--- a/calc.py\n+++ b/calc.py\n@@ -3 +3 @@\n-    return a - b\n+    return a + b\n"}
    candidates = patch_candidates(patch)
    assert candidates.explanations[0] == ("On line 3 of calc.py, `return a - b` becomes `return a + b`: with it "
                                          "test_calc.py::test_add now passes, and no test that passed before fails.")
    [comment] = explain(ScriptedModel([json.dumps({"explanation": 1, "fix_hint": 2})]), [candidates])
    assert comment.source == "model-chosen" and comment.explanation == candidates.explanations[0]


def test_no_model_means_templates(tmp_path):
    assert explain(None, [Candidates(["a.", "b."], ["h."], "p")])[0].source == "template"
    assert Path(tmp_path).exists()


def test_smollm2_chooses_within_the_schema(llm, tmp_path):
    """The embedded model under the integer-enum schema: every reply parses and picks an existing candidate."""
    (tmp_path / "m.py").write_text(CODE + "\n\ndef f(values=[]):\n    return len(value)\n")
    findings = [Finding("m.py", 6, 6, "B602", "error", "subprocess call with shell=True identified", "bandit"),
                Finding("m.py", 10, 10, "F821", "error", "Undefined name `value`", "ruff",
                        url="https://docs.astral.sh/ruff/rules/undefined-name"),
                Finding("m.py", 9, 9, "B006", "warning", "Do not use mutable data structures for argument defaults",
                        "ruff", url="https://docs.astral.sh/ruff/rules/mutable-argument-default")]
    comments = explain_findings(llm, tmp_path, findings)
    for finding, comment in zip(findings, comments, strict=True):
        candidates = finding_candidates(finding, explain_module.rule_docs(finding.tool, {finding.rule}).get(
            finding.rule, ""), "")
        asked = len(candidates.explanations) > 1 or len(candidates.hints) > 1
        assert comment.source == ("model-chosen" if asked else "template"), (finding.rule, comment)
        assert comment.explanation in candidates.explanations and comment.fix_hint in candidates.hints
    assert sum(c.source == "model-chosen" for c in comments) >= 2

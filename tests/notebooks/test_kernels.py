"""A warm kernel runs notebook after notebook: nothing of one is left for the next, and a kernel
that died is replaced."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

from pstlib.reports.kernels import WarmKernel

pytestmark = pytest.mark.slow


def _notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("value = None", metadata={"tags": ["parameters"]}),
                *(nbformat.v4.new_code_cell(s) for s in sources)]
    return nb


def test_a_warm_kernel_starts_each_notebook_afresh(tmp_path: Path) -> None:
    with WarmKernel() as kernel:
        first = kernel.execute(_notebook("left = value", "import warnings",
                                         "warnings.warn('once')"),
                               str(tmp_path / "a.ipynb"), {"value": 1})
        second = kernel.execute(_notebook("print(sorted(k for k in globals() if k == 'left'))",
                                          "import warnings", "warnings.warn('once')"),
                                str(tmp_path / "b.ipynb"), {"value": 2})
        with pytest.raises(papermill.PapermillExecutionError) as failed:
            kernel.execute(_notebook("raise ValueError(value)"), str(tmp_path / "c.ipynb"),
                           {"value": 3})
        assert failed.value.cell_index == 2 and failed.value.ename == "ValueError"
        with pytest.raises(Exception):  # noqa: B017 - nbclient's DeadKernelError, or papermill's
            kernel.execute(_notebook("import os; os._exit(1)"), str(tmp_path / "d.ipynb"), {})
        after = kernel.execute(_notebook("print(value)"), str(tmp_path / "e.ipynb"), {"value": 4})
    assert second.cells[2].outputs[0]["text"] == "[]\n"  # first notebook's names are gone
    for nb in (first, second):  # the warning shows in every notebook that raises it
        assert any(o.get("name") == "stderr" and "once" in o["text"] for o in nb.cells[4].outputs)
    assert [c.execution_count for c in second.cells] == [1, 2, 3, 4, 5][:len(second.cells)]
    assert after.cells[-1].outputs[0]["text"] == "4\n"  # a new kernel after the dead one

"""Every causal-LM type of the installed transformers is right or refused at every site, and
the README's coverage table is what the matrix gives (generated, never hand-typed)."""

import re

import pytest
import transformers

from tests.attach.family_matrix import README, readme_block, render, run_matrix


@pytest.mark.slow
def test_every_site_of_every_type_is_right_or_refused(capsys) -> None:
    rows, skipped = run_matrix()  # raises on anything but a CodebookError refusal or a pass
    block = render(rows, skipped)
    with capsys.disabled():
        print("\n" + block)
    assert len(rows) > 100
    written = readme_block(README.read_text())
    recorded = re.search(r"with transformers (\S+):", written)
    if recorded and recorded.group(1) != transformers.__version__:
        pytest.skip(
            f"README.md's table is from transformers {recorded.group(1)}, this is "
            f"{transformers.__version__}: the matrix holds; regenerate the table to compare it"
        )
    assert written == block, (
        "README.md's model coverage is out of date: run python -m tests.attach.family_matrix"
    )

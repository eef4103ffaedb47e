"""The docs that must follow the code."""

from __future__ import annotations

from pathlib import Path

import pytest
from gen_diagram import DOC, render

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(30)


def test_architecture_diagram_is_generated_from_the_table() -> None:
    text = DOC.read_text()
    assert render(text) == text, "run: python tools/gen_diagram.py"


def test_protocol_doc_names_every_message_type() -> None:
    from zmqfail.protocol import MESSAGE_TYPES

    text = (ROOT / "docs" / "protocol.md").read_text()
    missing = [t for t in MESSAGE_TYPES if f"`{t}`" not in text]
    assert not missing, f"docs/protocol.md does not describe: {missing}"

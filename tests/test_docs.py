"""The docs that must follow the code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from gen_diagram import DOC, render  # noqa: E402

pytestmark = pytest.mark.timeout(30)


def test_architecture_diagram_is_generated_from_the_table() -> None:
    text = DOC.read_text()
    assert render(text) == text, "run: python tools/gen_diagram.py"


def test_protocol_doc_names_every_message_type() -> None:
    from zmqfail.protocol import MESSAGE_TYPES

    text = (ROOT / "docs" / "protocol.md").read_text()
    missing = [t for t in MESSAGE_TYPES if f"`{t}`" not in text]
    assert not missing, f"docs/protocol.md does not describe: {missing}"

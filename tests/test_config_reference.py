"""docs/reference/config.md lists every key of the config dataclasses with its type, default and meaning, and is
what docs/config_reference.py generates from src/cycleseg/config.py now (issue 36)."""

import importlib.util
from pathlib import Path

from cycleseg.config import Config, flat_items

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("config_reference", DOCS / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_config_key_has_a_type_a_default_and_a_meaning():
    docs = _generator().field_docs()
    assert list(docs) == [key for key, _ in flat_items(Config().to_dict())]  # every key, in the config's order
    missing = [key for key, d in docs.items() if len(d["meaning"]) < 10]
    assert not missing, f"keys without a comment in src/cycleseg/config.py: {missing}"
    assert docs["noise.bits"] == {"type": "int | None", "default": "None",
                                  "meaning": "quantize: n in 1..8, 2^n levels on [-1, 1]"}
    assert docs["loss.beta"]["default"] == "1 / 11"


def test_the_reference_page_is_up_to_date():
    page = (DOCS / "reference" / "config.md").read_text()
    assert page == _generator().page(), "docs/reference/config.md is stale: run `python docs/config_reference.py`"
    for key, _ in flat_items(Config().to_dict()):
        assert f"| `{key}` |" in page, key

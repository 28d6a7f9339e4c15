"""Make a saved RobustSER folder load with `trust_remote_code=True` where rrpo-hf is not installed.

Transformers copies the modeling file and the same-folder modules it imports relatively (this one included) into the
saved folder, but not the `rrpo_hf.ops` / `rrpo_hf.utils` modules the code imports with absolute paths (a relative
`..ops` line would make its copier look for a file that is not there). So they are copied next to it here and those
lines rewritten to same-folder imports. This module ships in the folder too, so it imports only the standard library,
transformers and (rewritten on save) the modules it bundles.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from rrpo_hf.utils.saving import atomic_write_text


# Packages whose modules the saved code may import; they import only torch, the stdlib and each other.
_BUNDLED_IMPORT = re.compile(r"^from rrpo_hf\.(ops|utils)\.(\w+) import", flags=re.MULTILINE)
_RRPO_IMPORT = re.compile(r"^\s*(from|import)\s+rrpo_hf\b", flags=re.MULTILINE)


def bundle_remote_code_dependencies(save_directory, modeling_filename: str) -> list[Path]:
    """Make a saved folder self-contained: copy each `rrpo_hf.ops.<name>` / `rrpo_hf.utils.<name>` module that the
    saved modeling file or its same-folder modules import (with those modules' own relative imports) next to them,
    and rewrite those imports to `from .<name>`. Returns the copied files.

    A no-op for code that already uses relative imports (a model that was itself loaded as remote code).
    """
    from transformers.dynamic_module_utils import get_relative_import_files

    save_directory = Path(save_directory)
    modeling_path = save_directory / modeling_filename
    written = []
    for code_path in [modeling_path, *map(Path, get_relative_import_files(modeling_path))]:
        source = code_path.read_text(encoding="utf-8")
        module_names = _BUNDLED_IMPORT.findall(source)
        for package, name in module_names:
            module_file = Path(importlib.import_module(f"rrpo_hf.{package}.{name}").__file__)
            for needed in [module_file, *map(Path, get_relative_import_files(module_file))]:
                destination = save_directory / needed.name
                if destination in written:
                    continue
                text = needed.read_text(encoding="utf-8")
                if _RRPO_IMPORT.search(text):
                    raise RuntimeError(
                        f"{needed} imports rrpo_hf, so it cannot ship as remote code; ops modules may import only "
                        "torch, the standard library and each other (relatively)."
                    )
                atomic_write_text(destination, text)
                written.append(destination)
        if module_names:
            atomic_write_text(code_path, _BUNDLED_IMPORT.sub(lambda match: f"from .{match.group(2)} import", source))
    return written


__all__ = ["bundle_remote_code_dependencies"]

"""Write ``annoloop/client/types.py``: one TypedDict per schema of the API's OpenAPI document.

The client's request and response shapes come from the server's own schema, so a field added
or renamed on the server shows up as a type change here (``tests/client/test_types.py`` fails
while this file is stale). Run after changing a route's schemas:

    python scripts/gen_client_types.py
"""

from __future__ import annotations

import keyword
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "annoloop" / "client" / "types.py"
HEADER = '''"""Request and response shapes of the annoloop API, generated from its OpenAPI schema by
``scripts/gen_client_types.py``; do not edit by hand."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict
'''


def openapi() -> dict[str, Any]:
    import tempfile

    from app.core.config import Settings
    from app.main import create_app

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(environment="test", data_dir=Path(tmp), database_url="sqlite://")
        return dict(create_app(settings).openapi())


def _name(schema_name: str) -> str:
    """pydantic names ``Page[AnnotationOut]`` ``Page_AnnotationOut_``: ``PageOfAnnotationOut``."""
    if schema_name.startswith("Page_") and schema_name.endswith("_"):
        return "PageOf" + schema_name[len("Page_") : -1]
    return schema_name


def _type(schema: dict[str, Any], enums: set[str]) -> str:
    if "$ref" in schema:
        return _name(schema["$ref"].rsplit("/", 1)[-1])
    if "anyOf" in schema:
        parts = [_type(s, enums) for s in schema["anyOf"]]
        return " | ".join(dict.fromkeys(parts))
    if "enum" in schema:
        return "Literal[" + ", ".join(repr(v) for v in schema["enum"]) + "]"
    if "const" in schema:
        return f"Literal[{schema['const']!r}]"
    kind = schema.get("type")
    if kind == "string":
        return "str"
    if kind == "integer":
        return "int"
    if kind == "number":
        return "float"
    if kind == "boolean":
        return "bool"
    if kind == "null":
        return "None"
    if kind == "array":
        return f"list[{_type(schema.get('items', {}), enums)}]"
    if kind == "object":
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            return f"dict[str, {_type(extra, enums)}]"
        return "dict[str, Any]"
    return "Any"


def render(doc: dict[str, Any]) -> str:
    schemas: dict[str, Any] = doc["components"]["schemas"]
    enums = {n for n, s in schemas.items() if "enum" in s}
    lines = [HEADER]
    for name in sorted(enums):
        values = ", ".join(repr(v) for v in schemas[name]["enum"])
        lines.append(f"{name} = Literal[{values}]\n")
    for name in sorted(set(schemas) - enums):
        if name.startswith("Body_"):
            continue  # multipart forms: the client builds them from arguments
        schema = schemas[name]
        required = set(schema.get("required", []))
        lines.append(f"\n\nclass {_name(name)}(TypedDict):")
        doc_line = (schema.get("description") or "").split("\n")[0].strip()
        if doc_line:
            lines.append(f'    """{doc_line}"""\n')
        props = schema.get("properties", {})
        if not props:
            lines.append("    pass")
        for field, spec in props.items():
            if not field.isidentifier() or keyword.iskeyword(field):
                raise SystemExit(f"{name}.{field}: not a Python identifier")
            hint = _type(spec, enums)
            if field not in required:
                hint = f"NotRequired[{hint}]"
            lines.append(f"    {field}: {hint}")
    return _formatted("\n".join(lines).rstrip() + "\n")


def _formatted(source: str) -> str:
    """As ``ruff format`` leaves it, so the checked-in file passes the lint."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(OUT), "-"],
        input=source,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def main() -> int:
    OUT.write_text(render(openapi()))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

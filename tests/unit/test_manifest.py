"""The Teams app manifest validates against the official schema and the package is uploadable."""

from __future__ import annotations

import ast
import json
import re
import struct
import zipfile
import zlib
from pathlib import Path

import jsonschema
import pytest

from manifest import MANIFEST_VERSION, build_manifest, write_package
from manifest.build import MAX_COMMAND_DESCRIPTION, MAX_COMMAND_TITLE

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "tests" / "fixtures" / "schemas" / f"teams-manifest-v{MANIFEST_VERSION}.json"
MANIFEST_DIR = REPO / "manifest"

APP_ID = "3f2c9a1e-7b4d-4e8a-9c61-0d5e2f8b7a14"
COMMANDS = [(f"cmd{i:02d}", f"Does thing number {i}.") for i in range(1, 16)]  # 15, priority order


# --- schema validation --------------------------------------------------------

def _python_regex(pattern: str) -> str:
    r"""Translate the ECMA-262 class ``\p{L}`` (any letter) for Python's ``re``.

    ``\w`` is a slight superset (letters, digits, ``_``), good enough for the one
    extension-function pattern that uses it, which a bot manifest never reaches.
    """
    return pattern.replace(r"\p{L}", r"\w")


def _pattern(validator, pattern, instance, schema):
    """Draft-4 ``pattern`` keyword that understands ``\\p{L}``."""
    if validator.is_type(instance, "string") and not re.search(_python_regex(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("regex", raises=re.error)
def _is_regex(instance: object) -> bool:
    """The metaschema's ``format: regex`` check, with ``\\p{L}`` understood."""
    if isinstance(instance, str):
        re.compile(_python_regex(instance))
    return True


TeamsManifestValidator = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"pattern": _pattern}
)


@pytest.fixture(scope="module")
def validator():
    """A Draft-4 validator for the official Teams manifest schema."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    TeamsManifestValidator.check_schema(schema, format_checker=_FORMATS)
    return TeamsManifestValidator(schema, format_checker=_FORMATS)


def assert_valid(validator, manifest: dict) -> None:
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_stock_python_cannot_check_the_schema_which_is_why_we_teach_it_p_l():
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    with pytest.raises(jsonschema.SchemaError):
        jsonschema.Draft4Validator.check_schema(schema)


def test_manifest_with_15_commands_validates(validator):
    assert_valid(validator, build_manifest(APP_ID, COMMANDS))


def test_manifest_with_every_option_validates(validator):
    manifest = build_manifest(
        APP_ID, COMMANDS, version="2.3.4", name="Fraud MLOps",
        developer_name="Contoso ML Platform", website_url="https://contoso.example/ml",
        privacy_url="https://contoso.example/privacy", terms_url="https://contoso.example/terms",
        valid_domains=["mlops-bot.contoso.example", "*.contoso.example"],
        sso_resource=f"api://botid-{APP_ID}",
    )
    assert_valid(validator, manifest)
    assert manifest["webApplicationInfo"] == {"id": APP_ID, "resource": f"api://botid-{APP_ID}"}
    assert manifest["validDomains"] == ["mlops-bot.contoso.example", "*.contoso.example"]
    assert manifest["version"] == "2.3.4"


def test_schema_url_and_manifest_version_agree():
    manifest = build_manifest(APP_ID, COMMANDS)
    assert manifest["manifestVersion"] == MANIFEST_VERSION
    assert manifest["$schema"] == (
        f"https://developer.microsoft.com/en-us/json-schemas/teams/v{MANIFEST_VERSION}"
        "/MicrosoftTeams.schema.json"
    )


# --- content ------------------------------------------------------------------

def test_bot_section():
    manifest = build_manifest(APP_ID, COMMANDS)
    [bot] = manifest["bots"]
    assert manifest["id"] == APP_ID
    assert bot["botId"] == APP_ID
    assert bot["scopes"] == ["personal", "team", "groupChat"]
    assert bot["supportsFiles"] is False
    assert bot["isNotificationOnly"] is False
    assert manifest["permissions"] == ["identity", "messageTeamMembers"]
    assert manifest["icons"] == {"color": "color.png", "outline": "outline.png"}
    assert re.fullmatch(r"#[0-9A-Fa-f]{6}", manifest["accentColor"])
    assert "webApplicationInfo" not in manifest
    assert manifest["validDomains"] == []


def test_one_command_list_per_scope_with_the_first_12_commands_in_order():
    [bot] = build_manifest(APP_ID, COMMANDS)["bots"]
    expected = [{"title": t, "description": d} for t, d in COMMANDS[:12]]
    assert [cl["scopes"] for cl in bot["commandLists"]] == [["personal"], ["team"], ["groupChat"]]
    for command_list in bot["commandLists"]:
        assert len(command_list["commands"]) <= 12
        assert command_list["commands"] == expected


def test_fewer_commands_are_all_listed():
    [bot] = build_manifest(APP_ID, COMMANDS[:3])["bots"]
    assert [c["title"] for c in bot["commandLists"][0]["commands"]] == ["cmd01", "cmd02", "cmd03"]


def test_long_titles_and_descriptions_are_cut_to_the_schema_limits(validator):
    manifest = build_manifest(APP_ID, [("t" * 300, "d" * 5000)])
    [command] = manifest["bots"][0]["commandLists"][0]["commands"]
    assert len(command["title"]) == MAX_COMMAND_TITLE and command["title"].endswith("…")
    assert len(command["description"]) == MAX_COMMAND_DESCRIPTION
    assert_valid(validator, manifest)


def test_descriptions_say_what_the_bot_does():
    description = build_manifest(APP_ID, COMMANDS)["description"]
    assert "Azure Machine Learning" in description["short"]
    for topic in ("model", "endpoint", "blue/green", "job", "drift", "approve", "digest"):
        assert topic in description["full"]


# --- invalid input --------------------------------------------------------------

@pytest.mark.parametrize("bad_id", [
    "", "not-a-guid", "3f2c9a1e7b4d4e8a9c610d5e2f8b7a14", "{3f2c9a1e-7b4d-4e8a-9c61-0d5e2f8b7a14}",
    " 3f2c9a1e-7b4d-4e8a-9c61-0d5e2f8b7a14", "3f2c9a1e-7b4d-4e8a-9c61-0d5e2f8b7a1g", None,
])
def test_invalid_app_id_is_refused_with_a_helpful_message(bad_id):
    with pytest.raises(ValueError, match="MicrosoftAppId.*GUID"):
        build_manifest(bad_id, COMMANDS)


@pytest.mark.parametrize("kwargs", [
    {"version": "1.0"},
    {"version": "v1.0.0"},
    {"name": ""},
    {"name": "x" * 31},
    {"developer_name": "x" * 33},
    {"privacy_url": "http://example.com/privacy"},
    {"valid_domains": ["https://bot.example.com"]},
    {"valid_domains": "bot.example.com"},
    {"valid_domains": [f"d{i}.example.com" for i in range(17)]},
])
def test_invalid_options_are_refused(kwargs):
    with pytest.raises(ValueError):
        build_manifest(APP_ID, COMMANDS, **kwargs)


def test_empty_or_duplicate_command_titles_are_refused():
    with pytest.raises(ValueError, match="empty"):
        build_manifest(APP_ID, [(" ", "blank")])
    with pytest.raises(ValueError, match="twice"):
        build_manifest(APP_ID, [("help", "a"), ("help", "b")])


# --- package --------------------------------------------------------------------

def test_package_has_manifest_and_icons_at_its_root(tmp_path):
    manifest = build_manifest(APP_ID, COMMANDS)
    path = write_package(manifest, tmp_path / "out" / "mlops-bot.zip")

    assert path == tmp_path / "out" / "mlops-bot.zip"
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["color.png", "manifest.json", "outline.png"]
        assert json.loads(zf.read("manifest.json").decode("utf-8")) == manifest
        assert zf.read("color.png") == (MANIFEST_DIR / "color.png").read_bytes()
        assert zf.read("outline.png") == (MANIFEST_DIR / "outline.png").read_bytes()


def test_package_bytes_are_reproducible(tmp_path):
    manifest = build_manifest(APP_ID, COMMANDS)
    first = write_package(manifest, tmp_path / "a.zip").read_bytes()
    second = write_package(manifest, str(tmp_path / "b.zip")).read_bytes()
    assert first == second


# --- icons (read with zlib/struct; Pillow is not a dependency) -------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(data: bytes):
    """Yield ``(type, body)`` for each chunk of a PNG file."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        yield kind, data[pos + 8:pos + 8 + length]
        pos += 12 + length


def png_header(data: bytes) -> dict:
    """Width, height, bit depth, colour type and interlace method from IHDR."""
    kind, body = next(png_chunks(data))
    assert kind == b"IHDR"
    width, height, depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
    return {"width": width, "height": height, "depth": depth, "color_type": color_type,
            "interlace": interlace}


def png_rgba_rows(data: bytes) -> list[list[tuple[int, int, int, int]]]:
    """Decode an 8-bit, non-interlaced RGBA PNG (colour type 6) into rows of pixels."""
    header = png_header(data)
    assert (header["depth"], header["color_type"], header["interlace"]) == (8, 6, 0)
    width, height, bpp = header["width"], header["height"], 4
    raw = zlib.decompress(b"".join(body for kind, body in png_chunks(data) if kind == b"IDAT"))
    stride = width * bpp
    rows, previous, pos = [], bytearray(stride), 0
    for _ in range(height):
        filter_type, line = raw[pos], bytearray(raw[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up = previous[i]
            up_left = previous[i - bpp] if i >= bpp else 0
            if filter_type == 1:
                line[i] = (line[i] + left) & 0xFF
            elif filter_type == 2:
                line[i] = (line[i] + up) & 0xFF
            elif filter_type == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif filter_type == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[i] = (line[i] + predictor) & 0xFF
        rows.append([tuple(line[x:x + 4]) for x in range(0, stride, 4)])
        previous = line
    return rows


def test_color_icon_is_192_square_and_opaque():
    header = png_header((MANIFEST_DIR / "color.png").read_bytes())
    assert (header["width"], header["height"]) == (192, 192)
    assert header["color_type"] == 2  # truecolour, no alpha channel: fully opaque


def test_outline_icon_is_32_square_white_on_transparent():
    data = (MANIFEST_DIR / "outline.png").read_bytes()
    header = png_header(data)
    assert (header["width"], header["height"]) == (32, 32)
    rows = png_rgba_rows(data)
    pixels = [pixel for row in rows for pixel in row]
    assert all(a == 0 or (r, g, b) == (255, 255, 255) for r, g, b, a in pixels), "non-white ink"
    assert all(rows[y][x][3] == 0 for y in (0, 31) for x in (0, 31)), "background not transparent"
    assert sum(a >= 128 for *_, a in pixels) >= 64, "glyph too faint"
    assert sum(a == 0 for *_, a in pixels) >= 32 * 32 // 2, "background too small"


# --- package boundaries -----------------------------------------------------------

def test_manifest_is_a_leaf_package_with_stdlib_only_imports():
    forbidden = {"bot", "commands", "adapters", "PIL", "jsonschema", "botbuilder", "aiohttp"}
    for source in MANIFEST_DIR.glob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & forbidden, f"{source.name} imports {roots & forbidden}"

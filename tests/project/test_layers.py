"""The layering of docs/architecture.md, enforced: a module imports only its own layer and the
layers below it (kernel < pki, audit < broker, accounts < devices < API, portal, admin < the
project package), and nothing of the server imports the `onboard` client.

An exception would be listed in KNOWN_UPWARD_IMPORTS, by name (there is none today); the test
also fails when a listed one no longer exists, so that the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

APPS = (
    "kernel",
    "onboarding",
    "pki",
    "audit",
    "broker",
    "accounts",
    "devices",
    "enrollment",
    "api",
    "portal",
    "proxy",
    "est",
    "onboard_cli",
)

# (module prefix, layer): the longest matching prefix decides.
LAYERS: tuple[tuple[str, int], ...] = (
    # The shared kernel: helpers that import no app.
    ("kernel", 0),
    ("onboard_cli.text_rules", 0),  # the one-line rule and the result file, shared by server and client
    ("onboard_cli.vocabulary", 0),  # key types, revocation reasons, device statuses: the API's names
    ("pki", 1),
    ("audit", 1),
    ("broker", 2),
    ("accounts", 2),
    ("devices", 3),
    ("enrollment", 3),  # the enrolment workflows: codes, groups, factory certificates
    # The edges: HTTP, forms and the admin.
    ("devices.api", 4),
    ("devices.views", 4),
    ("devices.admin", 4),
    ("api", 4),  # the REST API's shared parts: errors, parsers, throttles, handlers, paging
    ("portal", 4),
    ("proxy", 4),  # the TLS front: proxy_config and the client-certificate check
    ("est", 4),  # EST (RFC 7030) over HTTP
    ("pki.admin", 4),
    ("audit.admin", 4),
    ("broker.admin", 4),
    ("accounts.admin", 4),
    ("enrollment.api", 4),
    ("enrollment.admin", 4),
    ("enrollment.views", 4),
    ("enrollment.forms", 4),
    ("enrollment.urls", 4),
    # The project package wires everything and is imported by none of the apps.
    ("onboarding", 5),
    # The `onboard` HTTP client: the server imports none of it, it imports none of the server.
    ("onboard_cli", CLIENT_LAYER := 6),
)

PROJECT_PACKAGE = "onboarding"

# Upward imports that exist today: (importing module, imported module).
KNOWN_UPWARD_IMPORTS: set[tuple[str, str]] = set()


def layer_of(module: str) -> int:
    matches = [
        (len(prefix), layer)
        for prefix, layer in LAYERS
        if module == prefix or module.startswith(prefix + ".")
    ]
    return max(matches)[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports() -> set[tuple[str, str]]:
    """Every (importer, imported) pair between the project's packages, migrations left out."""
    pairs = set()
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            importer = module_name(path)
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    # `from package import module` imports that module.
                    names = [
                        f"{node.module}.{alias.name}"
                        if (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").exists()
                        else node.module
                        for alias in node.names
                    ]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] in APPS and name.split(".")[0] != importer.split(".")[0]:
                        pairs.add((importer, name))
    return pairs


def is_upward(importer: str, imported: str) -> bool:
    if layer_of(importer) == CLIENT_LAYER:
        return layer_of(imported) not in (0, CLIENT_LAYER)  # the client imports only the shared rule
    return layer_of(imported) > layer_of(importer)


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = {pair for pair in project_imports() if is_upward(*pair)}
    new = sorted(upward - KNOWN_UPWARD_IMPORTS)
    assert not new, f"imports that point up the layers (docs/architecture.md): {new}"
    gone = sorted(KNOWN_UPWARD_IMPORTS - upward)
    assert not gone, f"no longer there: remove them from KNOWN_UPWARD_IMPORTS: {gone}"


def test_no_app_imports_the_project_package() -> None:
    """The project package (settings, urls, wsgi, celery, health, metrics) wires the apps; none of
    them imports it, whatever its layer number says."""
    importers = sorted(
        (importer, imported)
        for importer, imported in project_imports()
        if imported.split(".")[0] == PROJECT_PACKAGE and importer.split(".")[0] != PROJECT_PACKAGE
    )
    assert not importers, f"modules that import the project package {PROJECT_PACKAGE}/: {importers}"


def test_the_check_sees_an_upward_import() -> None:
    """The rule itself: a kernel module importing devices, pki importing broker, an app importing
    the project package, and the server importing the client are all upward."""
    assert is_upward("kernel.locks", "devices.models")
    assert is_upward("pki.issuance", "broker.sync")
    assert is_upward("devices.registration", "onboarding.health")
    assert is_upward("devices.registration", "onboard_cli.main")
    assert not is_upward("devices.registration", "onboard_cli.text_rules")
    assert not is_upward("portal.views.devices", "devices.registration")
    assert not is_upward("onboarding.urls", "portal.views")
    assert not is_upward("pki.profiles", "onboard_cli.vocabulary")
    assert is_upward("api.handlers", "onboarding.settings")
    assert not is_upward("devices.api.views", "api.schema")


def test_devices_reach_the_broker_only_through_its_interface() -> None:
    """devices/ talks to the broker through broker.dispatch (and reads broker.models), so the
    broker's internals can change without touching the device workflows."""
    reached = {
        (importer, imported)
        for importer, imported in project_imports()
        if importer.split(".")[0] == "devices" and imported.split(".")[0] == "broker"
    }
    assert {imported for _importer, imported in reached} <= {"broker.dispatch", "broker.models"}, sorted(
        reached
    )


# --- The test suite: test modules share code through tests/support/ and conftest.py only ---


def imported_modules(source: str, importer: str) -> set[str]:
    """The modules an importer's source names in its imports, relative ones resolved; `from
    package import name` counts as importing `package.name` too (it may be a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            package = importer.split(".")[: -node.level] if node.level else []
            base = ".".join([*package, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def imports_a_test_module(source: str, importer: str) -> list[str]:
    return sorted(
        name for name in imported_modules(source, importer) if name.split(".")[-1].startswith("test_")
    )


def test_no_test_module_imports_another() -> None:
    """What two test modules share lives in tests/support/ (or, for fixtures, tests/conftest.py)."""
    found = {
        module_name(path): imported
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if (imported := imports_a_test_module(path.read_text(), module_name(path)))
    }
    assert not found, f"move what these import into tests/support/: {found}"


def test_the_check_sees_a_test_module_importing_another() -> None:
    assert imports_a_test_module("from tests.pki.test_csr_policy import openssl_csr", "tests.cli.test_cli")
    assert imports_a_test_module(
        "from .test_delivery import register", "tests.devices.test_download_page"
    ) == ["tests.devices.test_delivery"]
    assert imports_a_test_module("from tests.devices import test_delivery", "tests.cli.test_cli")
    assert imports_a_test_module("import tests.devices.test_delivery", "tests.cli.test_cli")
    assert not imports_a_test_module("from tests.support.api import register", "tests.devices.test_delivery")

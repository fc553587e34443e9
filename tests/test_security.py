"""Security defaults of dagstudy/ (issue 7), checked on the source and on the study loader.

Static (ast, not grep, so comments, strings and methods such as ``model.eval()`` never count,
and ``import torch as T`` / ``from pickle import loads`` aliases do):

- every ``torch.load`` passes ``weights_only=True`` (dagstudy loads no torch artifact today;
  the check guards the first one);
- nothing runs or imports code named by data: no ``eval``, ``exec``, ``compile``,
  ``__import__``, ``importlib.import_module``, ``pkgutil.resolve_name``, ``pydoc.locate``;
- nothing unpickles: ``pickle``/``dill``/``cloudpickle``/``joblib``/``marshal`` loads,
  ``pandas.read_pickle``, ``numpy.load(allow_pickle=True)``;
- YAML only through ``yaml.safe_load`` (``yaml.load`` only with a ``SafeLoader``).

The checker itself is tested on snippets, so a check that silently matches nothing fails.

Behaviour: a study file is data. Python-object YAML tags are a ``SpecError`` (nothing runs),
and a literal password in a storage URL is rejected with the field's name (and not echoed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from dagstudy.study.loader import load_spec, parse_spec
from dagstudy.study.spec import SpecError
from dagstudy.urls import redact_url

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dagstudy"

# Qualified names (after resolving imports) that must not be called anywhere in dagstudy/.
FORBIDDEN_CALLS = {
    "eval": "eval runs code",
    "exec": "exec runs code",
    "compile": "compile builds code objects",
    "__import__": "imports a module named by data",
    "builtins.eval": "eval runs code",
    "builtins.exec": "exec runs code",
    "builtins.__import__": "imports a module named by data",
    "importlib.import_module": "imports a module named by data",
    "importlib.__import__": "imports a module named by data",
    "pkgutil.resolve_name": "resolves an import path named by data",
    "pydoc.locate": "resolves an import path named by data",
    "pickle.load": "unpickling runs code",
    "pickle.loads": "unpickling runs code",
    "pickle.Unpickler": "unpickling runs code",
    "_pickle.load": "unpickling runs code",
    "_pickle.loads": "unpickling runs code",
    "cPickle.load": "unpickling runs code",
    "cPickle.loads": "unpickling runs code",
    "dill.load": "unpickling runs code",
    "dill.loads": "unpickling runs code",
    "cloudpickle.load": "unpickling runs code",
    "cloudpickle.loads": "unpickling runs code",
    "joblib.load": "unpickling runs code",
    "marshal.load": "loads code objects",
    "marshal.loads": "loads code objects",
    "shelve.open": "shelve unpickles",
    "pandas.read_pickle": "unpickling runs code",
    "yaml.unsafe_load": "constructs arbitrary Python objects",
    "yaml.unsafe_load_all": "constructs arbitrary Python objects",
    "yaml.full_load": "constructs Python objects (use yaml.safe_load)",
    "yaml.full_load_all": "constructs Python objects (use yaml.safe_load)",
}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


def _imports(tree: ast.AST) -> dict[str, str]:
    """Local name -> qualified name, for every import in the module (any scope)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:  # `import a.b` binds `a`
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _qualified(func: ast.AST, imports: dict[str, str]) -> str | None:
    """The called function's qualified name: the root resolved through the imports. A bare
    name that is not imported is a builtin (``eval``); ``obj.eval`` on a local stays
    ``obj.eval`` and is nobody's business."""
    dotted = _dotted(func)
    if dotted is None:
        return None
    root, _, rest = dotted.partition(".")
    if root in imports:
        return imports[root] + (f".{rest}" if rest else "")
    return dotted


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def violations(source: str, filename: str = "<snippet>") -> list[str]:
    """Every unsafe call in ``source``, as ``file:line: call: why``."""
    tree = ast.parse(source, filename=filename)
    imports = _imports(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, imports)
        if name is None:
            continue
        where = f"{filename}:{node.lineno}: {name}"
        if name in FORBIDDEN_CALLS:
            found.append(f"{where}: {FORBIDDEN_CALLS[name]}")
        elif name == "torch.load":
            if not _is_true(_keyword(node, "weights_only")):
                found.append(f"{where}: needs weights_only=True (a literal)")
        elif name in ("yaml.load", "yaml.load_all"):
            loader = _keyword(node, "Loader")
            if loader is None and len(node.args) > 1:
                loader = node.args[1]
            loader_name = _dotted(loader) if loader is not None else None
            if loader_name is None or loader_name.split(".")[-1] not in SAFE_YAML_LOADERS:
                found.append(f"{where}: only yaml.safe_load (or Loader=yaml.SafeLoader)")
        elif name == "numpy.load":
            allow = _keyword(node, "allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"{where}: allow_pickle unpickles")
    return found


def package_sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10, "dagstudy/ not found"
    return files


# ------------------------------------------------------------------------- the checker itself

UNSAFE_SNIPPETS = [
    "import torch\nstate = torch.load(path)",
    "import torch\nstate = torch.load(path, weights_only=False)",
    "import torch as T\nstate = T.load(path, map_location='cpu')",
    "from torch import load\nstate = load(path)",
    "import torch\nopts = {}\nstate = torch.load(path, **opts)",
    "x = eval(text)",
    "exec(code)",
    "mod = __import__(name)",
    "import importlib\nmod = importlib.import_module(name)",
    "from importlib import import_module as im\nmod = im(name)",
    "import pickle\nobj = pickle.load(f)",
    "from pickle import loads\nobj = loads(data)",
    "import cloudpickle as cp\nobj = cp.loads(data)",
    "import pandas as pd\ndf = pd.read_pickle(path)",
    "import numpy as np\na = np.load(path, allow_pickle=True)",
    "import yaml\ndata = yaml.load(text)",
    "import yaml\ndata = yaml.load(text, Loader=yaml.FullLoader)",
    "import yaml\ndata = yaml.load(text, yaml.UnsafeLoader)",
    "import yaml\ndata = yaml.unsafe_load(text)",
    "import yaml\ndata = yaml.full_load(text)",
    "from yaml import load\ndata = load(text)",
]
SAFE_SNIPPETS = [
    "import torch\nstate = torch.load(path, weights_only=True)",
    "import torch as T\nstate = T.load(path, map_location='cpu', weights_only=True)",
    "import yaml\ndata = yaml.safe_load(text)",
    "import yaml\ndata = yaml.load(text, Loader=yaml.SafeLoader)",
    "import yaml\ndata = yaml.load(text, Loader=yaml.CSafeLoader)",
    "import numpy as np\na = np.load(path)",
    "model.eval()\nnet.train()",  # torch's Module.eval is a method, not the builtin
    "import re\npattern = re.compile('x')",
    "import json\nobj = json.loads(text)",
    "# eval(text) and torch.load(path) in a comment\ns = 'exec(code)'",
]


@pytest.mark.parametrize("source", UNSAFE_SNIPPETS)
def test_checker_flags_unsafe_calls(source):
    assert violations(source), source


@pytest.mark.parametrize("source", SAFE_SNIPPETS)
def test_checker_accepts_safe_calls(source):
    assert violations(source) == [], source


# --------------------------------------------------------------------------------- dagstudy/


def test_no_code_execution_unpickling_or_unsafe_yaml_in_dagstudy():
    found = []
    for path in package_sources():
        found += violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not found, "\n".join(found)


def test_every_torch_load_in_dagstudy_passes_weights_only_true():
    """Also counts them: none today (dagstudy saves no torch artifact); if one appears, it
    must say weights_only=True (the generic test above reports the same line)."""
    calls = []
    for path in package_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        imports = _imports(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _qualified(node.func, imports) == "torch.load":
                calls.append((path.relative_to(ROOT), node.lineno,
                              _is_true(_keyword(node, "weights_only"))))
    unsafe = [f"{p}:{line}" for p, line, ok in calls if not ok]
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


def test_yaml_is_read_only_with_safe_load_in_dagstudy():
    """The study loader's YAML reader is a SafeLoader; every other YAML read is yaml.safe_load."""
    readers = []
    for path in package_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        imports = _imports(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = _qualified(node.func, imports) or ""
                if name.startswith("yaml.") and "load" in name:
                    readers.append((str(path.relative_to(PACKAGE)), name))
    # Study and confirmation files are read by study/yamlfile.py's loader, a SafeLoader
    # subclass that only adds limits; no other YAML read exists.
    from dagstudy.study.yamlfile import StrictSafeLoader

    assert issubclass(StrictSafeLoader, yaml.SafeLoader)
    assert StrictSafeLoader.yaml_constructors == yaml.SafeLoader.yaml_constructors
    assert {name for _, name in readers} <= {"yaml.safe_load", "yaml.safe_load_all"}, readers


# ------------------------------------------------------------------- study files are data

PAYLOADS = {
    "apply os.system": "!!python/object/apply:os.system ['touch {marker}']",
    "apply subprocess": "!!python/object/apply:subprocess.check_call [['touch', '{marker}']]",
    "new Popen": "!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
    "name": "!!python/name:os.system",
    "module": "!!python/module:os",
}


def smoke_study() -> dict:
    return yaml.safe_load((ROOT / "studies" / "smoke.yaml").read_text())


@pytest.mark.parametrize("where", ["name", "base"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_python_yaml_tags_are_a_spec_error_and_never_run(tmp_path, payload, where):
    marker = tmp_path / "executed"
    tag = PAYLOADS[payload].format(marker=marker)
    text = (ROOT / "studies" / "smoke.yaml").read_text()
    if where == "name":
        text = text.replace("name: smoke", f"name: {tag}")
    else:
        text = text.replace("  probe_size: 128", f"  probe_size: 128\n  hook: {tag}")
    assert tag in text
    study = tmp_path / "evil.yaml"
    study.write_text(text)
    with pytest.raises(SpecError, match="not valid YAML") as err:
        load_spec(study)
    assert "python/" in str(err.value)  # names the refused tag
    assert not marker.exists(), "the YAML payload ran"


def test_the_smoke_study_itself_loads():
    """The control for the test above: the same file without a tag is a valid study."""
    assert load_spec(ROOT / "studies" / "smoke.yaml").name == "smoke"


@pytest.mark.parametrize("field", ["optuna", "mlflow"])
@pytest.mark.parametrize("url", [
    "postgresql+psycopg2://u:secret@h/db",
    "postgresql://dagstudy:secret@127.0.0.1:5432/optuna",
    "http://admin:secret@mlflow:5000",
    "postgresql+psycopg2://u:se/cret@h/db",  # SQLAlchemy reads the password up to the @
    "postgresql+psycopg2://u:${PGPASSWORD:-secret}@h/db",  # a fallback is a literal
    "postgresql+psycopg2://u@h/db?password=secret",  # psycopg2 takes it from the query
])
def test_literal_password_in_a_storage_url_is_rejected_naming_the_field(field, url):
    data = {**smoke_study(), "storage": {field: url}}
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    message = str(err.value)
    assert f"storage.{field}" in message and "password" in message
    assert "secret" not in message  # the error does not repeat the password


def test_literal_password_rejected_from_a_file_too(tmp_path):
    study = tmp_path / "pw.yaml"
    study.write_text((ROOT / "studies" / "smoke.yaml").read_text()
                     + "storage:\n  optuna: postgresql+psycopg2://u:secret@h/db\n")
    with pytest.raises(SpecError, match=r"storage\.optuna"):
        load_spec(study)


def test_password_through_the_environment_is_accepted(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "from-the-environment")
    data = {**smoke_study(),
            "storage": {"optuna": "postgresql+psycopg2://u:${PGPASSWORD}@h/db",
                        "mlflow": "http://127.0.0.1:5000"}}
    spec = parse_spec(data)
    assert spec.storage.optuna == "postgresql+psycopg2://u:from-the-environment@h/db"
    data["storage"] = {"optuna": "postgresql+psycopg2://u@h/db"}  # libpq reads PGPASSWORD
    assert parse_spec(data).storage.optuna == "postgresql+psycopg2://u@h/db"


@pytest.mark.parametrize("url", [
    "postgresql+psycopg2://u:secret@h/db",
    "postgresql+psycopg2://u:se/cret@h/db",
    "http://admin:secret@mlflow:5000",
    "postgresql+psycopg2://u@h/db?sslmode=require&password=secret",
])
def test_redact_url_hides_every_password(url):
    redacted = redact_url(url)
    assert "secret" not in redacted and "***" in redacted
    assert redacted.split("://")[0] == url.split("://")[0]


def test_redact_url_leaves_password_free_urls_alone():
    for url in ("postgresql+psycopg2://u@127.0.0.1:5432/optuna", "http://127.0.0.1:5000",
                "sqlite:////tmp/runs/optuna.db"):
        assert redact_url(url) == url

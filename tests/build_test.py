"""BUILD (Python syntax) lists every module, entry point and test, and nothing else."""

import ast
import glob
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("kd_keras", "export", "nas")
ENTRY_POINTS = {"kd_keras/main.py", "export/main.py", "nas/main.py"}


def _value(node):
    """A BUILD value; ``requirement("pkg")`` becomes 'requirement:pkg'."""
    if isinstance(node, ast.List):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "requirement":
        return "requirement:" + ast.literal_eval(node.args[0])
    return ast.literal_eval(node)


def _targets():
    tree = ast.parse(open(os.path.join(ROOT, "BUILD")).read(), "BUILD")
    targets = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id.startswith("py_")):
            kwargs = {k.arg: _value(k.value) for k in node.keywords}
            targets[kwargs["name"]] = dict(kwargs, rule=node.func.id)
    return targets


def _requirements():
    names = set()
    for line in open(os.path.join(ROOT, "requirements.txt")):
        line = line.split("#")[0].strip()
        if line:
            names.add(line.split("==")[0].lower().replace("_", "-"))
    return names


def _sources(pattern):
    return {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern),
                                                         recursive=True)}


def test_every_module_has_a_target():
    targets = _targets()
    listed = {s: t["rule"] for t in targets.values() for s in t.get("srcs", [])}
    modules = set()
    for package in PACKAGES:
        modules |= _sources(f"{package}/**/*.py")
    missing = sorted(m for m in modules if m not in listed)
    assert not missing, f"modules missing from BUILD: {missing}"
    for entry in ENTRY_POINTS & modules:
        assert listed[entry] == "py_binary", f"{entry} must be a py_binary"


def test_every_test_file_has_a_py_test():
    targets = _targets()
    tests = {s for t in targets.values() if t["rule"] == "py_test" for s in t["srcs"]}
    missing = sorted(_sources("tests/*_test.py") - tests)
    assert not missing, f"test files missing from BUILD: {missing}"


def test_listed_files_exist_and_deps_resolve():
    targets = _targets()
    requirements = _requirements()
    for name, target in targets.items():
        for src in target.get("srcs", []):
            assert os.path.exists(os.path.join(ROOT, src)), f"{name}: {src} does not exist"
        for dep in target.get("deps", []):
            if dep.startswith(":"):
                assert dep[1:] in targets, f"{name}: unknown dep {dep}"
            else:
                assert dep.startswith("requirement:"), \
                    f"{name}: dep {dep} is neither ':target' nor requirement(...)"
                package = dep.split(":", 1)[1].lower().replace("_", "-")
                assert package in requirements, \
                    f"{name}: {package} is not pinned in requirements.txt"

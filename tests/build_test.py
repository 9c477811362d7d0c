"""The import graph points one way and BUILD mirrors it.

The module graph is read from the sources (every ``import``, top level or
not); it must be acyclic, respect the layers (core <- export <- search <-
orchestration), use no other module's private names and import first-party
modules at top level only. BUILD must list a target per module, entry point
and test, with exactly the dependencies the imports say, and no cycle.

``python tests/build_test.py`` prints the BUILD file the imports imply.
"""

import ast
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("kd_keras", "export", "nas")
ENTRY_POINTS = {"kd_keras/main.py", "export/main.py", "nas/main.py"}
# Import name -> pinned requirement.
THIRD_PARTY = {
    "absl": "absl-py",
    "ai_edge_litert": "ai-edge-litert",
    "keras": "keras",
    "keras_tuner": "keras-tuner",
    "matplotlib": "matplotlib",
    "numpy": "numpy",
    "pytest": "pytest",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "tensorflow": "tensorflow",
    "tensorflow_datasets": "tensorflow-datasets",
    "tensorflow_model_optimization": "tensorflow-model-optimization",
    "tf_keras": "tf-keras",
    "tflite_micro": "tflite-micro",
    "tree": "dm-tree",
}
# Layers, lowest first, read from the path alone; a module may import only from
# its own layer or below.
LAYERS = ("core", "export", "search", "app", "entry", "tests")
# Entry points and the flags they define: the only modules that define flags.
ENTRY_FILES = ("main.py", "flags.py", "flag_groups.py")


def layer(module):
    """The layer index of a source path (see LAYERS):

    ``tests/``, ``bench/`` -> tests; a ``main.py``, ``flags.py`` or
    ``flag_groups.py`` -> entry; ``kd_keras/app/`` -> app; ``nas/`` ->
    search; ``export/`` -> export; the rest of ``kd_keras/`` -> core.
    """
    if module.startswith(("tests/", "bench/")):
        return LAYERS.index("tests")
    if os.path.basename(module) in ENTRY_FILES:
        return LAYERS.index("entry")
    if module.startswith("kd_keras/app/"):
        return LAYERS.index("app")
    if module.startswith("nas/"):
        return LAYERS.index("search")
    if module.startswith("export/"):
        return LAYERS.index("export")
    assert module.startswith("kd_keras/"), module
    return LAYERS.index("core")


def upward_imports(edges):
    """'A (layer) imports B (layer)' for every edge of {module: deps} that
    points up the layers."""
    return [
        f"{m} ({LAYERS[layer(m)]}) imports {d} ({LAYERS[layer(d)]})"
        for m, deps in sorted(edges.items())
        for d in sorted(deps)
        if layer(d) > layer(m)
    ]


def _sources(pattern):
    return sorted(
        os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)
    )


def modules():
    """Every first-party source file: the packages, tests and benches."""
    out = []
    for package in PACKAGES:
        out += _sources(f"{package}/**/*.py")
    return out + _sources("tests/*.py") + _sources("bench/*.py")


def _resolve(name):
    """A dotted first-party module name -> its file, or None."""
    path = name.replace(".", "/")
    for candidate in (path + ".py", path + "/__init__.py"):
        if os.path.exists(os.path.join(ROOT, candidate)):
            return candidate
    return None


def imports(module):
    """(first-party files, third-party requirements, [(lineno, name, top_level)])
    of one source file."""
    tree = ast.parse(open(os.path.join(ROOT, module)).read(), module)
    top_level = {id(node) for node in tree.body}
    first, third, found = set(), set(), []

    def add(name, node):
        root = name.split(".")[0]
        if root in PACKAGES:
            target = _resolve(name)
            assert target, f"{module}:{node.lineno}: cannot resolve {name}"
            first.add(target)
            found.append((node.lineno, name, id(node) in top_level))
        elif root == "conftest":
            first.add("tests/conftest.py")
        elif root in THIRD_PARTY:
            third.add(THIRD_PARTY[root])

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                # `from pkg import sub` is the submodule when one exists.
                sub = f"{node.module}.{alias.name}"
                add(sub if _resolve(sub) else node.module, node)
    first.discard(module)
    return first, third, found


def graph():
    return {m: imports(m)[0] for m in modules()}


def find_cycle(edges):
    """A list of nodes forming a cycle in {node: deps}, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state:
                cycle = visit(dep)
                if cycle:
                    return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def target_name(module):
    stem = module[:-3].replace("/", "_")
    return stem[: -len("__init__")] + "init" if stem.endswith("__init__") else stem


def expected_build():
    """{target name: {rule, srcs, deps}} as the imports imply."""
    targets = {}
    for module in modules():
        first, third, _ = imports(module)
        if module.startswith("tests/"):
            if not module.endswith("_test.py"):
                continue  # conftest is a dep of the tests, below.
            rule = "py_test"
        elif module in ENTRY_POINTS or module.startswith("bench/"):
            rule = "py_binary"
        else:
            rule = "py_library"
        deps = sorted(":" + target_name(m) for m in first if m != "tests/conftest.py")
        if "tests/conftest.py" in first or rule == "py_test":
            deps = sorted(set(deps) | {":tests_conftest"})
        deps += [f"requirement:{r}" for r in sorted(third)]
        targets[target_name(module)] = {"rule": rule, "srcs": [module], "deps": deps}
    first, third, _ = imports("tests/conftest.py")
    targets["tests_conftest"] = {
        "rule": "py_library",
        "srcs": ["tests/conftest.py"],
        "deps": sorted(":" + target_name(m) for m in first)
        + [f"requirement:{r}" for r in sorted(third | {"pytest"})],
    }
    return targets


def render(targets):
    """BUILD text for `targets`."""
    lines = [
        "# Bazel targets: a py_library per module, a py_binary per entry point and bench,",
        "# a py_test per test file. Generated from the imports by",
        "# `python tests/build_test.py > BUILD`; tests/build_test.py checks that it matches.",
        'load("@rules_python//python:defs.bzl", "py_binary", "py_library", "py_test")',
        'load("@pip//:requirements.bzl", "requirement")',
        "",
        'package(default_visibility = ["//visibility:public"])',
    ]
    for name in sorted(targets):
        t = targets[name]
        lines += ["", f"{t['rule']}(", f'    name = "{name}",', f'    srcs = ["{t["srcs"][0]}"],']
        if t["rule"] == "py_binary":
            lines.append(f'    main = "{t["srcs"][0]}",')
        if t["rule"] == "py_test":
            lines.append('    size = "medium",')
        if t["deps"]:
            lines.append("    deps = [")
            for dep in t["deps"]:
                if dep.startswith("requirement:"):
                    lines.append(f'        requirement("{dep.split(":", 1)[1]}"),')
                else:
                    lines.append(f'        "{dep}",')
            lines.append("    ],")
        lines.append(")")
    return "\n".join(lines) + "\n"


def _value(node):
    """A BUILD value; ``requirement("pkg")`` becomes 'requirement:pkg'."""
    if isinstance(node, ast.List):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "requirement":
        return "requirement:" + ast.literal_eval(node.args[0])
    return ast.literal_eval(node)


def build_targets(text=None):
    """The targets BUILD (Python syntax) declares."""
    text = text if text is not None else open(os.path.join(ROOT, "BUILD")).read()
    targets = {}
    for node in ast.walk(ast.parse(text, "BUILD")):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id.startswith("py_")
        ):
            kwargs = {k.arg: _value(k.value) for k in node.keywords}
            targets[kwargs["name"]] = {
                "rule": node.func.id,
                "srcs": kwargs.get("srcs", []),
                "deps": kwargs.get("deps", []),
            }
    return targets


def _requirements():
    names = set()
    for line in open(os.path.join(ROOT, "requirements.txt")):
        line = line.split("#")[0].strip()
        if line:
            names.add(line.split("==")[0].lower().replace("_", "-"))
    return names


# ----------------------------------------------------------------------------


def test_the_module_graph_has_no_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_imports_point_down_the_layers():
    wrong = upward_imports(graph())
    assert not wrong, "\n".join(wrong)


def test_a_planted_upward_import_is_caught():
    edges = graph()
    assert not upward_imports(edges)
    for low, high in (
        ("kd_keras/runs.py", "kd_keras/app/pipeline.py"),
        ("kd_keras/distill/distiller.py", "export/exporter.py"),
        ("export/exporter.py", "nas/search.py"),
        ("nas/search.py", "kd_keras/app/pipeline.py"),
        ("kd_keras/app/pipeline.py", "kd_keras/main.py"),
    ):
        planted = dict(edges, **{low: set(edges[low]) | {high}})
        assert upward_imports(planted) == [
            f"{low} ({LAYERS[layer(low)]}) imports {high} ({LAYERS[layer(high)]})"
        ]


def test_layers_are_read_from_paths():
    assert [
        LAYERS[layer(m)]
        for m in (
            "kd_keras/data/load.py",
            "kd_keras/runs.py",
            "export/exporter.py",
            "nas/oracles.py",
            "kd_keras/app/study/runner.py",
            "kd_keras/main.py",
            "nas/flags.py",
            "tests/build_test.py",
        )
    ] == ["core", "core", "export", "search", "app", "entry", "entry", "tests"]


def test_only_entry_points_define_flags():
    wrong = []
    for module in modules():
        if layer(module) >= LAYERS.index("entry"):
            continue
        tree = ast.parse(open(os.path.join(ROOT, module)).read(), module)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("DEFINE_")
                and isinstance(node.value, ast.Name)
                and node.value.id == "flags"
            ):
                wrong.append(f"{module}:{node.lineno}: flags.{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_functions_over_100_lines_say_why():
    """A function over 100 lines says why in its docstring (``Length: ...``)."""
    long = []
    for module in modules():
        if not module.startswith(("kd_keras/", "export/", "nas/")):
            continue
        tree = ast.parse(open(os.path.join(ROOT, module)).read(), module)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno >= 100:
                if "Length:" not in (ast.get_docstring(node) or ""):
                    long.append(f"{module}:{node.lineno} {node.name}")
    assert not long, long


def test_no_module_is_over_800_lines():
    long = {}
    for module in modules():
        if module.startswith(("kd_keras/", "export/", "nas/")):
            n = sum(1 for _ in open(os.path.join(ROOT, module)))
            if n > 800:
                long[module] = n
    assert not long, long


def test_first_party_imports_are_at_top_level():
    nested = [
        f"{m}:{line} imports {name} inside a function"
        for m in modules()
        if m.split("/")[0] in PACKAGES
        for line, name, top in imports(m)[2]
        if not top
    ]
    assert not nested, "\n".join(nested)


def test_no_module_uses_another_modules_private_names():
    wrong = []
    for module in modules():
        tree = ast.parse(open(os.path.join(ROOT, module)).read(), module)
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.split(".")[0] in PACKAGES:
                    for alias in node.names:
                        if alias.name.startswith("_"):
                            wrong.append(f"{module}: from {node.module} import {alias.name}")
                        aliases.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in PACKAGES:
                        aliases.add(alias.asname or alias.name.split(".")[0])
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                wrong.append(f"{module}:{node.lineno}: {node.value.id}.{node.attr}")
    assert not wrong, "\n".join(wrong)


def test_build_matches_the_imports():
    expected, actual = expected_build(), build_targets()
    assert sorted(actual) == sorted(expected), (
        f"missing: {sorted(set(expected) - set(actual))}, "
        f"extra: {sorted(set(actual) - set(expected))}; regenerate: "
        "python tests/build_test.py > BUILD"
    )
    for name, target in expected.items():
        assert actual[name] == target, (
            f"{name}: BUILD says {actual[name]}, the imports say {target}; regenerate: "
            "python tests/build_test.py > BUILD"
        )


def test_build_has_no_cycle_and_its_deps_resolve():
    targets = build_targets()
    requirements = _requirements()
    edges = {n: {d[1:] for d in t["deps"] if d.startswith(":")} for n, t in targets.items()}
    cycle = find_cycle(edges)
    assert cycle is None, "BUILD cycle: " + " -> ".join(cycle)
    for name, target in targets.items():
        for src in target["srcs"]:
            assert os.path.exists(os.path.join(ROOT, src)), f"{name}: {src} does not exist"
        for dep in target["deps"]:
            if dep.startswith(":"):
                assert dep[1:] in targets, f"{name}: unknown dep {dep}"
            else:
                assert dep.split(":", 1)[1] in requirements, (
                    f"{name}: {dep} is not pinned in requirements.txt"
                )
    for entry in ENTRY_POINTS:
        assert targets[target_name(entry)]["rule"] == "py_binary"


def test_the_build_checks_fail_on_a_cycle_and_an_undeclared_import():
    text = render(expected_build())
    targets = build_targets(text)
    targets["kd_keras_runs"]["deps"].append(":kd_keras_app_pipeline")  # runs -> ... -> runs
    edges = {n: {d[1:] for d in t["deps"] if d.startswith(":")} for n, t in targets.items()}
    assert find_cycle(edges) is not None
    targets = build_targets(text)
    targets["kd_keras_app_pipeline"]["deps"].remove(":kd_keras_runs")
    assert targets != expected_build()


if __name__ == "__main__":
    sys.stdout.write(render(expected_build()))


def test_the_readme_is_a_user_guide_of_at_most_350_lines():
    lines = open(os.path.join(ROOT, "README.md")).read().splitlines()
    assert len(lines) <= 350, f"README.md has {len(lines)} lines; move detail to docs/"

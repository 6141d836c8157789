"""`make mutation`: mutation testing of the pure core with mutmut, reported in benchmarks/results/mutation.json.

A survivor is a line the unit tests would not notice going wrong: either a missing test or dead code.

Why a staging copy: mutmut names a mutant by its file's path, which must be the module's import path, and it
imports the mutated copy through sys.path; here the operator's package lives under ``operator/`` and both
packages are installed editable. So ``run`` copies ``modelrollout/``, ``model_server/``, the tests and the
files they read into ``.mutation/`` and runs mutmut there: the working tree is never mutated.

Scope: the modules in ``[tool.mutmut] only_mutate`` (pyproject.toml), less the functions in ``IO_FUNCTIONS``
(they talk to Prometheus or the Kubernetes API; the integration and e2e tests cover them, and the pure
functions they call are mutated). Survivors that are equivalent or harmless are explained by hand in
``scripts/mutation_equivalents.json``, matched on module, function and the mutated line(s).

    python scripts/mutation.py run [--commit REF] [--incremental] [GLOB ...]
                                                stage (the working tree, or REF), run mutmut (every in-scope
                                                mutant, or those matching the GLOBs), report; --incremental
                                                keeps the last run's kills of unchanged functions
    python scripts/mutation.py report           report the last run again (after editing the equivalents)
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STAGE = REPO / ".mutation"
RESULT = REPO / "benchmarks" / "results" / "mutation.json"
EQUIVALENTS = Path(__file__).resolve().parent / "mutation_equivalents.json"
MUTMUT = Path(sys.executable).parent / "mutmut"
COMMAND = "make mutation"
PLUGIN = "mutation_plugin.py"

STAGED = {
    "modelrollout": REPO / "operator" / "modelrollout",
    "model_server": REPO / "model_server",
    "tests": REPO / "tests",
    "crds": REPO / "crds",
    "charts": REPO / "charts",
    "pyproject.toml": REPO / "pyproject.toml",
    PLUGIN: REPO / "scripts" / PLUGIN,
}

IO_FUNCTIONS = {
    "modelrollout.analysis.prometheus": {
        "PrometheusProvider.*": "HTTP client of Prometheus (tests/integration run it against a real Prometheus)",
    },
    "modelrollout.routing.gateway_api": {
        "GatewayApiRouter.*": "Kubernetes API calls around the pure builders (build_route, weights_patch, ...)",
        "all_to_blue": "lists and patches HTTPRoutes through the Kubernetes API (blue_only_rules is mutated)",
    },
    "modelrollout.routing.factory": {
        "all_to_blue_without_spec": "Kubernetes API calls, failures only logged",
        "applied_without_spec": "lists HTTPRoutes through the Kubernetes API (applied_of is mutated)",
    },
}
"""Functions of the in-scope modules that do I/O: not mutated."""

# mutmut's exit codes (mutmut.stats.status_by_exit_code), grouped as this report counts them
KILLED = {1, 3}
SURVIVED = {0}
NO_TESTS = {5, 33}
TIMEOUT = {24, -24, 152, 255, 36}
CAUGHT_BY_TYPE_CHECK = {37}
SUSPICIOUS = {35}


def stage(commit: str | None, *, keep_results: bool) -> None:
    """A fresh copy of what mutmut needs, from the working tree or a commit; with ``keep_results`` the earlier
    mutants and results stay (mutmut keeps the results of functions whose code did not change)."""
    if STAGE.exists():
        for entry in STAGE.iterdir():
            if keep_results and entry.name == "mutants":
                continue
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    STAGE.mkdir(exist_ok=True)
    ignored = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".hypothesis", "*.pyc")
    for name, source in STAGED.items():
        if commit is not None and name != PLUGIN:
            _extract(commit, source.relative_to(REPO), STAGE / name)
        elif source.is_dir():
            shutil.copytree(source, STAGE / name, ignore=ignored)
        else:
            shutil.copy2(source, STAGE / name)


def _extract(commit: str, path: Path, target: Path) -> None:
    """``path`` as of ``commit`` (git archive), at ``target``."""
    with tempfile.TemporaryDirectory(dir=STAGE) as scratch:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit, str(path)], cwd=REPO, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", scratch], input=archive, check=True)
        shutil.move(Path(scratch) / path, target)


def mutmut_config() -> dict[str, Any]:
    config: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mutmut"]
    return config


def in_scope_files(root: Path) -> list[Path]:
    """Source files (relative to ``root``) that mutmut mutates."""
    patterns = mutmut_config()["only_mutate"]
    return sorted(
        path.relative_to(root)
        for top in mutmut_config()["source_paths"]
        for path in (root / top).rglob("*.py")
        if "__pycache__" not in path.parts and any(fnmatch.fnmatch(str(path.relative_to(root)), p) for p in patterns)
    )


def module_of(path: Path) -> str:
    return ".".join(path.with_suffix("").parts).removesuffix(".__init__")


def functions_of(source: str) -> dict[str, tuple[str, int, int]]:
    """qualname -> (mutmut's mangled name, first line, last line) of every top-level function and method."""
    found: dict[str, tuple[str, int, int]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = (f"x_{node.name}", node.lineno, node.end_lineno or node.lineno)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    found[f"{node.name}.{item.name}"] = (
                        f"x\u01c1{node.name}\u01c1{item.name}",
                        item.lineno,
                        item.end_lineno or item.lineno,
                    )
    return found


def io_reason(module: str, qualname: str) -> str | None:
    for pattern, reason in IO_FUNCTIONS.get(module, {}).items():
        if fnmatch.fnmatch(qualname, pattern):
            return reason
    return None


def in_scope_globs(root: Path) -> list[str]:
    """mutmut name patterns of the pure functions in scope."""
    globs = []
    for path in in_scope_files(root):
        module = module_of(path)
        for qualname, (mangled, _, _) in functions_of((root / path).read_text()).items():
            if io_reason(module, qualname) is None:
                globs.append(f"{module}.{mangled}__mutmut_*")
    return globs


def run(patterns: list[str], *, commit: str | None, incremental: bool) -> int:
    source = _source(commit)
    stage(commit, keep_results=incremental)
    if incremental:
        # mutmut runs every mutant without a result: every one of those not killed last time, and those of
        # functions whose code changed (I/O functions have no unit tests: mutmut marks them at no cost)
        reopened = reopen_undetected()
        globs = patterns
        print(f"mutmut in {STAGE.relative_to(REPO)}: {reopened} mutants not killed last time run again", flush=True)
    else:
        globs = patterns or in_scope_globs(STAGE)
        print(f"mutmut in {STAGE.relative_to(REPO)}: {len(globs)} function patterns", flush=True)
    argv = ["nice", "-n", "19", str(MUTMUT), "run", "--max-children", "1", *globs]
    started = time.monotonic()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    log = STAGE / "mutmut.log"
    with log.open("w") as out:
        code = subprocess.run(argv, cwd=STAGE, env=env, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.monotonic() - started
    run_info = {
        "seconds": seconds,
        "exit_code": code,
        "patterns": patterns,
        "source": source,
        "incremental": incremental,
        "command": " ".join(["python", "scripts/mutation.py", *sys.argv[1:]]),
    }
    (STAGE / "run.json").write_text(json.dumps(run_info))
    if code != 0:
        print(f"mutmut failed ({code}); its output: {log}", file=sys.stderr)
        print("\n".join(log.read_text().splitlines()[-30:]), file=sys.stderr)
        return code
    return report()


def reopen_undetected() -> int:
    """Forget the result of every mutant of the last run that was not killed, so that it runs again."""
    reopened = 0
    for meta_file in (STAGE / "mutants").rglob("*.py.meta"):
        meta = json.loads(meta_file.read_text())
        codes = meta["exit_code_by_key"]
        for name, code in codes.items():
            if code is not None and code not in KILLED:
                codes[name] = None
                reopened += 1
        meta_file.write_text(json.dumps(meta, indent=4))
    return reopened


def diff_of(name: str, path: Path) -> list[str]:
    """The changed lines of one mutant, ``-old`` then ``+new`` (mutmut's own diff, in the staging copy)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = Path.cwd()
    os.chdir(STAGE)
    try:
        diff = get_diff_for_mutant(name, path=path)
    finally:
        os.chdir(cwd)
    return [
        line
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---")) and line[1:].strip()
    ]


def line_of(removed: list[str], source_lines: list[str], first: int, last: int) -> int:
    """The file line of the first removed line, within the function's lines."""
    wanted = removed[0][1:] if removed else None
    for number in range(first, last + 1):
        if source_lines[number - 1] == wanted:
            return number
    return first


def explained(
    equivalents: list[dict[str, Any]], module: str, function: str, mutation: list[str]
) -> tuple[str | None, str | None]:
    """(why the mutant is harmless, why it is still open): from the first entry that matches; an entry of
    kind "open" (function and mutation may be "*") notes a real gap left for later."""
    for entry in equivalents:
        if entry["module"] == module and entry["function"] in (function, "*") and entry["mutation"] in (mutation, "*"):
            reason: str = entry["reason"]
            return (None, reason) if entry.get("kind") == "open" else (reason, None)
    return None, None


def report() -> int:
    meta_files = sorted((STAGE / "mutants").rglob("*.py.meta"))
    if not meta_files:
        print(f"no mutmut results under {STAGE}: run `make mutation` first", file=sys.stderr)
        return 1
    equivalents: list[dict[str, Any]] = json.loads(EQUIVALENTS.read_text()) if EQUIVALENTS.exists() else []
    run_info = json.loads((STAGE / "run.json").read_text())
    totals: Counter[str] = Counter()
    per_module: dict[str, Counter[str]] = {}
    survivors: list[dict[str, Any]] = []
    excluded: Counter[str] = Counter()
    for meta_file in meta_files:
        path = meta_file.relative_to(STAGE / "mutants").with_suffix("")  # drop .meta
        module = module_of(path)
        source = (STAGE / path).read_text()
        lines = source.splitlines()
        functions = functions_of(source)
        by_mangled = {mangled: (qualname, first, last) for qualname, (mangled, first, last) in functions.items()}
        exit_codes: dict[str, int | None] = json.loads(meta_file.read_text())["exit_code_by_key"]
        for name, code in sorted(exit_codes.items(), key=lambda item: _natural(item[0])):
            mangled = name.rpartition(".")[2].partition("__mutmut_")[0]
            qualname, first, last = by_mangled[mangled]
            if io_reason(module, qualname) is not None:
                excluded[module] += 1
                continue
            kind = _kind(code)
            if kind == "not checked":
                continue  # outside the patterns of a partial run
            totals[kind] += 1
            per_module.setdefault(module, Counter())[kind] += 1
            if kind in ("survived", "no tests", "suspicious"):
                mutation = diff_of(name, path)
                reason, open_note = explained(equivalents, module, qualname, mutation)
                survivors.append(
                    {
                        "module": module,
                        "line": line_of([m for m in mutation if m.startswith("-")], lines, first, last),
                        "function": qualname,
                        "mutant": name,
                        "status": kind,
                        "mutation": mutation,
                        "why_harmless": reason,
                        **({"open": open_note} if open_note else {}),
                    }
                )
    undetected = totals["survived"] + totals["no tests"]
    result = {
        "tool": "mutmut " + _mutmut_version(),
        "command": f"{COMMAND} (here: {run_info['command']})" if "command" in run_info else COMMAND,
        "mutmut_command": "nice -n 19 mutmut run --max-children 1 "
        + (
            " ".join(run_info["patterns"])
            if run_info["patterns"]
            else "(every mutant without a result)"
            if run_info.get("incremental")
            else "<one name pattern per pure function in scope>"
        ),
        "incremental": bool(run_info.get("incremental")),
        "tests": "tests/unit, each mutant against the tests that call its function (mutmut's stats); property "
        "tests with at most MUTATION_HYPOTHESIS_EXAMPLES (25) examples, after the example-based ones "
        "(scripts/mutation_plugin.py); test_safety_model.py::test_random_histories_keep_every_invariant "
        "(150 random histories) deselected, left to make test",
        "source": run_info["source"],
        "seconds": round(run_info["seconds"]),
        "killed": totals["killed"],
        "survived": undetected,
        "survived_of_which_no_tests": totals["no tests"],
        "timeout": totals["timeout"],
        "suspicious": totals["suspicious"],
        "caught_by_type_check": totals["caught by type check"],
        "kill_rate": round(totals["killed"] / (totals["killed"] + undetected), 4) if totals["killed"] else 0.0,
        "per_module": {
            module: {
                "killed": counts["killed"],
                "survived": counts["survived"] + counts["no tests"],
                **({"timeout": counts["timeout"]} if counts["timeout"] else {}),
                **({"suspicious": counts["suspicious"]} if counts["suspicious"] else {}),
            }
            for module, counts in sorted(per_module.items())
        },
        "survivors_equivalent_or_harmless": sum(1 for s in survivors if s["why_harmless"] is not None),
        "survivors_open": sum(1 for s in survivors if s["why_harmless"] is None),
        "survivors": survivors,
        "excluded_io_functions": {
            module: {"functions": reasons, "mutants_not_run": excluded[module]}
            for module, reasons in IO_FUNCTIONS.items()
        },
    }
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"killed {result['killed']}, survived {result['survived']} ({result['survivors_open']} open), "
        f"timeout {result['timeout']}, kill rate {result['kill_rate']:.3f} -> {RESULT.relative_to(REPO)}"
    )
    return 0


def _source(commit: str | None) -> str:
    if commit is None:
        return "the working tree"
    resolved = subprocess.run(["git", "rev-parse", "--short", commit], cwd=REPO, capture_output=True, text=True)
    return f"commit {resolved.stdout.strip() or commit}"


def _natural(name: str) -> tuple[str, int]:
    stem, _, number = name.rpartition("__mutmut_")
    return stem, int(number) if number.isdigit() else 0


def _kind(code: int | None) -> str:
    if code is None:
        return "not checked"
    for kind, codes in (
        ("killed", KILLED),
        ("survived", SURVIVED),
        ("no tests", NO_TESTS),
        ("timeout", TIMEOUT),
        ("caught by type check", CAUGHT_BY_TYPE_CHECK),
    ):
        if code in codes:
            return kind
    return "suspicious"


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="stage, run mutmut, write the report")
    run_parser.add_argument("patterns", nargs="*", help="mutmut name patterns (default: every pure function in scope)")
    run_parser.add_argument("--commit", help="mutate the sources and tests of this commit instead of the working tree")
    run_parser.add_argument(
        "--incremental",
        action="store_true",
        help="keep the last run's kills of unchanged functions; run the rest (survivors, changed functions) again",
    )
    commands.add_parser("report", help="write the report of the last run again")
    args = parser.parse_args()
    return run(args.patterns, commit=args.commit, incremental=args.incremental) if args.command == "run" else report()


if __name__ == "__main__":
    sys.exit(main())

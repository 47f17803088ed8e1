"""The `cellbench` command: run, report, compare, verify.

    cellbench run [--full] [--backend NAME_OR_MODULE:ATTR ...] [--cell CELL ...]
        property suite (ci profile, suite_power and self_check deselected), then the benchmark matrix on every
        available backend; a new timestamped folder under reports/runs/, written atomically, then
        the `latest` link; prints the headline table.
    cellbench report RESULTS.json... [-o DIR] [--junit XML]
    cellbench compare OLD NEW [--threshold 0.10]
        benchmarks present in both runs; exit 1 when one regressed beyond the threshold on
        comparable runs (same CPU, GEMM rates within 10%, neither machine loaded); runs that are
        not comparable get a warning, their differences listed as slower/faster, and exit 0
    cellbench verify --backend MODULE:ATTR           property suite on one backend + its conformance matrix

Bad input (missing, corrupt or foreign files, unknown backends or cells) is one line on
stderr, `cellbench: error: ...`, exit status 2, and nothing written.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from properties.backends import BUILTIN, BackendError, load_backend

PACKAGE_DIR = Path(__file__).resolve().parent
RUNS_DIR = PACKAGE_DIR / "runs"
BENCH_FILE = PACKAGE_DIR / "benchmarks" / "bench_cells.py"
#: Layers (stacked, bidirectional, row lengths) against torch.nn's packed sequences, in the same child run.
LAYER_BENCH_FILE = PACKAGE_DIR / "benchmarks" / "bench_layers.py"

#: pytest-benchmark settings for `cellbench run`: a few rounds of at most ~0.05 s each case keeps the
#: default matrix near a minute and a half per backend-pair on 2 cores; the first call is timed apart.
BENCH_OPTIONS = ["--benchmark-min-rounds=3", "--benchmark-max-time=0.05", "--benchmark-warmup=off",
                 "--benchmark-disable-gc", "--benchmark-quiet"]


class UsageError(ValueError):
    """Bad input to the command; str() is the one-line message."""


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def properties_dir() -> Path:
    import properties
    return Path(next(iter(properties.__path__))).resolve()  # __path__: also right for an editable namespace


def child_environment(env=None) -> dict:
    """The environment for a child pytest session: without an enclosing xdist worker's variables,
    which would make pytest-benchmark in the child believe it runs under xdist and disable itself."""
    return {k: v for k, v in (os.environ if env is None else env).items() if not k.startswith("PYTEST_XDIST_")}


def stream(command, log_path: Path, env=None, render=lambda line: line.rstrip() or None) -> int:
    """Run command, write all its output to log_path, echo what `render` makes of each line; return its exit code."""
    env = child_environment(env)
    with open(log_path, "w", encoding="utf-8") as log:
        # the caller's working directory: `python -m pytest` puts it on sys.path, so a backend
        # module of the user's (--backend mymod:backend) imports there as it does here
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in process.stdout:
            log.write(line)
            shown = render(line)
            if shown:
                print("  " + shown, flush=True)
        return process.wait()


def benchmark_progress(line: str):
    """'...::test_cell[jit.cpu-lstm-M-training-float32] PASSED [ 40%]' -> '[ 40%] jit.cpu-lstm-M-... PASSED'
    (test_layer's cases alike)."""
    match = re.search(r"::test_(?:cell|layer)\[(?P<case>[^\]]+)\] (?P<outcome>[A-Z]+)\s+(?P<progress>\[\s*\d+%\])", line)
    return match and f"{match['progress']} {match['case']} {match['outcome']}"


def property_suite(junit: Path, log: Path, backend_spec=None, echo=True, workers=None) -> int:
    """The property suite with the ci profile, without the slow suite_power and self_check tests (the
    suite against broken backends, jit.cpu against itself at the other vector width: CI runs both)."""
    command = [sys.executable, "-m", "pytest", str(properties_dir()), "-m", "not suite_power and not self_check",
               "-q", "--tb=short",
               "-p", "no:cacheprovider", f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    if workers:  # pytest-xdist: the suite's examples are derandomized, so workers change nothing but time
        command += ["-n", str(workers)]
    env = dict(os.environ, CELLBENCH_PROFILE="ci")
    if backend_spec:  # the suite's own switch (properties.backends.selected), same as --backend
        env["CELLBENCH_BACKEND"] = backend_spec
    return stream(command, log, env=env, render=(lambda line: echo and line.rstrip() or None))


def new_run_name(root: Path, prefix="") -> Path:
    """Claim a fresh, empty folder name under root (mkdir is atomic: two runs never share one)."""
    stamp = prefix + time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        candidate = root / (stamp if attempt == 0 else f"{stamp}-{attempt + 1}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise UsageError(f"{root}: cannot find a free folder name for {stamp}")


def publish(staging: Path, final: Path) -> None:
    """Move a finished staging folder onto its claimed (empty) final name in one rename."""
    staging.chmod(0o755)  # mkdtemp made it private; a report is for reading
    os.replace(staging, final)  # POSIX: atomically replaces the empty placeholder directory


def point_latest(root: Path, target: Path) -> None:
    """Make root/latest point at target, atomically (a new symlink renamed over the old one)."""
    link = root / "latest"
    temporary = root / f".latest-{os.getpid()}"
    try:
        if temporary.is_symlink():
            temporary.unlink()
        temporary.symlink_to(target.name, target_is_directory=True)
        os.replace(temporary, link)
    except OSError:  # no symlinks here (some Windows setups): a one-line pointer file instead
        (root / "latest.txt").write_text(target.name + "\n", encoding="utf-8")


def check_cells(cells):
    from reference.contract import CELLS
    unknown = [c for c in cells or () if c not in CELLS]
    if unknown:
        raise UsageError(f"unknown cell {', '.join(map(repr, unknown))}; valid cells: {', '.join(CELLS)}")


def check_output_dir(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{path}: already exists and is not empty; choose another -o (nothing is overwritten)")


def headline_markdown(df) -> str:
    from reports.report import to_markdown
    from reports.tables import headline
    return to_markdown(headline(df))


# ---------------------------------------------------------------------------------------------
# Subcommands
# ---------------------------------------------------------------------------------------------

def chosen_run(args):
    """(backends, {left-out backend: why}, matrix name) of a `cellbench run`, or UsageError."""
    from reports.backends import resolve_backends
    from reports.matrix import cases
    check_cells(args.cell)
    try:
        backends, left_out = resolve_backends(args.backend)
    except BackendError as exc:
        raise UsageError(str(exc)) from None
    if not backends:
        raise UsageError("no backend can run here" + "".join(f"; {n}: {why}" for n, why in left_out.items()))
    matrix = "full" if args.full else args.matrix
    if not cases(matrix, backends, args.cell):
        raise UsageError(f"no benchmark for cells {', '.join(args.cell)} on "
                         + "; ".join(f"{n} (supports {', '.join(sorted(b.cells))})" for n, b in backends.items()))
    return backends, left_out, matrix


def run_properties(args, staging: Path, started: float):
    """Step 1 of `cellbench run`: the property suite on each chosen contract backend (timing peers
    are not contract backends: nothing to verify); (all passed, their junit cases or None)."""
    import pandas as pd

    from reports.backends import PEERS
    from reports.conformance import read_junit
    print("[1/3] property suite (ci profile, suite_power and self_check deselected)", flush=True)
    specs = [None] if not args.backend else [BUILTIN.get(s, s) for s in args.backend if s not in PEERS]
    passed, frames = True, []
    for i, spec in enumerate(specs):
        xml = staging / f"properties{'' if len(specs) == 1 else f'-{i + 1}'}.xml"
        passed &= property_suite(xml, staging / xml.with_suffix(".log").name, spec, workers=args.workers) == 0
        if xml.is_file():
            frames.append(read_junit(xml))
    print(f"      property suite {'passed' if passed else 'FAILED'} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    return passed, (pd.concat(frames, ignore_index=True) if frames else None)


def run_benchmarks(args, matrix: str, staging: Path):
    """Step 2 of `cellbench run`: the benchmark matrix in a child pytest; (its exit code, the JSON)."""
    print(f"[2/3] benchmarks ({matrix} matrix)", flush=True)
    bench_json = staging / "benchmarks.json"
    command = [sys.executable, "-m", "pytest", str(BENCH_FILE), str(LAYER_BENCH_FILE), "-v", "-p", "no:cacheprovider",
               f"--bench-matrix={matrix}", f"--benchmark-json={bench_json}", *BENCH_OPTIONS]
    command += [f"--bench-backend={spec}" for spec in args.backend or ()]
    command += [f"--bench-cell={cell}" for cell in args.cell or ()]
    code = stream(command, staging / "benchmarks.log", render=benchmark_progress)
    if not bench_json.is_file():
        raise UsageError(f"the benchmarks wrote no results (exit {code}); see {staging / 'benchmarks.log'}")
    return code, bench_json


def publish_run_report(args, matrix, root: Path, staging: Path, bench_json: Path, junit, left_out):
    """Step 3 of `cellbench run`: the report into staging, then staging renamed onto a new run
    folder and `latest` pointed at it; (the results, the run folder, the verdict line)."""
    from reports import results
    from reports.gradient_flow import gradient_flow_table
    from reports.report import write_report
    print("[3/3] report (tables, plots, gradient flow)", flush=True)
    df = results.load([bench_json])
    final = new_run_name(root)  # claimed now, so that the report can name its own folder
    df["source"] = f"{final.name}/benchmarks.json"
    try:
        line, _, _ = write_report(df, staging, junit=junit, gradient_flow=gradient_flow_table(T=args.gradient_steps),
                                  left_out=left_out, title=f"cellbench run {final.name} ({matrix} matrix)")
    except BaseException:
        final.rmdir()  # still the empty placeholder: give the name back
        raise
    publish(staging, final)
    point_latest(root, final)
    return df, final, line


def cmd_run(args) -> int:
    backends, left_out, matrix = chosen_run(args)
    root = Path(args.out_root) if args.out_root else RUNS_DIR
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incomplete-", dir=root))
    for name, why in left_out.items():
        print(f"cellbench: not timed: {name} ({why})")
    print(f"cellbench: backends {', '.join(backends)}; matrix {matrix}; writing {staging}", flush=True)
    started = time.perf_counter()
    properties_ok, junit = (True, None) if args.no_properties else run_properties(args, staging, started)
    code, bench_json = run_benchmarks(args, matrix, staging)
    df, final, line = publish_run_report(args, matrix, root, staging, bench_json, junit, left_out)
    print()
    print(headline_markdown(df))
    print(f"\ncellbench: {line}")
    print(f"cellbench: report in {final} (report.md, report.html, CSV, PNG); "
          f"{root / 'latest'} points to it; {time.perf_counter() - started:.0f} s in all")
    if code != 0 or not properties_ok:
        print("cellbench: some tests failed; see the logs in the report folder", file=sys.stderr)
        return 1
    return 0


def find_junit(paths):
    """A run folder given to `report` brings its property-suite junit XML along."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(path.glob("properties*.xml"))
    return found


def cmd_report(args) -> int:
    from reports import results
    from reports.conformance import read_junit
    from reports.gradient_flow import gradient_flow_table
    from reports.report import write_report
    import pandas as pd
    df = results.load(args.results)  # every input is validated before anything is written
    junit_files = args.junit or find_junit(args.results)
    junit = pd.concat([read_junit(p) for p in junit_files], ignore_index=True) if junit_files else None
    if args.output:
        out = Path(args.output)
        check_output_dir(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incomplete-", dir=out.parent))
    else:
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        out, staging = None, Path(tempfile.mkdtemp(prefix=".incomplete-", dir=RUNS_DIR))
    gradient_flow = None if args.no_gradient_flow else gradient_flow_table(T=args.gradient_steps)
    try:
        line, warnings, _ = write_report(df, staging, junit=junit, gradient_flow=gradient_flow,
                                         title="cellbench report")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a half-written report is never left behind
        raise
    if out is None:
        out = new_run_name(RUNS_DIR, prefix="report-")
    elif not out.exists():
        out.mkdir()
    check_output_dir(out)  # claimed while we wrote? then stop rather than overwrite
    publish(staging, out)
    print(headline_markdown(df))
    print(f"\ncellbench: {line}")
    for warning in warnings:
        print(f"cellbench: warning: {warning}")
    print(f"cellbench: report in {out}")
    return 0


def cmd_compare(args) -> int:
    """Exit 1 when a benchmark of both runs regressed beyond the threshold and the runs are
    comparable (same CPU and vector features, GEMM rates within 10%, neither machine loaded). When
    they are not, the differences are listed as slower/faster under a warning, and the exit status
    is 0: a change of machine or load is not a regression of the code, and noise must not fail CI."""
    from reports import results
    from reports.machine import differences
    from reports.report import to_markdown
    from reports.tables import compare, only_in_one, runs
    if not args.threshold > 0:
        raise UsageError(f"--threshold: expected a positive fraction such as 0.1; got {args.threshold}")
    old, new = results.load([args.old]), results.load([args.new])
    problems = differences(runs(old).iloc[0].to_dict(), runs(new).iloc[0].to_dict())
    for problem in problems:
        print(f"cellbench: warning: not comparable: {problem}")
    table = compare(old, new, args.threshold, comparable=not problems)
    only_old, only_new = only_in_one(old, new)
    print(to_markdown(table))
    print(f"\ncellbench: {len(table)} benchmarks in both runs compared"
          + (f" ({only_old} only in OLD, {only_new} only in NEW: left out)" if only_old or only_new else ""))
    if problems:
        slower = int((table["status"] == "slower").sum())
        print(f"cellbench: no regression verdict: the runs are not comparable; {slower} benchmark(s) "
              f"slower beyond {args.threshold:.0%}. Measure both on one quiet machine to judge.")
        return 0
    regressions = int((table["status"] == "REGRESSION").sum())
    print(f"cellbench: {regressions} regression(s) beyond {args.threshold:.0%}")
    return 1 if regressions else 0


def cmd_verify(args) -> int:
    from reports.conformance import conformance_matrix, read_junit, verdicts
    from reports.report import to_markdown
    try:
        backend = load_backend(args.backend)
    except BackendError as exc:
        raise UsageError(f"{exc} (built-in backends: {', '.join(BUILTIN)})") from None
    with tempfile.TemporaryDirectory(prefix="cellbench-verify-") as tmp:
        junit_path = Path(tmp) / "properties.xml"
        print(f"cellbench: property suite against {backend.name} ({args.backend}), ci profile", flush=True)
        code = property_suite(junit_path, Path(tmp) / "properties.log", BUILTIN.get(args.backend, args.backend),
                              workers=args.workers)
        if not junit_path.is_file():
            raise UsageError(f"the property suite wrote no junit XML (exit {code})")
        cases = read_junit(junit_path)
    mine = cases[cases["backend"] == str(backend.name)]
    others = cases[cases["backend"] != str(backend.name)]
    print()
    print(to_markdown(conformance_matrix(mine)))
    if len(others):  # the project's own example-based tests ran too; they are not about this backend
        print(f"\n(and {len(others)} other tests of the project: "
              f"{(others['outcome'] == 'failed').sum()} failed)")
    known = mine[mine["outcome"] == "known defect"]
    if len(known):
        print(f"\n{len(known)} tests fail through known framework defects (docs/findings.md)")
    for verdict in verdicts(cases):
        print(verdict)
    return code


# ---------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    from reports.matrix import MATRICES
    main = argparse.ArgumentParser(prog="cellbench", description=__doc__.split("\n\n")[0])
    sub = main.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="property suite + benchmarks + report into a new folder")
    run.add_argument("--full", action="store_true", help="the full matrix: every cell, both dtypes, all sweeps")
    run.add_argument("--matrix", default="default", choices=sorted(MATRICES), help=argparse.SUPPRESS)
    run.add_argument("--backend", action="append", metavar="NAME_OR_MODULE:ATTR",
                     help=f"measure only this backend (repeatable); built-in: {', '.join(BUILTIN)}")
    run.add_argument("--cell", action="append", metavar="CELL", help="measure only this cell (repeatable)")
    run.add_argument("--no-properties", action="store_true", help="skip the property suite")
    run.add_argument("-n", "--workers", metavar="N", help="run the property suite on N pytest-xdist workers (or auto)")
    run.add_argument("--out-root", metavar="DIR", help=f"where run folders go (default {RUNS_DIR})")
    run.add_argument("--gradient-steps", type=int, default=60, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    report = sub.add_parser("report", help="rebuild a report from saved benchmark JSON (or run folders)")
    report.add_argument("results", nargs="+", metavar="RESULTS.json")
    report.add_argument("-o", "--output", metavar="DIR", help="a new folder (default: a new one under reports/runs)")
    report.add_argument("--junit", action="append", metavar="XML", help="property-suite junit XML to include")
    report.add_argument("--no-gradient-flow", action="store_true", help="leave out the gradient-flow section")
    report.add_argument("--gradient-steps", type=int, default=60, help=argparse.SUPPRESS)
    report.set_defaults(func=cmd_report)

    compare = sub.add_parser("compare", help="ratio per benchmark of two runs; flags regressions when the "
                             "runs are comparable (same CPU, similar GEMM rate, quiet machines)")
    compare.add_argument("old", metavar="OLD")
    compare.add_argument("new", metavar="NEW")
    compare.add_argument("--threshold", type=float, default=0.10,
                         help="flag ratios above 1 + threshold (default 0.10)")
    compare.set_defaults(func=cmd_compare)

    verify = sub.add_parser("verify", help="run the property suite against one backend")
    verify.add_argument("--backend", required=True, metavar="MODULE:ATTR")
    verify.add_argument("-n", "--workers", metavar="N", help="pytest-xdist workers (or auto)")
    verify.set_defaults(func=cmd_verify)
    return main


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: a backend module in this folder imports
    from reports.conformance import JunitError
    from reports.results import ResultsError
    try:
        return args.func(args)
    except (UsageError, ResultsError, JunitError) as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"cellbench: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cellbench: interrupted; nothing was published", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Experiment profiles (scripts/profiles.toml): datasets, arms, pairs, batches, budgets, tests.

Every value is checked on load (types, ranges, unknown keys, missing sections); a bad one stops
with one line naming the file, line, section and key.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROFILES_FILE = ROOT / "scripts" / "profiles.toml"
RULES = ("first", "stays")  # first reach (MLPerf) and stays above (the paper's Table 1)
DEFAULT_ARMS = ("sgd", "isgd")  # Table 1's arms when a profile names none
DEFAULT_BASELINE = "sgd"


class ProfileError(ValueError):
    """A profile or dataset that does not exist or is incomplete; the message names it."""


@dataclass(frozen=True)
class Ladder:
    """Accuracy levels from `start` to `stop` (inclusive) in steps of `step`."""

    start: float
    stop: float
    step: float

    @property
    def levels(self) -> list[float]:
        """start, start + step, ..., up to stop, rounded to 12 decimals so that repeated steps
        do not drift (0.97 + 3 * 0.001 is 0.973, not 0.9730000000000001)."""
        count = math.floor((self.stop - self.start) / self.step + 1e-9) + 1
        return [round(self.start + k * self.step, 12) for k in range(count)]


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison: the prototxt/ solver it uses (the `{arm}` of a dataset's solver
    pattern) and the isgd_param fields it sets (any set field turns ISGD on, as in Caffe's
    optional message)."""

    name: str
    solver: str
    isgd: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def title(self) -> str:
        """How tables and figures name the arm ("SGD"; the name when no label is given)."""
        return self.label or self.name


BUILTIN_ARMS = {  # the arms every profiles file knows, unless its [arms] table redefines them
    "sgd": Arm("sgd", "sgd", label="SGD"),
    "isgd": Arm("isgd", "isgd", label="ISGD"),
    "nesterov": Arm("nesterov", "nesterov", label="Nesterov"),
    "isgd_nesterov": Arm("isgd_nesterov", "isgd_nesterov", label="ISGD-Nesterov"),
}


@dataclass(frozen=True)
class Dataset:
    """One of the paper's datasets: its net, solver pattern, test metric and target."""

    name: str
    net: str
    solver: str
    metric: str
    target: float
    test_records: int
    train_records: int
    lmdbs: tuple[str, ...]
    ladder: Ladder | None = None
    rules: tuple[str, ...] = RULES
    paper_imp: float | None = None  # the paper's Table 1 IMP of time to target

    def solver_file(self, arm: str) -> str:
        """The prototxt/ solver of an arm ("sgd", "isgd", "nesterov", "isgd_nesterov")."""
        return self.solver.format(arm=arm)


@dataclass(frozen=True)
class Plan:
    """A dataset's settings in one profile."""

    dataset: Dataset
    batch_size: int
    budget_grad_evals: int
    test_interval_seconds: float = 0.0  # tests on the training clock (the paper's mode)
    snapshot_every: int = 0
    display: int = 0
    pairs: int | None = None  # this dataset's pairs, when it differs from the profile's pairs
    test_interval_evals: int = 0  # tests every N gradient evaluations (equal compute per arm)

    def identity(self) -> dict[str, Any]:
        """The profile's values that define a run of this plan (compared on reuse and resume)."""
        return {
            "batch_size": self.batch_size,
            "budget_grad_evals": self.budget_grad_evals,
            "test_interval_seconds": self.test_interval_seconds,
            "test_interval_evals": self.test_interval_evals,
            "snapshot_every": self.snapshot_every,
            "display": self.display,
        }


@dataclass(frozen=True)
class Profile:
    """A named profile: how many pairs, how many ranks, a Plan per dataset, figure budgets."""

    name: str
    about: str
    runs: int
    ranks: int
    plans: dict[str, Plan]
    figures: dict[str, Any]
    sweep: dict[str, Any]
    jobs: int = 1  # runs trained at the same time (one core each when 2)
    arms: tuple[str, ...] = DEFAULT_ARMS  # the arms each seed runs, the baseline among them
    baseline: str = DEFAULT_BASELINE
    arm_table: dict[str, Arm] = field(default_factory=lambda: dict(BUILTIN_ARMS))
    sweep_lr: dict[str, Any] = field(default_factory=dict)  # [<profile>.sweep_lr], checked

    def arm(self, name: str) -> Arm:
        """The arm `name` of the profiles file's [arms] (an unknown name uses its own solver)."""
        return self.arm_table.get(name) or Arm(name, name)

    @property
    def compared(self) -> tuple[str, ...]:
        """The arms reported against the baseline, in the profile's order."""
        return tuple(a for a in self.arms if a != self.baseline)

    @property
    def seeds(self) -> list[int]:
        """Pair k uses random_seed k (1-based) in both arms."""
        return list(range(1, self.runs + 1))

    def seeds_of(self, dataset: str) -> list[int]:
        """The seeds of one dataset's pairs (its own `pairs`, else the profile's pairs)."""
        return list(range(1, (self.plans[dataset].pairs or self.runs) + 1))


# ------------------------------------------------------------------ checking


def _positive_int(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be a whole number"
    return None if value > 0 else "must be > 0"


def _count(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be a whole number"
    return None if value >= 0 else "must be >= 0"


def _positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    return None if value > 0 else "must be > 0"


def _fraction(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    return None if 0 < value <= 1 else "must be in (0, 1]"


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _texts(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    return None if ok else "must be a list of strings"


def _positive_ints(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of whole numbers"
    return next((f"{v!r} {e}" for v in value if (e := _positive_int(v))), None)


def _batches_by_dataset(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be a table {dataset = [batch, ...]}"
    return next((f"{k}: {e}" for k, v in value.items() if (e := _positive_ints(v))), None)


def _ladder(value: Any) -> str | None:
    if not isinstance(value, dict) or set(value) != {"start", "stop", "step"}:
        return "must be { start = ..., stop = ..., step = ... }"
    for key in ("start", "stop"):
        if error := _fraction(value[key]):
            return f"{key} {error}"
    if error := _positive_number(value["step"]):
        return f"step {error} (a step of 0 gives no ladder)"
    if value["start"] > value["stop"]:
        return "start must be <= stop"
    return None


def _rules(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return f"must be a non-empty list of {', '.join(RULES)}"
    unknown = [v for v in value if v not in RULES]
    return f"unknown rule {unknown[0]!r} (known: {', '.join(RULES)})" if unknown else None


def _isgd_switches(value: Any) -> str | None:
    """isgd_param fields (caffe.proto's IsgdParameter) with values of their type."""
    from engine.proto import caffe_pb2

    if not isinstance(value, dict):
        return "must be a table of isgd_param fields, e.g. { zeta = 0.1 }"
    fields = caffe_pb2.IsgdParameter.DESCRIPTOR.fields_by_name
    for key, item in value.items():
        if key not in fields:
            return f"has unknown isgd_param field '{key}' (known: {', '.join(sorted(fields))})"
        is_bool = fields[key].type == fields[key].TYPE_BOOL
        ok = isinstance(item, bool) if is_bool else _number(item)
        if not ok:
            return f"{key} = {item!r}: must be {'true or false' if is_bool else 'a number'}"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


Check = Callable[[Any], "str | None"]
_DATASET_KEYS: dict[str, Check] = {
    "net": _text,
    "solver": _text,
    "metric": _text,
    "target": _fraction,
    "test_records": _positive_int,
    "train_records": _positive_int,
    "lmdbs": _texts,
    "ladder": _ladder,
    "rules": _rules,
    "paper_imp": lambda v: None if isinstance(v, (int, float)) else "must be a number",
}
_DATASET_REQUIRED = ("net", "solver", "metric", "target", "test_records", "train_records", "lmdbs")
_PLAN_KEYS: dict[str, Check] = {
    "batch_size": _positive_int,
    "budget_grad_evals": _positive_int,
    "test_interval_seconds": _positive_number,
    "test_interval_evals": _positive_int,
    "snapshot_every": _count,
    "display": _count,
    "pairs": _positive_int,
}
_PLAN_REQUIRED = ("batch_size", "budget_grad_evals")
_PROFILE_KEYS: dict[str, Check] = {
    "about": _text,
    "pairs": _positive_int,
    "runs": _positive_int,  # the old name of `pairs`
    "ranks": _positive_int,
    "jobs": _positive_int,
    "datasets": _texts,
    "arms": _texts,
    "baseline": _text,
}
_ARM_KEYS: dict[str, Check] = {"solver": _text, "label": _text, "isgd": _isgd_switches}
_FIGURE_KEYS: dict[str, Check] = {
    "fig1_grad_evals": _positive_int,
    "fig5_batches": _positive_ints,
    "fig5_ranks": _positive_ints,
    "fig5_grad_evals": _positive_int,
    "fig6_grad_evals": _positive_int,
    "fig6_test_interval_seconds": _positive_number,
    "fig8_batches": _batches_by_dataset,
    "fig9_datasets": _texts,
}
_SWEEP_KEYS: dict[str, Check] = {"datasets": _texts, "runs": _positive_int, "pairs": _positive_int}


def _positive_numbers(value: Any) -> str | None:
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of numbers (an empty grid tunes nothing)"
    return next((f"{v!r} {e}" for v in value if (e := _positive_number(v))), None)


_SWEEP_LR_KEYS: dict[str, Check] = {
    "datasets": _texts,
    "grid": _positive_numbers,  # multiples of each solver file's base_lr
    "tuning_seeds": _positive_ints,
    "scoring_seeds": _positive_ints,
    "budget_grad_evals": _positive_int,
}
_SWEEP_LR_REQUIRED = ("datasets", "grid", "tuning_seeds", "scoring_seeds")


def _check_sweep_lr(checker: _Checker, section: str, values: dict[str, Any]) -> None:
    """The lr sweep's section: its keys, and tuning seeds never scored (held out)."""
    checker.check(section, values, _SWEEP_LR_KEYS, _SWEEP_LR_REQUIRED)
    shared = sorted(set(values["tuning_seeds"]) & set(values["scoring_seeds"]))
    if shared:
        raise checker.fail(
            section,
            "scoring_seeds",
            f"seed(s) {', '.join(map(str, shared))} also tune: scoring seeds must be held out",
        )
    if len(set(values["grid"])) != len(values["grid"]):
        raise checker.fail(section, "grid", "a learning-rate multiple is listed twice")


class _Checker:
    """Checks one profiles file's sections and names the line of anything wrong."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, text.splitlines()

    def line_of(self, section: str, key: str | None = None) -> int | None:
        """The line of `[section]` (or of `key = ` inside it), 1-based; None if not found."""
        header = re.compile(r"^\s*\[\s*" + re.escape(section) + r"\s*\]\s*(#.*)?$")
        start = next((i for i, line in enumerate(self.lines) if header.match(line)), None)
        if start is None or key is None:
            return None if start is None else start + 1
        assign = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for i in range(start + 1, len(self.lines)):
            if self.lines[i].lstrip().startswith("["):
                break
            if assign.match(self.lines[i]):
                return i + 1
        return start + 1

    def fail(self, section: str, key: str | None, problem: str) -> ProfileError:
        line = self.line_of(section, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        what = f"[{section}]" + (f" {key}" if key else "")
        return ProfileError(f"{where}: {what}: {problem}")

    def check(
        self,
        section: str,
        values: dict[str, Any],
        known: dict[str, Check],
        required: tuple[str, ...] = (),
        ignore: tuple[str, ...] = (),
    ) -> None:
        for key, value in values.items():
            if key in ignore:
                continue
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise self.fail(
                    section, key, f"unknown key{hint}; known: {', '.join(sorted(known))}"
                )
            if error := known[key](value):
                raise self.fail(section, key, f"{value!r} {error}")
        lacking = [k for k in required if k not in values]
        if lacking:
            raise self.fail(section, None, f"lacks {', '.join(lacking)}")


def _load(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text), text
    except FileNotFoundError:
        raise ProfileError(f"{path}: profiles file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: {exc}") from None


def _dataset(checker: _Checker, name: str, raw: Any) -> Dataset:
    section = f"datasets.{name}"
    if not isinstance(raw, dict):
        raise checker.fail(section, None, "must be a table")
    checker.check(section, raw, _DATASET_KEYS, _DATASET_REQUIRED)
    ladder = Ladder(**{k: float(v) for k, v in raw["ladder"].items()}) if "ladder" in raw else None
    target = float(raw["target"])
    if ladder is not None:
        levels = ladder.levels
        if not (levels[0] - 1e-9 <= target <= levels[-1] + 1e-9):
            raise checker.fail(
                section,
                "target",
                f"{target:g} is outside its ladder [{ladder.start:g}, {ladder.stop:g}]",
            )
        if not any(abs(level - target) < 1e-9 for level in levels):
            raise checker.fail(
                section,
                "ladder",
                f"no level equals the target {target:g} (start {ladder.start:g}, step "
                f"{ladder.step:g}): the paper's row must be a ladder level",
            )
    return Dataset(
        name=name,
        net=raw["net"],
        solver=raw["solver"],
        metric=raw["metric"],
        target=target,
        test_records=raw["test_records"],
        train_records=raw["train_records"],
        lmdbs=tuple(raw["lmdbs"]),
        ladder=ladder,
        rules=tuple(raw.get("rules", RULES)),
        paper_imp=None if "paper_imp" not in raw else float(raw["paper_imp"]),
    )


def _plan(checker: _Checker, section: str, values: Any, dataset: Dataset) -> Plan:
    if not isinstance(values, dict):
        raise checker.fail(section, None, "must be a table")
    checker.check(section, values, _PLAN_KEYS, _PLAN_REQUIRED)
    if "test_interval_seconds" in values and "test_interval_evals" in values:
        raise checker.fail(
            section, "test_interval_evals", "give one test cadence: seconds or evaluations"
        )
    if "test_interval_seconds" not in values and "test_interval_evals" not in values:
        raise checker.fail(section, None, "lacks test_interval_evals (or test_interval_seconds)")
    return Plan(
        dataset=dataset,
        batch_size=values["batch_size"],
        budget_grad_evals=values["budget_grad_evals"],
        test_interval_seconds=float(values.get("test_interval_seconds", 0.0)),
        test_interval_evals=int(values.get("test_interval_evals", 0)),
        snapshot_every=values.get("snapshot_every", 0),
        display=values.get("display", 0),
        pairs=values.get("pairs"),
    )


def load_profile(
    name: str, datasets: list[str] | None = None, runs: int | None = None, path: Path | None = None
) -> Profile:
    """The profile `name`, optionally restricted to `datasets` and with `runs` pairs."""
    path = path or PROFILES_FILE
    raw, text = _load(path)
    checker = _Checker(path, text)
    known_datasets = raw.get("datasets", {})
    arm_table = _arm_table(checker, raw.get("arms", {}))
    names = [k for k in raw if k not in ("datasets", "arms")]
    if name not in names:
        raise ProfileError(f"unknown profile '{name}' (known: {', '.join(names)}; see {path})")
    section = raw[name]
    subsections = [k for k, v in section.items() if isinstance(v, dict)]
    checker.check(name, section, _PROFILE_KEYS, ignore=tuple(subsections))
    for sub in subsections:
        if sub == "figures":
            checker.check(f"{name}.figures", section[sub], _FIGURE_KEYS)
        elif sub == "sweep":
            checker.check(f"{name}.sweep", section[sub], _SWEEP_KEYS)
            if "pairs" in section[sub] and "runs" in section[sub]:
                raise checker.fail(
                    f"{name}.sweep", "runs", "give `pairs` only (`runs` is its old name)"
                )
        elif sub == "sweep_lr":
            _check_sweep_lr(checker, f"{name}.sweep_lr", section[sub])
        elif sub not in known_datasets:
            close = difflib.get_close_matches(
                sub, [*known_datasets, "figures", "sweep", "sweep_lr"], n=1
            )
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise checker.fail(f"{name}.{sub}", None, f"unknown dataset or section{hint}")
    if "pairs" in section and "runs" in section:
        raise checker.fail(name, "runs", "give `pairs` only (`runs` is its old name)")
    for where, values in ((name, section), (f"{name}.sweep", section.get("sweep", {}))):
        if "runs" in values:
            warnings.warn(_deprecated(checker, where), FutureWarning, stacklevel=2)
    arms, baseline = _arms_of(checker, name, section, arm_table)
    chosen = list(section.get("datasets", []))
    for ds in chosen:
        if ds not in known_datasets:
            raise checker.fail(name, "datasets", f"unknown dataset '{ds}' (no [datasets.{ds}])")
    if datasets:
        unknown = [d for d in datasets if d not in known_datasets]
        if unknown:
            raise ProfileError(
                f"unknown dataset(s) {', '.join(unknown)} (known: {', '.join(known_datasets)})"
            )
        missing = [d for d in datasets if d not in section]
        if missing:
            raise ProfileError(
                f"profile '{name}' has no settings for {', '.join(missing)} (it runs "
                f"{', '.join(chosen)}; see [{name}.<dataset>] in {path})"
            )
        chosen = list(datasets)
    plans = {}
    for ds in chosen:
        if ds not in section:
            raise checker.fail(name, "datasets", f"lists {ds} but there is no [{name}.{ds}]")
        dataset = _dataset(checker, ds, known_datasets[ds])
        plan = _plan(checker, f"{name}.{ds}", section[ds], dataset)
        if runs is not None:
            plan = Plan(**{**plan.__dict__, "pairs": None})
        plans[ds] = plan
    if runs is not None and (isinstance(runs, bool) or int(runs) < 1):
        raise ProfileError(f"RUNS={runs}: the number of pairs must be >= 1")
    count = int(section.get("pairs", section.get("runs", 1))) if runs is None else int(runs)
    return Profile(
        name=name,
        about=str(section.get("about", "")),
        runs=count,
        ranks=int(section.get("ranks", 1)),
        plans=plans,
        figures=dict(section.get("figures", {})),
        sweep=dict(section.get("sweep", {})),
        jobs=int(section.get("jobs", 1)),
        arms=arms,
        baseline=baseline,
        arm_table=arm_table,
        sweep_lr=dict(section.get("sweep_lr", {})),
    )


def _deprecated(checker: _Checker, section: str) -> str:
    line = checker.line_of(section, "runs")
    where = f"{checker.path}:{line}" if line else str(checker.path)
    return f"{where}: [{section}] runs: renamed `pairs` (paired runs per dataset); use `pairs`"


def _arm_table(checker: _Checker, raw: Any) -> dict[str, Arm]:
    """The built-in arms, then the file's [arms] table (name = { solver, isgd, label })."""
    if not isinstance(raw, dict):
        raise checker.fail("arms", None, "must be a table of name = { solver = ... }")
    table = dict(BUILTIN_ARMS)
    for name, values in raw.items():
        if not re.fullmatch(r"[A-Za-z0-9_]+", name):
            raise checker.fail("arms", name, "an arm's name is letters, digits and _ only")
        if not isinstance(values, dict):
            raise checker.fail("arms", name, "must be { solver = ..., isgd = { ... } }")
        problem = _arm_problem(values)
        if problem is not None:
            raise checker.fail("arms", name, problem)
        table[name] = Arm(
            name=name,
            solver=values["solver"],
            isgd=dict(values.get("isgd", {})),
            label=str(values.get("label", "")),
        )
    return table


def _arm_problem(values: dict[str, Any]) -> str | None:
    for key, value in values.items():
        if key not in _ARM_KEYS:
            return f"unknown key '{key}' (known: {', '.join(sorted(_ARM_KEYS))})"
        if error := _ARM_KEYS[key](value):
            return f"{key} {error}" if key == "isgd" else f"{key} = {value!r}: {error}"
    if "solver" not in values:
        return 'lacks solver (the {arm} of the datasets\' solver patterns, e.g. "sgd")'
    return None


def _arms_of(
    checker: _Checker, name: str, section: dict[str, Any], table: dict[str, Arm]
) -> tuple[tuple[str, ...], str]:
    """The profile's arms (default: SGD and ISGD) and its baseline (default: SGD), checked."""
    arms = tuple(section.get("arms", DEFAULT_ARMS))
    for arm in arms:
        if arm not in table:
            close = difflib.get_close_matches(arm, list(table), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise checker.fail(name, "arms", f"unknown arm '{arm}'{hint}; define it in [arms]")
    if len(set(arms)) != len(arms) or len(arms) < 2:
        raise checker.fail(name, "arms", "must list at least two different arms")
    baseline = str(section.get("baseline", DEFAULT_BASELINE))
    if baseline not in arms:
        raise checker.fail(
            name, "baseline", f"'{baseline}' is not one of the profile's arms ({', '.join(arms)})"
        )
    return arms, baseline


def results_dir(profile: str) -> Path:
    """Where a profile's tables and figures go: results/ for default, results/<profile>/ else."""
    return ROOT / "results" if profile == "default" else ROOT / "results" / profile

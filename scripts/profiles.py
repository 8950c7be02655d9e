"""Experiment profiles (scripts/profiles.toml): datasets, pairs, batches, budgets, test cadence."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROFILES_FILE = ROOT / "scripts" / "profiles.toml"


class ProfileError(ValueError):
    """A profile or dataset that does not exist or is incomplete; the message names it."""


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

    def solver_file(self, arm: str) -> str:
        """The prototxt/ solver of an arm ("sgd", "isgd", "nesterov", "isgd_nesterov")."""
        return self.solver.format(arm=arm)


@dataclass(frozen=True)
class Plan:
    """A dataset's settings in one profile."""

    dataset: Dataset
    batch_size: int
    budget_grad_evals: int
    test_interval_seconds: float
    snapshot_every: int
    display: int
    pairs: int | None = None  # this dataset's pairs, when it differs from the profile's runs


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

    @property
    def seeds(self) -> list[int]:
        """Pair k uses random_seed k (1-based) in both arms."""
        return list(range(1, self.runs + 1))

    def seeds_of(self, dataset: str) -> list[int]:
        """The seeds of one dataset's pairs (its own `pairs`, else the profile's runs)."""
        return list(range(1, (self.plans[dataset].pairs or self.runs) + 1))


_PLAN_KEYS = {
    "batch_size": int,
    "budget_grad_evals": int,
    "test_interval_seconds": float,
    "snapshot_every": int,
    "display": int,
}


def _load(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(f"{path}: profiles file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: {exc}") from None


def _dataset(path: Path, name: str, raw: dict[str, Any]) -> Dataset:
    try:
        return Dataset(
            name=name,
            net=str(raw["net"]),
            solver=str(raw["solver"]),
            metric=str(raw["metric"]),
            target=float(raw["target"]),
            test_records=int(raw["test_records"]),
            train_records=int(raw["train_records"]),
            lmdbs=tuple(str(x) for x in raw["lmdbs"]),
        )
    except KeyError as exc:
        raise ProfileError(f"{path}: [datasets.{name}] lacks {exc.args[0]}") from None


def load_profile(
    name: str, datasets: list[str] | None = None, runs: int | None = None, path: Path | None = None
) -> Profile:
    """The profile `name`, optionally restricted to `datasets` and with `runs` pairs."""
    path = path or PROFILES_FILE
    raw = _load(path)
    known_datasets = raw.get("datasets", {})
    names = [k for k in raw if k != "datasets"]
    if name not in names:
        raise ProfileError(f"unknown profile '{name}' (known: {', '.join(names)}; see {path})")
    section = raw[name]
    chosen = list(section.get("datasets", []))
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
            raise ProfileError(f"{path}: profile '{name}' lists {ds} but has no [{name}.{ds}]")
        values = section[ds]
        lacking = [k for k in _PLAN_KEYS if k not in values]
        if lacking:
            raise ProfileError(f"{path}: [{name}.{ds}] lacks {', '.join(lacking)}")
        kwargs = {k: cast(values[k]) for k, cast in _PLAN_KEYS.items()}
        pairs = None if runs is not None or "pairs" not in values else int(values["pairs"])
        plans[ds] = Plan(dataset=_dataset(path, ds, known_datasets[ds]), pairs=pairs, **kwargs)
    count = int(section.get("runs", 1)) if runs is None else int(runs)
    if count < 1:
        raise ProfileError(f"RUNS={count}: the number of pairs must be >= 1")
    return Profile(
        name=name,
        about=str(section.get("about", "")),
        runs=count,
        ranks=int(section.get("ranks", 1)),
        plans=plans,
        figures=dict(section.get("figures", {})),
        sweep=dict(section.get("sweep", {})),
    )


def results_dir(profile: str) -> Path:
    """Where a profile's tables and figures go: results/ for default, results/<profile>/ else."""
    return ROOT / "results" if profile == "default" else ROOT / "results" / profile

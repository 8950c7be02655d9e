"""The runs behind the paper's figures beyond Table 1's: Fig. 1, 5, 6, 8 and 9, per profile.

Budgets come from the profile's [<profile>.figures] block (scripts/profiles.toml); every run is
specified by scripts.runs.arm_spec, as Table 1's and the sweep's, and is an ordinary run folder
(results/runs/<profile>/fig<N>/...), so it resumes and is never redone.
"""

from __future__ import annotations

from typing import Any

from scripts.profiles import Plan, Profile, ProfileError
from scripts.runs import RunSpec, arm_spec

CONTROLLED = {
    "single_class": "data/cifar10/cifar10_single_class_lmdb",
    "iid": "data/cifar10/cifar10_iid_lmdb",
}
FIG1_BATCH = 1000  # section 3.3: 10 batches of 1000 images
FIG6_BATCH = 2500  # section 5.1: "the batch size is set at 2500 yielding 20 independent batches"


def _setting(profile: Profile, key: str) -> Any:
    try:
        return profile.figures[key]
    except KeyError:
        raise ProfileError(
            f"profile '{profile.name}' lacks figures.{key} in profiles.toml"
        ) from None


def _plan(profile: Profile, dataset: str) -> Plan:
    if dataset not in profile.plans:
        raise ProfileError(f"profile '{profile.name}' has no settings for {dataset}")
    return profile.plans[dataset]


def fig1_specs(profile: Profile) -> list[RunSpec]:
    """CIFAR-10 quick trained by SGD on the 10 single-class and the 10 i.i.d. batches."""
    plan = _plan(profile, "cifar10")
    return [
        arm_spec(
            profile,
            plan,
            "sgd",
            1,
            "fig1",
            tag=tag,
            ranks=1,
            batch_size=FIG1_BATCH,
            budget_grad_evals=int(_setting(profile, "fig1_grad_evals")),
            train_source=source,
            test=False,
        )
        for tag, source in CONTROLLED.items()
    ]


def fig5_specs(profile: Profile) -> list[RunSpec]:
    """LeNet timed at several batch sizes and rank counts, for Eq. 21's t_comp and t_comm."""
    plan = _plan(profile, "mnist")
    return [
        arm_spec(
            profile,
            plan,
            "sgd",
            1,
            "fig5",
            tag=f"b{batch}-n{ranks}",
            ranks=int(ranks),
            batch_size=int(batch),
            budget_grad_evals=int(_setting(profile, "fig5_grad_evals")),
            test=False,
        )
        for ranks in _setting(profile, "fig5_ranks")
        for batch in _setting(profile, "fig5_batches")
        if int(batch) % int(ranks) == 0
    ]


def fig6_specs(profile: Profile) -> list[RunSpec]:
    """CIFAR-10 quick at batch 2500 (20 batches), SGD and ISGD, as section 5.1."""
    plan = _plan(profile, "cifar10")
    return [
        arm_spec(
            profile,
            plan,
            arm,
            1,
            "fig6",
            tag="b2500",
            ranks=1,
            batch_size=FIG6_BATCH,
            budget_grad_evals=int(_setting(profile, "fig6_grad_evals")),
            test_interval_seconds=float(_setting(profile, "fig6_test_interval_seconds")),
        )
        for arm in ("sgd", "isgd")
    ]


def fig8_specs(profile: Profile) -> list[RunSpec]:
    """SGD and ISGD at other batch sizes, each run given the epochs of its Table 1 budget."""
    specs = []
    for dataset, batches in dict(_setting(profile, "fig8_batches")).items():
        if dataset not in profile.plans:
            continue
        plan = profile.plans[dataset]
        images = plan.budget_grad_evals * plan.batch_size
        for batch in batches:
            if int(batch) == plan.batch_size:
                continue  # the Table 1 run of seed 1 is that point
            for arm in ("sgd", "isgd"):
                specs.append(
                    arm_spec(
                        profile,
                        plan,
                        arm,
                        1,
                        "fig8",
                        tag=f"b{batch}",
                        batch_size=int(batch),
                        budget_grad_evals=max(1, images // int(batch)),
                    )
                )
    return specs


def fig9_specs(profile: Profile) -> list[RunSpec]:
    """Nesterov against ISGD on Nesterov, with the Table 1 budgets (section 5.2, Fig. 9)."""
    specs = []
    for dataset in _setting(profile, "fig9_datasets"):
        if dataset not in profile.plans:
            continue
        for arm in ("nesterov", "isgd_nesterov"):
            specs.append(arm_spec(profile, profile.plans[dataset], arm, 1, "fig9"))
    return specs

"""Rewrites Caffe applies to a net definition before building it: phase filter, splits."""

from __future__ import annotations

from typing import Any

from engine.errors import NetError


def state_meets_rule(state: Any, rule: Any) -> bool:
    """Caffe's StateMeetsRule: phase, level range and stage lists of a NetStateRule."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def filter_net(net_param: Any, state: Any, source: str = "<net>") -> Any:
    """A copy of `net_param` holding only the layers whose include/exclude rules admit `state`."""

    out = type(net_param)()
    out.CopyFrom(net_param)
    del out.layer[:]
    for layer in net_param.layer:
        if len(layer.include) and len(layer.exclude):
            raise NetError(
                f"{source}: layer '{layer.name}' specifies both include and exclude rules; "
                "Caffe allows only one of them"
            )
        included = len(layer.include) == 0
        for rule in layer.exclude:
            if state_meets_rule(state, rule):
                included = False
        for rule in layer.include:
            if state_meets_rule(state, rule):
                included = True
        if included:
            out.layer.add().CopyFrom(layer)
    return out


def split_layer_name(blob: str, layer: str, top_index: int) -> str:
    return f"{blob}_{layer}_{top_index}_split"


def split_blob_name(blob: str, layer: str, top_index: int, split_index: int) -> str:
    return f"{blob}_{layer}_{top_index}_split_{split_index}"


def insert_splits(net_param: Any) -> Any:
    """Caffe's InsertSplits: a top read by several bottoms (or read and weighted as a loss) fans
    out through an automatically inserted Split layer, so every bottom gets its own diff.

    As in Caffe, a loss use takes the split's top 0 and readers take tops 1, 2, ...; the producer's
    loss_weight list is then cleared.
    """
    out = type(net_param)()
    out.CopyFrom(net_param)
    del out.layer[:]

    last_producer: dict[str, tuple[int, int]] = {}
    count: dict[tuple[int, int], int] = {}
    source: dict[tuple[int, int], tuple[int, int]] = {}
    weight: dict[tuple[int, int], float] = {}
    layers = list(net_param.layer)
    for i, layer in enumerate(layers):
        for j, name in enumerate(layer.bottom):
            if name in last_producer:
                src = last_producer[name]
                source[(i, j)] = src
                count[src] = count.get(src, 0) + 1
        for j, name in enumerate(layer.top):
            last_producer[name] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            key = last_producer[layer.top[j]]
            weight[key] = layer.loss_weight[j]
            if weight[key]:
                count[key] = count.get(key, 0) + 1

    next_index: dict[tuple[int, int], int] = {}
    for i, layer in enumerate(layers):
        new_layer = out.layer.add()
        new_layer.CopyFrom(layer)
        for j, name in enumerate(layer.bottom):
            src = source.get((i, j))
            if src is None or count.get(src, 0) <= 1:
                continue
            k = next_index.get(src, 0)
            next_index[src] = k + 1
            new_layer.bottom[j] = split_blob_name(name, layers[src[0]].name, src[1], k)
        for j, name in enumerate(layer.top):
            key = (i, j)
            n = count.get(key, 0)
            if n <= 1:
                continue
            split = out.layer.add()
            split.name = split_layer_name(name, layer.name, j)
            split.type = "Split"
            split.bottom.append(name)
            w = weight.get(key, 0.0)
            for k in range(n):
                split.top.append(split_blob_name(name, layer.name, j, k))
                if w:
                    split.loss_weight.append(w if k == 0 else 0.0)
            if w:
                del new_layer.loss_weight[:]
                next_index[key] = next_index.get(key, 0) + 1
    return out

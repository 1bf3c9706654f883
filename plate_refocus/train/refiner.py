"""Fine-tune ``hybrid``'s RL refiner on a plate: what ``plate-refocus train-refiner`` runs.

The shipped refiners learnt the simulator's cells; on a facility's own cells their
corrections may not explain the planes (on the real BBBC006 fields ``run`` drops
them). A z-stack of the facility's cells with its in-focus plane carries what they
lack. :func:`refiner_examples` runs every well's defocused planes through the
run's own per-(well, depth) function (``process_depth`` with ``--method hybrid``
and the blind reference, as a screening plate of single planes is run) with a
stand-in refiner that records what the refiner would be given (the plane, RL's
kept restoration, the ``|z|`` RL used and the offset) and changes nothing; each
record becomes patches paired with the field's in-focus plane (or the simulated
ground truth). :func:`fine_tune_refiner` trains on them (each patch's loss over
RL's own error there, so RL scores 1.0; flips and rotations), holds wells out for
validation and writes the epoch that scores best there. It then runs the validation
wells through hybrid with the refiner and sets the consistency up to which ``run``
keeps its outputs (``_calibrate_limit``): under an objective the model does not
describe (an aberration), the right answer is inconsistent with the model blur, and
RL's own limit would throw away what the stacks taught the refiner.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError, PlateRefocusError
from .data import plate_digest, plate_training_pairs, split_wells

__all__ = ["RefinerExamples", "refiner_examples", "fine_tune_refiner"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class RefinerExamples:
    """Training patches for a refiner, normalised as :meth:`RefinerInfo.network_input` does."""

    inputs: np.ndarray  # (N, P, P, channels) float32
    targets: np.ndarray  # (N, P, P, 1) float32: the in-focus image on the same scale
    weights: np.ndarray  # (N,) 1 / RL's mean squared error on the patch
    wells: np.ndarray  # (N,) str: the well each patch came from
    depths_um: np.ndarray  # (N,) the |z| RL restored at

    def subset(self, keep: np.ndarray) -> RefinerExamples:
        return RefinerExamples(*(getattr(self, f.name)[keep] for f in dataclasses.fields(self)))


class _Recorder:
    """Stands in for the refiner inside ``process_depth``: records what it is given and returns RL's
    output, or, with a `refiner`, that refiner's output (whatever its consistency: the caller judges)."""

    def __init__(self, info: Any, refiner: Any | None = None) -> None:
        self.info = info if refiner is None else dataclasses.replace(refiner.info, consistency_limit=float("inf"))
        self.refiner = refiner
        self.seen: list[tuple[np.ndarray, np.ndarray, float, float, np.ndarray]] = []

    def applies(self, optics: Any, depth_um: float) -> bool:
        return self.info.applies(optics, depth_um)

    def refine(self, plane: np.ndarray, restored: np.ndarray, offset: float, depth_um: float) -> np.ndarray:
        restored = np.array(restored, np.float32)
        out = restored if self.refiner is None else self.refiner.refine(plane, restored, offset, depth_um)
        self.seen.append((plane, restored, float(offset), float(depth_um), out))
        return out


@dataclasses.dataclass
class _Record:
    """One field's plane as ``run --method hybrid`` restores it, with its target."""

    well: str
    plane: np.ndarray
    target: np.ndarray
    restored: np.ndarray  # RL's kept output
    offset: float
    depth_um: float
    refined: np.ndarray  # the refiner's output (RL's when none was given)
    consistency: float  # of `refined` with the plane


@dataclasses.dataclass
class _HybridPlanes:
    """A plate's planes within a refiner's depths, run through ``process_depth`` as hybrid runs them."""

    plate: str
    images: Any
    targets: Any
    planes_z: list[int]
    settings: Any
    freq: np.ndarray
    channel: int
    info: Any

    @classmethod
    def open(cls, plate: str | os.PathLike, info: Any, *, target: str, focal_index: int | None,
             channel: int) -> _HybridPlanes:
        from ..optics import radial_frequencies
        from ..pipeline.plan import depth_settings
        from ..plate import read_layout

        layout = read_layout(plate)
        if not info.trained_for(layout.optics):
            raise ModelError(f"the refiner was trained for {info.optics}, the plate {str(plate)!r} is "
                             f"{layout.optics}: start from --init none (a new refiner) for these optics")
        images, targets, depth_um = plate_training_pairs(plate, target=target, focal_index=focal_index)
        planes_z = [int(j) for j in np.flatnonzero((depth_um >= 0.8 * info.min_depth_um)
                                                    & (depth_um <= 1.1 * info.max_depth_um))]
        if not planes_z:
            raise PlateRefocusError(
                f"no plane of {str(plate)!r} lies at the |z| the refiner refines ({info.min_depth_um:g}-"
                f"{info.max_depth_um:g} um; the stack's planes lie at {', '.join(f'{d:g}' for d in depth_um)} "
                "um from focus): fine-tune on a stack that reaches those depths")
        return cls(str(plate), images, targets, planes_z,
                   depth_settings(layout, method="hybrid", reference="blind", backend="numpy"),
                   radial_frequencies(layout.shape, layout.optics.pixel_size_um), channel, info)

    @property
    def wells(self) -> list[str]:
        return [str(v) for v in self.images.coords["well"].values]

    def records(self, wells: list[str] | None = None, refiner: Any | None = None):
        """Every field's plane that RL restored and kept within the refiner's depths (of `wells`), as a
        :class:`_Record`; refined by `refiner` where given."""
        from ..pipeline.compute import process_depth

        for w, well in enumerate(self.wells):
            if wells is not None and well not in wells:
                continue
            truths = np.asarray(self.targets.isel(well=w, c=self.channel).values, np.float32)  # (F, Y, X)
            for z in self.planes_z:
                planes = list(np.asarray(self.images.isel(well=w, c=self.channel, z=z).values, np.float32))
                recorder = _Recorder(self.info, refiner)
                result = process_depth(planes, settings=self.settings, freq=self.freq, refiner=recorder,
                                       refocus=lambda stack: stack.astype(np.float32))
                for plane, restored, offset, depth, refined in recorder.seen:
                    f = next(i for i, p in enumerate(planes) if p is plane or np.array_equal(p, plane))
                    yield _Record(well, plane, truths[f], restored, offset, depth, refined,
                                  float(result.consistency[f]))


def _patches(rng: np.random.Generator, shape: tuple[int, int], patch: int, count: int) -> list[tuple[slice, slice]]:
    ny, nx = shape
    return [(slice(y, y + patch), slice(x, x + patch))
            for y, x in zip(rng.integers(0, ny - patch + 1, count), rng.integers(0, nx - patch + 1, count),
                            strict=True)]


def refiner_examples(
    plate: str | os.PathLike,
    info: Any,
    *,
    target: str = "focal-plane",
    focal_index: int | None = None,
    channel: int = 0,
    patch: int = 128,
    patches_per_plane: int = 8,
    seed: int = 0,
    wells: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> RefinerExamples:
    """Patches of what ``run --method hybrid`` would hand `info`'s refiner on this plate, with their targets.

    Parameters
    ----------
    plate : path
        An OME-Zarr HCS plate: a z-stack with its in-focus plane (``target="focal-plane"``)
        or a simulated plate (``"ground-truth"``); read only.
    info : RefinerInfo
        Which depths and optics to record (:meth:`RefinerInfo.applies`) and how to normalise.
    target, focal_index
        As for ``plate-refocus train`` (:func:`~plate_refocus.train.plate_training_pairs`).
    channel : int
    patch, patches_per_plane : int
        Square patches drawn at random from each restored plane.
    seed : int
    wells : list of str, optional
        Only these wells (e.g. ``["A01", "B02"]``); all by default.
    progress : callable, optional
        Called with a line per well.
    """
    planes = _HybridPlanes.open(plate, info, target=target, focal_index=focal_index, channel=channel)
    return _examples(planes, patch=patch, patches_per_plane=patches_per_plane, seed=seed, wells=wells,
                     progress=progress)


def _examples(planes: _HybridPlanes, *, patch: int, patches_per_plane: int, seed: int, wells: list[str] | None,
              progress: Callable[[str], None] | None) -> RefinerExamples:
    """:func:`refiner_examples` on a plate already opened."""
    info, plate = planes.info, planes.plate
    shape = tuple(planes.images.shape[-2:])
    if min(shape) < patch:
        raise PlateRefocusError(f"the plate's fields ({shape[0]}x{shape[1]}) are smaller than --patch {patch}: "
                                "pass a smaller --patch")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    out: dict[str, list] = {"inputs": [], "targets": [], "weights": [], "wells": [], "depths_um": []}
    unknown = sorted(set(wells or []) - set(planes.wells))
    if unknown:
        raise PlateRefocusError(f"wells {', '.join(unknown)} are not in {str(plate)!r} (it has "
                                f"{', '.join(planes.wells)})")
    for well in (w for w in planes.wells if wells is None or w in wells):
        for r in planes.records(wells=[well]):
            x, scale = info.network_input(r.plane, r.restored, r.offset, r.depth_um)
            y = (r.target - r.offset) / scale
            for sl in _patches(rng, shape, patch, patches_per_plane):
                error = float(np.mean((x[sl][..., 1] - y[sl]) ** 2))
                out["inputs"].append(x[sl])
                out["targets"].append(y[sl][..., None])
                out["weights"].append(1.0 / max(error, 1e-6))
                out["wells"].append(well)
                out["depths_um"].append(r.depth_um)
        if progress:
            progress(f"well {well}: {len(out['wells'])} patches so far")
    if not out["wells"]:
        raise PlateRefocusError(
            f"no plane of {str(plate)!r} is one the refiner refines (RL restored and kept at |z| "
            f"{info.min_depth_um:g}-{info.max_depth_um:g} um): fine-tune on a stack that reaches those depths")
    return RefinerExamples(np.stack(out["inputs"]).astype(np.float32), np.stack(out["targets"]).astype(np.float32),
                           np.asarray(out["weights"], np.float32), np.asarray(out["wells"]),
                           np.asarray(out["depths_um"], np.float64))


def _calibrate_limit(planes: _HybridPlanes, wells: list[str], refiner: Any) -> dict[str, Any]:
    """Run `wells` through hybrid with `refiner` un-gated and choose the consistency up to which its
    outputs are kept: where they beat RL against the targets on average, 1.5 x the 95th percentile of
    the winning planes' consistency (never below RL's own limit; None = RL's). Returns the limit and
    what was measured (gain over RL in dB per plane, against the targets)."""
    from ..pipeline.compute import RL_CONSISTENCY_LIMIT

    gains, trust = [], []
    for r in planes.records(wells=wells, refiner=refiner):
        rl, refined = (float(np.mean((a - r.target) ** 2)) for a in (r.restored, r.refined))
        gains.append(10.0 * np.log10(max(rl, 1e-12) / max(refined, 1e-12)))
        trust.append(r.consistency)
    gains, trust = np.asarray(gains), np.asarray(trust)
    winners = trust[gains > 0]
    limit = None
    if gains.size and gains.mean() > 0 and winners.size:
        raised = 1.5 * float(np.percentile(winners, 95))
        limit = round(raised, 2) if raised > RL_CONSISTENCY_LIMIT else None
    kept = trust <= (limit or RL_CONSISTENCY_LIMIT)
    return {"consistency_limit": limit, "planes": int(gains.size),
            "gain_over_rl_db": {"min": round(float(gains.min()), 2), "mean": round(float(gains.mean()), 2),
                                "max": round(float(gains.max()), 2)} if gains.size else None,
            "consistency": {"median": round(float(np.median(trust)), 2), "max": round(float(trust.max()), 2)}
            if trust.size else None,
            "kept": int(kept.sum()),
            "gain_as_run_db": round(float(np.where(kept, gains, 0.0).mean()), 2) if gains.size else None}


def _relative_mse(model: Any, examples: RefinerExamples, batch_size: int) -> float:
    """The weighted MSE of `model` on `examples`: 1.0 is RL's own error, below 1 better than RL."""
    predicted = model.predict(examples.inputs, batch_size=batch_size, verbose=0)
    errors = np.mean((predicted - examples.targets) ** 2, axis=(1, 2, 3)) * examples.weights
    return float(np.mean(errors))


def _dihedral(a: np.ndarray, k: int) -> np.ndarray:
    """The k-th of the 8 flips and rotations of (N, Y, X, C) patches."""
    a = np.rot90(a, k % 4, axes=(1, 2))
    return np.ascontiguousarray(a[:, ::-1] if k % 8 >= 4 else a)


def _fit(correction: Any, train: RefinerExamples, val: RefinerExamples, *, epochs: int, batch_size: int,
         learning_rate: float, say: Callable[[str], None]) -> list[float]:
    """Train RL + `correction` (Adam, one of the 8 flips and rotations per epoch) and leave `correction`
    at its best epoch on `val`; the validation relative MSE at the start and after every epoch."""
    import keras

    from ..unet.refiner import rl_plus

    model = rl_plus(correction)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    started = time.perf_counter()
    scores = [_relative_mse(model, val, batch_size)]
    best_weights = correction.get_weights()
    say(f"validation relative MSE: RL 1.000, starting refiner {scores[0]:.3f}")
    # Keras reduces the loss over channels only: one weight per pixel (the same under every flip)
    pixel_weights = np.ascontiguousarray(np.broadcast_to(train.weights[:, None, None], train.targets.shape[:3]))
    for epoch in range(epochs):
        model.fit(_dihedral(train.inputs, epoch), _dihedral(train.targets, epoch), sample_weight=pixel_weights,
                  batch_size=batch_size, epochs=1, verbose=0, shuffle=True)
        scores.append(_relative_mse(model, val, batch_size))
        if scores[-1] < min(scores[:-1]):
            best_weights = correction.get_weights()
        say(f"epoch {epoch + 1}: validation relative MSE {scores[-1]:.3f}"
            f"{' (best)' if scores[-1] == min(scores) else ''} ({time.perf_counter() - started:.0f} s)")
    correction.set_weights(best_weights)
    return scores


def fine_tune_refiner(
    plate: str | os.PathLike,
    out: str | os.PathLike,
    *,
    init: str | os.PathLike | None = None,
    target: str = "focal-plane",
    focal_index: int | None = None,
    channel: int = 0,
    depths_um: tuple[float, float] = (8.0, 36.0),
    epochs: int = 20,
    batch_size: int = 8,
    learning_rate: float = 1e-4,
    patch: int = 128,
    patches_per_plane: int = 8,
    validation_fraction: float = 0.25,
    seed: int = 0,
    wells: list[str] | None = None,
    name: str | None = None,
    command: str | None = None,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Any:
    """Fine-tune (or, with ``init=None``, train anew) an RL refiner on `plate` and write it to `out`.

    Parameters
    ----------
    plate : path
        Read only; never written.
    out : path (``.keras``)
        The refiner, with its :class:`RefinerInfo` JSON beside it (recording the
        plate, the starting refiner and the validation scores).
    init : path, optional
        The refiner to start from (e.g. the shipped one for the plate's optics);
        None: a new network for the plate's optics at `depths_um`.
    target, focal_index, channel, patch, patches_per_plane, seed, wells
        See :func:`refiner_examples`.
    depths_um : (float, float)
        ``|z|`` range of a new refiner (a fine-tuned one keeps its own).
    epochs, batch_size, learning_rate, validation_fraction
        Adam at `learning_rate`; wells held out for validation (at least one
        when the plate has two or more).

    Returns
    -------
    Refiner
        The refiner written (the best epoch on the validation wells, or the
        starting one if no epoch beat it).
    """
    import keras

    from ..outputs import prepare_output
    from ..plate import read_layout
    from ..unet.refiner import Refiner, RefinerInfo, build_refiner, load_refiner, save_refiner

    plate, out = Path(plate), Path(out)
    if out.suffix != ".keras":
        raise ValueError(f"out must end in '.keras', got {str(out)!r}")
    prepare_output(out, kind="model", inputs=(plate,) + ((init,) if init else ()), overwrite=overwrite,
                   remove=False)
    optics = read_layout(plate).optics
    if init is not None:
        start = load_refiner(init)
        correction, base = start.keras_model, start.info
    else:
        _, correction = build_refiner()
        base = RefinerInfo(name="", optics=optics, min_depth_um=float(depths_um[0]),
                           max_depth_um=float(depths_um[1]), depth_channel=True)
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    planes = _HybridPlanes.open(plate, base, target=target, focal_index=focal_index, channel=channel)
    examples = _examples(planes, patch=patch, patches_per_plane=patches_per_plane, seed=seed, wells=wells,
                         progress=progress)
    train_wells, val_wells = split_wells(np.unique(examples.wells), validation_fraction, seed)
    if not val_wells:
        raise PlateRefocusError(f"only well {train_wells[0]} of {str(plate)!r} has planes to learn from; "
                                "a refiner is scored on wells it did not train on: give a plate of two or more wells")
    train = examples.subset(np.isin(examples.wells, train_wells))
    val = examples.subset(np.isin(examples.wells, val_wells))
    say = progress or (lambda line: None)
    say(f"{len(train.wells)} training and {len(val.wells)} validation patches ({time.perf_counter() - started:.0f} s)")
    scores = _fit(correction, train, val, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                  say=say)
    best = min(scores)
    calibration = _calibrate_limit(planes, val_wells, Refiner(correction, base))
    say(f"validation wells through hybrid, refined against RL: {calibration['gain_over_rl_db']} dB per plane, "
        f"consistency {calibration['consistency']}; keeps the refined output at consistency <= "
        f"{calibration['consistency_limit'] or 'RL_CONSISTENCY_LIMIT'} ({calibration['kept']}/{calibration['planes']} "
        f"planes, {calibration['gain_as_run_db']:+.2f} dB on average as run)")
    info = dataclasses.replace(
        base, name=name or out.stem, optics=optics, consistency_limit=calibration["consistency_limit"],
        training={"init": None if init is None else {"path": str(init), "name": base.name, "sha256": base.sha256},
                  "plate": str(plate), "plate_metadata_sha256": plate_digest(plate), "target": target,
                  "focal_index": focal_index, "channel": channel, "reference": "blind",
                  "patches": {"train": len(train.wells), "validation": len(val.wells), "size": patch},
                  "wells": {"train": list(train_wells), "validation": list(val_wells)},
                  "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
                  "seconds": round(time.perf_counter() - started, 1), **({"command": command} if command else {})},
        metrics={"validation_relative_mse": {"rl": 1.0, "start": round(scores[0], 4), "best": round(best, 4),
                                             "per_epoch": [round(s, 4) for s in scores[1:]]},
                 "validation_through_hybrid": calibration})
    if best >= scores[0]:
        log.warning("no epoch beat the starting refiner on the validation wells; %s holds the starting weights", out)
    save_refiner(correction, info, out)
    return load_refiner(out)

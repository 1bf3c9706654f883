"""How the refocus methods and the blind |z| fare on data the shipped U-Net never saw.

Fields of several morphology families (plate_refocus.morphology) are simulated
in memory for two optics, 9 fields per "well" and family, at depths 0-40 um,
and, per family and depth, scored against the in-focus ground truth (PSNR,
data range 4095):

- input, the shipped U-Net for the optics (``load_model(default_model_path(optics))``, as `run`
  chooses it; the report optics' model for the unmodelled-optics cases, which `run` is told),
- Wiener and Richardson-Lucy at the well's blind |z| (no reference, no truth;
  ``restoration_depth``: the estimate where identifiable, else its interval's low end),
- Wiener with the well's OTF measured against the in-focus plane (recover_psf),
- the oracle Wiener (true depth and optics, balance chosen by PSNR against truth);

and the |z| error of the blind estimate (3 and 9 fields, coverage of its
interval) and of recover_psf with the in-focus plane as reference. Then the
same for a pupil with spherical aberration and for plates whose NA is 10 % off
what the estimators are told, the consistency of the network's output (AUC of
in-range against out-of-range fields), throughput, and the six real BBBC006
fields (no truth: blind |z|, sharpness, consistency).

    python benchmarks/generalization.py --quick            # ~2-3 min
    python benchmarks/generalization.py                     # ~30 min on 2 cores
    python benchmarks/generalization.py --out scratch/generalization.md

Library functions are called directly; the "run default" and "hybrid" columns call the run's own
per-(well, depth) function (``pipeline.process_depth``) with the default method and with
``--method hybrid``. Set
OPENBLAS_NUM_THREADS=1 for timings comparable to a Dask worker.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as in a Dask worker; before NumPy loads BLAS

import argparse
import dataclasses
import functools
import glob
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import scipy.fft

from plate_refocus.deconvolve import (
    CONSISTENCY_LIMIT,
    Blur,
    NoiseModel,
    consistency,
    richardson_lucy,
    wiener,
)
from plate_refocus.focus import blind_defocus, find_focus, power_spectrum, restoration_depth
from plate_refocus.metrics import WIENER_BALANCES, psnr, sharpness, wiener_refocus
from plate_refocus.optics import Optics
from plate_refocus.psf import field_spectra, recover_psf
from plate_refocus.simulate import Camera, simulate_field

REPORT = Optics()
SECOND = Optics(na=0.45, wavelength_um=0.46, pixel_size_um=0.325)
CAMERA = Camera()  # 2000 photons at the peak, offset 100, read noise 2, 12 bit
NOISE = NoiseModel.from_camera(CAMERA)
RANGE = float(CAMERA.max_value)
BBBC006 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bbbc006-sample"


def publish(text: str, out) -> Path:
    """Print a benchmark's tables and keep them in `out` (the scratch copy a README table cites)."""
    print(text)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    return out


# --------------------------------------------------------------------------- data


def simulate(optics, family, depths, fields, size, seed, spherical=0.0, camera=CAMERA):
    """(F, Z, Y, X) camera planes and (F, Y, X) in-focus truth of one well."""
    images, truth = [], []
    for f in range(fields):
        out = simulate_field(size, depths, seed=np.random.SeedSequence([seed, f]), optics=optics, camera=camera,
                             channels=("nuclei",), family=None if family == "u2os" else family,
                             spherical_rms_waves=spherical)
        images.append(out.images[0])
        truth.append(out.in_focus[0])
    return np.stack(images), np.stack(truth)


def blind_groups(spectra, optics, fields):
    """Blind fits of 3-field wells (every consecutive three) and of the whole 9-field well."""
    groups = [list(range(i, i + 3)) for i in range(0, fields - 2, 3)]
    three = [blind_defocus(sum(spectra[i] for i in g), optics) for g in groups]
    whole = blind_defocus(sum(spectra), optics)
    return three, whole


def auc(negative, positive):
    """P(positive > negative), ties half (Mann-Whitney)."""
    neg, pos = np.asarray(negative), np.asarray(positive)
    if not neg.size or not pos.size:
        return math.nan
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


# --------------------------------------------------------------------------- one well


def evaluate_well(model, sim_optics, optics, family, depths, args, seed, spherical=0.0, label=None):
    """Score one family's well at every depth; returns (psnr rows, |z| rows, consistency rows)."""
    size = args.size
    images, truth = simulate(sim_optics, family, depths, args.fields, size, seed, spherical)
    label = label or family
    psnr_rows, z_rows, cons_rows = [], [], []
    focal = depths.index(0.0) if 0.0 in depths else None
    for j, depth in enumerate(depths):
        planes = images[:, j]
        spectra = [power_spectrum(p, optics.pixel_size_um, background=NOISE.offset) for p in planes]
        three, whole = blind_groups(spectra, optics, args.fields)
        measured = None
        if focal is not None and depth > 0:
            pooled = field_spectra(images[:, focal], planes, reference_background=NOISE.offset,
                                   defocused_background=NOISE.offset)
            measured = recover_psf(pooled, tuple(size), optics, reference="in-focus")
        for k, est in enumerate([*three, whole]):
            z_rows.append({"label": label, "depth": depth, "fields": 9 if k == len(three) else 3,
                           "z": est.defocus_um, "lo": est.interval_um[0], "hi": est.interval_um[1],
                           "err": est.defocus_err_um})
        if measured is not None:
            z_rows.append({"label": label, "depth": depth, "fields": "ref", "z": measured.defocus_um,
                           "lo": math.nan, "hi": math.nan, "err": measured.defocus_err_um})
        if args.no_psnr:
            continue
        net = model.predict_batch(planes) if model is not None else None
        blur = Blur.model(optics, restoration_depth(whole))
        runs = pipeline_default(planes, images[:, focal] if focal is not None else None, optics, args, net,
                                model.info.consistency_limit if model is not None else None)
        for f in range(args.fields):
            g, t = planes[f], truth[f]
            row = {"label": label, "depth": depth, "field": f, "input": psnr(t, g, data_range=RANGE)}
            for key, result in runs.items():
                if f < len(result.refocused):
                    row[key] = psnr(t, result.refocused[f], data_range=RANGE)
            w = wiener(g, blur, noise=NOISE)
            row["wiener"] = psnr(t, w.image, data_range=RANGE)
            if f < args.rl_fields:
                r = richardson_lucy(g, blur, noise=NOISE)
                row["rl"] = psnr(t, r.image, data_range=RANGE)
                row["rl_iterations"] = r.iterations
            if measured is not None:
                mb = Blur.measured(optics, measured.freq, measured.otf_radial, relative=True,
                                   defocus_um=measured.defocus_um)
                row["wiener_measured"] = psnr(t, wiener(g, mb, noise=NOISE).image, data_range=RANGE)
            oracle_optics = dataclasses.replace(sim_optics)
            restored = wiener_refocus(g, depth, oracle_optics, balance=WIENER_BALANCES, offset=NOISE.offset)
            row["oracle"] = max(psnr(t, r_, data_range=RANGE) for r_ in restored)
            if net is not None:
                row["unet"] = psnr(t, net[f], data_range=RANGE)
                c_net = consistency(g, net[f], blur, noise=NOISE)
                c_truth = consistency(g, t, blur, noise=NOISE)
                cons_rows.append({"label": label, "depth": depth, "field": f, "unet": c_net,
                                  "truth": c_truth, "wiener": w.chi2})
            psnr_rows.append(row)
    return psnr_rows, z_rows, cons_rows


def pipeline_default(planes, focal_planes, optics, args, net=None, network_limit=None):
    """The run's own per-(well, depth) function with the default method, on the well's first
    fields: without a reference (a plate that records no in-focus plane) and with the in-focus
    plane as reference (a stack that records it); given the network's outputs, also
    `run --method hybrid` (RL where the blur is known, the network where it is not)."""
    from plate_refocus.optics import radial_frequencies
    from plate_refocus.pipeline import DEFAULT_METHOD, DepthSettings, process_depth

    n = min(args.pipeline_fields, len(planes))
    settings = DepthSettings(optics=optics, method=DEFAULT_METHOD, reference="blind",
                             background=NOISE.offset, data_range=RANGE, backend="numpy",
                             read_noise=NOISE.read_noise)
    freq = radial_frequencies(tuple(planes.shape[-2:]), optics.pixel_size_um)
    runs = {"default_blind": process_depth(list(planes[:n]), settings=settings, freq=freq)}
    if focal_planes is not None:
        runs["default_ref"] = process_depth(
            list(planes[:n]), settings=dataclasses.replace(settings, reference="focal-plane"),
            freq=freq, references=list(focal_planes[:n]))
    if net is not None:  # as `run --method hybrid` does it: with the RL refiner shipped for the optics, if any
        hybrid = dataclasses.replace(settings, method="hybrid", network_limit=network_limit)
        runs["hybrid"] = process_depth(list(planes[:n]), settings=hybrid, refiner=_shipped_refiner(optics),
                                       freq=freq, refocus=lambda _: np.asarray(net[:n], dtype=np.float32))
    return runs


@functools.cache
def _shipped_refiner(optics):
    """The RL refiner `run --method hybrid` uses for these optics (loaded once), or None."""
    from plate_refocus.unet.refiner import load_refiner, shipped_refiner_path

    path = shipped_refiner_path(optics)
    return load_refiner(path) if path is not None else None


def default_bars(rows, title):
    """The issue's bars for the default method, per family: gain over the input >= +3 dB at each
    depth 10-30 um and >= 0 dB at 0-5 um, within 1.5 dB of the oracle Wiener at 10-30 um (per
    field, the same fields for every column)."""
    from plate_refocus.pipeline import DEFAULT_METHOD

    lines = [f"#### {title}", "",
             f"Default method `{DEFAULT_METHOD}` as `run` computes it (`pipeline.process_depth`, "
             "3-field wells); mean per-field dB over its fields.", "",
             "| family | reference | \\|z\\| um | gain over input | vs oracle Wiener | bar |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    by = defaultdict(list)
    for r in rows:
        for key in ("default_blind", "default_ref"):
            if key in r:
                by[(r["label"], key, r["depth"])].append(r)
    passed = total = 0
    for (label, key, depth), members in sorted(by.items(), key=lambda kv: (kv[0][0] != "u2os", kv[0])):
        gain = float(np.mean([m[key] - m["input"] for m in members]))
        gap = float(np.mean([m[key] - m["oracle"] for m in members]))
        if depth <= 5:
            ok, bar = gain >= 0, ">= 0 dB"
        elif 10 <= depth <= 30:
            ok, bar = gain >= 3 and gap >= -1.5, ">= +3 dB, >= oracle - 1.5"
        else:
            ok, bar = None, "-"
        if ok is not None:
            passed, total = passed + ok, total + 1
        mark = "" if ok is None else (" PASS" if ok else " FAIL")
        ref = "blind (none recorded)" if key == "default_blind" else "in-focus plane"
        lines.append(f"| {label} | {ref} | {depth:g} | {gain:+.2f} | {gap:+.2f} | {bar}{mark} |")
    lines.append("")
    lines.append(f"{passed}/{total} (family, reference, depth) pairs meet their bar.")
    return "\n".join(lines)


# --------------------------------------------------------------------------- tables


def z_table(rows, title):
    by = defaultdict(list)
    for r in rows:
        by[(r["label"], r["depth"], r["fields"])].append(r)
    labels = sorted({r["label"] for r in rows}, key=lambda s: (s != "u2os", s))
    depths = sorted({r["depth"] for r in rows})
    lines = [f"#### {title}", "",
             "| family | true \\|z\\| um | blind 3 fields: mean / max \\|err\\| | 9 fields \\|err\\| | "
             "9-field interval | covered (3 + 9) | in-focus reference \\|err\\| |",
             "| --- | ---: | ---: | ---: | --- | ---: | ---: |"]
    for label in labels:
        for d in depths:
            three = by.get((label, d, 3), [])
            nine = by.get((label, d, 9), [])
            ref = by.get((label, d, "ref"), [])
            if not three:
                continue
            e3 = [abs(r["z"] - d) for r in three]
            cov = [r["lo"] <= d <= r["hi"] for r in three + nine]
            n9 = nine[0] if nine else None
            lines.append(
                f"| {label} | {d:g} | {np.mean(e3):.2f} / {np.max(e3):.2f} | "
                f"{abs(n9['z'] - d):.2f} | [{n9['lo']:.1f}, {n9['hi']:.1f}] | {sum(cov)}/{len(cov)} | "
                + (f"{abs(ref[0]['z'] - d):.2f} |" if ref else "- |"))
    return "\n".join(lines)


def z_summary(rows, title):
    """Bars: |err| <= 1 um (3 fields) and <= 0.5 um (9 fields) at 6-30 um; coverage everywhere."""
    lines = [f"#### {title}", "", "| set | pairs | 3 fields: \\|err\\| <= 1 um at 6-30 um | worst | "
             "9 fields: \\|err\\| <= 0.5 um at 6-30 um | worst | interval covers truth (all depths) | "
             "gross outliers (\\|err\\| > 3 um, 6-40 um) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label in sorted({r["label"] for r in rows}, key=lambda s: (s != "u2os", s)) + ["all"]:
        sel = [r for r in rows if (label == "all" or r["label"] == label) and r["fields"] in (3, 9)]
        band3 = [abs(r["z"] - r["depth"]) for r in sel if r["fields"] == 3 and 6 <= r["depth"] <= 30]
        band9 = [abs(r["z"] - r["depth"]) for r in sel if r["fields"] == 9 and 6 <= r["depth"] <= 30]
        cov = [r["lo"] <= r["depth"] <= r["hi"] for r in sel]
        gross = [abs(r["z"] - r["depth"]) > 3 for r in sel if r["depth"] >= 6]
        if not sel:
            continue
        lines.append(f"| {label} | {len(sel)} | {sum(e <= 1 for e in band3)}/{len(band3)} | "
                     f"{max(band3, default=math.nan):.2f} | {sum(e <= 0.5 for e in band9)}/{len(band9)} | "
                     f"{max(band9, default=math.nan):.2f} | {sum(cov)}/{len(cov)} ({100 * np.mean(cov):.0f} %) | "
                     f"{sum(gross)} |")
    return "\n".join(lines)


def psnr_table(rows, title):
    methods = [m for m in ("input", "unet", "wiener", "rl", "wiener_measured", "hybrid",
                           "default_blind", "default_ref", "oracle")
               if any(m in r for r in rows)]
    names = {"input": "input", "unet": "U-Net", "wiener": "Wiener blind", "rl": "RL blind",
             "wiener_measured": "Wiener measured OTF", "hybrid": "hybrid",
             "default_blind": "run default, no reference", "default_ref": "run default, in-focus ref",
             "oracle": "oracle Wiener"}
    by = defaultdict(list)
    for r in rows:
        by[(r["label"], r["depth"])].append(r)
    lines = [f"#### {title}", "", "| family | \\|z\\| um | " + " | ".join(names[m] for m in methods)
             + " | best non-oracle - oracle |", "|" + " --- |" * 2 + " ---: |" * (len(methods) + 1)]
    for (label, depth), members in sorted(by.items(), key=lambda kv: ((kv[0][0] != "u2os"), kv[0][0], kv[0][1])):
        cells = []
        means = {}
        for m in methods:
            vals = [r[m] for r in members if m in r]
            means[m] = float(np.mean(vals)) if vals else math.nan
            cells.append(f"{means[m]:.2f}" if vals else "-")
        best = max((v for k, v in means.items() if k not in ("oracle", "input") and math.isfinite(v)),
                   default=math.nan)
        lines.append(f"| {label} | {depth:g} | " + " | ".join(cells) + f" | {best - means['oracle']:+.2f} |")
    lines.append("")
    lines.append("(mean PSNR in dB over the fields, data range 4095; RL on the first fields of each well only)")
    return "\n".join(lines)


def consistency_section(rows, in_label, out_labels, out_depth):
    inside = [r["unet"] for r in rows if r["label"] == in_label and r["depth"] <= 30]
    outside = [r["unet"] for r in rows if r["label"] in out_labels and r["depth"] >= out_depth]
    truth = [r["truth"] for r in rows]

    def q(v):
        v = np.asarray(v)
        return f"{np.percentile(v, 10):.2f} / {np.median(v):.2f} / {np.percentile(v, 90):.2f} (n={v.size})"

    lines = ["#### Consistency of the U-Net output (reduced chi-square of the re-blurred output, blind |z|)", "",
             "| set | 10th / median / 90th percentile |", "| --- | --- |",
             f"| in range: training family, 0-30 um | {q(inside)} |",
             f"| out of range: {', '.join(out_labels)} at {out_depth:g} um | {q(outside)} |",
             f"| ground truth re-blurred (all fields) | {q(truth)} |", "",
             f"AUC (out-of-range scores above in-range): **{auc(inside, outside):.3f}**; "
             f"hybrid keeps the network at consistency <= {CONSISTENCY_LIMIT:g}: "
             f"{np.mean([v <= CONSISTENCY_LIMIT for v in inside]) * 100:.0f} % of in-range fields, "
             f"{np.mean([v <= CONSISTENCY_LIMIT for v in outside]) * 100:.0f} % of out-of-range fields."]
    return "\n".join(lines), auc(inside, outside)


# --------------------------------------------------------------------------- speed


def throughput(args):
    size = (520, 696)
    images, _ = simulate(REPORT, "u2os", [10.0, 30.0], 9, size, seed=777)
    lines = ["#### Throughput on 520 x 696 fields (one thread, CPU time per call)", "",
             "| what | ms | per second |", "| --- | ---: | ---: |"]

    def cpu(fn, repeat=3):
        fn()
        best = math.inf
        for _ in range(repeat):
            t = time.process_time()
            fn()
            best = min(best, time.process_time() - t)
        return best

    x = images[0, 0].astype(np.float64)
    t_fft = cpu(lambda: scipy.fft.rfft2(x, workers=1), 20)
    lines.append(f"| rfft2 of one field | {t_fft * 1e3:.1f} | {1 / t_fft:.0f} |")
    t_ps = cpu(lambda: power_spectrum(images[0, 0], 0.3, background=100.0, backend="numpy"), 10)
    lines.append(f"| power_spectrum of one field (window, FFT, rings) | {t_ps * 1e3:.1f} | {1 / t_ps:.0f} |")
    def interleaved(fn, other, repeat):
        """Best CPU times of `fn` and `other`, called in turn: the machine's speed drifts by up to 2x
        between minutes here, so a ratio is only fair between calls made side by side."""
        best = [math.inf, math.inf]
        for _ in range(repeat):
            for k, f in enumerate((fn, other)):
                t = time.process_time()
                f()
                best[k] = min(best[k], time.process_time() - t)
        return best

    for optics, name in ((REPORT, "report"), (SECOND, "second")):
        imgs = images if optics is REPORT else simulate(SECOND, "u2os", [10.0, 30.0], 9, size, seed=778)[0]
        for j, depth in enumerate((10.0, 30.0)):
            spectra = [power_spectrum(p, optics.pixel_size_um, background=100.0) for p in imgs[:, j]]
            for n in (3, 9):
                pooled = sum(spectra[:n])
                blind_defocus(pooled, optics)
                t_fit, t_ffts = interleaved(lambda p=pooled, o=optics: blind_defocus(p, o),
                                            lambda n=n: [scipy.fft.rfft2(x, workers=1) for _ in range(n)], 15)
                lines.append(f"| blind_defocus, {name} optics, {depth:g} um, {n} fields | {t_fit * 1e3:.1f} | "
                             f"{1 / t_fit:.0f} ({t_fit / t_ffts:.2f} x its {n} FFTs, {t_ffts * 1e3:.1f} ms "
                             "timed in turn with it) |")
    for j, depth in enumerate((10.0, 30.0)):
        g = images[0, j]
        blur = Blur.model(REPORT, depth)
        t_w = cpu(lambda g=g, b=blur: wiener(g, b, noise=NOISE))
        lines.append(f"| Wiener (object-spectrum fit, filter, consistency), {depth:g} um | {t_w * 1e3:.0f} | {1 / t_w:.1f} |")
        out = richardson_lucy(g, blur, noise=NOISE)
        t_r = cpu(lambda g=g, b=blur: richardson_lucy(g, b, noise=NOISE), 1)
        lines.append(f"| Richardson-Lucy, {depth:g} um ({out.iterations} iterations, {out.stop}) | "
                     f"{t_r * 1e3:.0f} | {1 / t_r:.2f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- BBBC006


def bbbc006(model, root, refiner=None):
    """The six real fields: blind |z|, sharpness and consistency of each method (and, given an RL
    `refiner`, of RL refined by it where it applies; '-' elsewhere)."""
    import tifffile

    files = sorted(glob.glob(str(root / "BBBC006_v1_images_z_00" / "*.tif")))
    if not files:
        return f"BBBC006 sample not found under {root}: skipped."
    optics = REPORT  # the project's assumed BBBC006 optics (ingest preset: 0.3 um pixels; NA 0.25, 0.52 um)
    planes = np.stack([tifffile.imread(f) for f in files]).astype(np.float64)
    names = [Path(f).name.split("_")[1].upper() for f in files]
    lines = ["#### Six real BBBC006 fields (plane 00, nominally 32 um from focus; Hoechst)", "",
             "| well | blind \\|z\\| um | 95 % interval | sharpness: input / U-Net / Wiener / RL | "
             "consistency: U-Net / Wiener / RL | RL iterations |" + (
                 " RL refined: sharpness / consistency |" if refiner is not None else ""),
             "| --- | ---: | --- | --- | --- | ---: |" + (" --- |" if refiner is not None else "")]
    spectra = []
    nets = model.predict_batch(planes) if model is not None else [None] * len(planes)
    for name, g, net in zip(names, planes, nets, strict=True):
        offset = float(np.percentile(g, 0.1)) - 3.0
        ps = power_spectrum(g, optics.pixel_size_um, background=offset)
        spectra.append(ps)
        est = blind_defocus(ps, optics)
        # camera model from the data: gain from the white floor over the window-weighted signal, read noise folded in
        gain = max(est.spectrum.noise / max(float(np.mean(g - offset)), 1.0), 0.05)
        noise = NoiseModel(offset, 0.0, gain)
        blur = Blur.model(optics, restoration_depth(est))
        w = wiener(g, blur, noise=noise)
        r = richardson_lucy(g, blur, noise=noise)
        c_net = consistency(g, net, blur, noise=noise) if net is not None else math.nan
        s_net = sharpness(net) if net is not None else math.nan
        lines.append(f"| {name} | {est.defocus_um:.1f} | [{est.interval_um[0]:.1f}, {est.interval_um[1]:.1f}] | "
                     f"{sharpness(g):.2e} / {s_net:.2e} / {sharpness(w.image):.2e} / {sharpness(r.image):.2e} | "
                     f"{c_net:.2f} / {w.chi2:.2f} / {r.chi2:.2f} | {r.iterations} |" + _refined_cell(
                         refiner, g, r.image, offset, restoration_depth(est), optics, blur, noise))
    pooled = blind_defocus(sum(spectra), optics)
    lines.append("")
    lines.append(f"All six fields pooled: blind |z| = {pooled.defocus_um:.2f} um, interval "
                 f"[{pooled.interval_um[0]:.2f}, {pooled.interval_um[1]:.2f}], dispersion {pooled.dispersion:.1f} "
                 "(nominal 32 um; the emission wavelength and z step of BBBC006 are assumed, not known). "
                 "Camera offset per field: 0.1th percentile - 3; gain from the fitted white floor over the mean "
                 "signal (read noise folded in): a crude noise model for RL and the consistency.")
    return "\n".join(lines)


def _refined_cell(refiner, plane, restored, offset, depth, optics, blur, noise) -> str:
    if refiner is None:
        return ""
    if not refiner.applies(optics, depth):
        return " - |"
    refined = refiner.refine(plane, restored, offset, depth)
    return f" {sharpness(refined):.2e} / {consistency(plane, refined, blur, noise=noise):.2f} |"


# --------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small fields, fewer families and depths (~2-3 min)")
    parser.add_argument("--out", default="scratch/generalization.md", help="markdown file for the tables")
    parser.add_argument("--no-unet", action="store_true", help="skip the network (no TensorFlow)")
    parser.add_argument("--no-psnr", action="store_true", help="only the |z| estimates")
    parser.add_argument("--rl-fields", type=int, default=None, help="fields per well restored by RL")
    parser.add_argument("--pipeline-fields", type=int, default=3,
                        help="fields of each well run through the pipeline's own function (default 3)")
    parser.add_argument("--bbbc006", default=str(BBBC006), help="folder of the BBBC006 sample")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.fields = (260, 348), 9
        depths = [0.0, 5.0, 10.0, 20.0, 30.0, 40.0]
        families = ["u2os", "small-nuclei", "textured", "mitotic"]
        second_families = ["textured"]
        args.rl_fields = 1 if args.rl_fields is None else args.rl_fields
    else:
        args.size, args.fields = (520, 696), 9
        depths = [0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0]
        families = ["u2os", "small-nuclei", "large-nuclei", "textured", "mitotic"]
        second_families = ["u2os", "small-nuclei", "textured"]
        args.rl_fields = 2 if args.rl_fields is None else args.rl_fields
    start = time.time()
    models = {REPORT: None, SECOND: None}
    if not args.no_unet:
        from plate_refocus.unet import default_model_path, load_model

        # as `run` chooses it: the shipped model trained for the plate's optics (or, where none
        # was, the default one, which `run` would refuse; scored here all the same)
        models = {o: load_model(default_model_path(o)) for o in models}
    model = models[REPORT]
    sections = [f"Generalization benchmark ({'quick' if args.quick else 'full'}): fields {args.size[0]} x "
                f"{args.size[1]}, {args.fields} per well, depths {depths} um, camera {CAMERA}."]
    all_psnr, all_z, all_cons = [], [], []
    for optics, name, fams in ((REPORT, "report optics (NA 0.25, 0.52 um, 0.3 um px)", families),
                               (SECOND, "second optics (NA 0.45, 0.46 um, 0.325 um px, undersampled)",
                                second_families)):
        p_rows, z_rows, c_rows = [], [], []
        for k, family in enumerate(fams):
            t = time.time()
            p, z, c = evaluate_well(models[optics], optics, optics, family, depths, args,
                                    seed=1000 + 17 * k + (0 if optics is REPORT else 500))
            p_rows += p
            z_rows += z
            c_rows += c
            print(f"[{time.time() - start:6.0f} s] {name.split(' (')[0]} {family}: {time.time() - t:.0f} s",
                  file=sys.stderr, flush=True)
        sections.append(z_summary(z_rows, f"Blind |z| bars, {name}"))
        sections.append(z_table(z_rows, f"Blind |z| per family and depth, {name}"))
        if p_rows:
            sections.append(default_bars(p_rows, f"Default method on held-out data, {name}"))
            sections.append(psnr_table(p_rows, f"PSNR per family and depth, {name}"))
        for r in p_rows + z_rows + c_rows:
            r["optics"] = name
        all_psnr += p_rows
        all_z += z_rows
        all_cons += c_rows
        if optics is REPORT and c_rows:
            text, _ = consistency_section(c_rows, "u2os", [f for f in fams if f != "u2os"], 40.0)
            sections.append(text)

    # optics the estimators do not model: aberration and NA off by 10 %
    mismatch_depths = [0.0, 5.0, 10.0, 20.0, 30.0] if not args.quick else [0.0, 10.0, 30.0]
    mismatch_families = ["u2os", "textured"] if not args.quick else ["u2os"]
    mm_psnr, mm_z = [], []
    for label, sim_optics, spherical in (("aberrated 0.15 waves", REPORT, 0.15),
                                         ("NA 0.275 told 0.25", dataclasses.replace(REPORT, na=0.275), 0.0),
                                         ("NA 0.225 told 0.25", dataclasses.replace(REPORT, na=0.225), 0.0)):
        for k, family in enumerate(mismatch_families):
            t = time.time()
            p, z, _ = evaluate_well(model, sim_optics, REPORT, family, mismatch_depths, args,
                                    seed=3000 + 31 * k, spherical=spherical, label=f"{family}, {label}")
            mm_psnr += p
            mm_z += z
            print(f"[{time.time() - start:6.0f} s] {label} {family}: {time.time() - t:.0f} s", file=sys.stderr,
                  flush=True)
    sections.append(z_summary(mm_z, "Blind |z| with optics the estimators do not model (report optics assumed)"))
    sections.append(z_table(mm_z, "Blind |z| per case, unmodelled optics"))
    if mm_psnr:
        sections.append(default_bars(mm_psnr, "Default method with unmodelled optics"))
        sections.append(psnr_table(mm_psnr, "PSNR with unmodelled optics (oracle: true depth and NA, ideal pupil)"))

    # focus finding on a stack around focus (both optics, training and one new family)
    sections.append(focus_section(args))
    sections.append(throughput(args))
    sections.append(bbbc006(model, Path(args.bbbc006)))
    sections.append(f"(total {time.time() - start:.0f} s)")
    out = publish("\n\n".join(sections), args.out)
    out.with_suffix(".json").write_text(json.dumps(
        {"psnr": all_psnr + mm_psnr, "z": all_z + mm_z, "consistency": all_cons}, default=float, indent=1))
    return 0


def focus_section(args):
    lines = ["#### Finding the in-focus plane of a stack (find_focus, blind estimates per plane, 3 fields)", "",
             "| optics | family | planes at (um; focus at 0) | found plane (um) | prominence | fitted focus (um) |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    size = (260, 348)
    cases = ((REPORT, "report"), (SECOND, "second")) if not args.quick else ((REPORT, "report"),)
    for optics, name in cases:
        for family in ("u2os", "textured"):
            for offset_um in (0.0, 7.0, 40.0):
                z = np.arange(-16.0, 17.0, 4.0) + offset_um
                images, _ = simulate(optics, family, list(np.abs(z)), 3, size, seed=5000)
                spectra = [sum(power_spectrum(p, optics.pixel_size_um, background=100.0) for p in images[:, j])
                           for j in range(z.size)]
                blind = [blind_defocus(s, optics) for s in spectra]
                found = find_focus(z, spectra, optics, blind=blind)
                stack = f"{z[0]:g} to {z[-1]:g}, step 4"
                if found is None:
                    lines.append(f"| {name} | {family} | {stack} | none | - | - |")
                else:
                    lines.append(f"| {name} | {family} | {stack} | {found.z_um:g} | {found.prominence:.2f} | "
                                 f"{found.focus_um:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

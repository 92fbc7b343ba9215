"""Writing an evaluation result: `report.json` (everything) and `report.html` (tables and
inline SVG plots: ROC, DET, score distributions overall and per group)."""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path
from typing import Any

from .calibrate import json_safe
from .svg import Chart, Series, render

CSS = """
body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:13px}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.flag{color:#b00;font-weight:bold} .muted{color:#777} .charts svg{margin:4px}
"""


def _num(v: Any, fmt: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (int, float)):
        return format(v, fmt)
    return escape(str(v))


def _ci(r: Any, fmt: str = ".3g") -> str:
    if not isinstance(r, dict) or r.get("value") is None:
        return "-"
    return f"{_num(r['value'], fmt)} <span class=muted>[{_num(r.get('low'), fmt)}, {_num(r.get('high'), fmt)}]</span>"


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th{' class=l' if i == 0 else ''}>{escape(c)}</th>" for i, c in enumerate(head))
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=l' if i == 0 else ''}>{c}</td>" for i, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{h}</tr>{body}</table>"


def _roc_charts(ver: dict[str, Any], marks: list[tuple[float, str]], uid: str) -> str:
    roc = ver["roc"]
    fmr, tar = roc["fmr"], roc["tar"]
    lo = min((f for f in fmr if f > 0), default=1e-6)
    roc_chart = Chart(
        "ROC",
        "false match rate (FMR)",
        "true accept rate (TAR)",
        [Series("ROC", fmr, tar)],
        x_log=True,
        x_range=(lo, 1.0),
        y_range=(min(min(tar, default=0.9), 0.9), 1.0),
        marks=marks,
        uid=uid + "roc",
    )
    fnmr = [1 - t for t in tar]
    det = Chart(
        "DET",
        "false match rate (FMR)",
        "false non-match rate (FNMR)",
        [Series("DET", fmr, [max(f, 1e-5) for f in fnmr])],
        x_log=True,
        y_log=True,
        x_range=(lo, 1.0),
        y_range=(1e-4, 1.0),
        marks=marks,
        uid=uid + "det",
    )
    return render(roc_chart) + render(det)


def _density(edges: list[float], counts: list[int]) -> tuple[list[float], list[float]]:
    total = sum(counts) or 1
    mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    width = (edges[1] - edges[0]) if len(edges) > 1 else 1.0
    return mids, [c / total / width for c in counts]


def _threshold_marks(result: dict[str, Any], key: str) -> list[tuple[float, str]]:
    return [
        (float(v[key]), f"S{v['similarity']:.10g}") for v in result.get("thresholds", {}).values()
    ]


def _verification_html(ver: dict[str, Any], result: dict[str, Any]) -> str:
    parts = ["<h2>Verification (1:1)</h2>"]
    p = ver["pairs"]
    parts.append(f"<p>{p['genuine']:,} genuine and {p['impostor']:,} impostor pairs"
                 + (f"; {p['with_failure_to_enrol']} involve an image that failed to enrol "
                    "(scored as non-matches)" if "with_failure_to_enrol" in p else "")
                 + f". AUC {_num(ver['auc'], '.6f')}.</p>")  # fmt: skip
    acc = ver.get("accuracy")
    if acc:
        parts.append(f"<p><b>Accuracy</b> ({escape(acc['protocol'])}): "
                     f"{100 * acc['accuracy']:.2f}%"
                     + (f" &plusmn; {100 * acc['standard_error']:.2f}% (standard error)"
                        if "standard_error" in acc else "")
                     + (f" at distance {acc['threshold']:.4f}" if "threshold" in acc else "")
                     + ".</p>")  # fmt: skip
    rows = []
    for r in ver["tar_at_fmr"]:
        rows.append(
            [
                _num(r["fmr"], "g"),
                _ci(r["threshold"], ".4f"),
                _ci(r["tar"], ".4f"),
                escape(str(r.get("note", ""))),
            ]
        )
    parts.append("<h3>TAR at FMR (95% intervals: identity bootstrap)</h3>")
    parts.append(_table(["FMR", "threshold (distance)", "TAR", "note"], rows))
    rows = [
        [
            escape(r["name"]),
            _num(r["threshold"], ".4f"),
            _ci(r["fmr"]),
            _ci(r["fnmr"]),
            _num(r["impostor_matches"], "d"),
            _num(r["genuine_misses"], "d"),
        ]
        for r in ver["at_thresholds"]
    ]
    parts.append("<h3>At the operating thresholds</h3>")
    parts.append(
        _table(["threshold", "distance", "FMR", "FNMR", "impostor matches", "genuine misses"], rows)
    )
    marks = [
        (float(v["nominal_fmr"]), f"S{v['similarity']:.10g}")
        for v in result.get("thresholds", {}).values()
    ]
    dist = ver["distributions"]
    xg, yg = _density(dist["edges"], dist["genuine"])
    xi, yi = _density(dist["edges"], dist["impostor"])
    scores = Chart(
        "Score distributions",
        "distance",
        "density",
        [Series("genuine", xg, yg), Series("impostor", xi, yi)],
        marks=_threshold_marks(result, "distance"),
        uid="dist",
    )
    parts.append('<div class="charts">' + _roc_charts(ver, marks, "v") + render(scores) + "</div>")
    return "\n".join(parts)


def _groups_html(gr: dict[str, Any], result: dict[str, Any]) -> str:
    parts = [f"<h2>Per group</h2><p>{escape(gr['design'])}.</p>"]
    rows = []
    for g, r in gr["groups"].items():
        for t in r["at_thresholds"]:
            rows.append(
                [
                    escape(g),
                    escape(t["name"]),
                    _num(r["pairs"]["genuine"], ","),
                    _num(r["pairs"]["impostor"], ","),
                    _ci(t["fmr"]),
                    _ci(t["fnmr"]),
                ]
            )
    parts.append(
        _table(["group", "threshold", "genuine pairs", "impostor pairs", "FMR", "FNMR"], rows)
    )
    rows = []
    for c in gr["comparisons"]:
        flag = '<span class="flag">differs</span>' if c["flagged"] else "overlap"
        rows.append(
            [
                escape(c["threshold"]),
                c["rate"].upper(),
                escape(c["highest"]),
                escape(c["lowest"]),
                _num(c["max_over_min"], ".3g"),
                flag,
            ]
        )
    parts.append("<h3>Highest / lowest group</h3>")
    parts.append(
        _table(["threshold", "rate", "highest", "lowest", "max/min", "95% intervals"], rows)
    )
    edges = gr["edges"]
    charts = []
    for kind in ("genuine", "impostor"):
        series = []
        for g, r in gr["groups"].items():
            x, y = _density(edges, r["distributions"][kind])
            series.append(Series(g, x, y, dashed=kind == "impostor"))
        charts.append(
            render(
                Chart(
                    f"{kind} distances per group",
                    "distance",
                    "density",
                    series,
                    marks=_threshold_marks(result, "distance"),
                    uid=f"g{kind}",
                )
            )
        )
    parts.append('<div class="charts">' + "".join(charts) + "</div>")
    return "\n".join(parts)


def _identification_html(ident: dict[str, Any]) -> str:
    g, p = ident["gallery"], ident["probes"]
    parts = [
        f"<h2>Identification (1:N, rank {ident['rank']})</h2>",
        f"<p>Gallery: {g['entries']:,} entries of {g['identities']:,} people "
        f"({g['failed_to_enrol']} failed to enrol). Probes: {p['total']:,} "
        f"({p['failed_to_enrol']} failed to enrol; {p['mated_at_full_size']:,} mated at full size).</p>",
    ]
    rows = []
    for r in ident["rows"]:
        rows.append(
            [
                _num(r["gallery_size"], ","),
                escape(r["threshold"]),
                _ci({"value": r["fpir"], "low": r["fpir_low"], "high": r["fpir_high"]}),
                _ci({"value": r["fnir"], "low": r["fnir_low"], "high": r["fnir_high"]}),
                _num(r["false_matches_observed"], ".4g"),
                _num(r["false_matches_expected"], ".4g"),
            ]
        )
    parts.append(
        _table(
            [
                "gallery size",
                "threshold",
                "FPIR",
                "FNIR",
                "false matches observed",
                "expected (probes x N x FMR)",
            ],
            rows,
        )
    )
    series: dict[str, tuple[list[float], list[float]]] = {}
    for r in ident["rows"]:
        if r["fpir"] is not None:
            series.setdefault(r["threshold"], ([], []))
            series[r["threshold"]][0].append(r["gallery_size"])
            series[r["threshold"]][1].append(max(r["fpir"], 1e-5))
    parts.append(
        render(
            Chart(
                "FPIR against gallery size",
                "gallery size",
                "FPIR",
                [Series(k, v[0], v[1]) for k, v in series.items()],
                x_log=True,
                y_log=True,
                y_range=(1e-4, 1.0),
                uid="fpir",
            )
        )
    )
    return "\n".join(parts)


def _detection_html(det: dict[str, Any]) -> str:
    parts = ["<h2>Detection and quality filter</h2>"]
    cells = {"all images": det["overall"]} | det.get("groups", {})
    rows = []
    for g, c in cells.items():
        qf = c["quality_filter"]
        rows.append(
            [
                escape(g),
                _num(c["images"], ","),
                _ci(c["failure_to_detect"]),
                _ci(qf["LOW"]["refused"]),
                _ci(qf["MEDIUM"]["refused"]),
                _ci(qf["HIGH"]["refused"]),
            ]
        )
    parts.append(
        _table(
            [
                "group",
                "images",
                "failure to detect",
                "refused by LOW",
                "refused by MEDIUM (AUTO)",
                "refused by HIGH",
            ],
            rows,
        )
    )
    if det.get("comparisons"):
        rows = []
        for c in det["comparisons"]:
            flag = '<span class="flag">differs</span>' if c["flagged"] else "overlap"
            rows.append(
                [
                    escape(c["rate"]),
                    escape(c["highest"]),
                    escape(c["lowest"]),
                    _num(c["max_over_min"], ".3g"),
                    flag,
                ]
            )
        parts.append(_table(["rate", "highest", "lowest", "max/min", "95% intervals"], rows))
    return "\n".join(parts)


def _impostors_html(imp: dict[str, Any], result: dict[str, Any]) -> str:
    parts = [f"<h2>False-match rates per group</h2><p>{escape(imp['design'])}. A threshold's "
             "promise is broken for a group (<span class=flag>broken</span>) when even the low "
             "end of the group's 95% interval is above 1 &minus; S/100.</p>"]  # fmt: skip
    uncovered = set(imp.get("not_covered") or ())
    if uncovered:
        parts.append(
            f"<p>The shipped calibration promises nothing for {len(uncovered)} of these groups "
            f"({escape(', '.join(sorted(uncovered)))}): their broken promises are expected and "
            "marked <i>not covered</i>; <i>all covered groups</i> leaves them out.</p>")
    cells = {"all images": imp["overall"]}
    if imp.get("overall_covered"):
        cells["all covered groups"] = imp["overall_covered"]
    rows = []
    for g, c in (cells | imp["groups"]).items():
        if "no_data" in c:
            rows.append([escape(g), _num(c["images"], ","), "0", "no data", "", ""])
            continue
        flag = (' <span class="flag">broken</span> (not covered)' if g in uncovered
                else ' <span class="flag">broken</span>')
        for t in c["at_thresholds"]:
            rows.append([
                escape(g), _num(c["images"], ","), _num(c["pairs"]["impostor"], ","),
                escape(t["name"]), _ci(t["fmr"]) + f" <span class=muted>({t['impostor_matches']:,})</span>",
                _num(t["nominal_fmr"], ".3g") + (flag if t["promise_broken"] else ""),
            ])  # fmt: skip
    parts.append(_table(["group", "images", "impostor pairs", "threshold",
                         "FMR [95%] (matches)", "promised at most"], rows))  # fmt: skip
    rows = []
    for c in imp["comparisons"]:
        flag = '<span class="flag">differs</span>' if c["flagged"] else "overlap"
        ratio = _num(c["max_over_min"], ".3g") + (f" <span class=muted>{escape(c['note'])}</span>"
                                                   if c["note"] else "")  # fmt: skip
        rows.append([escape(c["threshold"]), escape(c["highest"]), escape(c["lowest"]), ratio,
                     flag])  # fmt: skip
    parts.append("<h3>Highest / lowest group</h3>")
    parts.append(_table(["threshold", "highest", "lowest", "max/min", "95% intervals"], rows))
    rows = []
    for c in imp["cross_groups"]:
        rows.append([escape(" x ".join(c["groups"])), _num(c["pairs"], ",")]
                    + [_ci(t["fmr"]) for t in c["at_thresholds"]])  # fmt: skip
    names = [t["name"] for t in imp["overall"]["at_thresholds"]]
    parts.append("<h3>Across groups</h3><p>Pairs of two people from different groups "
                 "(Wilson intervals).</p>")  # fmt: skip
    parts.append(_table(["groups", "pairs", *names], rows))
    dup = imp["near_duplicates"]
    parts.append(f"<h3>Possible duplicates</h3><p>{dup['count']:,} pairs closer than "
                 f"{dup['distance']}: perhaps one person twice. Look at them; they are counted "
                 "in the rates above.</p>")  # fmt: skip
    if dup["pairs"]:
        parts.append(_table(["image", "image", "distance"],
                            [[escape(p["a"]), escape(p["b"]), _num(p["distance"], ".4f")]
                             for p in dup["pairs"]]))  # fmt: skip
    series = []
    for g, c in imp["groups"].items():
        if "distributions" in c:
            x, y = _density(imp["edges"], c["distributions"]["impostor"])
            series.append(Series(g, x, y, dashed=True))
    if series:
        parts.append('<div class="charts">' + render(Chart(
            "impostor distances per group", "distance", "density", series,
            marks=_threshold_marks(result, "distance"), uid="imp")) + "</div>")  # fmt: skip
    return "\n".join(parts)


def render_html(result: dict[str, Any]) -> str:
    """The HTML page for an evaluation result."""
    title = f"faceledger evaluate {result['kind']}: {result['model_version']}"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{escape(title)}</h1>",
             f"<p class=muted>{escape(result.get('created', ''))} &mdash; "
             f"<code>{escape(result.get('command', ''))}</code></p>"]  # fmt: skip
    th = result.get("thresholds", {})
    if th:
        parts.append(
            _table(
                ["operating threshold", "Similarity", "nominal FMR", "distance", "table FMR"],
                [
                    [
                        escape(n),
                        _num(v["similarity"], "g"),
                        _num(v["nominal_fmr"], "g"),
                        _num(v["distance"], ".4f"),
                        _num(v.get("table_fmr"), ".3g")
                        + ("" if v.get("credible", True) else " (floor: not credible)"),
                    ]
                    for n, v in th.items()
                ],
            )
        )
    enr = result.get("enrolment")
    if enr:
        parts.append(
            f"<p><b>Enrolment:</b> {enr['images']:,} images, {enr['failures_to_enrol']} "
            f"failures to enrol ({100 * enr['failure_rate']:.2f}%), "
            f"{enr['several_faces_found']} with several faces (the one nearest the "
            f"centre was used).</p>"
        )
    if "verification" in result:
        parts.append(_verification_html(result["verification"], result))
    if "groups" in result:
        parts.append(_groups_html(result["groups"], result))
    if "identification" in result:
        parts.append(_identification_html(result["identification"]))
    if "impostors" in result:
        parts.append(_impostors_html(result["impostors"], result))
    if "detection" in result:
        parts.append(_detection_html(result["detection"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write `report.json` and `report.html` into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jp, hp = out_dir / "report.json", out_dir / "report.html"
    jp.write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    hp.write_text(render_html(json_safe(result)), encoding="utf-8")
    return jp, hp
